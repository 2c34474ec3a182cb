//! Writing files so that a crash or a full disk never leaves a half-written file where the
//! user had a good one: write a temporary file beside the target, flush it to disk, rename it
//! over the target (a rename within one folder is atomic on POSIX file systems), then flush the
//! folder, so the rename itself survives a power cut. It does not make several files change
//! together: `cli/run_dir.rs` stages a run's files first and renames them last.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Writes `bytes` to `path` atomically and durably; creates the parent folder if needed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = temp_path(path, &format!(".{}.tmp", std::process::id()));
    write_synced(&tmp, bytes)?;
    let result = fs::rename(&tmp, path);
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result?;
    sync_dir(parent(path))
}

/// The temporary name beside `path` that [`write_atomic`] and the staged writers use:
/// `.NAME` followed by `suffix` (hidden, so a half-written one is easy to tell apart).
pub fn temp_path(path: &Path, suffix: &str) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}{suffix}"))
}

/// Creates (or truncates) `path`, writes `bytes` and flushes them to disk; creates the parent
/// folder if needed. On an error the partial file is removed.
pub fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = parent(path);
    if !dir.as_os_str().is_empty() {
        fs::create_dir_all(dir)?;
    }
    let result = (|| {
        let mut f = fs::File::create(path)?;
        f.write_all(bytes)?;
        f.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(path);
    }
    result
}

/// Flushes a folder's entries (the renames and creations in it) to disk.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
    fs::File::open(dir)?.sync_all()
}

fn parent(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new(""))
}
