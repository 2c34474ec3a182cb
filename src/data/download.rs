//! Downloading the four IDX `.gz` files, verified against their published MD5 checksums.
//!
//! Each file is streamed into a temporary file in the destination folder
//! (`.<name>.<pid>.part`), hashed on the way, flushed to disk, and renamed onto its final name
//! only when its MD5 matches; on any failure the temporary file is removed, so the folder
//! never holds a partial or unverified file under a real name. A file already present with
//! the right checksum is not fetched again. Timeouts are short for name resolution and
//! connection (5 s each, so that a machine without network fails within seconds) and generous
//! for the transfer itself.
//!
//! MD5 here identifies the published files; it is not a defence against a malicious server.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::DataError;

/// The published files: Zalando's own source for Fashion-MNIST, and for digit MNIST the mirror
/// torchvision uses (LeCun's original site no longer serves the files without login). The MD5
/// values are those of the zalandoresearch/fashion-mnist README table and of torchvision's
/// `datasets/mnist.py` `resources` lists.
pub(super) const FASHION_URL: &str = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/";
pub(super) const FASHION_MD5: [(&str, &str); 4] = [
    ("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
    ("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe"),
    ("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
    ("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310"),
];
pub(super) const DIGITS_URL: &str = "https://ossci-datasets.s3.amazonaws.com/mnist/";
pub(super) const DIGITS_MD5: [(&str, &str); 4] = [
    ("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
    ("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
    ("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
    ("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"),
];

/// Lower-case hex MD5 of a whole file, or `None` if it cannot be read.
fn md5_of_file(path: &Path) -> Option<String> {
    let mut file = File::open(path).ok()?;
    let mut ctx = md5::Context::new();
    let mut chunk = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut chunk).ok()?;
        if n == 0 {
            break;
        }
        ctx.consume(&chunk[..n]);
    }
    Some(format!("{:x}", ctx.finalize()))
}

/// Removes the temporary file when dropped, unless it was renamed into place.
struct TempFile {
    path: PathBuf,
    keep: bool,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.keep {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Fetches `url` into `target` through a temporary file, verifying `expected_md5`.
fn fetch_one(agent: &ureq::Agent, url: &str, target: &Path, expected_md5: &str) -> Result<(), DataError> {
    let dir = target.parent().unwrap_or(Path::new("."));
    let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut temp = TempFile { path: dir.join(format!(".{name}.{}.part", std::process::id())), keep: false };

    let fail = |what: String| DataError::at_url(url, what);
    let response = agent.get(url).call().map_err(|e| fail(format!("download failed: {e}")))?;
    // into_reader has no size limit (read_to_vec stops at 10 MB); the MD5 bounds what we keep.
    let mut body = response.into_body().into_reader();
    let mut file = File::create(&temp.path).map_err(|e| DataError::io(&temp.path, "cannot create", &e))?;
    let mut ctx = md5::Context::new();
    let mut chunk = vec![0u8; 1 << 16];
    loop {
        let n = body.read(&mut chunk).map_err(|e| fail(format!("download interrupted: {e}")))?;
        if n == 0 {
            break;
        }
        ctx.consume(&chunk[..n]);
        file.write_all(&chunk[..n]).map_err(|e| DataError::io(&temp.path, "cannot write", &e))?;
    }
    file.sync_all().map_err(|e| DataError::io(&temp.path, "cannot flush", &e))?;
    drop(file);

    let got = format!("{:x}", ctx.finalize());
    if !got.eq_ignore_ascii_case(expected_md5) {
        return Err(fail(format!(
            "MD5 {got} does not match the published {expected_md5}; the download was discarded"
        )));
    }
    fs::rename(&temp.path, target)
        .map_err(|e| DataError::io(target, "cannot move the download into place", &e))?;
    temp.keep = true;
    Ok(())
}

/// Downloads `files` (pairs of file name and expected lower-case hex MD5) from `base_url` (the
/// file name is appended; a missing trailing `/` is added) into `dest`, which is created if
/// needed. Files already in `dest` with the right MD5 are kept. Stops at the first failure;
/// files completed before it stay (each is whole and verified).
///
/// [`load`](super::load) calls this with the official table of the dataset kind; tests call it
/// with a local server and checksums of their own.
pub fn download_files(base_url: &str, files: &[(&str, &str)], dest: &Path) -> Result<(), DataError> {
    fs::create_dir_all(dest).map_err(|e| DataError::io(dest, "cannot create the download folder", &e))?;
    let base = if base_url.ends_with('/') { base_url.to_string() } else { format!("{base_url}/") };
    let config = ureq::Agent::config_builder()
        .timeout_resolve(Some(Duration::from_secs(5)))
        .timeout_connect(Some(Duration::from_secs(5)))
        .timeout_per_read(Some(Duration::from_secs(30)))
        .timeout_global(Some(Duration::from_secs(600)))
        .build();
    let agent = ureq::Agent::new_with_config(config);
    for &(name, md5) in files {
        let target = dest.join(name);
        if md5_of_file(&target).is_some_and(|m| m.eq_ignore_ascii_case(md5)) {
            continue;
        }
        fetch_one(&agent, &format!("{base}{name}"), &target, md5)?;
    }
    Ok(())
}
