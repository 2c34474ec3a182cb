//! The IDX reader (LeCun's MNIST format, also used by Fashion-MNIST).
//!
//! An IDX file is a big-endian header followed by a raw `u8` payload:
//!
//! | file   | magic        | header after the magic         | payload                       |
//! |--------|--------------|--------------------------------|-------------------------------|
//! | images | `0x00000803` | `n: u32, rows: u32, cols: u32` | `n * rows * cols` pixels, `[N, H, W]` row-major |
//! | labels | `0x00000801` | `n: u32`                       | `n` labels                    |
//!
//! Files may be gzip-compressed (recognised by the gzip magic `1f 8b`, so the name does not
//! matter) or plain. Every structural fault is an error naming the file: a wrong magic number,
//! a zero dimension, a payload shorter or longer than the header says, a corrupt gzip stream, a
//! label outside `0..=9`, and (in [`read_idx_pair`]) image and label counts that disagree.
//! Nothing is skipped or repaired. A file is read, and decompressed, up to
//! [`MAX_IDX_BYTES`] (256 MiB) whatever size it reports, so a device or a gzip bomb given as
//! an IDX file costs at most that; nothing is allocated from the header's sizes.

use std::path::Path;

use byteorder::{BigEndian, ByteOrder};
use flate2::read::MultiGzDecoder;

use super::{DataError, Dataset, NUM_CLASSES};
use crate::limits::{self, ReadError, MAX_IDX_BYTES};

/// Magic number of an IDX file of unsigned bytes with 3 dimensions (images).
pub const IDX_IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic number of an IDX file of unsigned bytes with 1 dimension (labels).
pub const IDX_LABELS_MAGIC: u32 = 0x0000_0801;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// The images of one IDX file, before they are paired with labels.
#[derive(Clone, PartialEq, Eq)]
pub struct IdxImages {
    /// `[N, rows, cols]` row-major, 0..=255.
    pub images: Vec<u8>,
    pub n: usize,
    pub rows: usize,
    pub cols: usize,
}

impl std::fmt::Debug for IdxImages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IdxImages {{ n: {}, rows: {}, cols: {} }}", self.n, self.rows, self.cols)
    }
}

/// `raw` itself, or its gzip decompression, of at most [`MAX_IDX_BYTES`] bytes either way.
///
/// Gzip is recognised by its magic bytes; a name ending in `.gz` must hold gzip. Several
/// concatenated gzip members are read as one stream (RFC 1952 allows it), so bytes after the
/// last member that are not another member are a "corrupt gzip stream" error, not ignored.
fn decompress(path: &Path, raw: Vec<u8>) -> Result<Vec<u8>, DataError> {
    if raw.starts_with(&GZIP_MAGIC) {
        let hint = (raw.len() as u64).saturating_mul(2);
        limits::read_limited(MultiGzDecoder::new(raw.as_slice()), hint, MAX_IDX_BYTES).map_err(|e| match e {
            ReadError::TooLarge { limit } => DataError::at(
                path,
                format!("decompresses to more than the limit of {limit} bytes for an IDX file (256 MiB)"),
            ),
            e => DataError::at(path, format!("corrupt gzip stream: {}", io_reason(e))),
        })
    } else if path.extension().is_some_and(|ext| ext == "gz") {
        let head: Vec<String> = raw.iter().take(4).map(|b| format!("{b:02x}")).collect();
        Err(DataError::at(
            path,
            format!("not a gzip file (starts with bytes [{}], gzip starts with [1f 8b])", head.join(" ")),
        ))
    } else {
        Ok(raw)
    }
}

/// The I/O error inside a [`ReadError`], as text.
fn io_reason(e: ReadError) -> String {
    match e {
        ReadError::Io(e) => e.to_string(),
        other => other.to_string(),
    }
}

/// Checks the magic number at the start of `bytes` (at least 4 bytes long).
fn check_magic(path: &Path, bytes: &[u8], expected: u32) -> Result<(), DataError> {
    let Some(head) = bytes.get(0..4) else {
        return Err(DataError::at(path, format!("truncated: {} bytes, no IDX magic number", bytes.len())));
    };
    let magic = BigEndian::read_u32(head);
    if magic == expected {
        return Ok(());
    }
    let what = |m: u32| if m == IDX_IMAGES_MAGIC { "IDX images" } else { "IDX labels" };
    let mut msg = format!("wrong magic number 0x{magic:08x}, expected 0x{expected:08x} ({})", what(expected));
    if magic == IDX_IMAGES_MAGIC || magic == IDX_LABELS_MAGIC {
        msg.push_str(&format!("; this file holds {}", what(magic)));
    }
    Err(DataError::at(path, msg))
}

/// Checks that `bytes` is a header of `header_len` bytes followed by exactly `payload_len`
/// bytes. `what` describes the payload for the message, e.g. "60000 images of 28x28".
fn check_length(
    path: &Path,
    total: usize,
    header_len: usize,
    payload_len: u64,
    what: &str,
) -> Result<(), DataError> {
    let have = total.saturating_sub(header_len) as u64;
    if have < payload_len {
        Err(DataError::at(path, format!("truncated: {have} payload bytes, expected {payload_len} ({what})")))
    } else if have > payload_len {
        Err(DataError::at(
            path,
            format!("{} trailing bytes after the {payload_len} expected ({what})", have - payload_len),
        ))
    } else {
        Ok(())
    }
}

/// Reads an IDX images file (magic `0x00000803`), gzip or plain, of at most
/// [`MAX_IDX_BYTES`] bytes before and after decompression.
pub fn read_idx_images(path: &Path) -> Result<IdxImages, DataError> {
    let raw = limits::read_file(path, MAX_IDX_BYTES).map_err(|e| DataError::at(path, e.to_string()))?;
    decode_idx_images(path, raw)
}

/// [`read_idx_images`] on the bytes of a file already read; `path` names it in messages.
pub fn decode_idx_images(path: &Path, raw: Vec<u8>) -> Result<IdxImages, DataError> {
    const HEADER: usize = 16;
    let mut bytes = decompress(path, raw)?;
    if bytes.len() < HEADER {
        return Err(DataError::at(
            path,
            format!("truncated: {} bytes, shorter than the {HEADER}-byte IDX images header", bytes.len()),
        ));
    }
    check_magic(path, &bytes, IDX_IMAGES_MAGIC)?;
    let n = BigEndian::read_u32(&bytes[4..8]) as u64;
    let rows = BigEndian::read_u32(&bytes[8..12]) as u64;
    let cols = BigEndian::read_u32(&bytes[12..16]) as u64;
    if rows == 0 || cols == 0 {
        return Err(DataError::at(path, format!("image size {rows}x{cols} has a zero dimension")));
    }
    // u32 * u32 * u32 can overflow u64 only past 2^64; checked anyway for an absurd header.
    let payload = n.checked_mul(rows).and_then(|x| x.checked_mul(cols)).ok_or_else(|| {
        DataError::at(path, format!("header claims {n} images of {rows}x{cols}: too large"))
    })?;
    check_length(path, bytes.len(), HEADER, payload, &format!("{n} images of {rows}x{cols}"))?;
    bytes.drain(..HEADER);
    Ok(IdxImages { images: bytes, n: n as usize, rows: rows as usize, cols: cols as usize })
}

/// Reads an IDX labels file (magic `0x00000801`), gzip or plain, of at most
/// [`MAX_IDX_BYTES`] bytes before and after decompression. Every label must be in `0..=9`.
pub fn read_idx_labels(path: &Path) -> Result<Vec<u8>, DataError> {
    let raw = limits::read_file(path, MAX_IDX_BYTES).map_err(|e| DataError::at(path, e.to_string()))?;
    decode_idx_labels(path, raw)
}

/// [`read_idx_labels`] on the bytes of a file already read; `path` names it in messages.
pub fn decode_idx_labels(path: &Path, raw: Vec<u8>) -> Result<Vec<u8>, DataError> {
    const HEADER: usize = 8;
    let mut bytes = decompress(path, raw)?;
    if bytes.len() < HEADER {
        return Err(DataError::at(
            path,
            format!("truncated: {} bytes, shorter than the {HEADER}-byte IDX labels header", bytes.len()),
        ));
    }
    check_magic(path, &bytes, IDX_LABELS_MAGIC)?;
    let n = BigEndian::read_u32(&bytes[4..8]) as u64;
    check_length(path, bytes.len(), HEADER, n, &format!("{n} labels"))?;
    bytes.drain(..HEADER);
    if let Some(i) = bytes.iter().position(|&l| l as usize >= NUM_CLASSES) {
        return Err(DataError::at(
            path,
            format!("label {} at index {i} is out of range 0..={}", bytes[i], NUM_CLASSES - 1),
        ));
    }
    Ok(bytes)
}

/// Reads an images file and its labels file into one [`Dataset`]; the two counts must match.
pub fn read_idx_pair(images_path: &Path, labels_path: &Path) -> Result<Dataset, DataError> {
    let images = read_idx_images(images_path)?;
    let labels = read_idx_labels(labels_path)?;
    if images.n != labels.len() {
        return Err(DataError::at(
            images_path,
            format!("holds {} images but {} holds {} labels", images.n, labels_path.display(), labels.len()),
        ));
    }
    Ok(Dataset::new(images.images, labels, images.rows, images.cols))
}
