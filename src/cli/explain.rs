//! The `explain` command: what a saved model does with one image (a PNG/PGM file or
//! `test:INDEX`), drawn into one PNG: the input as the network sees it, the saliency map of
//! the predicted class, the top-3 classes, the first convolution's filters and every
//! convolution's activation maps. The numbers are [`crate::explain`]'s, the picture
//! [`crate::plots::explain`]'s.

use std::path::Path;

use super::load::{dataset_kind_of, load_data, load_model};
use super::{CliResult, ExplainArgs};
use crate::explain;
use crate::plots;

pub(super) fn run_explain(a: ExplainArgs) -> CliResult<()> {
    let mut saved = load_model(&a.model_file)?;
    saved.model.set_engine(super::engine(a.reference));
    if saved.model.input_shape != [1, 28, 28] {
        return Err(format!(
            "the model takes inputs of shape {:?}; explain draws 28x28 grey images",
            saved.model.input_shape
        ));
    }
    let (pixels, truth) = match a.input.strip_prefix("test:") {
        Some(index) => {
            let i: usize = index
                .parse()
                .map_err(|_| format!("{}: the index after `test:` must be a number", a.input))?;
            let test = load_data(dataset_kind_of(&saved)?, &a.data)?.1;
            if i >= test.len() {
                return Err(format!(
                    "{}: the test set has {} images (0..{})",
                    a.input,
                    test.len(),
                    test.len() - 1
                ));
            }
            (test.image(i).to_vec(), Some(test.labels[i]))
        }
        None => (crate::image::load_for_model(Path::new(&a.input)).map_err(|e| e.to_string())?, None),
    };
    let x = saved.normalization.pixels(&pixels, 1, 28, 28);
    let saliency = explain::saliency(&mut saved.model, &x, None);
    let filters = explain::first_filters(&saved.model);
    let activations = explain::conv_activations(&mut saved.model, &x);
    let title = format!("What the {} model does with {}", saved.preset, a.input);
    let view = plots::explain::View {
        title: &title,
        pixels: &pixels,
        shape: (28, 28),
        saliency: &saliency,
        names: &saved.classes,
        truth,
        filters: filters.as_ref().map(|(_, w)| w),
        activations: &activations,
    };
    let top: Vec<String> = plots::predictions::top3(&saliency.probabilities)
        .iter()
        .map(|&c| format!("{} {:.1}%", saved.classes[c], 100.0 * saliency.probabilities[c]))
        .collect();
    let truth = truth.map(|t| format!("  (true: {})", saved.classes[t as usize])).unwrap_or_default();
    println!("{}: {}{truth}", a.input, top.join(", "));
    plots::explain::draw(&view)
        .and_then(|pic| plots::write_png(&a.out, &pic))
        .map_err(|e| format!("{}: {e}", a.out.display()))?;
    println!("Wrote {}", a.out.display());
    Ok(())
}
