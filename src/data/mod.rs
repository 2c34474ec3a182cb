//! The data layer: finds Fashion-MNIST (or digit MNIST), reads it, checks it, and splits it.
//!
//! # Memory layout
//! A [`Dataset`] holds `images: [N, rows, cols]` as row-major `u8` (0..=255, not yet scaled)
//! and `labels: [N]` in `0..=9`. Both datasets are 60,000 / 10,000 images of 28x28.
//! Scaling to `[0, 1]` and batching into tensors belong to the trainer, not here.
//!
//! # Files
//! A data folder holds either the four IDX files `train-images-idx3-ubyte.gz`,
//! `train-labels-idx1-ubyte.gz`, `t10k-images-idx3-ubyte.gz`, `t10k-labels-idx1-ubyte.gz`
//! (each may also be uncompressed, named without `.gz`), or Kaggle's two CSV files
//! `fashion-mnist_train.csv` and `fashion-mnist_test.csv` (digits: `mnist_train.csv`,
//! `mnist_test.csv`). The format is told by these names; a folder holding both sets is read as
//! IDX. The readers ([`read_idx_images`], [`read_idx_labels`], [`read_idx_pair`],
//! [`read_csv`]) check everything and repair nothing: each fault is a [`DataError`] whose
//! one-line message names the file (and the line, for CSV) and what is wrong.
//!
//! # Where [`load`] looks, in order
//! 1. `data_dir` (the CLI's `--data-dir`). If given, it is the only place: data missing there
//!    is an error (or, with `allow_download`, the files are downloaded into it).
//! 2. The folder named by `FASHION_MNIST_DIR` (digits: `MNIST_DIR`), when set and non-empty.
//! 3. `./data/fashion-mnist` (digits: `./data/mnist`) in the current directory.
//! 4. `/usr/share/datasets/fashion-mnist`, where the Debian package `dataset-fashion-mnist`
//!    installs the IDX files (digits: `/usr/share/datasets/mnist`).
//! 5. Only if `allow_download`: the official files, downloaded into `./data/<folder>` and
//!    checked against their published MD5 checksums (see `download.rs`). The environment
//!    variable `FMNIST_DOWNLOAD_URL` ([`DOWNLOAD_URL_VAR`]) replaces the base URL (a mirror
//!    must serve identical files: the checksums still apply).
//!
//! A place where the files are absent is skipped; a place where they are present but broken
//! stops the search with that file's error (corrupt data should be fixed, not silently
//! replaced by another copy). When every place fails, the error names each place, why it
//! failed, and the fix. [`SearchPlan`] exposes these steps so that tests and the CLI can see
//! (and tests can redirect) them; [`load`] is `SearchPlan::new(opts).run()`.
//!
//! # Not here
//! No augmentation, normalisation or batching; no caching of decoded files (decoding the
//! 26 MB training file takes well under a second).

mod csv;
mod download;
mod idx;

use std::fmt;
use std::path::{Path, PathBuf};

use crate::limits::IMAGE_SIDE;

pub use csv::{parse_csv, read_csv, CSV_COLS, CSV_ROWS};
pub use download::download_files;
pub use idx::{
    decode_idx_images, decode_idx_labels, read_idx_images, read_idx_labels, read_idx_pair, IdxImages,
    IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC,
};

/// Number of classes in both datasets; every label is below this.
pub const NUM_CLASSES: usize = 10;

/// Environment variable that replaces the download base URL (for a mirror, or a local test
/// server); the published checksums still apply.
pub const DOWNLOAD_URL_VAR: &str = "FMNIST_DOWNLOAD_URL";

/// The base names of the four IDX files (train images, train labels, test images, test
/// labels), without `.gz`.
pub const IDX_FILES: [&str; 4] = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
];

/// Which dataset: both share the IDX format, the sizes and the 10 classes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum DatasetKind {
    /// Zalando's Fashion-MNIST.
    #[default]
    Fashion,
    /// LeCun's handwritten digits.
    Digits,
}

impl DatasetKind {
    pub fn name(&self) -> &'static str {
        match self {
            DatasetKind::Fashion => "Fashion-MNIST",
            DatasetKind::Digits => "MNIST",
        }
    }

    /// Class names by label, as the dataset's README gives them.
    pub fn class_names(&self) -> [&'static str; 10] {
        match self {
            DatasetKind::Fashion => [
                "T-shirt/top",
                "Trouser",
                "Pullover",
                "Dress",
                "Coat",
                "Sandal",
                "Shirt",
                "Sneaker",
                "Bag",
                "Ankle boot",
            ],
            DatasetKind::Digits => ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"],
        }
    }

    /// The environment variable naming a data folder.
    pub fn env_var(&self) -> &'static str {
        match self {
            DatasetKind::Fashion => "FASHION_MNIST_DIR",
            DatasetKind::Digits => "MNIST_DIR",
        }
    }

    /// The folder name under `./data/` and `/usr/share/datasets/`.
    pub fn folder(&self) -> &'static str {
        match self {
            DatasetKind::Fashion => "fashion-mnist",
            DatasetKind::Digits => "mnist",
        }
    }

    /// The kind whose [`folder`](DatasetKind::folder) name is `name` (as model files name
    /// their dataset).
    pub fn from_folder(name: &str) -> Option<DatasetKind> {
        [DatasetKind::Fashion, DatasetKind::Digits].into_iter().find(|k| k.folder() == name)
    }

    /// Kaggle's CSV file names: (train, test).
    pub fn csv_files(&self) -> (&'static str, &'static str) {
        match self {
            DatasetKind::Fashion => ("fashion-mnist_train.csv", "fashion-mnist_test.csv"),
            DatasetKind::Digits => ("mnist_train.csv", "mnist_test.csv"),
        }
    }

    /// The official download: base URL and (file name, published MD5) of the four IDX files.
    pub fn download_source(&self) -> (&'static str, [(&'static str, &'static str); 4]) {
        match self {
            DatasetKind::Fashion => (download::FASHION_URL, download::FASHION_MD5),
            DatasetKind::Digits => (download::DIGITS_URL, download::DIGITS_MD5),
        }
    }

    /// Where a system package installs the files.
    pub fn system_dir(&self) -> PathBuf {
        Path::new("/usr/share/datasets").join(self.folder())
    }

    /// How [`DataSource::origin`] names [`DatasetKind::system_dir`]. Debian packages
    /// Fashion-MNIST; for digits there is no such package, so the folder is named as it is.
    fn system_origin(&self) -> String {
        match self {
            DatasetKind::Fashion => "Debian package dataset-fashion-mnist".to_string(),
            DatasetKind::Digits => self.system_dir().display().to_string(),
        }
    }

    /// The fix printed when no data is found.
    fn install_hint(&self) -> String {
        let (train_csv, test_csv) = self.csv_files();
        let folder = format!(
            "a folder holding the four IDX files ({}.gz, ...) or {train_csv} and {test_csv}",
            IDX_FILES[0]
        );
        match self {
            DatasetKind::Fashion => {
                format!("sudo apt-get install dataset-fashion-mnist, or pass --data-dir DIR ({folder})")
            }
            DatasetKind::Digits => {
                format!("pass --data-dir DIR ({folder}), or set {}, or allow the download", self.env_var())
            }
        }
    }
}

/// Images and labels, in file order.
///
/// # Shapes
/// `images`: `[N, rows, cols]` row-major, 0..=255; `labels`: `[N]`, each in `0..=9`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Dataset {
    pub images: Vec<u8>,
    pub labels: Vec<u8>,
    pub rows: usize,
    pub cols: usize,
}

impl fmt::Debug for Dataset {
    // The pixels would print 47 million numbers; the shape and class counts say what matters.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Dataset {{ len: {}, rows: {}, cols: {} }}", self.len(), self.rows, self.cols)
    }
}

impl Dataset {
    /// Builds a dataset, checking that the buffers agree.
    ///
    /// # Panics
    /// If `images.len() != labels.len() * rows * cols` or a label is 10 or more.
    pub fn new(images: Vec<u8>, labels: Vec<u8>, rows: usize, cols: usize) -> Dataset {
        assert_eq!(
            images.len(),
            labels.len() * rows * cols,
            "Dataset::new: {} pixels for {} labels of {rows}x{cols}",
            images.len(),
            labels.len()
        );
        if let Some(l) = labels.iter().find(|&&l| l as usize >= NUM_CLASSES) {
            panic!("Dataset::new: label {l} out of range 0..={}", NUM_CLASSES - 1);
        }
        Dataset { images, labels, rows, cols }
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Pixels per image: `rows * cols`.
    pub fn pixels(&self) -> usize {
        self.rows * self.cols
    }

    /// Image `i`: `[rows, cols]` row-major.
    ///
    /// # Panics
    /// If `i >= len()`.
    pub fn image(&self, i: usize) -> &[u8] {
        assert!(i < self.len(), "Dataset::image({i}) of a dataset of {}", self.len());
        let p = self.pixels();
        &self.images[i * p..(i + 1) * p]
    }

    /// The images and labels at `idx`, in that order (repeats allowed).
    ///
    /// # Panics
    /// If an index is `>= len()`.
    pub fn subset(&self, idx: &[usize]) -> Dataset {
        let p = self.pixels();
        let mut images = Vec::with_capacity(idx.len() * p); // [idx.len(), rows, cols]
        let mut labels = Vec::with_capacity(idx.len()); // [idx.len()]
        for &i in idx {
            images.extend_from_slice(self.image(i));
            labels.push(self.labels[i]);
        }
        Dataset { images, labels, rows: self.rows, cols: self.cols }
    }

    /// The first `min(n, len())` images (like `Iterator::take`).
    pub fn take(&self, n: usize) -> Dataset {
        let n = n.min(self.len());
        Dataset {
            images: self.images[..n * self.pixels()].to_vec(),
            labels: self.labels[..n].to_vec(),
            rows: self.rows,
            cols: self.cols,
        }
    }

    /// How many images of each class.
    pub fn class_counts(&self) -> [usize; NUM_CLASSES] {
        let mut counts = [0; NUM_CLASSES];
        for &l in &self.labels {
            counts[l as usize] += 1;
        }
        counts
    }
}

/// Splits `ds` into (train, validation): the indices are shuffled with `rng`, the first
/// `round(len * val_fraction)` go to validation and the rest to training. Each part keeps the
/// file order (the indices are sorted after the draw), so the split is a pure selection and
/// the trainer's per-epoch shuffle is the only reordering. Same seed, same split.
/// `val_fraction == 0` gives an empty validation set. The shuffle always draws from `rng`, so
/// the stream after the split does not depend on the fraction.
///
/// # Panics
/// If `val_fraction` is not in `[0, 1]`.
pub fn train_val_split(ds: &Dataset, val_fraction: f32, rng: &mut kernels::Rng) -> (Dataset, Dataset) {
    assert!(
        (0.0..=1.0).contains(&val_fraction),
        "train_val_split: val_fraction {val_fraction} not in [0, 1]"
    );
    let n = ds.len();
    let n_val = (n as f64 * val_fraction as f64).round() as usize;
    let mut idx: Vec<usize> = (0..n).collect();
    rng.shuffle(&mut idx);
    let (val, train) = idx.split_at_mut(n_val);
    val.sort_unstable();
    train.sort_unstable();
    (ds.subset(train), ds.subset(val))
}

/// The file format of a data folder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    /// The four IDX files (gzip or plain).
    Idx,
    /// Kaggle's two CSV files.
    Csv,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Idx => "IDX",
            Format::Csv => "CSV",
        })
    }
}

/// Where [`load`] found the data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataSource {
    pub dir: PathBuf,
    pub format: Format,
    /// How it was found: "--data-dir", "FASHION_MNIST_DIR", "./data/fashion-mnist",
    /// "Debian package dataset-fashion-mnist", or "downloaded from <base URL>".
    pub origin: String,
}

impl fmt::Display for DataSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} files in {} ({})", self.format, self.dir.display(), self.origin)
    }
}

/// What [`load`] should load, and from where.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoadOptions<'a> {
    pub kind: DatasetKind,
    /// The CLI's `--data-dir`: if given, the only place searched.
    pub data_dir: Option<&'a Path>,
    /// Download the official files when no local copy is found.
    pub allow_download: bool,
}

/// Error of the data layer. Its `Display` is one line: the file (or URL) with the line
/// number where it applies, then what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataError {
    location: Option<String>,
    line: Option<usize>,
    message: String,
}

/// Keeps every message on one line, whatever an underlying error printed.
fn one_line(s: String) -> String {
    if s.contains(['\n', '\r']) {
        s.split(['\n', '\r']).filter(|p| !p.trim().is_empty()).collect::<Vec<_>>().join(" ")
    } else {
        s
    }
}

impl DataError {
    fn at(path: &Path, message: impl Into<String>) -> DataError {
        DataError {
            location: Some(path.display().to_string()),
            line: None,
            message: one_line(message.into()),
        }
    }

    fn at_line(path: &Path, line: usize, message: impl Into<String>) -> DataError {
        DataError { line: Some(line), ..DataError::at(path, message) }
    }

    fn at_url(url: &str, message: impl Into<String>) -> DataError {
        DataError { location: Some(url.to_string()), line: None, message: one_line(message.into()) }
    }

    fn io(path: &Path, doing: &str, e: &std::io::Error) -> DataError {
        DataError::at(path, format!("{doing}: {e}"))
    }

    fn new(message: impl Into<String>) -> DataError {
        DataError { location: None, line: None, message: one_line(message.into()) }
    }

    /// The file or URL the error is about, if any.
    pub fn location(&self) -> Option<&str> {
        self.location.as_deref()
    }

    /// The 1-based line of a CSV file, if any.
    pub fn line(&self) -> Option<usize> {
        self.line
    }

    /// What is wrong, without the location.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for DataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.location, self.line) {
            (Some(loc), Some(line)) => write!(f, "{loc}:{line}: {}", self.message),
            (Some(loc), None) => write!(f, "{loc}: {}", self.message),
            (None, _) => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for DataError {}

/// The IDX file `base` in `dir`: `base.gz`, else `base`.
fn find_idx(dir: &Path, base: &str) -> Option<PathBuf> {
    [dir.join(format!("{base}.gz")), dir.join(base)].into_iter().find(|p| p.is_file())
}

/// The files of a data folder, as found by name.
enum Files {
    /// Train images, train labels, test images, test labels.
    Idx([PathBuf; 4]),
    /// Train, test.
    Csv(PathBuf, PathBuf),
}

impl Files {
    fn format(&self) -> Format {
        match self {
            Files::Idx(_) => Format::Idx,
            Files::Csv(..) => Format::Csv,
        }
    }
}

/// The data files in `dir`, judged by their names only; `Err` says briefly why there are none.
fn find_files(dir: &Path, kind: DatasetKind) -> Result<Files, String> {
    if !dir.exists() {
        return Err("no such folder".to_string());
    }
    if !dir.is_dir() {
        return Err("not a folder".to_string());
    }
    let idx = IDX_FILES.map(|b| find_idx(dir, b));
    if let [Some(a), Some(b), Some(c), Some(d)] = idx {
        return Ok(Files::Idx([a, b, c, d]));
    }
    let (train_csv, test_csv) = kind.csv_files();
    let (train, test) = (dir.join(train_csv), dir.join(test_csv));
    match (train.is_file(), test.is_file()) {
        (true, true) => Ok(Files::Csv(train, test)),
        (true, false) => Err(format!("has {train_csv} but no {test_csv}")),
        (false, true) => Err(format!("has {test_csv} but no {train_csv}")),
        (false, false) if idx.iter().any(Option::is_some) => {
            let missing: Vec<&str> =
                IDX_FILES.iter().zip(&idx).filter(|(_, p)| p.is_none()).map(|(b, _)| *b).collect();
            Err(format!("incomplete IDX files: no {}[.gz]", missing.join("[.gz], no ")))
        }
        (false, false) => Err(format!("holds neither the four IDX files nor {train_csv} and {test_csv}")),
    }
}

/// Which format `dir` holds, judged by the file names.
pub fn detect_format(dir: &Path, kind: DatasetKind) -> Result<Format, DataError> {
    find_files(dir, kind).map(|f| f.format()).map_err(|why| DataError::at(dir, why))
}

/// Loads (train, test) from `dir`, whichever format it holds; both must be non-empty and of
/// images of 28x28, the size of both datasets and the input of every model here.
pub fn load_dir(dir: &Path, kind: DatasetKind) -> Result<(Dataset, Dataset, Format), DataError> {
    let files = find_files(dir, kind).map_err(|why| DataError::at(dir, why))?;
    load_files(dir, &files)
}

fn load_files(dir: &Path, files: &Files) -> Result<(Dataset, Dataset, Format), DataError> {
    let (train, test, test_path) = match files {
        Files::Idx([train_images, train_labels, test_images, test_labels]) => (
            read_idx_pair(train_images, train_labels)?,
            read_idx_pair(test_images, test_labels)?,
            test_images,
        ),
        Files::Csv(train, test) => (read_csv(train)?, read_csv(test)?, test),
    };
    if train.is_empty() || test.is_empty() {
        let which = if train.is_empty() { "training" } else { "test" };
        return Err(DataError::at(dir, format!("the {which} set holds no images")));
    }
    if (train.rows, train.cols) != (test.rows, test.cols) {
        return Err(DataError::at(
            test_path,
            format!(
                "images are {}x{} but the training images are {}x{}",
                test.rows, test.cols, train.rows, train.cols
            ),
        ));
    }
    if (train.rows, train.cols) != (IMAGE_SIDE, IMAGE_SIDE) {
        let path = match files {
            Files::Idx([train_images, ..]) => train_images,
            Files::Csv(train, _) => train,
        };
        return Err(DataError::at(
            path,
            format!(
                "images are {}x{}, but {} images (and every model here) are {IMAGE_SIDE}x{IMAGE_SIDE}",
                train.rows, train.cols, "Fashion-MNIST and MNIST"
            ),
        ));
    }
    Ok((train, test, files.format()))
}

/// One folder [`SearchPlan::run`] looks in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Place {
    /// How [`DataSource::origin`] will name it.
    pub origin: String,
    /// `None` for an environment variable that is not set (kept so the failure message can say
    /// the variable exists).
    pub dir: Option<PathBuf>,
}

/// The last resort of a [`SearchPlan`]: download these files into `dest`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DownloadPlan {
    pub base_url: String,
    /// (file name, lower-case hex MD5).
    pub files: Vec<(String, String)>,
    pub dest: PathBuf,
}

/// The steps of [`load`], made explicit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SearchPlan {
    pub kind: DatasetKind,
    /// Tried in order.
    pub places: Vec<Place>,
    /// The places were named by the user (`--data-dir`): missing data there is an error of its
    /// own, unless a download is planned into it.
    pub explicit: bool,
    pub download: Option<DownloadPlan>,
}

impl SearchPlan {
    /// The plan for `opts`, reading `FASHION_MNIST_DIR` / `MNIST_DIR` and
    /// `FMNIST_DOWNLOAD_URL` now.
    pub fn new(opts: &LoadOptions) -> SearchPlan {
        let kind = opts.kind;
        let download_into = |dest: PathBuf| {
            opts.allow_download.then(|| {
                let (official, table) = kind.download_source();
                let base_url = std::env::var(DOWNLOAD_URL_VAR)
                    .ok()
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| official.to_string());
                let files = table.iter().map(|(n, m)| (n.to_string(), m.to_string())).collect();
                DownloadPlan { base_url, files, dest }
            })
        };
        if let Some(dir) = opts.data_dir {
            return SearchPlan {
                kind,
                places: vec![Place { origin: "--data-dir".to_string(), dir: Some(dir.to_path_buf()) }],
                explicit: true,
                download: download_into(dir.to_path_buf()),
            };
        }
        let env_dir = std::env::var_os(kind.env_var()).filter(|v| !v.is_empty()).map(PathBuf::from);
        let local = Path::new(".").join("data").join(kind.folder());
        SearchPlan {
            kind,
            places: vec![
                Place { origin: kind.env_var().to_string(), dir: env_dir },
                Place { origin: local.display().to_string(), dir: Some(local.clone()) },
                Place { origin: kind.system_origin(), dir: Some(kind.system_dir()) },
            ],
            explicit: false,
            download: download_into(local),
        }
    }

    /// Tries each place, then the download; see the module docs for the rules.
    pub fn run(&self) -> Result<(Dataset, Dataset, DataSource), DataError> {
        let kind = self.kind;
        let mut tried: Vec<String> = Vec::new();
        for place in &self.places {
            let Some(dir) = &place.dir else {
                tried.push(format!("{}: not set", place.origin));
                continue;
            };
            match find_files(dir, kind) {
                Ok(files) => {
                    let (train, test, format) = load_files(dir, &files)?;
                    let source = DataSource { dir: dir.clone(), format, origin: place.origin.clone() };
                    return Ok((train, test, source));
                }
                Err(why) if self.explicit && self.download.is_none() => {
                    return Err(DataError::at(
                        dir,
                        format!("{why} (given by {}); fix: {}", place.origin, kind.install_hint()),
                    ));
                }
                Err(why) => {
                    let label = dir.display().to_string();
                    if label == place.origin {
                        tried.push(format!("{label}: {why}"));
                    } else {
                        tried.push(format!("{label} ({}): {why}", place.origin));
                    }
                }
            }
        }
        match &self.download {
            None => tried.push("download: not allowed".to_string()),
            Some(d) => {
                let files: Vec<(&str, &str)> =
                    d.files.iter().map(|(n, m)| (n.as_str(), m.as_str())).collect();
                match download_files(&d.base_url, &files, &d.dest) {
                    Ok(()) => {
                        let (train, test, format) = load_dir(&d.dest, kind)?;
                        let origin = format!("downloaded from {}", d.base_url);
                        return Ok((train, test, DataSource { dir: d.dest.clone(), format, origin }));
                    }
                    Err(e) => tried.push(format!("download into {}: {e}", d.dest.display())),
                }
            }
        }
        Err(DataError::new(format!(
            "no {} data found; tried {}. Fix: {}",
            kind.name(),
            tried.join("; "),
            kind.install_hint()
        )))
    }
}

/// Finds and loads (train, test); see the module docs for where it looks.
pub fn load(opts: &LoadOptions) -> Result<(Dataset, Dataset, DataSource), DataError> {
    SearchPlan::new(opts).run()
}
