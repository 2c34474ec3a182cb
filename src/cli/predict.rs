//! The `predict` command: the top three classes of a saved model for image files or test-set
//! images (`test:INDEX`). It prints them, and with `--out FILE.png` draws them
//! ([`crate::plots::predictions`]); decoding the image files is [`crate::image`]'s.

use std::path::Path;

use super::load::{batch_size_for, check_fits, check_outputs, dataset_kind_of, load_data, load_model};
use super::{set_threads, CliResult, PredictArgs};
use crate::data::Dataset;
use crate::image::SIDE;
use crate::{plots, train};

pub(super) fn run_predict(a: PredictArgs) -> CliResult<()> {
    set_threads(None)?;
    let mut saved = load_model(&a.model_file)?;
    saved.model.set_engine(super::engine(a.reference));
    let prepared = crate::planfile::prepare(&mut saved.model, a.plan.as_deref())?;
    if let Some(message) = prepared.and_then(|p| p.message) {
        eprintln!("{message}");
    }
    // The test set, read once if an input names one of its images.
    let test = match a.inputs.iter().any(|i| i.starts_with("test:")) {
        true => Some(load_data(dataset_kind_of(&saved)?, &a.data)?.1),
        false => None,
    };
    let mut images: Vec<u8> = Vec::new(); // [n, 28, 28]
    let mut truths: Vec<Option<u8>> = Vec::new();
    for input in &a.inputs {
        if let Some(index) = input.strip_prefix("test:") {
            let i: usize =
                index.parse().map_err(|_| format!("{input}: the index after `test:` must be a number"))?;
            let t = test.as_ref().ok_or("the test set was not read")?;
            if i >= t.len() {
                return Err(format!(
                    "{input}: the test set has {} images (0..{})",
                    t.len(),
                    t.len().saturating_sub(1)
                ));
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
    let ds = Dataset { images, labels: vec![0; n], rows: SIDE, cols: SIDE };
    check_fits(&a.model_file, &saved, &ds)?;
    if let Some(t) = &test {
        check_fits(&a.model_file, &saved, t)?;
    }
    let batch = batch_size_for(&a.model_file, &saved, None, n.max(1))?;
    let probs = train::evaluate(&mut saved.model, &saved.normalization, &ds, batch).probabilities;
    check_outputs(&a.model_file, &probs, 0.0)?;
    let k = saved.classes.len().max(1);
    let name = |c: usize| saved.classes.get(c).map_or("?", String::as_str);
    for ((input, p), truth) in a.inputs.iter().zip(probs.chunks(k)).zip(&truths) {
        let mut order: Vec<usize> = (0..p.len()).collect();
        order.sort_by(|&i, &j| p[j].total_cmp(&p[i]).then(i.cmp(&j)));
        let top: Vec<String> =
            order.iter().take(3).map(|&c| format!("{} {:.1}%", name(c), 100.0 * p[c])).collect();
        let truth = truth.map(|t| format!("  (true: {})", name(t as usize))).unwrap_or_default();
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
