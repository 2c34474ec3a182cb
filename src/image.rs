//! The input side of `fmnist predict`: a user's image file -> a 28x28 Fashion-MNIST-like image.
//!
//! # Pipeline
//! 1. [`read_image`] reads the file and tells PNG from PGM by its first bytes (the PNG signature,
//!    or `P5` / `P2`), never by the extension alone. [`decode_png`] and [`decode_pgm`] turn the
//!    bytes into a [`GrayImage`]: colour becomes ITU-R BT.601 luma, transparency is composited
//!    over white, and every bit depth becomes 0..=255.
//! 2. [`to_fashion_mnist`] makes it look like the training data: a light object on a black
//!    background (inverting a light background), padded to a square, resized to 28x28.
//! 3. [`load_for_model`] is both steps at once.
//!
//! # Memory layout
//! A [`GrayImage`] is `pixels: [H, W]` row-major `u8`, 0 = black .. 255 = white. The result of
//! [`to_fashion_mnist`] is `[28, 28]` row-major `u8`, the layout of one IDX image (not yet scaled
//! to `[0, 1]`: that belongs to the model's input code, as for the training data).
//!
//! # What this does not do
//! No other formats (JPEG, GIF, BMP, colour PPM): convert them first, e.g. with ImageMagick's
//! `convert photo.jpg photo.png`. No object detection or cropping: the object should fill the
//! picture, as the Fashion-MNIST products fill theirs. No gamma or colour management: PNG gamma
//! and ICC chunks are ignored and luma is taken from the stored (gamma-encoded) values, as
//! Pillow's `convert("L")` does. Only the first frame of an animated PNG is read.

use std::fmt;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use crate::limits::{self, ReadError};

/// The side of a Fashion-MNIST image, in pixels.
pub const SIDE: usize = 28;

/// The largest image accepted, in pixels (100 megapixels): a guard against absurd headers that
/// would make the decoder allocate gigabytes. A 10,000 x 10,000 photo still fits.
pub const MAX_PIXELS: usize = 100_000_000;

/// The largest file read, in bytes (256 MiB: a 100-megapixel 16-bit PGM takes 200 MB). The
/// file is read through a limit of this many bytes, whatever size it reports, so pointing
/// `predict` at a disk image or at `/dev/zero` by mistake fails at once instead of filling the
/// memory.
pub const MAX_FILE_BYTES: u64 = 1 << 28;

/// The most a deflate stream (PNG's compression) can expand: 1032 output bytes per input byte
/// (zlib's technical details, "Maximum compression factor"). A PNG header that declares more
/// raw pixel bytes than this times the file's length lies about its size.
const DEFLATE_MAX_RATIO: usize = 1032;

/// The formats [`read_image`] understands, as error messages name them.
const SUPPORTED: &str = "supported formats: PNG, PGM (P5 binary or P2 ASCII)";

/// The eight bytes every PNG file starts with (PNG specification, section 5.2).
const PNG_SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1a, b'\n'];

/// Why an image could not be read: the file and the problem. Its `Display` is one line,
/// `<file>: <problem>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageError {
    path: PathBuf,
    reason: String,
}

impl ImageError {
    fn new(path: &Path, reason: impl Into<String>) -> ImageError {
        ImageError { path: path.to_path_buf(), reason: one_line(reason.into()) }
    }

    /// The file the error is about.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What is wrong, without the file name.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl fmt::Display for ImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.reason)
    }
}

impl std::error::Error for ImageError {}

/// Keeps a message on one line, whatever an underlying error printed.
fn one_line(s: String) -> String {
    if s.contains(['\n', '\r']) {
        s.split(['\n', '\r']).filter(|p| !p.trim().is_empty()).collect::<Vec<_>>().join(" ")
    } else {
        s
    }
}

/// A decoded grey image: `pixels: [height, width]` row-major, 0 = black .. 255 = white.
#[derive(Clone, PartialEq, Eq)]
pub struct GrayImage {
    pub width: usize,
    pub height: usize,
    pub pixels: Vec<u8>,
}

/// Prints the size only: a derived `Debug` would print every pixel in a failed assertion.
impl fmt::Debug for GrayImage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (w, h, n) = (self.width, self.height, self.pixels.len());
        write!(f, "GrayImage {{ width: {w}, height: {h}, pixels: [{n} bytes] }}")
    }
}

/// Refuses a zero side or more than [`MAX_PIXELS`] pixels.
fn check_size(width: usize, height: usize) -> Result<(), String> {
    if width == 0 || height == 0 {
        return Err(format!("image has zero width or height ({width}x{height})"));
    }
    match width.checked_mul(height) {
        Some(n) if n <= MAX_PIXELS => Ok(()),
        _ => Err(format!(
            "image is {width}x{height} pixels, over the limit of {} megapixels",
            MAX_PIXELS / 1_000_000
        )),
    }
}

// ------------------------------------------------------------------------------------------------
// Reading files
// ------------------------------------------------------------------------------------------------

/// Reads a PNG or PGM file into a grey image.
///
/// The format is told by the content (the PNG signature, or a PGM magic `P5` / `P2`), so a PNG
/// named `shirt.pgm` still reads. Errors name the file: missing or unreadable, larger than
/// [`MAX_FILE_BYTES`], empty, another format (named when recognised, with the supported list),
/// or whatever [`decode_png`] / [`decode_pgm`] found wrong.
pub fn read_image(path: &Path) -> Result<GrayImage, ImageError> {
    let bytes = limits::read_file(path, MAX_FILE_BYTES).map_err(|e| {
        ImageError::new(
            path,
            match e {
                ReadError::Folder => "cannot read: is a folder, not an image file".to_string(),
                ReadError::TooLarge { .. } => {
                    format!("file is over the limit of {MAX_FILE_BYTES} bytes for an image")
                }
                e => e.to_string(),
            },
        )
    })?;
    if bytes.is_empty() {
        return Err(ImageError::new(path, format!("empty file; {SUPPORTED}")));
    }
    let decoded = if bytes.starts_with(&PNG_SIGNATURE) {
        decode_png(&bytes)
    } else if bytes.starts_with(b"P5") || bytes.starts_with(b"P2") {
        decode_pgm(&bytes)
    } else {
        let what = match sniff_other(&bytes) {
            Some(name) => format!("this looks like {name}, not PNG or PGM"),
            None => "not a PNG or PGM image (unrecognised first bytes)".to_string(),
        };
        Err(format!("{what}; {SUPPORTED}"))
    };
    decoded.map_err(|reason| ImageError::new(path, reason))
}

/// Names a few common formats we do not read, by their magic bytes, for a friendlier error.
fn sniff_other(bytes: &[u8]) -> Option<&'static str> {
    let known: [(&[u8], &str); 11] = [
        (&[0xff, 0xd8, 0xff], "a JPEG image"),
        (b"GIF8", "a GIF image"),
        (b"BM", "a BMP image"),
        (b"II*\0", "a TIFF image"),
        (b"MM\0*", "a TIFF image"),
        (b"P1", "a PBM (ASCII bitmap) image"),
        (b"P4", "a PBM (binary bitmap) image"),
        (b"P3", "a colour PPM (P3) image"),
        (b"P6", "a colour PPM (P6) image"),
        (b"P7", "a PAM image"),
        (&[0x1f, 0x8b], "a gzip file"),
    ];
    if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        return Some("a WebP image");
    }
    known.iter().find(|(magic, _)| bytes.starts_with(magic)).map(|&(_, name)| name)
}

/// [`read_image`] then [`to_fashion_mnist`]: the 784 bytes, `[28, 28]` row-major, that the model
/// takes for one image.
pub fn load_for_model(path: &Path) -> Result<Vec<u8>, ImageError> {
    read_image(path).map(|img| to_fashion_mnist(&img))
}

// ------------------------------------------------------------------------------------------------
// PNG
// ------------------------------------------------------------------------------------------------

/// Decodes a PNG of any colour type and bit depth the `png` crate reads (grey, grey+alpha, RGB,
/// RGBA, palette; 1, 2, 4, 8 or 16 bits; interlaced or not).
///
/// `Transformations::EXPAND` turns palettes into RGB(A), sub-byte grey into 8-bit grey and a
/// `tRNS` chunk into an alpha channel; `STRIP_16` keeps the high byte of 16-bit samples (so
/// `0x12ff` becomes `0x12`: truncation, as the `png` crate does it). Each pixel then becomes
/// BT.601 luma composited over white (Pillow's `convert("L")` weights). Refuses a zero side and more than
/// [`MAX_PIXELS`] pixels before allocating anything for the pixels.
pub fn decode_png(bytes: &[u8]) -> Result<GrayImage, String> {
    let mut decoder = png::Decoder::new(Cursor::new(bytes));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let header = decoder.read_header_info().map_err(|e| format!("corrupt PNG header: {e}"))?;
    let (width, height) = (header.width as usize, header.height as usize);
    check_size(width, height)?;
    // Rows of `1 + ceil(width * bits / 8)` bytes (a filter byte each), before any expansion.
    let raw_bytes = height.saturating_mul(1 + (width * header.bits_per_pixel()).div_ceil(8));
    if raw_bytes > bytes.len().saturating_mul(DEFLATE_MAX_RATIO).saturating_add(1 << 16) {
        return Err(format!(
            "PNG declares {width}x{height} pixels, more than its {} bytes can hold (deflate expands at most \
             {DEFLATE_MAX_RATIO}:1)",
            bytes.len()
        ));
    }
    let mut reader = decoder.read_info().map_err(|e| format!("corrupt PNG: {e}"))?;
    let len = reader.output_buffer_size().ok_or("PNG image is too large to hold in memory")?;
    let mut buf = vec![0u8; len];
    let frame = reader.next_frame(&mut buf).map_err(|e| format!("corrupt or truncated PNG: {e}"))?;
    if frame.bit_depth != png::BitDepth::Eight {
        return Err(format!("unexpected PNG output bit depth {:?} after expansion", frame.bit_depth));
    }
    // Samples per pixel of the expanded output; `Indexed` cannot remain after `EXPAND`.
    let channels = match frame.color_type {
        png::ColorType::Grayscale => 1,
        png::ColorType::GrayscaleAlpha => 2,
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        png::ColorType::Indexed => return Err("PNG palette was not expanded".to_string()),
    };
    let (width, height) = (frame.width as usize, frame.height as usize);
    let mut pixels = Vec::with_capacity(width * height);
    // buf: [height, line_size] where each line holds `width * channels` samples.
    let short = || format!("PNG frame of {width}x{height} does not fill its buffer");
    if frame.line_size == 0 || buf.len() / frame.line_size < height {
        return Err(short());
    }
    for line in buf.chunks_exact(frame.line_size).take(height) {
        let samples = line.get(..width * channels).ok_or_else(short)?;
        for p in samples.chunks_exact(channels) {
            pixels.push(match *p {
                [v] => v,
                [v, a] => rgb_over_white(v, v, v, a),
                [r, g, b] => rgb_over_white(r, g, b, 255),
                [r, g, b, a] => rgb_over_white(r, g, b, a),
                _ => return Err(format!("PNG pixel of {channels} samples")),
            });
        }
    }
    Ok(GrayImage { width, height, pixels })
}

/// The grey value of an 8-bit RGB pixel of opacity `a`, composited over white, rounded.
///
/// Luma is ITU-R BT.601, `Y = 0.299 R + 0.587 G + 0.114 B`, the weights Pillow's `convert("L")`
/// uses; compositing over white is `Y a/255 + 255 (1 - a/255)`. Both are linear, so they are
/// done at once in exact integers (luma times 1000, since 299 + 587 + 114 = 1000) with a single
/// round-half-up at the end. White is the background because a transparent background then
/// looks like a studio backdrop, which [`to_fashion_mnist`] inverts to black.
fn rgb_over_white(r: u8, g: u8, b: u8, a: u8) -> u8 {
    let luma_milli = 299 * r as u32 + 587 * g as u32 + 114 * b as u32; // 0..=255_000
    let a = a as u32;
    let scale = 255 * 1000; // alpha's 255 times luma's 1000
    ((luma_milli * a + 255 * 1000 * (255 - a) + scale / 2) / scale) as u8
}

// ------------------------------------------------------------------------------------------------
// PGM
// ------------------------------------------------------------------------------------------------

/// Decodes a Netpbm grey map: `P5` (binary) or `P2` (ASCII), following
/// <https://netpbm.sourceforge.net/doc/pgm.html>.
///
/// The header is the magic, width, height and maxval (`1..=65535`) separated by whitespace,
/// where `#` starts a comment running to the end of the line. In `P5` one whitespace byte ends
/// the header, then come `width * height` samples of 1 byte (maxval < 256) or 2 big-endian
/// bytes; in `P2` the samples are decimal numbers separated by whitespace (comments allowed).
/// Samples are scaled to 0..=255 as `round(v * 255 / maxval)`. Only the first image of a
/// multi-image file is read; bytes after it are ignored. Errors: a malformed header, a zero
/// side, more than [`MAX_PIXELS`] pixels, too few samples, a sample above maxval.
pub fn decode_pgm(bytes: &[u8]) -> Result<GrayImage, String> {
    let ascii = match bytes.get(..2) {
        Some(b"P5") => false,
        Some(b"P2") => true,
        _ => return Err(format!("not a PGM file: it must start with P5 or P2; {SUPPORTED}")),
    };
    let mut text = Tokens { bytes, pos: 2 };
    if !text.at_separator() {
        return Err("malformed PGM header: no whitespace after the magic number".to_string());
    }
    let width = text.header_number("width")?;
    let height = text.header_number("height")?;
    let maxval = text.header_number("maxval")?;
    check_size(width, height)?;
    if !(1..=65535).contains(&maxval) {
        return Err(format!("malformed PGM header: maxval {maxval} is outside 1..=65535"));
    }
    let n = width * height;
    // Scales one sample to 0..=255, rounding half up; `i` counts from 0 for the message.
    let scale = |i: usize, v: usize| -> Result<u8, String> {
        if v > maxval {
            return Err(format!("PGM pixel {} has value {v}, above maxval {maxval}", i + 1));
        }
        Ok(((v * 255 + maxval / 2) / maxval) as u8)
    };
    let mut pixels = Vec::with_capacity(n.min(bytes.len())); // a lying header allocates nothing
    if ascii {
        for i in 0..n {
            match text.number() {
                Ok(Some(v)) => pixels.push(scale(i, v)?),
                Ok(None) => {
                    return Err(format!(
                        "PGM (P2) has only {i} of the {n} pixel values that {width}x{height} needs"
                    ))
                }
                Err(e) => return Err(format!("bad PGM (P2) pixel value number {}: {e}", i + 1)),
            }
        }
    } else {
        let start = text.end_of_header()?;
        let bytes_per_sample = if maxval < 256 { 1 } else { 2 };
        let raster = &bytes[start..];
        if raster.len() < n * bytes_per_sample {
            return Err(format!(
                "PGM (P5) has {} pixel bytes, but {width}x{height} at maxval {maxval} needs {}",
                raster.len(),
                n * bytes_per_sample
            ));
        }
        // raster: [height, width, bytes_per_sample], 16-bit samples big-endian.
        for (i, s) in raster[..n * bytes_per_sample].chunks_exact(bytes_per_sample).enumerate() {
            let v = if bytes_per_sample == 1 { s[0] as usize } else { (s[0] as usize) << 8 | s[1] as usize };
            pixels.push(scale(i, v)?);
        }
    }
    Ok(GrayImage { width, height, pixels })
}

/// A byte for an error message: `'x'` when printable, else its hex value.
fn describe(c: u8) -> String {
    if c.is_ascii_graphic() {
        format!("'{}'", c as char)
    } else {
        format!("byte {c:#04x}")
    }
}

/// A cursor over a PGM's header (and, for `P2`, its ASCII raster).
struct Tokens<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Tokens<'_> {
    /// Whether the next byte may end a number: whitespace, a comment, or the end.
    fn at_separator(&self) -> bool {
        self.bytes.get(self.pos).is_none_or(|&c| c.is_ascii_whitespace() || c == b'#')
    }

    /// Skips whitespace and `#` comments (a comment runs to the next CR or LF).
    fn skip_space(&mut self) {
        while let Some(&c) = self.bytes.get(self.pos) {
            if c == b'#' {
                while self.bytes.get(self.pos).is_some_and(|&c| c != b'\n' && c != b'\r') {
                    self.pos += 1;
                }
            } else if c.is_ascii_whitespace() {
                self.pos += 1;
            } else {
                break;
            }
        }
    }

    /// The next decimal number, or `None` at the end of the bytes.
    fn number(&mut self) -> Result<Option<usize>, String> {
        self.skip_space();
        let start = self.pos;
        while self.bytes.get(self.pos).is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
        }
        if self.pos == start {
            return match self.bytes.get(self.pos) {
                None => Ok(None),
                Some(&c) => Err(format!("expected a decimal number, found {}", describe(c))),
            };
        }
        if !self.at_separator() {
            let found = self.bytes.get(self.pos).map_or("the end".to_string(), |&c| describe(c));
            return Err(format!("expected a decimal number, found {found}"));
        }
        let digits = self.bytes.get(start..self.pos).and_then(|d| std::str::from_utf8(d).ok()).unwrap_or("");
        digits.parse().map(Some).map_err(|_| format!("number {digits} is too large"))
    }

    /// The next header field, called `what` in errors.
    fn header_number(&mut self, what: &str) -> Result<usize, String> {
        match self.number() {
            Ok(Some(v)) => Ok(v),
            Ok(None) => Err(format!("malformed PGM header: file ends before the {what}")),
            Err(e) => Err(format!("malformed PGM header: bad {what}: {e}")),
        }
    }

    /// After maxval in `P5`: skips a comment if one follows directly, then the single whitespace
    /// byte that ends the header. Returns where the raster starts.
    fn end_of_header(&mut self) -> Result<usize, String> {
        if self.bytes.get(self.pos) == Some(&b'#') {
            while self.bytes.get(self.pos).is_some_and(|&c| c != b'\n' && c != b'\r') {
                self.pos += 1;
            }
        }
        match self.bytes.get(self.pos) {
            Some(c) if c.is_ascii_whitespace() => Ok(self.pos + 1),
            _ => Err("malformed PGM header: no whitespace after maxval".to_string()),
        }
    }
}

// ------------------------------------------------------------------------------------------------
// To Fashion-MNIST
// ------------------------------------------------------------------------------------------------

/// Turns any grey image into a 28x28 Fashion-MNIST-like one: 784 bytes, `[28, 28]` row-major.
///
/// Fashion-MNIST's images were made from Zalando's product photos (white background) by a
/// seven-step pipeline (Xiao, Rasul and Vollgraf 2017, arXiv:1708.07747, section 2): convert to
/// PNG; trim the edges close to the corner colour; resize the longest edge to 28 by subsampling;
/// sharpen; extend the shortest edge to 28, centred; negate; convert to 8-bit grey. So a training
/// image is a light product on a black background, centred, its aspect ratio kept. We do the
/// parts that do not guess at the content (no trimming, no sharpening), in this order:
///
/// 1. **Polarity.** The background is estimated as the mean of the border pixels (the outermost
///    row and column on all four sides). If it is brighter than 127.5, the image is inverted
///    (`255 - v`), as Fashion-MNIST's were negated: a dark background is what the model saw.
/// 2. **Square.** The shorter side is padded, centred, with the (now dark) background value,
///    the rounded border mean, so the padding matches the picture's own background and the
///    aspect ratio is kept ("extended"). The padding is virtual: nothing is copied, so even a
///    1 x 1,000,000 strip costs no more than its own pixels.
/// 3. **Resize** the square to 28x28. Shrinking (side >= 28) uses area averaging: each output
///    pixel is the mean of the input area it covers, edge pixels weighted by the fraction that
///    falls inside, which neither aliases nor drops thin lines (the paper subsampled, skipping
///    rows and columns; averaging is the gentler choice for arbitrary photos); side 28 is the
///    identity.
///    Enlarging (side < 28) uses bilinear interpolation, which stays within the input's range.
///    Results are rounded to the nearest integer.
///
/// # Panics
/// If `img` has a zero side or `pixels.len() != width * height` (the decoders never produce
/// such an image).
pub fn to_fashion_mnist(img: &GrayImage) -> Vec<u8> {
    let (w, h) = (img.width, img.height);
    assert!(w > 0 && h > 0, "to_fashion_mnist: image has a zero side ({w}x{h})");
    assert_eq!(img.pixels.len(), w * h, "to_fashion_mnist: pixels.len() != {w} x {h}");

    // 1. Polarity.
    let border = border_mean(img);
    let invert = border > 127.5;
    let pixels: Vec<u8> =
        if invert { img.pixels.iter().map(|&v| 255 - v).collect() } else { img.pixels.clone() };
    let background = if invert { 255.0 - border } else { border }.round() as u8;

    // 2. Square, centred: the extra goes to the right / bottom when the difference is odd.
    let side = w.max(h);
    let padded = Padded {
        pixels: &pixels,
        width: w,
        height: h,
        left: (side - w) / 2,
        top: (side - h) / 2,
        fill: background,
    };

    // 3. Resize.
    if side >= SIDE {
        resize_area(&padded, side)
    } else {
        resize_bilinear(&padded, side)
    }
}

/// The mean of the outermost rows and columns (each border pixel counted once).
fn border_mean(img: &GrayImage) -> f64 {
    let (w, h) = (img.width, img.height);
    let at = |x: usize, y: usize| img.pixels[y * w + x] as u64;
    let mut sum = 0u64;
    let mut count = 0u64;
    for y in 0..h {
        if y == 0 || y == h - 1 {
            sum += (0..w).map(|x| at(x, y)).sum::<u64>();
            count += w as u64;
        } else {
            sum += at(0, y);
            count += 1;
            if w > 1 {
                sum += at(w - 1, y);
                count += 1;
            }
        }
    }
    sum as f64 / count as f64
}

/// A `side x side` view of an image with `left` / `top` columns / rows of `fill` before it (and
/// the rest after it), without copying.
struct Padded<'a> {
    /// `[height, width]` row-major.
    pixels: &'a [u8],
    width: usize,
    height: usize,
    left: usize,
    top: usize,
    fill: u8,
}

impl Padded<'_> {
    /// The pixel at column `x`, row `y` of the square.
    fn get(&self, x: usize, y: usize) -> u8 {
        let inside = (self.left..self.left + self.width).contains(&x)
            && (self.top..self.top + self.height).contains(&y);
        if inside {
            self.pixels[(y - self.top) * self.width + (x - self.left)]
        } else {
            self.fill
        }
    }
}

/// Area-average resize of the `side x side` square to 28x28, `side >= 28`.
///
/// Lengths are measured in units of `1 / 28` of an input pixel, so everything is an exact
/// integer: input pixel `i` spans `[28 i, 28 i + 28)`, output pixel `o` spans
/// `[side o, side o + side)`, and an output pixel's value is
/// `sum(overlap_y * overlap_x * v) / side^2`, rounded half up. Only real pixels are visited; the
/// padding contributes `fill` times the rest of the area.
fn resize_area(img: &Padded, side: usize) -> Vec<u8> {
    debug_assert!(side >= SIDE);
    // Length shared by input pixel `i` and output pixel `o` along one axis.
    let overlap = |i: usize, o: usize| -> u128 {
        let lo = (SIDE * i).max(side * o);
        let hi = (SIDE * (i + 1)).min(side * (o + 1));
        hi.saturating_sub(lo) as u128
    };
    // Input pixels (of the square) that output pixel `o` touches: [floor(side o / 28), ceil(..)).
    let covered = |o: usize| (side * o) / SIDE..(side * (o + 1)).div_ceil(SIDE);
    let clip = |r: std::ops::Range<usize>, lo: usize, len: usize| r.start.max(lo)..r.end.min(lo + len);
    let total = (side as u128) * (side as u128);

    let mut out = vec![0u8; SIDE * SIDE]; // [28, 28]
    for oy in 0..SIDE {
        let ys = clip(covered(oy), img.top, img.height);
        for ox in 0..SIDE {
            let xs = clip(covered(ox), img.left, img.width);
            let mut sum = 0u128; // of overlap_y * overlap_x * v over real pixels
            let mut real_area = 0u128;
            if !ys.is_empty() && !xs.is_empty() {
                let width_x: u128 = xs.clone().map(|x| overlap(x, ox)).sum();
                for y in ys.clone() {
                    let row = &img.pixels[(y - img.top) * img.width..][..img.width];
                    let row_sum: u128 = xs.clone().map(|x| overlap(x, ox) * row[x - img.left] as u128).sum();
                    sum += overlap(y, oy) * row_sum;
                    real_area += overlap(y, oy) * width_x;
                }
            }
            sum += img.fill as u128 * (total - real_area);
            out[oy * SIDE + ox] = ((sum + total / 2) / total) as u8;
        }
    }
    out
}

/// Bilinear resize of the `side x side` square to 28x28, `side < 28`.
///
/// Pixel centres are aligned (output `o` samples input coordinate `(o + 0.5) side / 28 - 0.5`,
/// clamped to the image), the convention of OpenCV's `INTER_LINEAR` and Pillow's `BILINEAR`
/// when enlarging. Each output is a convex combination of four inputs, so it stays within their
/// range.
fn resize_bilinear(img: &Padded, side: usize) -> Vec<u8> {
    // For output index `o`: the two input indices and the weight of the second.
    let sample = |o: usize| -> (usize, usize, f64) {
        let s = ((o as f64 + 0.5) * side as f64 / SIDE as f64 - 0.5).clamp(0.0, (side - 1) as f64);
        let i0 = s.floor() as usize;
        (i0, (i0 + 1).min(side - 1), s - i0 as f64)
    };
    let mut out = vec![0u8; SIDE * SIDE]; // [28, 28]
    for oy in 0..SIDE {
        let (y0, y1, ty) = sample(oy);
        for ox in 0..SIDE {
            let (x0, x1, tx) = sample(ox);
            let v = |x, y| img.get(x, y) as f64;
            let top = v(x0, y0) * (1.0 - tx) + v(x1, y0) * tx;
            let bottom = v(x0, y1) * (1.0 - tx) + v(x1, y1) * tx;
            out[oy * SIDE + ox] = (top * (1.0 - ty) + bottom * ty).round().clamp(0.0, 255.0) as u8;
        }
    }
    out
}
