//! The command-line program: `train`, `eval`, `predict`, `summary`, `report` and `explain`.
//!
//! Everything here is I/O around the library: parse flags (clap), find the data, call
//! [`train::fit`](crate::train::fit) / [`train::evaluate`](crate::train::evaluate), print
//! what a Keras user expects to see, and write the run's files atomically. Errors reach the
//! user as one line and a non-zero exit.
//!
//! # Files
//! This file holds the entry point ([`main`]), the dispatch to the commands, the thread pool
//! ([`set_threads`]) and the error type. The rest, one job a file:
//! - `args.rs`: the clap structs and enums ([`Cli`], [`Command`], [`TrainArgs`], ...);
//! - `recipe.rs`: `train`'s flags resolved against the preset ([`plan_training`],
//!   [`TrainPlan`]);
//! - `load.rs`: reading the dataset and saved model files;
//! - `progress.rs`: the console's progress bars and epoch lines during training;
//! - `run_dir.rs`: run folders and the files a run writes;
//! - `train.rs`, `eval.rs`, `predict.rs`, `summary.rs`: the four first commands;
//! - `export.rs`: a saved model as a PyTorch module and state dict;
//! - `pictures.rs`: a run's pictures and `report.html` (after `train`, `eval --report`);
//! - `report.rs`, `explain.rs`: the commands that redraw a run folder's pictures and explain
//!   one image;
//! - `multi_run.rs`: the figures over the runs of `train --runs N` (`summary.json`);
//! - `resume.rs`: what `train --resume DIR` continues, and the flags it may and may not change;
//! - `checkpointer.rs`: the background writer of a run's checkpoints;
//! - `interrupt.rs`: Ctrl-C and SIGTERM, and the test-only holds.
//!
//! Every public item is re-exported here, so the paths are `crate::cli::Item`; the files
//! themselves are private.

mod args;
mod checkpointer;
mod eval;
mod explain;
mod export;
mod interrupt;
mod load;
mod multi_run;
mod pictures;
mod predict;
mod progress;
mod recipe;
mod report;
mod resume;
mod run_dir;
mod summary;
mod train;

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches};

pub use args::{
    Cli, Command, DataArgs, DatasetArg, EvalArgs, ExplainArgs, ExportArgs, OptimizerKind, PredictArgs,
    ReportArgs, ScheduleArg, SummaryArgs, TrainArgs, DEFAULT_CHECKPOINT_EVERY,
};
pub use recipe::{plan_training, TrainPlan};

/// Runs the program; returns the process exit code: 0, 1 after an error, 130 or 143 after
/// `train` stopped on SIGINT or SIGTERM.
pub fn main() -> i32 {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let result = match cli.command {
        Command::Train(a) => {
            let given = matches.subcommand_matches("train").map(given_flags).unwrap_or_default();
            train::run_train(a, &given)
        }
        Command::Eval(a) => eval::run_eval(a).map(|()| 0),
        Command::Predict(a) => predict::run_predict(a).map(|()| 0),
        Command::Summary(a) => summary::run_summary(a).map(|()| 0),
        Command::Export(a) => export::run_export(a).map(|()| 0),
        Command::Report(a) => report::run_report(a).map(|()| 0),
        Command::Explain(a) => explain::run_explain(a).map(|()| 0),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            // One line, whatever a file name or a file's content put in the message.
            let line: String = e.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
            eprintln!("error: {line}");
            1
        }
    }
}

/// The ids of the flags given on the command line (not filled in by a default).
fn given_flags(m: &ArgMatches) -> Vec<String> {
    m.ids()
        .filter(|id| m.value_source(id.as_str()) == Some(ValueSource::CommandLine))
        .map(|id| id.as_str().to_string())
        .collect()
}

/// The commands' error type: a one-line message for the user.
type CliResult<T> = Result<T, String>;

/// The engine a `--reference` flag asks for.
fn engine(reference: bool) -> crate::Engine {
    if reference {
        crate::Engine::Reference
    } else {
        crate::Engine::Fast
    }
}

/// Sizes rayon's global pool (`None`: rayon's default, `RAYON_NUM_THREADS` or one thread per
/// core) and makes the calling thread its first worker; returns the thread count.
///
/// As a worker, the main thread runs the parallel loops it starts itself, next to `n - 1`
/// pool threads. Otherwise it would hand every parallel op to the pool and sleep until a
/// worker finished it: two thread wake-ups per op, each tens of microseconds (as long as a
/// small op's whole work), and at one thread no parallel work to pay for them.
///
/// A caution for later code: rayon does not run a job that *another* thread hands the pool on
/// the main thread unless the main thread is inside rayon at the time, and with `--threads 1`
/// the main thread is the whole pool. A background thread (a checkpoint writer, a data
/// loader) must therefore not use rayon while the main thread blocks waiting for it.
pub fn set_threads(threads: Option<usize>) -> CliResult<usize> {
    if threads == Some(0) {
        return Err("--threads must be at least 1".into());
    }
    let max = crate::limits::MAX_THREADS;
    if let Some(n) = threads.filter(|&n| n > max) {
        return Err(format!("--threads {n} is over the limit of {max}"));
    }
    // Without --threads, rayon reads RAYON_NUM_THREADS: bounded the same way.
    let env: Option<usize> = std::env::var("RAYON_NUM_THREADS").ok().and_then(|v| v.trim().parse().ok());
    if let Some(n) = env.filter(|&n| threads.is_none() && n > max) {
        return Err(format!("RAYON_NUM_THREADS={n} is over the limit of {max} threads"));
    }
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads.unwrap_or(0))
        .use_current_thread()
        .build_global()
        .map_err(|e| format!("cannot start the thread pool: {e}"))?;
    Ok(rayon::current_num_threads())
}
