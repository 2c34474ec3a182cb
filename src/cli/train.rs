//! The `train` command: the plan, the data, the run folder, then one run or `--runs N` runs,
//! each split, initialised, trained, evaluated on the test set and written to its folder. The
//! training itself is [`crate::train`]'s; how the folder's files are written is `run_dir.rs`'s,
//! the summary of several runs `multi_run.rs`'s, and the pictures and report `pictures.rs`'s.

use std::path::Path;
use std::time::Instant;

use serde_json::json;

use super::load::load_data;
use super::multi_run::{summarize_runs, RunOutcome};
use super::progress::ConsoleObserver;
use super::recipe::recipe_extras;
use super::{plan_training, run_dir, set_threads, CliResult, TrainArgs, TrainPlan};
use crate::data::{self, Dataset, DatasetKind};
use crate::modelfile::SavedModel;
use crate::presets::INPUT_SHAPE;
use crate::train::{self, RunStreams};
use crate::{Init, Sequential};

/// Everything the runs of one `train` command share.
pub(super) struct TrainContext<'a> {
    pub(super) args: &'a TrainArgs,
    pub(super) plan: &'a TrainPlan,
    pub(super) kind: DatasetKind,
    pub(super) source: &'a data::DataSource,
    pub(super) full_train: &'a Dataset,
    pub(super) test: &'a Dataset,
    pub(super) threads: usize,
    /// `Some((k, n))` for run k (1-based) of n when --runs is above 1.
    pub(super) run: Option<(usize, usize)>,
}

pub(super) fn run_train(a: TrainArgs) -> CliResult<()> {
    let wall = Instant::now();
    let threads = set_threads(a.threads)?;
    let plan = plan_training(&a)?;

    let kind = a.dataset.kind();
    let (full_train, test, source) = load_data(kind, &a.data)?;
    println!("Data: {} from {source}", kind.name());
    let full_train = match a.limit {
        Some(n) => full_train.take(n),
        None => full_train,
    };
    let out = a.out.clone().unwrap_or_else(|| run_dir::default_dir(&plan.preset.name));
    let mut ctx = TrainContext {
        args: &a,
        plan: &plan,
        kind,
        source: &source,
        full_train: &full_train,
        test: &test,
        threads,
        run: None,
    };
    if a.runs == 1 {
        train_one(&ctx, a.seed, &out, wall)?;
        return Ok(());
    }

    let mut outcomes = Vec::with_capacity(a.runs);
    for k in 1..=a.runs {
        let seed = a.seed.wrapping_add(k as u64 - 1);
        let dir = out.join(run_dir::run_folder(k));
        println!("\nRun {k} of {}: seed {seed}, folder {}", a.runs, dir.display());
        ctx.run = Some((k, a.runs));
        outcomes.push(train_one(&ctx, seed, &dir, Instant::now())?);
    }
    summarize_runs(&ctx, &outcomes, &out, wall)
}

/// One training run with `seed`, written to `out`; prints what `train` always printed.
fn train_one(ctx: &TrainContext, seed: u64, out: &Path, wall: Instant) -> CliResult<RunOutcome> {
    let (plan, cfg, test) = (ctx.plan, &ctx.plan.cfg, ctx.test);
    let mut streams = RunStreams::new(seed);
    let (train_set, val_set) = data::train_val_split(ctx.full_train, plan.val_split, &mut streams.split);
    if train_set.is_empty() {
        return Err("no training images left after the validation split".into());
    }
    let copies = cfg.static_augment.copies;
    let train_desc = if copies > 0 {
        format!(
            "{} train ({} with {copies} rotated/flipped copies of each)",
            train_set.len(),
            train_set.len() * (1 + copies)
        )
    } else {
        format!("{} train", train_set.len())
    };
    println!(
        "Images: {train_desc}, {} validation, {} test; engine: {}; SIMD: {}; threads: {}",
        val_set.len(),
        test.len(),
        super::engine(ctx.args.reference).name(),
        kernels::simd::describe(),
        ctx.threads
    );

    let mut model = Sequential::new(&INPUT_SHAPE, &plan.layers, Init::GlorotUniform, &mut streams.init)
        .map_err(|e| e.to_string())?;
    model.set_engine(super::engine(ctx.args.reference));
    if ctx.run.is_none_or(|(k, _)| k == 1) {
        println!("Model: {} - {}", plan.preset.name, plan.preset.description);
        print!("{}", model.summary());
    }

    let mut config_json = json!({
        "preset": plan.preset.name,
        "dataset": ctx.kind.folder(),
        "data_source": ctx.source.to_string(),
        "seed": seed,
        "threads": ctx.threads,
        "simd": kernels::simd::describe(),
        "engine": super::engine(ctx.args.reference).name(),
        "val_split": plan.val_split,
        "limit": ctx.args.limit,
        "train_images": train_set.len(),
        "val_images": val_set.len(),
        "train": cfg,
        "layers": plan.layers,
    });
    if let Some((k, n)) = ctx.run {
        config_json["run"] = json!(k);
        config_json["runs"] = json!(n);
    }
    run_dir::write_config(out, &config_json)?;
    println!(
        "Training {} epochs, batch {}, {:?}{}",
        cfg.epochs,
        cfg.batch_size,
        cfg.optimizer,
        recipe_extras(cfg)
    );

    // The console's lines and bars, and curves.png redrawn after every epoch.
    let title = format!("Training curves: {}, seed {seed}", plan.preset.name);
    let mut observer = super::pictures::CurvesObserver::new(ConsoleObserver::new(), out, title);
    let result = train::fit(&mut model, cfg, &train_set, &val_set, &mut streams.fit, &mut observer);
    let best_val_loss = result.history[result.best_epoch - 1].val_loss;
    if !val_set.is_empty() {
        println!(
            "Best validation loss {:.4} at epoch {}: keeping those weights",
            best_val_loss.unwrap_or(f32::NAN),
            result.best_epoch
        );
    }

    let t_eval = Instant::now();
    let eval = train::evaluate(&mut model, &cfg.normalization, test, 1000);
    let eval_secs = t_eval.elapsed().as_secs_f32();
    let wall_seconds = wall.elapsed().as_secs_f32();
    println!(
        "Test loss {:.4}, test accuracy {:.2}% ({} images, {:.1}s)",
        eval.loss,
        100.0 * eval.accuracy,
        test.len(),
        eval_secs
    );
    println!("Wall time {wall_seconds:.1}s (training {:.1}s)", result.train_seconds);

    let saved = SavedModel {
        model,
        normalization: cfg.normalization,
        dataset: ctx.kind.folder().to_string(),
        classes: ctx.kind.class_names().iter().map(|s| s.to_string()).collect(),
        preset: plan.preset.name.to_string(),
    };
    let train_ips =
        result.history.iter().map(|s| s.images_per_second).sum::<f32>() / result.history.len() as f32;
    let mut metrics = json!({
        "test_accuracy": eval.accuracy,
        "test_loss": eval.loss,
        "epochs": cfg.epochs,
        "best_epoch": result.best_epoch,
        "wall_seconds": wall_seconds,
        "train_seconds": result.train_seconds,
        "train_images_per_second": train_ips,
        "test_images": test.len(),
        "preset": plan.preset.name,
        "seed": seed,
        "threads": ctx.threads,
    });
    if let Some((k, n)) = ctx.run {
        metrics["run"] = json!(k);
        metrics["runs"] = json!(n);
    }
    run_dir::write_results(out, &saved, &result.history, &metrics)?;
    // After the model and metrics are safe: the pictures and report.html (warnings only).
    let images = super::pictures::Images { test, train: Some(ctx.full_train) };
    let _ = super::pictures::write_run_report(out, &eval, &images, "Written by fmnist train");
    println!("Wrote {}", out.display());
    Ok(RunOutcome {
        seed,
        eval,
        best_epoch: result.best_epoch,
        best_val_loss,
        wall_seconds,
        train_seconds: result.train_seconds,
    })
}
