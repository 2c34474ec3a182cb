//! The console's view of training: a progress bar per epoch (indicatif) and a Keras-like line
//! at each epoch's end, through [`Observer`]. It only prints what `fit` reports; the other
//! lines of `train`'s output are the command's.

use std::fmt::Write as _;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};

use crate::train::{EpochStats, Observer};

/// Draws a progress bar per epoch and prints a Keras-like line at its end.
pub(super) struct ConsoleObserver {
    bar: Option<ProgressBar>,
    started: Instant,
}

impl ConsoleObserver {
    /// An observer with no bar yet: the first epoch draws one.
    pub(super) fn new() -> Self {
        ConsoleObserver { bar: None, started: Instant::now() }
    }
}

impl ConsoleObserver {
    /// Prints a line (on standard error) without tearing the progress bar.
    pub(super) fn warn(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.suspend(|| eprintln!("{line}")),
            None => eprintln!("{line}"),
        }
    }

    /// Removes the progress bar of an epoch that will not finish here.
    pub(super) fn clear(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

impl Observer for ConsoleObserver {
    fn epoch_start(&mut self, epoch: usize, epochs: usize, batches: usize) {
        let bar = ProgressBar::new(batches as u64);
        let style =
            ProgressStyle::with_template("Epoch {prefix} [{bar:30}] {pos}/{len} batches  {msg}  ETA {eta}")
                .expect("valid template")
                .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(format!("{epoch}/{epochs}"));
        self.bar = Some(bar);
        self.started = Instant::now();
    }

    fn batch_end(&mut self, batch: usize, images: usize, running_loss: f32) {
        if let Some(bar) = &self.bar {
            let rate = images as f64 / self.started.elapsed().as_secs_f64().max(1e-9);
            bar.set_position(batch as u64);
            bar.set_message(format!("{rate:>6.0} img/s  loss {running_loss:.4}"));
        }
    }

    fn epoch_end(&mut self, s: &EpochStats) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        let mut line = format!(
            "Epoch {:>2} - {:.1}s - {:.0} img/s - loss: {:.4} - accuracy: {:.4}",
            s.epoch, s.seconds, s.images_per_second, s.loss, s.accuracy
        );
        if let (Some(vl), Some(va)) = (s.val_loss, s.val_accuracy) {
            let _ = write!(line, " - val_loss: {vl:.4} - val_accuracy: {va:.4}");
        }
        println!("{line}");
    }
}
