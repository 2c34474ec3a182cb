//! The `eval` command: a saved model's test loss and accuracy (optionally with flip
//! test-time augmentation), confusion matrix, per-class report and most confused pairs. It
//! prints them, and with `--report DIR` draws them (`pictures.rs`); the tables are
//! [`crate::report`]'s and the evaluation [`crate::train`]'s.

use super::load::{dataset_kind_of, load_data, load_model};
use super::{set_threads, CliResult, EvalArgs};
use crate::files::write_atomic;
use crate::report;
use crate::train;

pub(super) fn run_eval(a: EvalArgs) -> CliResult<()> {
    set_threads(a.threads)?;
    if a.batch_size == 0 {
        return Err("--batch-size must be at least 1".into());
    }
    let mut saved = load_model(&a.model_file)?;
    saved.model.set_engine(super::engine(a.reference));
    let kind = dataset_kind_of(&saved)?;
    let (_, test, source) = load_data(kind, &a.data)?;
    println!("Model: {} ({})", a.model_file.display(), saved.preset);
    println!("Data: {} test set from {source}; engine: {}", kind.name(), saved.model.engine().name());
    let eval = if a.tta {
        train::evaluate_flip_tta(&mut saved.model, &saved.normalization, &test, a.batch_size)
    } else {
        train::evaluate(&mut saved.model, &saved.normalization, &test, a.batch_size)
    };
    println!(
        "Test loss {:.4}, test accuracy {:.2}% ({} images{})\n",
        eval.loss,
        100.0 * eval.accuracy,
        test.len(),
        if a.tta { ", each averaged with its mirror image" } else { "" }
    );
    if let Some(path) = &a.predictions {
        let mut csv = String::from("index,label,predicted\n");
        for (i, (label, predicted)) in test.labels.iter().zip(&eval.predictions).enumerate() {
            csv += &format!("{i},{label},{predicted}\n");
        }
        write_atomic(path, csv.as_bytes()).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        println!("Predictions written to {}", path.display());
    }
    let m = report::confusion_matrix(&test.labels, &eval.predictions, saved.classes.len());
    println!("Confusion matrix (rows: true class, columns: predicted class)");
    println!("{}", report::confusion_table(&m, &saved.classes));
    println!("{}", report::classification_report(&m, &saved.classes));
    println!("Most confused pairs (both directions):");
    for (x, y, n) in report::most_confused(&m, 5) {
        println!("  {:>4}  {} <-> {}", n, saved.classes[x], saved.classes[y]);
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
