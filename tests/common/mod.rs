//! Helpers shared by the integration tests: synthetic, learnable IDX data sets written to a
//! temporary folder, and the `fmnist` binary.
#![allow(dead_code)] // each test crate uses its own part of this module

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use flate2::write::GzEncoder;
use flate2::Compression;
use fmnist::Rng;

/// Runs the binary on the rule-based plan (`FMNIST_PLAN=rule`): tests never depend on a
/// measurement, nor write the user's plan cache.
pub fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fmnist"))
        .args(args)
        .env("FMNIST_PLAN", "rule")
        .output()
        .expect("the binary runs")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A fresh, empty folder for one test, in this test process's own folder
/// (`$TMPDIR/fmnist-tests/<pid>/<name>`). A test's folders stay after it, for a look at what
/// it wrote; the first call in a process removes the folders of earlier test processes that
/// have ended (on Linux, where `/proc` says which have), so runs do not pile up.
pub fn temp_dir(name: &str) -> PathBuf {
    static SWEEP: std::sync::Once = std::sync::Once::new();
    let root = std::env::temp_dir().join("fmnist-tests");
    SWEEP.call_once(|| sweep_ended(&root));
    let d = root.join(std::process::id().to_string()).join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Removes the folders under `root` of test processes that no longer run.
fn sweep_ended(root: &Path) {
    if !Path::new("/proc/self").exists() {
        return; // no way to tell which processes run: keep everything
    }
    let Ok(entries) = std::fs::read_dir(root) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let ended = name.to_str().and_then(|n| n.parse::<u32>().ok()).is_some_and(|pid| {
            pid != std::process::id() && !Path::new("/proc").join(pid.to_string()).exists()
        });
        if ended {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// The number after `prefix` in `text`, e.g. "test accuracy 85.12%".
pub fn number_after(text: &str, prefix: &str) -> f64 {
    let start = text.find(prefix).unwrap_or_else(|| panic!("`{prefix}` not in:\n{text}")) + prefix.len();
    let num: String = text[start..].chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect();
    num.parse().unwrap_or_else(|_| panic!("no number after `{prefix}` in:\n{text}"))
}

pub fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// `n` learnable 28x28 images with labels `i % 10`: class `c` is a bright horizontal bar on
/// rows `2 + 2c` and `3 + 2c`, columns 4..24 (values 200..=255), over noise in 0..50.
/// Horizontal bars survive horizontal flips, small shifts and rotations, so the labels stay
/// right under every augmentation the trainer has.
pub fn bar_images(n: usize, rng: &mut Rng) -> (Vec<u8>, Vec<u8>) {
    let mut images = Vec::with_capacity(n * 784); // [n, 28, 28]
    let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
    for &c in &labels {
        let bar = 2 + 2 * c as usize;
        for y in 0..28 {
            for x in 0..28 {
                let on = (y == bar || y == bar + 1) && (4..24).contains(&x);
                images.push(if on { 200 + rng.below(56) as u8 } else { rng.below(50) as u8 });
            }
        }
    }
    (images, labels)
}

/// Writes the four gzip IDX files (big-endian headers: magic 0x803 and N, 28, 28 for
/// images; magic 0x801 and N for labels; LeCun's format, written here by hand) of a synthetic data set
/// of `n_train` and `n_test` [`bar_images`] into `dir`.
pub fn write_bar_idx(dir: &Path, n_train: usize, n_test: usize, seed: u64) {
    let mut rng = Rng::new(seed);
    for (prefix, n) in [("train", n_train), ("t10k", n_test)] {
        let (images, labels) = bar_images(n, &mut rng);
        let mut img = Vec::new();
        for v in [0x0000_0803, n as u32, 28, 28] {
            img.extend_from_slice(&v.to_be_bytes());
        }
        img.extend_from_slice(&images);
        let mut lab = Vec::new();
        for v in [0x0000_0801, n as u32] {
            lab.extend_from_slice(&v.to_be_bytes());
        }
        lab.extend_from_slice(&labels);
        std::fs::write(dir.join(format!("{prefix}-images-idx3-ubyte.gz")), gzip(&img)).unwrap();
        std::fs::write(dir.join(format!("{prefix}-labels-idx1-ubyte.gz")), gzip(&lab)).unwrap();
    }
}
