//! The CSV reader for Kaggle's copies of the datasets (`fashion-mnist_train.csv`,
//! `fashion-mnist_test.csv`; `mnist_train.csv`, `mnist_test.csv`).
//!
//! Layout: one header row `label,pixel1,...,pixel784`, then one row per image: the label
//! (`0..=9`) and 784 pixels (`0..=255`) of a 28x28 image in row-major order (`pixel{28*i+j+1}`
//! is row `i`, column `j`). Every row must have exactly 785 integer fields; a violation is an
//! error naming the file and the 1-based line number (the header is line 1). Blank lines are
//! skipped, `\r\n` line ends and spaces around fields are accepted; nothing else is repaired.
//! The file is streamed line by line, so memory holds the pixels only, not the text; it is
//! read up to [`MAX_CSV_BYTES`] (512 MiB), in lines of up to [`MAX_CSV_LINE_BYTES`] (64 KiB).

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use super::{DataError, Dataset, NUM_CLASSES};
use crate::limits::{MAX_CSV_BYTES, MAX_CSV_LINE_BYTES};

/// Image height of the Kaggle CSV files.
pub const CSV_ROWS: usize = 28;
/// Image width of the Kaggle CSV files.
pub const CSV_COLS: usize = 28;
/// Fields per row: the label, then `CSV_ROWS * CSV_COLS` pixels.
const FIELDS: usize = 1 + CSV_ROWS * CSV_COLS;

/// A field shortened for an error message (a corrupt file may hold very long "fields").
fn show(field: &[u8]) -> String {
    let s = String::from_utf8_lossy(field);
    if s.chars().count() > 20 {
        format!("{}...", s.chars().take(20).collect::<String>())
    } else {
        s.into_owned()
    }
}

/// Parses a non-negative decimal integer; `None` for anything else (empty, sign, point,
/// letters) or a value above `u32::MAX`.
fn parse_uint(field: &[u8]) -> Option<u32> {
    if field.is_empty() || field.len() > 10 {
        return None;
    }
    let mut v: u64 = 0;
    for &b in field {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v * 10 + (b - b'0') as u64;
    }
    u32::try_from(v).ok()
}

/// Strips the line end (`\n` or `\r\n`).
fn strip_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Checks the header row (line 1).
fn check_header(path: &Path, line: &[u8]) -> Result<(), DataError> {
    let fields: Vec<&[u8]> = line.split(|&b| b == b',').map(|f| f.trim_ascii()).collect();
    let first = fields.first().copied().unwrap_or_default();
    if parse_uint(first).is_some() {
        return Err(DataError::at_line(
            path,
            1,
            "missing header row: the first line holds numbers, expected `label,pixel1,...,pixel784`",
        ));
    }
    if !first.eq_ignore_ascii_case(b"label") {
        return Err(DataError::at_line(
            path,
            1,
            format!("header must start with `label`, found `{}`", show(first)),
        ));
    }
    if fields.len() != FIELDS {
        return Err(DataError::at_line(
            path,
            1,
            format!("header has {} columns, expected {FIELDS} (label,pixel1,...,pixel784)", fields.len()),
        ));
    }
    Ok(())
}

/// Reads a Kaggle-style CSV file into a 28x28 [`Dataset`].
pub fn read_csv(path: &Path) -> Result<Dataset, DataError> {
    let file = File::open(path).map_err(|e| DataError::io(path, "cannot open", &e))?;
    if file.metadata().is_ok_and(|m| m.is_dir()) {
        return Err(DataError::at(path, "cannot read: is a folder, not a file"));
    }
    parse_csv(path, BufReader::with_capacity(1 << 20, file))
}

/// [`read_csv`] on any reader; `path` names it in messages. At most [`MAX_CSV_BYTES`] bytes
/// are read, in lines of at most [`MAX_CSV_LINE_BYTES`], so neither a file that never ends
/// nor one without line breaks can fill the memory.
pub fn parse_csv(path: &Path, reader: impl BufRead) -> Result<Dataset, DataError> {
    let mut reader = reader.take(MAX_CSV_BYTES + 1);
    let mut images: Vec<u8> = Vec::new(); // [N, 28, 28]
    let mut labels: Vec<u8> = Vec::new(); // [N]
    let mut buf = Vec::with_capacity(4096);
    let mut line_no = 0usize;
    loop {
        buf.clear();
        let read = (&mut reader)
            .take(MAX_CSV_LINE_BYTES as u64 + 1)
            .read_until(b'\n', &mut buf)
            .map_err(|e| DataError::io(path, "cannot read", &e))?;
        if read == 0 {
            break;
        }
        line_no += 1;
        if reader.limit() == 0 {
            return Err(DataError::at(
                path,
                format!("larger than the limit of {MAX_CSV_BYTES} bytes for a CSV file (512 MiB)"),
            ));
        }
        if buf.len() > MAX_CSV_LINE_BYTES {
            return Err(DataError::at_line(
                path,
                line_no,
                format!(
                    "line longer than the limit of {MAX_CSV_LINE_BYTES} bytes (a row of {FIELDS} fields takes at \
                     most {})",
                    FIELDS * 4
                ),
            ));
        }
        let line = strip_eol(&buf);
        if line_no == 1 {
            check_header(path, line)?;
            continue;
        }
        if line.trim_ascii().is_empty() {
            continue;
        }
        // Count first so that a short or long row is reported as such, not as a bad field.
        let n_fields = line.iter().filter(|&&b| b == b',').count() + 1;
        if n_fields != FIELDS {
            return Err(DataError::at_line(
                path,
                line_no,
                format!("expected {FIELDS} fields (label + {} pixels), found {n_fields}", FIELDS - 1),
            ));
        }
        for (col, field) in line.split(|&b| b == b',').enumerate() {
            let field = field.trim_ascii();
            let value = parse_uint(field).ok_or_else(|| {
                DataError::at_line(
                    path,
                    line_no,
                    format!("field {}: `{}` is not an integer", col + 1, show(field)),
                )
            })?;
            if col == 0 {
                if value as usize >= NUM_CLASSES {
                    return Err(DataError::at_line(
                        path,
                        line_no,
                        format!("label {value} is out of range 0..={}", NUM_CLASSES - 1),
                    ));
                }
                labels.push(value as u8);
            } else {
                if value > 255 {
                    return Err(DataError::at_line(
                        path,
                        line_no,
                        format!("field {} (pixel{col}): {value} is out of range 0..=255", col + 1),
                    ));
                }
                images.push(value as u8);
            }
        }
    }
    if line_no == 0 {
        return Err(DataError::at(path, "empty file: expected a header row `label,pixel1,...,pixel784`"));
    }
    Ok(Dataset::new(images, labels, CSV_ROWS, CSV_COLS))
}
