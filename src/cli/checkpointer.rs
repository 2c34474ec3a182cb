//! Writing a run's checkpoints while it trains: the main thread encodes the state (a copy of
//! the weights, moments and best weights into one buffer), and a background thread writes it
//! ([`crate::checkpoint::write`]: temporary file, flush, renames, folder flush) while the next
//! steps run, so the flush to disk costs no training time. One write at a time: a new one
//! first waits for the one before.
//!
//! The writer thread does plain file I/O and a CRC, never rayon: the main thread is rayon's
//! worker 0 ([`set_threads`](super::set_threads)) and may block waiting for it.
//!
//! A write that fails (a full disk, an unwritable folder) becomes a one-line warning and
//! training goes on; the checkpoints already on disk are untouched. What the state holds and
//! when to save it is `train.rs`'s.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use super::interrupt::{HoldPoint, TestHold};
use crate::checkpoint;

struct Pending {
    /// The write's result, and the CPU seconds the writer thread used.
    handle: JoinHandle<(std::io::Result<()>, f64)>,
    label: String,
}

/// The CPU time the calling thread has used, in seconds (Linux's
/// `/proc/thread-self/schedstat`; 0 where it cannot be read).
fn thread_cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|ns| ns.parse::<u64>().ok()))
        .map_or(0.0, |ns| ns as f64 * 1e-9)
}

/// The checkpoints of one run folder.
pub(super) struct Checkpointer {
    dir: PathBuf,
    run: usize,
    pending: Option<Pending>,
    /// Where the last checkpoint known to be complete stands ("epoch 2, batch 40 of 94").
    last_good: Option<String>,
    hold: Option<Arc<TestHold>>,
    /// Seconds the main thread has spent on checkpoints (encoding, waiting for a write).
    pub(super) seconds: f64,
    /// CPU seconds the writer threads have used (CRC, copies into the page cache, flushes).
    pub(super) writer_cpu_seconds: f64,
}

impl Checkpointer {
    /// The writer for run `run`'s folder `dir`; `last_good` describes the checkpoint already
    /// there, if any.
    pub(super) fn new(
        dir: &Path,
        run: usize,
        last_good: Option<String>,
        hold: Option<Arc<TestHold>>,
    ) -> Self {
        Checkpointer {
            dir: dir.to_path_buf(),
            run,
            pending: None,
            last_good,
            hold,
            seconds: 0.0,
            writer_cpu_seconds: 0.0,
        }
    }

    /// The checkpoint file.
    pub(super) fn path(&self) -> PathBuf {
        self.dir.join(checkpoint::LATEST)
    }

    /// Where the last complete checkpoint stands, if there is one.
    pub(super) fn last_good(&self) -> Option<&str> {
        self.last_good.as_deref()
    }

    /// Starts writing `encode()`'s bytes in the background, once the write before has ended;
    /// `label` says where the run stands and `step` is its step count (for the test hold).
    /// Returns the earlier write's failure, if it failed, as a warning line.
    pub(super) fn start(
        &mut self,
        encode: impl FnOnce() -> Vec<u8>,
        label: String,
        step: usize,
    ) -> Option<String> {
        let t0 = Instant::now();
        let warning = self.wait_inner();
        let bytes = encode();
        let (dir, hold, run) = (self.dir.clone(), self.hold.clone(), self.run);
        let spawned = std::thread::Builder::new().name("checkpoint-writer".into()).spawn(move || {
            let mut halfway = || {
                if let Some(h) = &hold {
                    h.reach(run, HoldPoint::Checkpoint(step));
                }
            };
            let result = checkpoint::write(&dir, &bytes, &mut halfway);
            (result, thread_cpu_seconds())
        });
        let warning = match spawned {
            Ok(handle) => {
                self.pending = Some(Pending { handle, label });
                warning
            }
            Err(e) => warning.or_else(|| Some(self.failure(&label, &e.to_string()))),
        };
        self.seconds += t0.elapsed().as_secs_f64();
        warning
    }

    /// Waits for the write in progress; returns its failure, if it failed, as a warning line.
    pub(super) fn wait(&mut self) -> Option<String> {
        let t0 = Instant::now();
        let warning = self.wait_inner();
        self.seconds += t0.elapsed().as_secs_f64();
        warning
    }

    fn wait_inner(&mut self) -> Option<String> {
        let p = self.pending.take()?;
        match p.handle.join() {
            Ok((result, cpu)) => {
                self.writer_cpu_seconds += cpu;
                match result {
                    Ok(()) => {
                        self.last_good = Some(p.label);
                        None
                    }
                    Err(e) => Some(self.failure(&p.label, &e.to_string())),
                }
            }
            Err(_) => Some(self.failure(&p.label, "the writer thread panicked")),
        }
    }

    fn failure(&self, label: &str, why: &str) -> String {
        let last = match &self.last_good {
            Some(l) => format!("the last good checkpoint is at {l}"),
            None => "there is no good checkpoint yet".into(),
        };
        format!(
            "warning: cannot write the checkpoint at {label} to {}: {why}; training goes on, {last}",
            self.path().display()
        )
    }
}
