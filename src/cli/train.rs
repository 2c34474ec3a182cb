//! The `train` command: the plan, the data, the run folder, then one run or `--runs N` runs,
//! each split, initialised, trained, evaluated on the test set and written to its folder,
//! with a checkpoint at the end of every epoch and every `--checkpoint-every` steps; or
//! `--resume DIR`, which continues such a run from its checkpoint to the same bits. SIGINT
//! and SIGTERM stop it after the step in progress, with a checkpoint (`interrupt.rs`).
//!
//! The training itself is [`crate::train`]'s and the checkpoint format
//! [`crate::checkpoint`]'s; what a resume continues is `resume.rs`'s, the background writer
//! `checkpointer.rs`'s, how the folder's files are written `run_dir.rs`'s and the summary of
//! several runs `multi_run.rs`'s.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde_json::json;

use super::checkpointer::Checkpointer;
use super::interrupt::{signal_name, HoldPoint, Interrupt, TestHold};
use super::load::load_data;
use super::multi_run::{summarize_runs, RunOutcome};
use super::progress::ConsoleObserver;
use super::recipe::recipe_extras;
use super::resume::{self, Session};
use super::{plan_training, run_dir, set_threads, CliResult, TrainArgs, TrainPlan};
use crate::checkpoint::{self, Contents, Decoded, RunInfo};
use crate::data::{self, Dataset, DatasetKind};
use crate::files::write_atomic;
use crate::modelfile::SavedModel;
use crate::planfile;
use crate::plots::curves;
use crate::presets::INPUT_SHAPE;
use crate::train::{self, split_for_run, Advance, Progress, RunStreams, Trainer};
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
    pub(super) session: &'a Session,
    /// What every checkpoint records: the recipe and the data's identity.
    pub(super) recipe: &'a serde_json::Value,
    pub(super) data_id: &'a serde_json::Value,
    pub(super) interrupt: &'a Interrupt,
    pub(super) hold: Option<Arc<TestHold>>,
}

/// How a run begins: afresh, from its checkpoint, or already finished (with `--runs N`).
enum Start {
    Fresh,
    Resume(Decoded, PathBuf),
    Finished(Decoded, PathBuf),
}

/// How a run ended.
enum RunEnd {
    Finished(RunOutcome),
    /// Stopped by a signal, with this exit code.
    Interrupted(i32),
}

/// Runs `train`; returns the exit code (0, or 130/143 after a signal).
pub(super) fn run_train(a: TrainArgs, given: &[String]) -> CliResult<i32> {
    let wall = Instant::now();
    let threads = set_threads(a.threads)?;
    let (session, mut first) = match a.resume.clone() {
        Some(dir) => {
            let (s, d, path) = resume::resume(&a, given, &dir)?;
            (s, Some((d, path)))
        }
        None => {
            let preset = plan_training(&a)?.preset.name;
            (resume::fresh(a, &preset)?, None)
        }
    };
    let a = &session.args;
    let plan = plan_training(a)?;
    let recipe = resume::recipe_json(a)?;
    if a.runs == 1 && first.as_ref().is_some_and(|(d, _)| d.is_finished()) {
        println!(
            "Nothing to resume: the run in {} finished; its files are there (metrics.json).",
            session.out.display()
        );
        return Ok(0);
    }

    let kind = a.dataset.kind();
    let (full_train, test, source) = load_data(kind, &a.data)?;
    println!("Data: {} from {source}", kind.name());
    let data_id = resume::data_identity(&full_train, &test);
    if let Some(info) = &session.resumed {
        resume::check_data(info, &data_id, &source.to_string())?;
    }
    let full_train = match a.limit {
        Some(n) => full_train.take(n),
        None => full_train,
    };
    if a.overwrite {
        run_dir::remove_checkpoints(&session.out)?;
    }
    let interrupt = Interrupt::install()?;
    let hold = TestHold::from_env(&interrupt)?;
    let mut ctx = TrainContext {
        args: a,
        plan: &plan,
        kind,
        source: &source,
        full_train: &full_train,
        test: &test,
        threads,
        run: None,
        session: &session,
        recipe: &recipe,
        data_id: &data_id,
        interrupt: &interrupt,
        hold,
    };
    let out = &session.out;
    if a.runs == 1 {
        let start = match first.take() {
            Some((d, path)) => Start::Resume(d, path),
            None => Start::Fresh,
        };
        return match train_one(&ctx, a.seed, out, start, wall)? {
            RunEnd::Finished(_) => Ok(0),
            RunEnd::Interrupted(code) => Ok(code),
        };
    }

    let mut outcomes = Vec::with_capacity(a.runs);
    for k in 1..=a.runs {
        let seed = a.seed.wrapping_add(k as u64 - 1);
        let dir = out.join(run_dir::run_folder(k));
        println!("\nRun {k} of {}: seed {seed}, folder {}", a.runs, dir.display());
        let start = match (k, first.take()) {
            (1, Some((d, path))) => classify(d, path, &session.group),
            _ if session.resumed.is_some() => match checkpoint::read(&dir)? {
                Some(l) => {
                    l.warnings.iter().for_each(|w| eprintln!("warning: {w}"));
                    classify(l.decoded, l.path, &session.group)
                }
                None => Start::Fresh,
            },
            _ => Start::Fresh,
        };
        ctx.run = Some((k, a.runs));
        match train_one(&ctx, seed, &dir, start, Instant::now())? {
            RunEnd::Finished(o) => outcomes.push(o),
            RunEnd::Interrupted(code) => return Ok(code),
        }
        if k < a.runs {
            if let Some(code) = interrupt.requested() {
                print_interrupted(code, &format!("after run {k} of {}", a.runs), Some(out));
                return Ok(code);
            }
        }
    }
    summarize_runs(&ctx, &outcomes, out, wall)?;
    Ok(0)
}

/// A run's checkpoint as a [`Start`]: one left by another command (an `--overwrite`n
/// folder) does not count.
fn classify(d: Decoded, path: PathBuf, group: &str) -> Start {
    if d.info.group != group {
        println!("{} belongs to an earlier command's run: starting this run afresh", path.display());
        Start::Fresh
    } else if d.is_finished() {
        Start::Finished(d, path)
    } else {
        Start::Resume(d, path)
    }
}

/// "epoch 2, batch 37 of 94", or "the end of epoch 2" between two epochs (as
/// [`Decoded::position`] says it).
fn position(p: &Progress, batches: usize) -> String {
    if p.batch == 0 && p.epoch <= 1 {
        "the start of training".into()
    } else if p.batch == 0 {
        format!("the end of epoch {}", p.epoch - 1)
    } else {
        format!("epoch {}, batch {} of {batches}", p.epoch, p.batch)
    }
}

/// A path as a shell word: quoted when it holds anything but plain characters.
fn shell_word(p: &Path) -> String {
    let s = p.display().to_string();
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "/._-+=:,@".contains(c)) {
        s
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The stop message, and the command that resumes from the run folder `out` (if there is a
/// checkpoint to resume from).
fn print_interrupted(code: i32, what: &str, out: Option<&PathBuf>) {
    println!("Interrupted by {}: stopped {what}.", signal_name(code));
    if let Some(out) = out {
        let program = std::env::args().next().unwrap_or_else(|| "fmnist".into());
        println!("Resume with: {program} train --resume {}", shell_word(out));
    }
}

/// Times carried over from the sessions before this one.
struct Clock {
    started: Instant,
    wall_before: f64,
    checkpoint_before: f64,
    writer_before: f64,
}

/// Saves a checkpoint of `trainer` in the background; prints an earlier write's failure.
fn save(
    ckpt: &mut Checkpointer,
    info: &mut RunInfo,
    clock: &Clock,
    trainer: &Trainer,
    model: &Sequential,
    observer: &ConsoleObserver,
) {
    info.wall_seconds = clock.wall_before + clock.started.elapsed().as_secs_f64();
    info.checkpoint_seconds = clock.checkpoint_before + ckpt.seconds;
    info.checkpoint_writer_cpu_seconds = clock.writer_before + ckpt.writer_cpu_seconds;
    let label = position(trainer.progress(), trainer.batches_per_epoch());
    let info = &*info;
    if let Some(w) =
        ckpt.start(|| checkpoint::encode_training(info, &trainer.snapshot(model)), label, trainer.steps())
    {
        observer.warn(&w);
    }
}

/// One training run with `seed`, in `out`; prints what `train` always printed.
fn train_one(ctx: &TrainContext, seed: u64, out: &Path, start: Start, wall: Instant) -> CliResult<RunEnd> {
    let (plan, cfg, test) = (ctx.plan, &ctx.plan.cfg, ctx.test);
    let (k, runs) = ctx.run.unwrap_or((1, 1));
    let mut streams = RunStreams::new(seed);
    let (train_set, val_set) = split_for_run(ctx.full_train, cfg, plan.val_split, &mut streams.split);
    if train_set.is_empty() {
        return Err("no training images left after the validation split".into());
    }
    let copies = cfg.static_augment.copies;
    let train_desc = if cfg.static_augment.copies_before_split() {
        format!(
            "{} originals and {copies} rotated/flipped copies of each, then split: {} train",
            ctx.full_train.len(),
            train_set.len()
        )
    } else if copies > 0 {
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
    if let Start::Finished(d, path) = start {
        return finished_before(ctx, seed, model, d, &path);
    }
    // How each layer runs (`crate::planfile`): `--plan FILE`; on a resume, the run's own
    // `plan.json`, so that it continues to the same bits; else measured or cached. Recorded
    // in the run folder before the first step.
    let run_plan = out.join(planfile::RUN_PLAN_FILE);
    let replay = match (&ctx.args.plan, &start) {
        (Some(p), _) => Some(p.clone()),
        (None, Start::Resume(..)) if run_plan.is_file() => Some(run_plan.clone()),
        _ => None,
    };
    let prepared = planfile::prepare(&mut model, replay.as_deref())?;
    let plan_json = prepared.as_ref().map(|p| planfile::to_json(&p.plan));
    if let (Some(message), 1) = (prepared.as_ref().and_then(|p| p.message.as_ref()), k) {
        println!("{message}");
    }
    if k == 1 {
        println!("Model: {} - {}", plan.preset.name, plan.preset.description);
        print!("{}", model.summary());
    }
    println!(
        "Training {} epochs, batch {}, {}{}",
        cfg.epochs,
        cfg.batch_size,
        cfg.optimizer,
        recipe_extras(cfg)
    );

    let mut trainer = Trainer::new(&model, cfg, &train_set, &val_set, &mut streams.fit);
    let batches = trainer.batches_per_epoch();
    let s = ctx.session;
    let mut info = RunInfo {
        program: resume::program(),
        group: s.group.clone(),
        run: k,
        runs,
        seed,
        args: s.argv.clone(),
        recipe: ctx.recipe.clone(),
        data: ctx.data_id.clone(),
        wall_seconds: 0.0,
        checkpoint_seconds: 0.0,
        checkpoint_writer_cpu_seconds: 0.0,
    };
    let mut clock = Clock { started: wall, wall_before: 0.0, checkpoint_before: 0.0, writer_before: 0.0 };
    // The console's lines and bars, and curves.png redrawn after every epoch (`pictures.rs`).
    let title = format!("Training curves: {}, seed {seed}", plan.preset.name);
    // A fresh run over another run's folder (`--overwrite`) draws its curves only with its
    // final files, so the kept run stays whole until they replace it.
    let holds_a_run =
        ["config.json", "model.safetensors", "metrics.json"].iter().any(|f| out.join(f).exists());
    let replacing = matches!(start, Start::Fresh) && ctx.args.overwrite && holds_a_run;
    // The plan on disk before the first step, for a resume; a run replacing another keeps
    // that run's files whole until its own are written, plan.json included.
    if let (Some(text), false) = (&plan_json, replacing) {
        write_atomic(&run_plan, text.as_bytes())
            .map_err(|e| format!("cannot write {}: {e}", run_plan.display()))?;
    }
    let mut observer =
        super::pictures::CurvesObserver::new(ConsoleObserver::new(), out, title, curves::Targets::of(cfg))
            .live(!replacing);
    let mut ckpt = match start {
        Start::Resume(d, path) => {
            let shown = path.display();
            let at = d.position(batches);
            let ck = d.into_checkpoint(model.params()).map_err(|e| format!("{shown}: {e}"))?;
            (clock.wall_before, clock.checkpoint_before, clock.writer_before) =
                (ck.info.wall_seconds, ck.info.checkpoint_seconds, ck.info.checkpoint_writer_cpu_seconds);
            match ck.contents {
                Contents::Training(state) => {
                    trainer.restore(&mut model, *state).map_err(|e| format!("{shown}: {e}"))?
                }
                Contents::Start => {} // the trainer as new is the run at its start
                Contents::Finished(_) => unreachable!("classified as finished"),
            }
            println!("Resuming from {shown}: {}", position(trainer.progress(), batches));
            observer = observer.with_history(&trainer.progress().history);
            Checkpointer::new(out, k, Some(at), ctx.hold.clone())
        }
        _ => {
            // The run's identity on disk before the first step: a resume from it starts afresh.
            let mut c = Checkpointer::new(out, k, None, ctx.hold.clone());
            let start = checkpoint::encode_start(&info);
            if let Some(w) = c.start(|| start, position(trainer.progress(), batches), 0) {
                observer.inner().warn(&w);
            }
            c
        }
    };

    let every = ctx.args.checkpoint_every;
    let (mut since, mut dirty) = (0usize, false);
    loop {
        if let Some(code) = ctx.interrupt.requested() {
            observer.inner_mut().clear();
            println!(
                "{}: writing a checkpoint, then stopping (press Ctrl-C again to quit at once)",
                signal_name(code)
            );
            if dirty {
                save(&mut ckpt, &mut info, &clock, &trainer, &model, observer.inner());
            }
            let here = position(trainer.progress(), batches);
            if let Some(w) = ckpt.wait() {
                observer.inner().warn(&w);
            }
            let saved = match ckpt.last_good() {
                Some(l) if l == here => format!("checkpoint in {}", ckpt.path().display()),
                Some(l) => format!("the last good checkpoint is at {l}"),
                None => "no checkpoint could be written".to_string(),
            };
            print_interrupted(
                code,
                &format!("at {here}; {saved}"),
                ckpt.last_good().is_some().then_some(&s.out),
            );
            return Ok(RunEnd::Interrupted(code));
        }
        if let (Some(h), false) = (&ctx.hold, trainer.is_done()) {
            let p = trainer.progress();
            let here = if p.batch < batches {
                HoldPoint::Step(trainer.steps())
            } else {
                HoldPoint::Validation(p.epoch)
            };
            if h.is_at(k, here) {
                // The checkpoints written so far are complete when the test kills the run here.
                if let Some(w) = ckpt.wait() {
                    observer.inner().warn(&w);
                }
                h.reach(k, here);
            }
        }
        match trainer.advance(&mut model, &mut observer) {
            Advance::Done => break,
            Advance::Step(_) => {
                (since, dirty) = (since + 1, true);
                if every > 0 && since >= every {
                    save(&mut ckpt, &mut info, &clock, &trainer, &model, observer.inner());
                    (since, dirty) = (0, false);
                }
            }
            Advance::EpochEnd(_) => {
                save(&mut ckpt, &mut info, &clock, &trainer, &model, observer.inner());
                (since, dirty) = (0, false);
            }
        }
    }
    // The last checkpoint's flush to disk overlaps the test evaluation; it is waited for
    // before the run's files are written.
    let result = trainer.finish(&mut model);
    let best_val_loss = result.history[result.best_epoch - 1].val_loss;
    if !val_set.is_empty() {
        println!(
            "Best validation loss {:.4} at epoch {}: keeping those weights{}",
            best_val_loss.unwrap_or(f32::NAN),
            result.best_epoch,
            if cfg.ema.is_some() { " (the moving average's)" } else { "" }
        );
    } else if cfg.ema.is_some() {
        println!("Keeping the weights' moving average");
    }

    let t_eval = Instant::now();
    let eval = train::evaluate(&mut model, &cfg.normalization, test, 1000);
    let eval_secs = t_eval.elapsed().as_secs_f32();
    if let Some(w) = ckpt.wait() {
        observer.inner().warn(&w);
    }
    info.checkpoint_seconds = clock.checkpoint_before + ckpt.seconds;
    info.checkpoint_writer_cpu_seconds = clock.writer_before + ckpt.writer_cpu_seconds;
    let wall_seconds = (clock.wall_before + clock.started.elapsed().as_secs_f64()) as f32;
    println!(
        "Test loss {:.4}, test accuracy {:.2}% ({} images, {:.1}s)",
        eval.loss,
        100.0 * eval.accuracy,
        test.len(),
        eval_secs
    );
    println!("Wall time {wall_seconds:.1}s (training {:.1}s)", result.train_seconds);

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
        "data_md5": ctx.data_id,
    });
    let train_ips =
        result.history.iter().map(|s| s.images_per_second).sum::<f32>() / result.history.len() as f32;
    let mut metrics = json!({
        "test_accuracy": eval.accuracy,
        "test_loss": eval.loss,
        "epochs": cfg.epochs,
        "best_epoch": result.best_epoch,
        "wall_seconds": wall_seconds,
        "train_seconds": result.train_seconds,
        "checkpoint_seconds": info.checkpoint_seconds,
        "checkpoint_writer_cpu_seconds": info.checkpoint_writer_cpu_seconds,
        "train_images_per_second": train_ips,
        "test_images": test.len(),
        "preset": plan.preset.name,
        "seed": seed,
        "threads": ctx.threads,
    });
    if let Some((k, n)) = ctx.run {
        for v in [&mut config_json, &mut metrics] {
            v["run"] = json!(k);
            v["runs"] = json!(n);
        }
    }
    info.wall_seconds = wall_seconds as f64;
    let finished = checkpoint::encode_finished(
        &info,
        model.params(),
        &result.history,
        result.best_epoch,
        result.train_seconds as f64,
    );
    let saved = SavedModel {
        model,
        normalization: cfg.normalization,
        dataset: ctx.kind.folder().to_string(),
        classes: ctx.kind.class_names().iter().map(|s| s.to_string()).collect(),
        preset: plan.preset.name.to_string(),
    };
    let mut staged = || {
        if let Some(h) = &ctx.hold {
            h.reach(k, HoldPoint::Results);
        }
    };
    let kept = ckpt.last_good().map(str::to_string);
    run_dir::write_results(
        out,
        &config_json,
        &saved,
        &result.history,
        &metrics,
        plan_json.as_deref(),
        &mut staged,
    )
    .map_err(|e| match &kept {
        Some(at) => format!(
            "{e}; nothing in {} was replaced; its checkpoint at {at} is kept: once the fault is fixed, \
             `train --resume {}` continues from it",
            out.display(),
            shell_word(&s.out)
        ),
        None => format!("{e}; nothing in {} was replaced", out.display()),
    })?;
    match checkpoint::write_now(out, &finished) {
        // The finished checkpoint is complete and synced; the training checkpoint it rotated
        // out (weights, optimizer state: several times the size) has no further use.
        Ok(()) => {
            let _ = std::fs::remove_file(out.join(checkpoint::PREVIOUS));
        }
        Err(e) => eprintln!(
            "warning: the run's files are written, but not its final checkpoint ({e}): a resume would evaluate it again"
        ),
    }
    // After the model and metrics are safe: the pictures and report.html (warnings only).
    let images = super::pictures::Images { test, train: Some(ctx.full_train) };
    let _ = super::pictures::write_run_report(out, &eval, &images, "Written by fmnist train");
    println!("Wrote {}", out.display());
    Ok(RunEnd::Finished(RunOutcome {
        seed,
        eval,
        best_epoch: result.best_epoch,
        best_val_loss,
        wall_seconds,
        train_seconds: result.train_seconds,
    }))
}

/// A run of `--runs N` that a resume finds finished: its final weights come from its last
/// checkpoint and are evaluated again for the summary (evaluation is deterministic).
fn finished_before(
    ctx: &TrainContext,
    seed: u64,
    mut model: Sequential,
    d: Decoded,
    path: &Path,
) -> CliResult<RunEnd> {
    let shown = path.display();
    let ck = d.into_checkpoint(model.params()).map_err(|e| format!("{shown}: {e}"))?;
    let Contents::Finished(f) = ck.contents else { unreachable!("classified as finished") };
    for (p, v) in model.params_mut().iter_mut().zip(f.params) {
        p.value.data_mut().copy_from_slice(&v);
    }
    let eval = train::evaluate(&mut model, &ctx.plan.cfg.normalization, ctx.test, 1000);
    let best_val_loss = f.history.get(f.best_epoch.wrapping_sub(1)).and_then(|s| s.val_loss);
    println!(
        "Finished before (from {shown}): best epoch {}, test loss {:.4}, test accuracy {:.2}%",
        f.best_epoch,
        eval.loss,
        100.0 * eval.accuracy
    );
    Ok(RunEnd::Finished(RunOutcome {
        seed,
        eval,
        best_epoch: f.best_epoch,
        best_val_loss,
        wall_seconds: ck.info.wall_seconds as f32,
        train_seconds: f.train_seconds as f32,
    }))
}
