//! Tests of the data layer (`fmnist::data`) on synthetic IDX and CSV files written to a
//! temporary folder, a local HTTP server for the download path, and the real Debian dataset
//! when it is installed.
//!
//! Environment variables are process-global and tests run on parallel threads, so every test
//! that reads or writes them (anything calling `load` or `SearchPlan::new` without a
//! `data_dir`) holds `ENV_LOCK`.

mod common;

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use flate2::write::GzEncoder;
use flate2::Compression;
use fmnist::data::{
    detect_format, download_files, load, load_dir, read_csv, read_idx_images, read_idx_labels, read_idx_pair,
    train_val_split, DataError, Dataset, DatasetKind, DownloadPlan, Format, LoadOptions, Place, SearchPlan,
};
use kernels::Rng;

static ENV_LOCK: Mutex<()> = Mutex::new(());

fn env_lock() -> MutexGuard<'static, ()> {
    ENV_LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A fresh, empty folder for one test.
fn temp_dir(name: &str) -> PathBuf {
    common::temp_dir(&format!("data-{name}"))
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// Pixel `p` of image `i`: a pattern that differs between images and within each image.
fn pixel(i: usize, p: usize) -> u8 {
    ((i * 31 + p * 7) % 256) as u8
}

fn synthetic(n: usize, rows: usize, cols: usize) -> Dataset {
    let images = (0..n).flat_map(|i| (0..rows * cols).map(move |p| pixel(i, p))).collect();
    let labels = (0..n).map(|i| (i % 10) as u8).collect();
    Dataset::new(images, labels, rows, cols)
}

fn idx_images_bytes(magic: u32, n: u32, rows: u32, cols: u32, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    for x in [magic, n, rows, cols] {
        v.extend_from_slice(&x.to_be_bytes());
    }
    v.extend_from_slice(payload);
    v
}

fn idx_labels_bytes(magic: u32, n: u32, labels: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&magic.to_be_bytes());
    v.extend_from_slice(&n.to_be_bytes());
    v.extend_from_slice(labels);
    v
}

/// The four IDX files of `train` and `test` as (name, gzipped bytes).
fn idx_folder_files(train: &Dataset, test: &Dataset) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for (prefix, ds) in [("train", train), ("t10k", test)] {
        let images = idx_images_bytes(0x803, ds.len() as u32, ds.rows as u32, ds.cols as u32, &ds.images);
        let labels = idx_labels_bytes(0x801, ds.len() as u32, &ds.labels);
        out.push((format!("{prefix}-images-idx3-ubyte.gz"), gzip(&images)));
        out.push((format!("{prefix}-labels-idx1-ubyte.gz"), gzip(&labels)));
    }
    out
}

fn write_idx_folder(dir: &Path, train: &Dataset, test: &Dataset) {
    for (name, bytes) in idx_folder_files(train, test) {
        fs::write(dir.join(name), bytes).unwrap();
    }
}

fn csv_text(ds: &Dataset) -> String {
    let mut s = String::from("label");
    for p in 1..=784 {
        s.push_str(&format!(",pixel{p}"));
    }
    s.push('\n');
    for i in 0..ds.len() {
        s.push_str(&ds.labels[i].to_string());
        for &v in ds.image(i) {
            s.push_str(&format!(",{v}"));
        }
        s.push('\n');
    }
    s
}

/// The error of `r`, checking that its message is one line and names `file`.
fn error_naming<T: std::fmt::Debug>(r: Result<T, DataError>, file: &Path) -> String {
    let msg = r.expect_err("expected an error").to_string();
    assert!(!msg.contains('\n'), "not one line: {msg}");
    assert!(msg.contains(&file.display().to_string()), "does not name {}: {msg}", file.display());
    msg
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

// ---------------------------------------------------------------------------------------
// Dataset helpers

#[test]
fn dataset_helpers_select_the_right_images() {
    let ds = synthetic(25, 3, 4);
    assert_eq!((ds.len(), ds.pixels(), ds.is_empty()), (25, 12, false));
    assert_eq!(ds.image(7), (0..12).map(|p| pixel(7, p)).collect::<Vec<_>>().as_slice());
    let sub = ds.subset(&[3, 3, 20]);
    assert_eq!(sub.labels, vec![3, 3, 0]);
    assert_eq!(sub.image(2), ds.image(20));
    assert_eq!(ds.take(5).labels, vec![0, 1, 2, 3, 4]);
    assert_eq!(ds.take(5).image(4), ds.image(4));
    assert_eq!(ds.take(100), ds);
    assert!(ds.take(0).is_empty());
    assert_eq!(ds.class_counts(), [3, 3, 3, 3, 3, 2, 2, 2, 2, 2]);
    assert_eq!(format!("{ds:?}"), "Dataset { len: 25, rows: 3, cols: 4 }");
}

#[test]
#[should_panic(expected = "Dataset::new")]
fn dataset_new_rejects_mismatched_buffers() {
    Dataset::new(vec![0; 10], vec![1, 2], 2, 3);
}

#[test]
fn kinds_name_their_classes_and_places() {
    assert_eq!(DatasetKind::Fashion.class_names()[0], "T-shirt/top");
    assert_eq!(DatasetKind::Fashion.class_names()[9], "Ankle boot");
    assert_eq!(DatasetKind::Digits.class_names()[7], "7");
    assert_eq!(DatasetKind::Fashion.env_var(), "FASHION_MNIST_DIR");
    assert_eq!(DatasetKind::Digits.env_var(), "MNIST_DIR");
    assert_eq!((DatasetKind::Fashion.folder(), DatasetKind::Digits.folder()), ("fashion-mnist", "mnist"));
    assert_eq!(DatasetKind::Fashion.name(), "Fashion-MNIST");
    let (url, files) = DatasetKind::Fashion.download_source();
    assert!(url.starts_with("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com"));
    assert_eq!(files[0], ("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"));
}

// ---------------------------------------------------------------------------------------
// IDX

#[test]
fn idx_gz_and_plain_files_round_trip() {
    let dir = temp_dir("idx-round-trip");
    let ds = synthetic(13, 5, 7);
    let images = idx_images_bytes(0x803, 13, 5, 7, &ds.images);
    let labels = idx_labels_bytes(0x801, 13, &ds.labels);
    fs::write(dir.join("img.gz"), gzip(&images)).unwrap();
    fs::write(dir.join("lab.gz"), gzip(&labels)).unwrap();
    fs::write(dir.join("img"), &images).unwrap();
    fs::write(dir.join("lab"), &labels).unwrap();

    let read = read_idx_images(&dir.join("img.gz")).unwrap();
    assert_eq!((read.n, read.rows, read.cols), (13, 5, 7));
    assert_eq!(read.images, ds.images);
    assert_eq!(read_idx_labels(&dir.join("lab.gz")).unwrap(), ds.labels);
    assert_eq!(read_idx_pair(&dir.join("img.gz"), &dir.join("lab.gz")).unwrap(), ds);
    assert_eq!(read_idx_pair(&dir.join("img"), &dir.join("lab")).unwrap(), ds);

    // Several concatenated gzip members are one stream (RFC 1952).
    let mut two_members = gzip(&images[..100]);
    two_members.extend(gzip(&images[100..]));
    fs::write(dir.join("two.gz"), two_members).unwrap();
    assert_eq!(read_idx_images(&dir.join("two.gz")).unwrap().images, ds.images);

    // An empty set is valid IDX.
    fs::write(dir.join("empty"), idx_images_bytes(0x803, 0, 28, 28, &[])).unwrap();
    assert_eq!(read_idx_images(&dir.join("empty")).unwrap().n, 0);
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn idx_truncated_files_are_errors() {
    let dir = temp_dir("idx-truncated");
    let ds = synthetic(4, 3, 3);
    let images = idx_images_bytes(0x803, 4, 3, 3, &ds.images[..35]);
    let path = dir.join("train-images-idx3-ubyte.gz");
    fs::write(&path, gzip(&images)).unwrap();
    let msg = error_naming(read_idx_images(&path), &path);
    assert!(msg.contains("truncated: 35 payload bytes, expected 36 (4 images of 3x3)"), "{msg}");

    let labels = dir.join("labels");
    fs::write(&labels, idx_labels_bytes(0x801, 5, &[1, 2, 3])).unwrap();
    let msg = error_naming(read_idx_labels(&labels), &labels);
    assert!(msg.contains("truncated: 3 payload bytes, expected 5"), "{msg}");

    let header = dir.join("header");
    fs::write(&header, [0, 0, 8, 3, 0, 0]).unwrap();
    let msg = error_naming(read_idx_images(&header), &header);
    assert!(msg.contains("shorter than the 16-byte IDX images header"), "{msg}");

    let empty = dir.join("empty.gz");
    fs::write(&empty, gzip(&[])).unwrap();
    assert!(error_naming(read_idx_labels(&empty), &empty).contains("truncated: 0 bytes"));
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn idx_trailing_bytes_are_errors() {
    let dir = temp_dir("idx-trailing");
    let ds = synthetic(4, 3, 3);
    let mut payload = ds.images.clone();
    payload.extend_from_slice(&[9, 9]);
    let path = dir.join("images");
    fs::write(&path, idx_images_bytes(0x803, 4, 3, 3, &payload)).unwrap();
    let msg = error_naming(read_idx_images(&path), &path);
    assert!(msg.contains("2 trailing bytes after the 36 expected"), "{msg}");

    let labels = dir.join("labels.gz");
    fs::write(&labels, gzip(&idx_labels_bytes(0x801, 2, &[1, 2, 3]))).unwrap();
    assert!(error_naming(read_idx_labels(&labels), &labels).contains("1 trailing bytes"));
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn idx_wrong_magic_is_an_error_naming_both_numbers() {
    let dir = temp_dir("idx-magic");
    let path = dir.join("train-images-idx3-ubyte.gz");
    // A labels file where images are expected.
    fs::write(&path, gzip(&idx_labels_bytes(0x801, 12, &[0; 12]))).unwrap();
    let msg = error_naming(read_idx_images(&path), &path);
    assert_eq!(
        msg,
        format!(
            "{}: wrong magic number 0x00000801, expected 0x00000803 (IDX images); this file holds IDX labels",
            path.display()
        )
    );
    let labels = dir.join("labels");
    fs::write(&labels, idx_labels_bytes(0x12345678, 1, &[0])).unwrap();
    let msg = error_naming(read_idx_labels(&labels), &labels);
    assert!(msg.ends_with("wrong magic number 0x12345678, expected 0x00000801 (IDX labels)"), "{msg}");
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn idx_zero_dimension_is_an_error() {
    let dir = temp_dir("idx-zero-dim");
    let path = dir.join("images");
    fs::write(&path, idx_images_bytes(0x803, 3, 0, 28, &[])).unwrap();
    assert!(error_naming(read_idx_images(&path), &path).contains("image size 0x28 has a zero dimension"));
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn idx_counts_must_match_between_images_and_labels() {
    let dir = temp_dir("idx-counts");
    let ds = synthetic(6, 2, 2);
    let (img, lab) = (dir.join("img.gz"), dir.join("lab.gz"));
    fs::write(&img, gzip(&idx_images_bytes(0x803, 6, 2, 2, &ds.images))).unwrap();
    fs::write(&lab, gzip(&idx_labels_bytes(0x801, 5, &ds.labels[..5]))).unwrap();
    let msg = error_naming(read_idx_pair(&img, &lab), &img);
    assert!(msg.contains(&format!("holds 6 images but {} holds 5 labels", lab.display())), "{msg}");
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn idx_label_10_is_an_error() {
    let dir = temp_dir("idx-label-10");
    let path = dir.join("labels.gz");
    fs::write(&path, gzip(&idx_labels_bytes(0x801, 4, &[0, 9, 10, 3]))).unwrap();
    let msg = error_naming(read_idx_labels(&path), &path);
    assert!(msg.contains("label 10 at index 2 is out of range 0..=9"), "{msg}");
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn idx_corrupt_gzip_is_a_clean_error() {
    let dir = temp_dir("idx-corrupt-gz");
    let ds = synthetic(50, 8, 8);
    let good = gzip(&idx_images_bytes(0x803, 50, 8, 8, &ds.images));

    // Damaged deflate data: the header survives, the stream does not decode (or fails its CRC).
    let mut damaged = good.clone();
    for b in &mut damaged[12..40] {
        *b ^= 0x5a;
    }
    let path = dir.join("damaged.gz");
    fs::write(&path, &damaged).unwrap();
    assert!(error_naming(read_idx_images(&path), &path).contains("corrupt gzip stream"));

    // A gzip stream cut short.
    let cut = dir.join("cut.gz");
    fs::write(&cut, &good[..good.len() / 2]).unwrap();
    assert!(error_naming(read_idx_images(&cut), &cut).contains("corrupt gzip stream"));

    // Garbage after the gzip stream.
    let mut tail = good.clone();
    tail.extend_from_slice(b"garbage");
    let tailed = dir.join("tail.gz");
    fs::write(&tailed, &tail).unwrap();
    assert!(error_naming(read_idx_images(&tailed), &tailed).contains("corrupt gzip stream"));

    // A `.gz` name on a file that is not gzip at all.
    let not_gz = dir.join("plain.gz");
    fs::write(&not_gz, idx_images_bytes(0x803, 50, 8, 8, &ds.images)).unwrap();
    assert!(error_naming(read_idx_images(&not_gz), &not_gz).contains("not a gzip file"));
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn idx_missing_file_is_an_error_naming_it() {
    let path = temp_dir("idx-missing").join("nope.gz");
    assert!(error_naming(read_idx_images(&path), &path).contains("cannot read"));
}

// ---------------------------------------------------------------------------------------
// CSV

#[test]
fn csv_valid_file_round_trips() {
    let dir = temp_dir("csv-valid");
    let ds = synthetic(12, 28, 28);
    let path = dir.join("fashion-mnist_train.csv");
    fs::write(&path, csv_text(&ds)).unwrap();
    assert_eq!(read_csv(&path).unwrap(), ds);

    // Windows line ends, spaces and blank lines are accepted.
    let crlf = csv_text(&ds).replace('\n', "\r\n").replacen(",0,", ", 0 ,", 3) + "\r\n";
    fs::write(&path, crlf).unwrap();
    assert_eq!(read_csv(&path).unwrap(), ds);

    // A header only: an empty set.
    let header: String = csv_text(&ds).lines().next().unwrap().to_string();
    fs::write(&path, header).unwrap();
    assert!(read_csv(&path).unwrap().is_empty());
    let _ = fs::remove_dir_all(&dir);
}

/// Writes a CSV whose data row `row` (0-based) is replaced by `bad`, and returns the error.
fn csv_error_with_row(name: &str, row: usize, bad: impl FnOnce(String) -> String) -> (PathBuf, DataError) {
    let dir = temp_dir(name);
    let text = csv_text(&synthetic(5, 28, 28));
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    lines[row + 1] = bad(lines[row + 1].clone());
    let path = dir.join("fashion-mnist_test.csv");
    fs::write(&path, lines.join("\n")).unwrap();
    let err = read_csv(&path).expect_err("expected an error");
    (path, err)
}

#[test]
fn csv_short_row_names_its_line() {
    let (path, err) = csv_error_with_row("csv-short", 2, |l| l[..l.rfind(',').unwrap()].to_string());
    assert_eq!(err.line(), Some(4));
    assert_eq!(
        err.to_string(),
        format!("{}:4: expected 785 fields (label + 784 pixels), found 784", path.display())
    );
    let (_, err) = csv_error_with_row("csv-long", 0, |l| l + ",0");
    assert_eq!((err.line(), err.message()), (Some(2), "expected 785 fields (label + 784 pixels), found 786"));
}

#[test]
fn csv_bad_label_names_its_line() {
    let (path, err) = csv_error_with_row("csv-label", 3, |l| format!("10{}", &l[1..]));
    assert_eq!(err.to_string(), format!("{}:5: label 10 is out of range 0..=9", path.display()));
    let (_, err) = csv_error_with_row("csv-pixel-256", 0, |l| {
        let mut f: Vec<&str> = l.split(',').collect();
        f[5] = "256";
        f.join(",")
    });
    assert_eq!((err.line(), err.message()), (Some(2), "field 6 (pixel5): 256 is out of range 0..=255"));
}

#[test]
fn csv_non_integer_field_names_line_and_field() {
    let (path, err) = csv_error_with_row("csv-nonint", 1, |l| {
        let mut f: Vec<&str> = l.split(',').collect();
        f[100] = "12.5";
        f.join(",")
    });
    assert_eq!(err.to_string(), format!("{}:3: field 101: `12.5` is not an integer", path.display()));
    let (_, err) = csv_error_with_row("csv-negative", 0, |l| {
        let mut f: Vec<&str> = l.split(',').collect();
        f[1] = "-1";
        f.join(",")
    });
    assert_eq!(err.message(), "field 2: `-1` is not an integer");
    let (_, err) = csv_error_with_row("csv-empty-field", 0, |l| {
        let mut f: Vec<&str> = l.split(',').collect();
        f[784] = "";
        f.join(",")
    });
    assert_eq!(err.message(), "field 785: `` is not an integer");
}

#[test]
fn csv_missing_or_wrong_header_is_an_error() {
    let dir = temp_dir("csv-header");
    let text = csv_text(&synthetic(3, 28, 28));
    let path = dir.join("fashion-mnist_train.csv");
    let without_header: String = text.lines().skip(1).collect::<Vec<_>>().join("\n");
    fs::write(&path, &without_header).unwrap();
    let msg = error_naming(read_csv(&path), &path);
    assert!(msg.contains(":1: missing header row"), "{msg}");

    fs::write(&path, text.replacen("label", "class", 1)).unwrap();
    assert!(
        error_naming(read_csv(&path), &path).contains(":1: header must start with `label`, found `class`")
    );

    fs::write(&path, text.replacen(",pixel784", "", 1)).unwrap();
    assert!(error_naming(read_csv(&path), &path).contains("header has 784 columns, expected 785"));

    fs::write(&path, "").unwrap();
    assert!(error_naming(read_csv(&path), &path).contains("empty file"));
    let _ = fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------
// Folders and the search

#[test]
fn folder_format_is_told_by_file_names() {
    let kind = DatasetKind::Fashion;
    let (train, test) = (synthetic(20, 28, 28), synthetic(10, 28, 28));

    let idx = temp_dir("folder-idx");
    write_idx_folder(&idx, &train, &test);
    assert_eq!(detect_format(&idx, kind).unwrap(), Format::Idx);
    assert_eq!(load_dir(&idx, kind).unwrap(), (train.clone(), test.clone(), Format::Idx));

    // Uncompressed IDX files named without `.gz`, mixed with compressed ones.
    let plain = temp_dir("folder-idx-plain");
    write_idx_folder(&plain, &train, &test);
    let gz = fs::read(plain.join("train-images-idx3-ubyte.gz")).unwrap();
    let mut raw = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(gz.as_slice()), &mut raw).unwrap();
    fs::remove_file(plain.join("train-images-idx3-ubyte.gz")).unwrap();
    fs::write(plain.join("train-images-idx3-ubyte"), raw).unwrap();
    assert_eq!(load_dir(&plain, kind).unwrap().0, train);

    let csv = temp_dir("folder-csv");
    fs::write(csv.join("fashion-mnist_train.csv"), csv_text(&train)).unwrap();
    fs::write(csv.join("fashion-mnist_test.csv"), csv_text(&test)).unwrap();
    assert_eq!(detect_format(&csv, kind).unwrap(), Format::Csv);
    assert_eq!(load_dir(&csv, kind).unwrap(), (train.clone(), test.clone(), Format::Csv));
    // The digits' CSV names are different.
    assert!(detect_format(&csv, DatasetKind::Digits).is_err());

    let half = temp_dir("folder-half");
    fs::write(half.join("fashion-mnist_train.csv"), csv_text(&train)).unwrap();
    fs::write(half.join("t10k-images-idx3-ubyte.gz"), b"x").unwrap();
    let msg = detect_format(&half, kind).unwrap_err().to_string();
    assert!(msg.contains("has fashion-mnist_train.csv but no fashion-mnist_test.csv"), "{msg}");
    fs::remove_file(half.join("fashion-mnist_train.csv")).unwrap();
    let msg = detect_format(&half, kind).unwrap_err().to_string();
    assert!(msg.contains("incomplete IDX files: no train-images-idx3-ubyte[.gz], no train-labels"), "{msg}");

    let empty = temp_dir("folder-empty");
    let msg = detect_format(&empty, kind).unwrap_err().to_string();
    assert!(msg.contains("holds neither the four IDX files nor fashion-mnist_train.csv"), "{msg}");
    assert!(detect_format(&empty.join("nope"), kind).unwrap_err().to_string().ends_with("no such folder"));

    // Different image sizes in train and test.
    let sizes = temp_dir("folder-sizes");
    write_idx_folder(&sizes, &synthetic(4, 28, 28), &synthetic(4, 14, 14));
    let msg = load_dir(&sizes, kind).unwrap_err().to_string();
    assert!(msg.contains("images are 14x14 but the training images are 28x28"), "{msg}");

    for d in [idx, plain, csv, half, empty, sizes] {
        let _ = fs::remove_dir_all(d);
    }
}

#[test]
fn search_order_explicit_dir_then_env_var() {
    let _guard = env_lock();
    let a = temp_dir("order-env");
    let b = temp_dir("order-explicit");
    write_idx_folder(&a, &synthetic(11, 28, 28), &synthetic(3, 28, 28));
    write_idx_folder(&b, &synthetic(22, 28, 28), &synthetic(4, 28, 28));
    std::env::set_var("FASHION_MNIST_DIR", &a);

    let opts = LoadOptions { kind: DatasetKind::Fashion, data_dir: None, allow_download: false };
    let (train, test, source) = load(&opts).unwrap();
    assert_eq!((train.len(), test.len()), (11, 3));
    assert_eq!(
        source,
        fmnist::data::DataSource { dir: a.clone(), format: Format::Idx, origin: "FASHION_MNIST_DIR".into() }
    );

    // --data-dir beats the variable.
    let (train, _, source) = load(&LoadOptions { data_dir: Some(&b), ..opts }).unwrap();
    assert_eq!((train.len(), source.origin.as_str(), source.dir), (22, "--data-dir", b.clone()));

    // An invalid --data-dir is an error even though the variable names good data.
    let missing = b.join("missing");
    let err = load(&LoadOptions { data_dir: Some(&missing), ..opts }).unwrap_err().to_string();
    assert!(
        err.starts_with(&format!("{}: no such folder (given by --data-dir)", missing.display())),
        "{err}"
    );
    assert!(err.contains("apt-get install dataset-fashion-mnist") && !err.contains('\n'), "{err}");

    // Data present but broken stops the search instead of falling through to another copy.
    fs::write(a.join("t10k-labels-idx1-ubyte.gz"), gzip(&idx_labels_bytes(0x801, 2, &[1, 2]))).unwrap();
    let err = load(&opts).unwrap_err().to_string();
    assert!(err.contains("t10k-images-idx3-ubyte.gz: holds 3 images but"), "{err}");

    std::env::remove_var("FASHION_MNIST_DIR");
    let _ = fs::remove_dir_all(&a);
    let _ = fs::remove_dir_all(&b);
}

#[test]
fn search_plan_lists_the_places_in_order() {
    let _guard = env_lock();
    std::env::set_var("MNIST_DIR", "/somewhere/mnist");
    std::env::remove_var("FMNIST_DOWNLOAD_URL");
    let plan =
        SearchPlan::new(&LoadOptions { kind: DatasetKind::Digits, data_dir: None, allow_download: true });
    let places: Vec<(String, Option<PathBuf>)> =
        plan.places.iter().map(|p| (p.origin.clone(), p.dir.clone())).collect();
    assert_eq!(
        places,
        vec![
            ("MNIST_DIR".to_string(), Some(PathBuf::from("/somewhere/mnist"))),
            ("./data/mnist".to_string(), Some(PathBuf::from("./data/mnist"))),
            ("/usr/share/datasets/mnist".to_string(), Some(PathBuf::from("/usr/share/datasets/mnist"))),
        ]
    );
    assert!(!plan.explicit);
    let download = plan.download.unwrap();
    assert_eq!(download.base_url, "https://ossci-datasets.s3.amazonaws.com/mnist/");
    assert_eq!(download.dest, PathBuf::from("./data/mnist"));
    assert_eq!(
        download.files[3],
        ("t10k-labels-idx1-ubyte.gz".into(), "ec29112dd5afa0611ce80d1b7f02629c".into())
    );

    // An empty variable counts as unset; the download URL can be overridden.
    std::env::set_var("FASHION_MNIST_DIR", "");
    std::env::set_var("FMNIST_DOWNLOAD_URL", "http://127.0.0.1:9/mirror/");
    let plan =
        SearchPlan::new(&LoadOptions { kind: DatasetKind::Fashion, data_dir: None, allow_download: true });
    assert_eq!(plan.places[0], Place { origin: "FASHION_MNIST_DIR".into(), dir: None });
    assert_eq!(plan.places[2].origin, "Debian package dataset-fashion-mnist");
    assert_eq!(plan.places[2].dir, Some(PathBuf::from("/usr/share/datasets/fashion-mnist")));
    assert_eq!(plan.download.unwrap().base_url, "http://127.0.0.1:9/mirror/");

    // --data-dir is the only place; a download, if allowed, goes into it.
    let dir = Path::new("/my/data");
    let plan = SearchPlan::new(&LoadOptions {
        kind: DatasetKind::Fashion,
        data_dir: Some(dir),
        allow_download: true,
    });
    assert_eq!(plan.places, vec![Place { origin: "--data-dir".into(), dir: Some(dir.to_path_buf()) }]);
    assert!(plan.explicit);
    assert_eq!(plan.download.unwrap().dest, dir);
    let plan = SearchPlan::new(&LoadOptions {
        kind: DatasetKind::Fashion,
        data_dir: Some(dir),
        allow_download: false,
    });
    assert!(plan.download.is_none());

    std::env::remove_var("MNIST_DIR");
    std::env::remove_var("FASHION_MNIST_DIR");
    std::env::remove_var("FMNIST_DOWNLOAD_URL");
}

#[test]
fn when_everything_fails_one_line_names_each_place_and_the_fix() {
    let dir = temp_dir("all-fail");
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    }; // closed again: connections are refused
    let (_, table) = DatasetKind::Fashion.download_source();
    let plan = SearchPlan {
        kind: DatasetKind::Fashion,
        places: vec![
            Place { origin: "FASHION_MNIST_DIR".into(), dir: None },
            Place { origin: "somewhere".into(), dir: Some(dir.join("nothing-here")) },
            Place { origin: "an empty folder".into(), dir: Some(dir.clone()) },
        ],
        explicit: false,
        download: Some(DownloadPlan {
            base_url: format!("http://127.0.0.1:{port}/"),
            files: table.iter().map(|(n, m)| (n.to_string(), m.to_string())).collect(),
            dest: dir.join("dl"),
        }),
    };
    let start = Instant::now();
    let err = plan.run().unwrap_err().to_string();
    assert!(start.elapsed().as_secs() < 15, "took {:?}", start.elapsed());
    println!("{err}");
    assert!(!err.contains('\n'));
    assert!(err.starts_with("no Fashion-MNIST data found; tried FASHION_MNIST_DIR: not set; "), "{err}");
    assert!(
        err.contains(&format!("{} (somewhere): no such folder", dir.join("nothing-here").display())),
        "{err}"
    );
    assert!(err.contains("(an empty folder): holds neither the four IDX files"), "{err}");
    assert!(
        err.contains(&format!("download into {}: http://127.0.0.1:{port}/", dir.join("dl").display())),
        "{err}"
    );
    assert!(err.ends_with(
        "Fix: sudo apt-get install dataset-fashion-mnist, or pass --data-dir DIR (a folder holding the four IDX \
         files (train-images-idx3-ubyte.gz, ...) or fashion-mnist_train.csv and fashion-mnist_test.csv)"
    ), "{err}");
    assert!(names_in(&dir.join("dl")).is_empty());

    let plan = SearchPlan { download: None, ..plan };
    assert!(plan.run().unwrap_err().to_string().contains("; download: not allowed. Fix: "));
    let _ = fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------
// The split

/// A dataset whose image `i` encodes `i` in its two pixels.
fn numbered(n: usize) -> Dataset {
    let images = (0..n).flat_map(|i| [(i % 256) as u8, (i / 256) as u8]).collect();
    let labels = (0..n).map(|i| (i % 10) as u8).collect();
    Dataset::new(images, labels, 1, 2)
}

fn ids(ds: &Dataset) -> Vec<usize> {
    (0..ds.len()).map(|i| ds.image(i)[0] as usize + 256 * ds.image(i)[1] as usize).collect()
}

#[test]
fn split_sizes_disjointness_and_determinism() {
    let ds = numbered(1000);
    let (train, val) = train_val_split(&ds, 0.2, &mut Rng::new(12345));
    assert_eq!((train.len(), val.len()), (800, 200));
    let (t, v) = (ids(&train), ids(&val));
    // Each part keeps the file order, the parts are disjoint and together are everything.
    assert!(t.windows(2).all(|w| w[0] < w[1]) && v.windows(2).all(|w| w[0] < w[1]));
    let mut all: Vec<usize> = t.iter().chain(&v).copied().collect();
    all.sort_unstable();
    assert_eq!(all, (0..1000).collect::<Vec<_>>());
    // Labels travel with their images.
    assert!(t.iter().zip(&train.labels).all(|(&i, &l)| l as usize == i % 10));
    // Same seed, same split; another seed, another split.
    assert_eq!(train_val_split(&ds, 0.2, &mut Rng::new(12345)), (train.clone(), val.clone()));
    assert_ne!(train_val_split(&ds, 0.2, &mut Rng::new(2020)).1, val);
    // Rounding: 0.25 of 10 is 2.5, rounded to 3 (half away from zero).
    assert_eq!(train_val_split(&numbered(10), 0.25, &mut Rng::new(1)).1.len(), 3);
}

#[test]
fn split_with_zero_fraction_keeps_everything_for_training() {
    let ds = numbered(57);
    let (train, val) = train_val_split(&ds, 0.0, &mut Rng::new(7));
    assert_eq!(train, ds);
    assert!(val.is_empty());
    assert_eq!((val.rows, val.cols), (1, 2));
    let (train, val) = train_val_split(&ds, 1.0, &mut Rng::new(7));
    assert!(train.is_empty());
    assert_eq!(val, ds);
}

#[test]
#[should_panic(expected = "val_fraction")]
fn split_rejects_a_fraction_above_one() {
    train_val_split(&numbered(5), 1.5, &mut Rng::new(0));
}

// ---------------------------------------------------------------------------------------
// Download, from a local HTTP server

/// A tiny HTTP/1.1 server on 127.0.0.1 serving `files` by name (404 otherwise), counting
/// requests. With `cut_short`, each body stops halfway although `Content-Length` promises all.
struct Server {
    base_url: String,
    hits: Arc<AtomicUsize>,
}

fn serve(files: HashMap<String, Vec<u8>>, cut_short: bool) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base_url = format!("http://{}/", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            counter.fetch_add(1, Ordering::SeqCst);
            let _ = answer(stream, &files, cut_short);
        }
    });
    Server { base_url, hits }
}

fn answer(stream: TcpStream, files: &HashMap<String, Vec<u8>>, cut_short: bool) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header == "\r\n" {
            break;
        }
    }
    let path = request_line.split_whitespace().nth(1).unwrap_or("/");
    let mut out = stream;
    match files.get(path.trim_start_matches('/')) {
        Some(body) => {
            write!(out, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len())?;
            let sent = if cut_short { &body[..body.len() / 2] } else { &body[..] };
            out.write_all(sent)?;
        }
        None => write!(out, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?,
    }
    out.flush()
}

fn md5_hex(bytes: &[u8]) -> String {
    format!("{:x}", md5::compute(bytes))
}

#[test]
fn download_lands_verified_files_atomically_and_they_load() {
    let dir = temp_dir("download-ok");
    let (train, test) = (synthetic(30, 28, 28), synthetic(10, 28, 28));
    let files = idx_folder_files(&train, &test);
    let table: Vec<(String, String)> = files.iter().map(|(n, b)| (n.clone(), md5_hex(b))).collect();
    let server = serve(files.iter().cloned().collect(), false);

    // Through the public search, as `load` would run it, with checksums of our own files.
    let dest = dir.join("data").join("fashion-mnist");
    let plan = SearchPlan {
        kind: DatasetKind::Fashion,
        places: vec![Place { origin: "./data/fashion-mnist".into(), dir: Some(dest.clone()) }],
        explicit: false,
        download: Some(DownloadPlan {
            base_url: server.base_url.clone(),
            files: table.clone(),
            dest: dest.clone(),
        }),
    };
    let (got_train, got_test, source) = plan.run().unwrap();
    assert_eq!((got_train, got_test), (train.clone(), test.clone()));
    assert_eq!(source.origin, format!("downloaded from {}", server.base_url));
    assert_eq!((source.dir.as_path(), source.format), (dest.as_path(), Format::Idx));
    // Exactly the four files, byte for byte, and no temporary file left.
    let mut expected: Vec<String> = files.iter().map(|(n, _)| n.clone()).collect();
    expected.sort();
    assert_eq!(names_in(&dest), expected);
    for (name, bytes) in &files {
        assert_eq!(&fs::read(dest.join(name)).unwrap(), bytes);
    }
    assert_eq!(server.hits.load(Ordering::SeqCst), 4);

    // Files already present with the right checksum are not fetched again; a damaged one is.
    fs::write(dest.join(&files[1].0), b"damaged").unwrap();
    let pairs: Vec<(&str, &str)> = table.iter().map(|(n, m)| (n.as_str(), m.as_str())).collect();
    download_files(server.base_url.trim_end_matches('/'), &pairs, &dest).unwrap();
    assert_eq!(server.hits.load(Ordering::SeqCst), 5);
    assert_eq!(fs::read(dest.join(&files[1].0)).unwrap(), files[1].1);
    assert_eq!(load_dir(&dest, DatasetKind::Fashion).unwrap().0, train);
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn download_with_a_wrong_checksum_leaves_nothing_behind() {
    let dir = temp_dir("download-bad-md5");
    let body = b"not the published file".to_vec();
    let server = serve(HashMap::from([("train-images-idx3-ubyte.gz".to_string(), body.clone())]), false);
    let expected = "8d4fb7e6c68d591d4c3dfef9ec88bf0d";
    let err =
        download_files(&server.base_url, &[("train-images-idx3-ubyte.gz", expected)], &dir).unwrap_err();
    let msg = err.to_string();
    assert_eq!(err.location(), Some(format!("{}train-images-idx3-ubyte.gz", server.base_url).as_str()));
    assert!(
        msg.ends_with(&format!(
            "MD5 {} does not match the published {expected}; the download was discarded",
            md5_hex(&body)
        )),
        "{msg}"
    );
    assert!(names_in(&dir).is_empty(), "left behind: {:?}", names_in(&dir));
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn download_cut_short_or_missing_leaves_nothing_behind() {
    let dir = temp_dir("download-cut");
    let body: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let md5 = md5_hex(&body);
    let server = serve(HashMap::from([("a.gz".to_string(), body)]), true);
    let err = download_files(&server.base_url, &[("a.gz", md5.as_str())], &dir).unwrap_err().to_string();
    assert!(err.starts_with(&format!("{}a.gz: download", server.base_url)), "{err}");
    assert!(names_in(&dir).is_empty(), "left behind: {:?}", names_in(&dir));

    let err =
        download_files(&server.base_url, &[("missing.gz", md5.as_str())], &dir).unwrap_err().to_string();
    assert!(err.contains("missing.gz: download failed") && err.contains("404"), "{err}");
    assert!(names_in(&dir).is_empty());
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn https_to_a_server_without_tls_is_a_clean_error() {
    // Exercises the TLS stack (the digit-MNIST mirror is https) up to a failed handshake.
    let dir = temp_dir("download-tls");
    let server = serve(HashMap::new(), false);
    let url = server.base_url.replace("http://", "https://");
    let start = Instant::now();
    let err = download_files(&url, &[("a.gz", "00")], &dir).unwrap_err().to_string();
    assert!(err.starts_with(&format!("{url}a.gz: download failed: ")) && !err.contains('\n'), "{err}");
    assert!(start.elapsed().as_secs() < 15, "took {:?}", start.elapsed());
    assert!(names_in(&dir).is_empty());
    let _ = fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------
// The real dataset

#[test]
fn real_debian_fashion_mnist_loads_when_installed() {
    let dir = Path::new("/usr/share/datasets/fashion-mnist");
    if !dir.is_dir() {
        println!("skipped: {} absent (sudo apt-get install dataset-fashion-mnist)", dir.display());
        return;
    }
    let opts = LoadOptions { kind: DatasetKind::Fashion, data_dir: Some(dir), allow_download: false };
    let (train, test, source) = load(&opts).unwrap();
    assert_eq!((train.len(), test.len()), (60_000, 10_000));
    assert_eq!((train.rows, train.cols, test.rows, test.cols), (28, 28, 28, 28));
    assert_eq!(train.class_counts(), [6000; 10]);
    assert_eq!(test.class_counts(), [1000; 10]);
    assert_eq!(source.format, Format::Idx);
    // Not a blank image: Fashion-MNIST images are mostly dark background with bright items.
    let mean = train.images.iter().map(|&p| p as f64).sum::<f64>() / train.images.len() as f64;
    assert!((60.0..85.0).contains(&mean), "mean pixel {mean}");

    // With nothing else configured, the default search finds a copy too (./data/fashion-mnist
    // if a developer has one, else the Debian package).
    let _guard = env_lock();
    std::env::remove_var("FASHION_MNIST_DIR");
    let (train, _, source) = load(&LoadOptions { data_dir: None, ..opts }).unwrap();
    println!("default search: {source}");
    assert_eq!(train.len(), 60_000);
    assert!(
        source.origin == "Debian package dataset-fashion-mnist" || source.origin == "./data/fashion-mnist",
        "{source}"
    );
}

/// Needs the internet, so it is ignored by default: `cargo test --release --test data -- --ignored`.
/// Downloads the official Fashion-MNIST files, checks their published MD5s, and loads them.
/// Without network it must fail within seconds, with a one-line error.
#[test]
#[ignore]
fn real_download_from_the_official_source() {
    let dir = temp_dir("download-official");
    let (url, table) = DatasetKind::Fashion.download_source();
    let start = Instant::now();
    match download_files(url, &table, &dir) {
        Ok(()) => {
            let (train, test, _) = load_dir(&dir, DatasetKind::Fashion).unwrap();
            assert_eq!((train.len(), test.len()), (60_000, 10_000));
        }
        Err(e) => {
            let msg = e.to_string();
            println!("no network? {msg} (after {:?})", start.elapsed());
            assert!(!msg.contains('\n'));
            assert!(start.elapsed().as_secs() < 20, "took {:?}", start.elapsed());
            assert!(names_in(&dir).is_empty());
        }
    }
    let _ = fs::remove_dir_all(&dir);
}
