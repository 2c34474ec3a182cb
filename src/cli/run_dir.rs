//! Run folders: where `train` writes (`runs/<timestamp>-<preset>` unless `--out`, and `run-K/`
//! inside it for each of `--runs N`), the files a run leaves there (`config.json`,
//! `model.safetensors`, `history.json`, `history.csv`, `metrics.json`; `summary.json` for
//! several runs), and how each is written: atomically, JSON pretty-printed. What the JSON
//! files hold is the `train` command's choice; this file does not build their content.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::CliResult;
use crate::files::write_atomic;
use crate::modelfile::{self, SavedModel};
use crate::train::EpochStats;

/// `YYYYMMDD-HHMMSS` in UTC, from the system clock (civil-from-days, H. Hinnant's algorithm).
fn timestamp() -> String {
    let secs =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}{m:02}{d:02}-{:02}{:02}{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}

fn write_json(path: &Path, value: &serde_json::Value) -> CliResult<()> {
    let text = serde_json::to_string_pretty(value).expect("JSON values serialise") + "\n";
    write_atomic(path, text.as_bytes()).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// The default run folder: `runs/<timestamp>-<preset>`.
pub(super) fn default_dir(preset: &str) -> PathBuf {
    PathBuf::from("runs").join(format!("{}-{}", timestamp(), preset))
}

/// The folder name of run `k` (1-based) of several: `run-K`.
pub(super) fn run_folder(k: usize) -> String {
    format!("run-{k}")
}

/// Creates the run folder `out` and writes the run's `config.json`, before training.
pub(super) fn write_config(out: &Path, config: &serde_json::Value) -> CliResult<()> {
    std::fs::create_dir_all(out)
        .map_err(|e| format!("cannot create the run folder {}: {e}", out.display()))?;
    write_json(&out.join("config.json"), config)
}

/// Writes what a run leaves after training, in this order: `model.safetensors` (the model and
/// how to feed it), `history.json` and `history.csv` (one entry per epoch) and `metrics.json`.
pub(super) fn write_results(
    out: &Path,
    saved: &SavedModel,
    history: &[EpochStats],
    metrics: &serde_json::Value,
) -> CliResult<()> {
    let model_path = out.join("model.safetensors");
    modelfile::save(&model_path, saved).map_err(|e| format!("cannot write {}: {e}", model_path.display()))?;
    write_json(&out.join("history.json"), &serde_json::to_value(history).expect("plain data"))?;
    let mut csv = String::from("epoch,loss,accuracy,val_loss,val_accuracy,seconds,images_per_second,lr\n");
    for s in history {
        let opt = |v: Option<f32>| v.map(|v| v.to_string()).unwrap_or_default();
        let _ = writeln!(
            csv,
            "{},{},{},{},{},{},{},{}",
            s.epoch,
            s.loss,
            s.accuracy,
            opt(s.val_loss),
            opt(s.val_accuracy),
            s.seconds,
            s.images_per_second,
            s.lr
        );
    }
    let csv_path = out.join("history.csv");
    write_atomic(&csv_path, csv.as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", csv_path.display()))?;
    write_json(&out.join("metrics.json"), metrics)
}

/// Writes `summary.json` (the figures over several runs) in the run folder `out`; returns its
/// path.
pub(super) fn write_summary(out: &Path, summary: &serde_json::Value) -> CliResult<PathBuf> {
    let path = out.join("summary.json");
    write_json(&path, summary)?;
    Ok(path)
}
