//! The `predict` command: the top three classes of a saved model for image files or test-set
//! images (`test:INDEX`). It prints them, and with `--out FILE.png` draws them
//! ([`crate::plots::predictions`]); decoding the image files is [`crate::image`]'s.

use std::path::Path;

use super::load::{dataset_kind_of, load_data, load_model};
use super::{CliResult, PredictArgs};
use crate::data::Dataset;
use crate::{plots, train};

pub(super) fn run_predict(a: PredictArgs) -> CliResult<()> {
    let mut saved = load_model(&a.model_file)?;
    saved.model.set_engine(super::engine(a.reference));
    let mut test: Option<Dataset> = None;
    let mut images: Vec<u8> = Vec::new();
    let mut truths: Vec<Option<u8>> = Vec::new();
    for input in &a.inputs {
        if let Some(index) = input.strip_prefix("test:") {
            let i: usize =
                index.parse().map_err(|_| format!("{input}: the index after `test:` must be a number"))?;
            if test.is_none() {
                test = Some(load_data(dataset_kind_of(&saved)?, &a.data)?.1);
            }
            let t = test.as_ref().expect("just loaded");
            if i >= t.len() {
                return Err(format!("{input}: the test set has {} images (0..{})", t.len(), t.len() - 1));
            }
            images.extend_from_slice(t.image(i));
            truths.push(Some(t.labels[i]));
        } else {
            images.extend(crate::image::load_for_model(Path::new(input)).map_err(|e| e.to_string())?);
            truths.push(None);
        }
    }
    let n = a.inputs.len();
    // The images go through `evaluate` as a small dataset; its labels are placeholders, so
    // only the probabilities are used.
    let ds = Dataset { images, labels: vec![0; n], rows: 28, cols: 28 };
    let probs = train::evaluate(&mut saved.model, &saved.normalization, &ds, n.max(1)).probabilities;
    let k = saved.classes.len();
    for ((input, p), truth) in a.inputs.iter().zip(probs.chunks(k)).zip(&truths) {
        let mut order: Vec<usize> = (0..k).collect();
        order.sort_by(|&i, &j| p[j].total_cmp(&p[i]).then(i.cmp(&j)));
        let top: Vec<String> =
            order.iter().take(3).map(|&c| format!("{} {:.1}%", saved.classes[c], 100.0 * p[c])).collect();
        let truth = truth.map(|t| format!("  (true: {})", saved.classes[t as usize])).unwrap_or_default();
        println!("{input}: {}{truth}", top.join(", "));
    }
    if let Some(path) = &a.out {
        let rows: Vec<plots::predictions::Row> = (0..n)
            .map(|i| plots::predictions::Row {
                name: &a.inputs[i],
                pixels: &ds.images[i * 784..(i + 1) * 784],
                probabilities: &probs[i * k..(i + 1) * k],
                truth: truths[i],
            })
            .collect();
        let title = format!("{}: top-3 classes of {n} input{}", saved.preset, if n == 1 { "" } else { "s" });
        plots::predictions::draw(&title, &rows, &saved.classes, (28, 28))
            .and_then(|pic| plots::write_png(path, &pic))
            .map_err(|e| format!("--out {}: {e}", path.display()))?;
        println!("Wrote {}", path.display());
    }
    Ok(())
}
