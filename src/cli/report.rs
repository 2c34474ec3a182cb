//! The `report` command: redraws a run folder's pictures (`curves.png`, `confusion.png`,
//! `samples.png`, `errors.png`) and its `report.html` from the folder's files, evaluating the
//! saved model(s) on the test set again (the folder keeps no per-image predictions). A folder
//! of `train --runs N` gets each `run-K/` redrawn and the top-level page of all the runs.

use std::path::{Path, PathBuf};

use super::load::{dataset_kind_of, load_data, load_model};
use super::pictures::{write_run_report, write_runs_report, Images};
use super::{run_dir, set_threads, CliResult, ReportArgs};
use crate::data::Dataset;
use crate::modelfile::SavedModel;
use crate::train::{self, Evaluation};

/// The `limit` a run was trained with (its `config.json`), so the samples come from the same
/// training images.
fn limit_of(dir: &Path) -> Option<usize> {
    let text = std::fs::read_to_string(dir.join("config.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v.get("limit")?.as_u64().map(|n| n as usize)
}

fn model_in(dir: &Path) -> CliResult<SavedModel> {
    let path = dir.join("model.safetensors");
    if !path.is_file() {
        return Err(format!("{} is missing: not a run folder written by `train`", path.display()));
    }
    load_model(&path)
}

fn evaluate(saved: &mut SavedModel, test: &Dataset) -> Evaluation {
    train::evaluate(&mut saved.model, &saved.normalization, test, 1000)
}

pub(super) fn run_report(a: ReportArgs) -> CliResult<()> {
    set_threads(a.threads)?;
    let dir = &a.run_dir;
    if !dir.is_dir() {
        return Err(format!("{}: no such folder", dir.display()));
    }
    let multi = dir.join("summary.json").is_file();
    let run_dirs: Vec<PathBuf> = if multi {
        (1..).map(|k| dir.join(run_dir::run_folder(k))).take_while(|d| d.is_dir()).collect()
    } else {
        vec![dir.clone()]
    };
    if run_dirs.is_empty() {
        return Err(format!("{} has summary.json but no run-1/ folder", dir.display()));
    }
    let mut models = run_dirs.iter().map(|d| model_in(d)).collect::<CliResult<Vec<_>>>()?;
    let kind = dataset_kind_of(&models[0])?;
    let (full_train, test, source) = load_data(kind, &a.data)?;
    println!("Data: {} from {source}", kind.name());
    let train_images = match limit_of(&run_dirs[0]) {
        Some(n) => full_train.take(n),
        None => full_train,
    };
    let images = Images { test: &test, train: Some(&train_images) };
    let mut evals = Vec::with_capacity(models.len());
    let mut ok = true;
    for (d, saved) in run_dirs.iter().zip(&mut models) {
        let eval = evaluate(saved, &test);
        println!("{}: test accuracy {:.2}%, test loss {:.4}", d.display(), 100.0 * eval.accuracy, eval.loss);
        ok &= write_run_report(d, &eval, &images, "Redrawn by fmnist report");
        evals.push(eval);
    }
    if multi {
        let refs: Vec<&Evaluation> = evals.iter().collect();
        ok &= write_runs_report(dir, &refs, &images, "Redrawn by fmnist report");
    }
    if !ok {
        return Err(format!("could not write every report.html under {} (see the warnings)", dir.display()));
    }
    println!("Wrote {}", dir.join("report.html").display());
    Ok(())
}
