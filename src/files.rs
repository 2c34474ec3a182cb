//! Writing files so that a crash or a full disk never leaves a half-written file where the
//! user had a good one: write a temporary file beside the target, flush it to disk, then
//! rename it over the target (a rename within one folder is atomic on POSIX file systems).

use std::fs;
use std::io::Write;
use std::path::Path;

/// Writes `bytes` to `path` atomically; creates the parent folder if needed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir)?;
    }
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}
