//! The figures over the runs of `train --runs N`: each run's test figures, the mean and sample
//! standard deviation of the test accuracy and loss, and the ensemble of all the models,
//! printed and written to `summary.json`. The statistics themselves are
//! [`crate::train::mean_and_sample_std`] and [`crate::train::ensemble`]; running the runs is
//! `train.rs`'s.

use std::path::Path;
use std::time::Instant;

use serde_json::json;

use super::run_dir;
use super::train::TrainContext;
use super::CliResult;
use crate::train::{self, Evaluation};

/// What one run leaves for the summary of several.
pub(super) struct RunOutcome {
    pub(super) seed: u64,
    pub(super) eval: Evaluation,
    pub(super) best_epoch: usize,
    pub(super) best_val_loss: Option<f32>,
    pub(super) wall_seconds: f32,
    pub(super) train_seconds: f32,
}

/// Prints and writes (`summary.json`) the figures of several runs: each run's, the mean and
/// sample standard deviation of the test accuracy, and the ensemble of all models.
pub(super) fn summarize_runs(
    ctx: &TrainContext,
    outcomes: &[RunOutcome],
    out: &Path,
    wall: Instant,
) -> CliResult<()> {
    let n = outcomes.len();
    println!("\nSummary of {n} runs of {}:", ctx.plan.preset.name);
    for (k, o) in outcomes.iter().enumerate() {
        println!(
            "  run-{}  seed {}  test accuracy {:.2}%  test loss {:.4}  best epoch {}",
            k + 1,
            o.seed,
            100.0 * o.eval.accuracy,
            o.eval.loss,
            o.best_epoch
        );
    }
    let accs: Vec<f64> = outcomes.iter().map(|o| o.eval.accuracy as f64).collect();
    let losses: Vec<f64> = outcomes.iter().map(|o| o.eval.loss as f64).collect();
    let (mean, std) = train::mean_and_sample_std(&accs);
    let (loss_mean, loss_std) = train::mean_and_sample_std(&losses);
    println!(
        "Test accuracy over {n} runs: mean {:.2}%, sample std {:.2}% (n-1); test loss mean {loss_mean:.4}",
        100.0 * mean,
        100.0 * std
    );
    let probs: Vec<&[f32]> = outcomes.iter().map(|o| o.eval.probabilities.as_slice()).collect();
    let k = ctx.kind.class_names().len();
    let ens = train::ensemble(&probs, &ctx.test.labels, k);
    println!(
        "Ensemble of the {n} models (mean of their softmax outputs): test loss {:.4}, test accuracy {:.2}%",
        ens.loss,
        100.0 * ens.accuracy
    );
    let wall_seconds = wall.elapsed().as_secs_f32();
    println!("Wall time {wall_seconds:.1}s");

    let per_run: Vec<serde_json::Value> = outcomes
        .iter()
        .enumerate()
        .map(|(k, o)| {
            json!({
                "run": k + 1,
                "folder": run_dir::run_folder(k + 1),
                "seed": o.seed,
                "test_accuracy": o.eval.accuracy,
                "test_loss": o.eval.loss,
                "best_epoch": o.best_epoch,
                "best_val_loss": o.best_val_loss,
                "wall_seconds": o.wall_seconds,
                "train_seconds": o.train_seconds,
            })
        })
        .collect();
    let summary = json!({
        "preset": ctx.plan.preset.name,
        "dataset": ctx.kind.folder(),
        "runs": n,
        "base_seed": ctx.args.seed,
        "per_run": per_run,
        "test_accuracy_mean": mean,
        "test_accuracy_std": std,
        "std": "sample standard deviation (divisor n - 1)",
        "test_loss_mean": loss_mean,
        "test_loss_std": loss_std,
        "ensemble_test_accuracy": ens.accuracy,
        "ensemble_test_loss": ens.loss,
        "ensemble": "mean of the models' softmax probabilities; loss -ln(max(p_true, 1e-7))",
        "test_images": ctx.test.len(),
        "wall_seconds": wall_seconds,
    });
    let path = run_dir::write_summary(out, &summary)?;
    println!("Wrote {}", path.display());
    // The runs' curves, the ensemble's pictures and the top-level report.html (warnings only).
    let evals: Vec<&Evaluation> = outcomes.iter().map(|o| &o.eval).collect();
    let images = super::pictures::Images { test: ctx.test, train: Some(ctx.full_train) };
    let _ = super::pictures::write_runs_report(out, &evals, &images, "Written by fmnist train --runs");
    Ok(())
}
