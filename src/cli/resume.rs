//! What a `train` command continues or starts: a fresh run into an empty folder, or
//! `train --resume DIR`, whose recipe comes from DIR's checkpoint.
//!
//! A checkpoint records the flags of the command that started the run ([`RunInfo::args`]).
//! On resume they are parsed again, and every flag given with `--resume` replaces the saved
//! one; the result must resolve to the same recipe ([`recipe_json`]), or the resume is refused
//! with the flags that contradict it named. Flags that change where things are or how fast,
//! never the bits, may differ: [`FREE_FLAGS`]. The data must have the checksums the
//! checkpoint recorded ([`data_identity`]).
//!
//! Reading a run folder's checkpoints is `crate::checkpoint`'s; running the runs is
//! `train.rs`'s.

use std::path::{Path, PathBuf};

use clap::Parser;
use serde_json::{json, Value};

use super::{engine, plan_training, run_dir, Cli, CliResult, Command, TrainArgs};
use crate::checkpoint::{self, Decoded, RunInfo};
use crate::data::Dataset;

/// Flags that may change on a resume: where the data is, threads, how often to save.
pub(super) const FREE_FLAGS: &[&str] =
    &["resume", "out", "overwrite", "threads", "checkpoint_every", "data_dir", "no_download", "plan"];

macro_rules! recipe_flags {
    ($($f:ident),* $(,)?) => {
        /// Flags that decide the run's bits: given with `--resume`, each must agree with the
        /// checkpoint's.
        pub(super) const RECIPE_FLAGS: &[&str] = &[$(stringify!($f)),*];

        /// `base` with the recipe flags for which `given` is true taken from `user`.
        fn overlay_recipe(base: &mut TrainArgs, user: &TrainArgs, given: &dyn Fn(&str) -> bool) {
            $(if given(stringify!($f)) { base.$f = user.$f.clone(); })*
            if given("no_augment") && user.no_augment {
                // The flags it conflicts with on a command line go with it.
                (base.shift, base.crop_padding, base.flip, base.cutout, base.random_erasing) =
                    (None, None, None, None, None);
                (base.mixup, base.cutmix) = (None, None);
                (base.static_copies, base.static_rotation, base.copies_before_split) = (None, None, false);
            }
        }
    };
}

recipe_flags!(
    model,
    arch,
    epochs,
    batch_size,
    lr,
    optimizer,
    nesterov,
    seed,
    runs,
    schedule,
    warmup_epochs,
    step_epochs,
    step_gamma,
    label_smoothing,
    weight_decay,
    shift,
    crop_padding,
    flip,
    cutout,
    random_erasing,
    ema,
    mixup,
    cutmix,
    static_copies,
    static_rotation,
    copies_before_split,
    no_augment,
    no_batch_norm,
    no_dropout,
    val_split,
    limit,
    dataset,
    reference,
);

/// The program and version written into checkpoints.
pub(super) fn program() -> String {
    format!("fmnist {}", env!("CARGO_PKG_VERSION"))
}

/// Everything that decides a command's runs besides the data: what a resume must agree with.
pub(super) fn recipe_json(a: &TrainArgs) -> CliResult<Value> {
    let plan = plan_training(a)?;
    Ok(json!({
        "preset": plan.preset.name,
        "layers": plan.layers,
        "train": plan.cfg,
        "val_split": plan.val_split,
        "seed": a.seed,
        "runs": a.runs,
        "limit": a.limit,
        "dataset": a.dataset.kind().folder(),
        "engine": engine(a.reference).name(),
    }))
}

/// The data's identity: MD5 of the training images and labels (all of them, before
/// `--limit`) and of the test set, and their sizes.
pub(super) fn data_identity(train: &Dataset, test: &Dataset) -> Value {
    let md5 = |ds: &Dataset| {
        let mut c = md5::Context::new();
        c.consume(&ds.images);
        c.consume(&ds.labels);
        format!("{:x}", c.finalize())
    };
    json!({
        "train_md5": md5(train),
        "train_images": train.len(),
        "test_md5": md5(test),
        "test_images": test.len(),
    })
}

/// Refuses data whose identity is not the checkpoint's.
pub(super) fn check_data(info: &RunInfo, identity: &Value, source: &str) -> CliResult<()> {
    if &info.data == identity {
        return Ok(());
    }
    Err(format!(
        "the data in {source} is not the data this run was trained on (checksums {identity}, the checkpoint's {}); \
         give the right folder with --data-dir",
        info.data
    ))
}

/// What a `train` command works on.
pub(super) struct Session {
    /// The flags in force: the command's, or on a resume the checkpoint's with the given
    /// free flags.
    pub(super) args: TrainArgs,
    /// The flags of the command that started the run (saved in every checkpoint).
    pub(super) argv: Vec<String>,
    /// The run folder (the parent of `run-K/` with `--runs N`).
    pub(super) out: PathBuf,
    /// Shared by the runs of the command that started them.
    pub(super) group: String,
    /// The checkpoint a resume starts from (with --runs, the first run's), with its path.
    pub(super) resumed: Option<RunInfo>,
}

/// The flags after `train` on this process's command line.
fn own_argv() -> Vec<String> {
    let args: Vec<String> = std::env::args_os().map(|a| a.to_string_lossy().into_owned()).collect();
    let at = args.iter().position(|a| a == "train").map_or(args.len(), |i| i + 1);
    args[at..].to_vec()
}

/// A fresh command: its folder must be empty (or `--overwrite` given).
pub(super) fn fresh(a: TrainArgs, preset: &str) -> CliResult<Session> {
    let out = match &a.out {
        Some(out) => {
            run_dir::check_empty(out, a.overwrite)?;
            out.clone()
        }
        None => run_dir::default_dir(preset),
    };
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let group = format!("{:x}-{:x}", t.as_nanos(), std::process::id());
    Ok(Session { args: a, argv: own_argv(), out, group, resumed: None })
}

/// `train --resume DIR`: the checkpoint's flags, with `given` (the flags on this command
/// line) checked against them. Returns the session and the checkpoint to start from (with
/// `--runs N`, the first run's) with its path.
pub(super) fn resume(a: &TrainArgs, given: &[String], dir: &Path) -> CliResult<(Session, Decoded, PathBuf)> {
    if !dir.is_dir() {
        return Err(format!("{}: no such run folder to resume", dir.display()));
    }
    let first = if checkpoint::present(dir) { dir.to_path_buf() } else { dir.join(run_dir::run_folder(1)) };
    let loaded = checkpoint::read(&first)?.ok_or_else(|| {
        format!(
            "{}: no checkpoint ({}) to resume from; the run stopped before its first one, start it again",
            dir.display(),
            checkpoint::LATEST
        )
    })?;
    for w in &loaded.warnings {
        eprintln!("warning: {w}");
    }
    let info = loaded.decoded.info.clone();
    let shown = loaded.path.display();
    if info.runs > 1 && first == dir {
        let parent = match dir.parent().map(Path::as_os_str) {
            Some(p) if !p.is_empty() => Path::new(p).display().to_string(),
            _ => ".".to_string(),
        };
        return Err(format!(
            "{} is run {} of the {} runs of one command: resume them all with --resume {parent}",
            dir.display(),
            info.run,
            info.runs
        ));
    }
    if info.program != program() {
        return Err(format!(
            "{shown} was written by {}, this is {}: resume it with that program",
            info.program,
            program()
        ));
    }
    let mut argv = vec!["fmnist".to_string(), "train".to_string()];
    argv.extend(info.args.iter().cloned());
    let base = match Cli::try_parse_from(&argv) {
        Ok(Cli { command: Command::Train(t) }) => t,
        _ => return Err(format!("{shown}: its saved flags {:?} do not parse", info.args)),
    };
    let saved = recipe_json(&base)?;
    if saved != info.recipe {
        return Err(format!(
            "{shown}: this program resolves the run's flags to another recipe than the one saved ({}); resume it with {}",
            differences(&info.recipe, &saved, "").join(", "),
            info.program
        ));
    }

    let is_given = |id: &str| given.iter().any(|g| g == id);
    let mut merged = base.clone();
    overlay_recipe(&mut merged, a, &is_given);
    if recipe_json(&merged)? != saved {
        let mut wrong = Vec::new();
        for f in RECIPE_FLAGS.iter().filter(|f| is_given(f)) {
            let mut one = base.clone();
            overlay_recipe(&mut one, a, &|id| id == *f);
            let r = recipe_json(&one)?;
            if r != saved {
                wrong.push(format!("--{} ({})", f.replace('_', "-"), differences(&saved, &r, "").join(", ")));
            }
        }
        if wrong.is_empty() {
            // No one flag does it alone: name them all.
            wrong = RECIPE_FLAGS
                .iter()
                .filter(|f| is_given(f))
                .map(|f| format!("--{}", f.replace('_', "-")))
                .collect();
        }
        return Err(format!(
            "{} contradicts the recipe of the run in {}; resume without it (only {} may change), or start a new run with --out",
            wrong.join(" and "),
            dir.display(),
            FREE_FLAGS[3..].iter().map(|f| format!("--{}", f.replace('_', "-"))).collect::<Vec<_>>().join(", ")
        ));
    }
    // The free flags: this command's where given, else the saved ones (never the saved
    // thread count: the bits do not depend on it).
    merged.threads = a.threads;
    merged.resume = Some(dir.to_path_buf());
    merged.out = Some(dir.to_path_buf());
    merged.overwrite = false;
    if is_given("checkpoint_every") {
        merged.checkpoint_every = a.checkpoint_every;
    }
    if is_given("data_dir") {
        merged.data.data_dir = a.data.data_dir.clone();
    }
    if is_given("no_download") {
        merged.data.no_download = a.data.no_download;
    }
    // The plan: this command's `--plan` where given, else the run folder's `plan.json`
    // (`train.rs`), never the saved path, which may be gone.
    merged.plan = if is_given("plan") { a.plan.clone() } else { None };
    let session = Session {
        args: merged,
        argv: info.args.clone(),
        out: dir.to_path_buf(),
        group: info.group.clone(),
        resumed: Some(info),
    };
    Ok((session, loaded.decoded, loaded.path))
}

/// The places where two recipes differ, as `key: saved -> here`.
fn differences(saved: &Value, here: &Value, path: &str) -> Vec<String> {
    match (saved, here) {
        (Value::Object(a), Value::Object(b)) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            keys.into_iter()
                .flat_map(|k| {
                    let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                    differences(a.get(k).unwrap_or(&Value::Null), b.get(k).unwrap_or(&Value::Null), &p)
                })
                .collect()
        }
        (a, b) if a == b => Vec::new(),
        (a, b) => vec![format!("{path} is {a} in the checkpoint, {b} here")],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every flag of `train` is either part of the recipe or free to change on a resume: a new
    /// flag must be put in one of the two lists.
    #[test]
    fn every_train_flag_is_classified() {
        let cmd = Cli::command();
        let train = cmd.find_subcommand("train").expect("train exists");
        for arg in train.get_arguments() {
            let id = arg.get_id().as_str();
            if id == "help" {
                continue;
            }
            assert!(
                RECIPE_FLAGS.contains(&id) != FREE_FLAGS.contains(&id),
                "train flag `{id}` must be in exactly one of RECIPE_FLAGS and FREE_FLAGS (src/cli/resume.rs)"
            );
        }
    }
}
