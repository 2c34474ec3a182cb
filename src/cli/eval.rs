//! The `eval` command: a saved model's test loss and accuracy (optionally with flip
//! test-time augmentation), confusion matrix, per-class report and most confused pairs. It
//! prints them, and with `--report DIR` draws them (`pictures.rs`); the tables are
//! [`crate::report`]'s and the evaluation [`crate::train`]'s.

use std::path::Path;

use super::load::{batch_size_for, check_fits, check_outputs, dataset_kind_of, load_data, load_model};
use super::{set_threads, CliResult, EvalArgs};
use crate::files::write_atomic;
use crate::report;
use crate::train;

/// `--batch-size` when not given (lowered for a model whose activations would not fit).
pub(super) const DEFAULT_BATCH: usize = 1000;

pub(super) fn run_eval(a: EvalArgs) -> CliResult<()> {
    set_threads(a.threads)?;
    if let Some(path) = &a.predictions {
        if same_file(path, &a.model_file) {
            return Err(format!(
                "--predictions {} would overwrite the model file; name another file",
                path.display()
            ));
        }
    }
    let mut saved = load_model(&a.model_file)?;
    let batch_size = batch_size_for(&a.model_file, &saved, a.batch_size, DEFAULT_BATCH)?;
    saved.model.set_engine(super::engine(a.reference));
    let prepared = crate::planfile::prepare(&mut saved.model, a.plan.as_deref())?;
    if let Some(message) = prepared.and_then(|p| p.message) {
        eprintln!("{message}");
    }
    let kind = dataset_kind_of(&saved)?;
    let (_, test, source) = load_data(kind, &a.data)?;
    check_fits(&a.model_file, &saved, &test)?;
    let eval = if a.tta {
        train::evaluate_flip_tta(&mut saved.model, &saved.normalization, &test, batch_size)
    } else {
        train::evaluate(&mut saved.model, &saved.normalization, &test, batch_size)
    };
    check_outputs(&a.model_file, &eval.probabilities, eval.loss)?;
    println!("Model: {} ({})", a.model_file.display(), saved.preset);
    println!("Data: {} test set from {source}; engine: {}", kind.name(), saved.model.engine().name());
    println!(
        "Test loss {:.4}, test accuracy {:.2}% ({} images{})\n",
        eval.loss,
        100.0 * eval.accuracy,
        test.len(),
        if a.tta { ", each averaged with its mirror image" } else { "" }
    );
    if let Some(path) = &a.predictions {
        let logits = train::logits(&mut saved.model, &saved.normalization, &test, batch_size);
        let k = saved.classes.len();
        let head: Vec<String> = (0..k).map(|c| format!("logit_{c}")).collect();
        let mut csv = format!("index,label,predicted,{}\n", head.join(","));
        for (i, ((label, predicted), z)) in
            test.labels.iter().zip(&eval.predictions).zip(logits.chunks(k)).enumerate()
        {
            let z: Vec<String> = z.iter().map(|v| format!("{v:e}")).collect();
            csv += &format!("{i},{label},{predicted},{}\n", z.join(","));
        }
        write_atomic(path, csv.as_bytes()).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        println!("Predictions written to {}", path.display());
    }
    let m = report::confusion_matrix(&test.labels, &eval.predictions, saved.classes.len());
    println!("Confusion matrix (rows: true class, columns: predicted class)");
    println!("{}", report::confusion_table(&m, &saved.classes));
    println!("{}", report::classification_report(&m, &saved.classes));
    println!("Most confused pairs (both directions):");
    let name = |c: usize| saved.classes.get(c).map_or("?", String::as_str);
    for (x, y, n) in report::most_confused(&m, 5) {
        println!("  {:>4}  {} <-> {}", n, name(x), name(y));
    }
    if let Some(dir) = &a.report {
        if super::pictures::write_eval_report(
            dir,
            &a.model_file,
            &saved,
            &eval,
            &test,
            "Written by fmnist eval",
        ) {
            println!("\nReport: {}", dir.join("report.html").display());
        }
    }
    Ok(())
}

/// Whether `a` and `b` name the same existing file (through links and relative paths).
fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}
