//! Run folders: where `train` writes (`runs/<timestamp>-<preset>` unless `--out`, and `run-K/`
//! inside it for each of `--runs N`), the files a run leaves there (`config.json`,
//! `model.safetensors`, `history.json`, `history.csv`, `metrics.json`; `summary.json` for
//! several runs; the checkpoints, see [`crate::checkpoint`]), and how they are written.
//!
//! A run's files change together or not at all: [`write_results`] writes every one under a
//! temporary name (`.NAME.tmp`, flushed to disk) and renames them into place only once all are
//! written; if any fails, the temporaries are removed and the folder keeps what it had. A new
//! run refuses a folder that is not empty unless `--overwrite` ([`check_empty`]). What the JSON
//! files hold is the `train` command's choice; this file does not build their content.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::CliResult;
use crate::checkpoint;
use crate::files::{sync_dir, temp_path, write_atomic, write_synced};
use crate::modelfile::{self, SavedModel};
use crate::train::EpochStats;

/// The files one run leaves in its folder, in the order they are renamed into place
/// (`plan.json`, how each layer ran, only on the fast engine).
pub(super) const RUN_FILES: [&str; 6] =
    ["config.json", "model.safetensors", "history.json", "history.csv", "metrics.json", "plan.json"];

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

/// The default run folder: `runs/<timestamp>-<preset>`, or `...-2`, `-3`, ... when that one
/// exists (two runs started within a second).
pub(super) fn default_dir(preset: &str) -> PathBuf {
    let base = format!("{}-{}", timestamp(), preset);
    let mut dir = PathBuf::from("runs").join(&base);
    for k in 2.. {
        if !dir.exists() {
            break;
        }
        dir = PathBuf::from("runs").join(format!("{base}-{k}"));
    }
    dir
}

/// The folder name of run `k` (1-based) of several: `run-K`.
pub(super) fn run_folder(k: usize) -> String {
    format!("run-{k}")
}

/// Refuses a run folder that holds anything, unless `overwrite`.
pub(super) fn check_empty(out: &Path, overwrite: bool) -> CliResult<()> {
    if out.exists() && !out.is_dir() {
        return Err(format!("--out {} is a file, not a folder", out.display()));
    }
    let entries = entries(out);
    if entries.is_empty() || overwrite {
        return Ok(());
    }
    let shown = out.display();
    let interrupted = checkpoint::present(out) || checkpoint::present(&out.join(run_folder(1)));
    let hint = if interrupted {
        format!("continue its run with `train --resume {shown}`, or ")
    } else {
        String::new()
    };
    let mut listed = entries.clone();
    listed.sort();
    listed.truncate(6);
    Err(format!(
        "--out {shown} is not empty (it holds {}{}): {hint}choose another --out, or add --overwrite to replace its run once the new one is complete",
        listed.join(", "),
        if entries.len() > listed.len() { ", ..." } else { "" }
    ))
}

/// The names in a folder (none if it cannot be read).
fn entries(dir: &Path) -> Vec<String> {
    match std::fs::read_dir(dir) {
        Ok(rd) => rd.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect(),
        Err(_) => Vec::new(),
    }
}

/// Removes the checkpoints of the run an `--overwrite` replaces (in `out` and its `run-K/`):
/// a resume must never mix them with the new run's. Its other files stay until the new run's
/// replace them.
pub(super) fn remove_checkpoints(out: &Path) -> CliResult<()> {
    let mut dirs = vec![out.to_path_buf()];
    dirs.extend(entries(out).iter().filter(|e| e.starts_with("run-")).map(|e| out.join(e)));
    for d in dirs {
        for name in [checkpoint::LATEST, checkpoint::PREVIOUS] {
            let path = d.join(name);
            if path.exists() {
                std::fs::remove_file(&path).map_err(|e| format!("cannot remove {}: {e}", path.display()))?;
            }
        }
    }
    Ok(())
}

/// Writes a run's files into `out`: `config.json`, `model.safetensors` (the model and how to
/// feed it), `history.json` and `history.csv` (one entry per epoch), `metrics.json`, and
/// `plan.json` when given (`crate::planfile`; `train.rs` also writes it before the first
/// step, so that a resume replays it). All
/// are written under temporary names first; `staged` runs then (a test hold), and only then are
/// they renamed into place and the folder flushed. An error leaves `out` as it was.
pub(super) fn write_results(
    out: &Path,
    config: &serde_json::Value,
    saved: &SavedModel,
    history: &[EpochStats],
    metrics: &serde_json::Value,
    plan: Option<&str>,
    staged: &mut dyn FnMut(),
) -> CliResult<()> {
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
    let contents: [Option<Vec<u8>>; 6] = [
        Some(json_bytes(config)),
        Some(modelfile::to_bytes(saved)),
        Some(json_bytes(&serde_json::to_value(history).expect("plain data"))),
        Some(csv.into_bytes()),
        Some(json_bytes(metrics)),
        plan.map(|p| p.as_bytes().to_vec()),
    ];
    std::fs::create_dir_all(out)
        .map_err(|e| format!("cannot create the run folder {}: {e}", out.display()))?;
    let (temps, contents): (Vec<(PathBuf, PathBuf)>, Vec<Vec<u8>>) = RUN_FILES
        .iter()
        .zip(contents)
        .filter_map(|(name, bytes)| {
            let path = out.join(name);
            Some(((temp_path(&path, ".tmp"), path), bytes?))
        })
        .unzip();
    let remove_temps = || {
        for (tmp, _) in &temps {
            let _ = std::fs::remove_file(tmp);
        }
    };
    for ((tmp, path), bytes) in temps.iter().zip(&contents) {
        if let Err(e) = write_synced(tmp, bytes) {
            remove_temps();
            return Err(format!("cannot write {}: {e}", path.display()));
        }
    }
    staged();
    for (tmp, path) in &temps {
        if let Err(e) = std::fs::rename(tmp, path) {
            remove_temps();
            return Err(format!("cannot rename {} to {}: {e}", tmp.display(), path.display()));
        }
    }
    sync_dir(out).map_err(|e| format!("cannot flush the folder {}: {e}", out.display()))
}

fn json_bytes(value: &serde_json::Value) -> Vec<u8> {
    (serde_json::to_string_pretty(value).expect("JSON values serialise") + "\n").into_bytes()
}

/// Writes `summary.json` (the figures over several runs) in the run folder `out`; returns its
/// path.
pub(super) fn write_summary(out: &Path, summary: &serde_json::Value) -> CliResult<PathBuf> {
    let path = out.join("summary.json");
    write_json(&path, summary)?;
    Ok(path)
}
