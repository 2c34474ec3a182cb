//! Stopping `train` cleanly, and the test-only holds that let a test kill it at a known place.
//!
//! [`Interrupt::install`] turns SIGINT (Ctrl-C) and SIGTERM into a request that the training
//! loop reads after each unit of work: it finishes the step in progress, writes a checkpoint,
//! prints the command that resumes and exits with 130 (SIGINT) or 143 (SIGTERM), the shells'
//! `128 + signal`. A second signal exits at once with the same code, leaving the last complete
//! checkpoint (a checkpoint being written is a temporary file until its rename). The handlers
//! are `signal-hook`'s: they only store to atomics.
//!
//! [`TestHold`] reads two environment variables meant for the tests only:
//! `FMNIST_TEST_HOLD=POINT` and `FMNIST_TEST_HOLD_FILE=PATH`. When the program reaches `POINT`
//! it creates `PATH` and waits there (up to ten minutes), so a test that polls for the file can
//! kill it at that point. Points, optionally prefixed with `runK/` for run K of `--runs N`:
//! - `step:S`: before the step that follows S steps (waits until a signal or the timeout);
//! - `mark-step:S`: the same, without waiting (a kill lands during the step or just after);
//! - `validation:E`: before validating epoch E;
//! - `checkpoint:S`: halfway through writing the checkpoint taken after S steps (the first
//!   half of the temporary file is written); waits whatever signal comes;
//! - `results`: with the run's final files written under their temporary names, before the
//!   renames.
//!
//! Nothing here writes a checkpoint or decides when to: `train.rs` does.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use signal_hook::consts::{SIGINT, SIGTERM};

use super::CliResult;

/// The exit codes of the two signals.
pub(super) const EXIT_SIGINT: i32 = 130;
pub(super) const EXIT_SIGTERM: i32 = 143;

/// A stop request from SIGINT or SIGTERM.
#[derive(Clone)]
pub(super) struct Interrupt {
    /// 0, or the exit code of the last signal received.
    code: Arc<AtomicUsize>,
}

impl Interrupt {
    /// Installs the handlers (once per process: each call adds another set).
    pub(super) fn install() -> CliResult<Interrupt> {
        let code = Arc::new(AtomicUsize::new(0));
        let armed = Arc::new(AtomicBool::new(false));
        for (signal, exit) in [(SIGINT, EXIT_SIGINT), (SIGTERM, EXIT_SIGTERM)] {
            // In this order: the second signal exits before anything else runs.
            let registered =
                signal_hook::flag::register_conditional_shutdown(signal, exit, Arc::clone(&armed))
                    .and_then(|_| signal_hook::flag::register_usize(signal, Arc::clone(&code), exit as usize))
                    .and_then(|_| signal_hook::flag::register(signal, Arc::clone(&armed)));
            registered.map_err(|e| format!("cannot install the Ctrl-C handler: {e}"))?;
        }
        Ok(Interrupt { code })
    }

    /// The exit code asked for, if a signal came.
    pub(super) fn requested(&self) -> Option<i32> {
        match self.code.load(Ordering::SeqCst) {
            0 => None,
            c => Some(c as i32),
        }
    }
}

/// The signal behind an exit code, for messages.
pub(super) fn signal_name(code: i32) -> &'static str {
    if code == EXIT_SIGTERM {
        "SIGTERM"
    } else {
        "SIGINT (Ctrl-C)"
    }
}

/// Where a [`TestHold`] stops the program (module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum HoldPoint {
    Step(usize),
    MarkStep(usize),
    Validation(usize),
    Checkpoint(usize),
    Results,
}

/// The test-only hold of `FMNIST_TEST_HOLD` (module docs).
pub(super) struct TestHold {
    run: Option<usize>,
    point: HoldPoint,
    marker: PathBuf,
    interrupt: Interrupt,
}

impl TestHold {
    /// The hold the environment asks for, if any; a malformed one is an error.
    pub(super) fn from_env(interrupt: &Interrupt) -> CliResult<Option<Arc<TestHold>>> {
        let Some(spec) = std::env::var_os("FMNIST_TEST_HOLD") else { return Ok(None) };
        let spec = spec.to_string_lossy().into_owned();
        let bad = || format!("FMNIST_TEST_HOLD={spec} is not a hold point (see src/cli/interrupt.rs)");
        let marker = std::env::var_os("FMNIST_TEST_HOLD_FILE")
            .map(PathBuf::from)
            .ok_or("FMNIST_TEST_HOLD needs FMNIST_TEST_HOLD_FILE")?;
        let (run, rest) = match spec.strip_prefix("run").and_then(|r| r.split_once('/')) {
            Some((k, rest)) => (Some(k.parse::<usize>().map_err(|_| bad())?), rest),
            None => (None, spec.as_str()),
        };
        let (name, arg) = rest.split_once(':').unwrap_or((rest, ""));
        let n = || arg.parse::<usize>().map_err(|_| bad());
        let point = match name {
            "step" => HoldPoint::Step(n()?),
            "mark-step" => HoldPoint::MarkStep(n()?),
            "validation" => HoldPoint::Validation(n()?),
            "checkpoint" => HoldPoint::Checkpoint(n()?),
            "results" if arg.is_empty() => HoldPoint::Results,
            _ => return Err(bad()),
        };
        Ok(Some(Arc::new(TestHold { run, point, marker, interrupt: interrupt.clone() })))
    }

    /// Whether run `run` (1-based) at `here` is the hold point.
    pub(super) fn is_at(&self, run: usize, here: HoldPoint) -> bool {
        self.run.is_none_or(|r| r == run)
            && match (self.point, here) {
                (HoldPoint::MarkStep(a), HoldPoint::Step(b)) => a == b,
                (p, h) => p == h,
            }
    }

    /// Called by run `run` (1-based) at `here`: marks and waits if it is the hold point.
    pub(super) fn reach(&self, run: usize, here: HoldPoint) {
        if !self.is_at(run, here) {
            return;
        }
        let wait = !matches!(self.point, HoldPoint::MarkStep(_));
        let _ = std::fs::write(&self.marker, format!("{here:?}\n"));
        let started = Instant::now();
        // A step hold gives way to a signal, so the Ctrl-C path can be tested from it; the
        // others wait for the kill.
        let yields = matches!(here, HoldPoint::Step(_) | HoldPoint::Validation(_));
        while wait && started.elapsed() < Duration::from_secs(600) {
            if yields && self.interrupt.requested().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
