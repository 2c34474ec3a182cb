//! Names this build of the kernels for the plan cache: a hash of every file in `src/`, so that
//! a plan measured with other kernels is measured again instead of replayed from the cache
//! (`fmnist`'s `src/planfile.rs`). FNV-1a over the files' paths and contents in sorted order;
//! it changes when any kernel's source does, and only then.

use std::fs;
use std::path::{Path, PathBuf};

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .expect("kernels/src is readable")
        .map(|e| e.expect("a directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            files(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn main() {
    println!("cargo:rerun-if-changed=src");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut paths = Vec::new();
    files(&root.join("src"), &mut paths);
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for path in &paths {
        let name = path.strip_prefix(root).unwrap_or(path).to_string_lossy().into_owned();
        let bytes = fs::read(path).expect("a kernel source file is readable");
        for &b in name.as_bytes().iter().chain(&[0]).chain(&bytes) {
            hash = (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    println!("cargo:rustc-env=FMNIST_KERNELS_SOURCE={hash:016x}");
}
