//! Tests of `fmnist::image`: decoding PNG and PGM, the Fashion-MNIST conversion, and the errors.
//!
//! Oracles are independent of the code under test: PNGs are built with the `png` crate's encoder
//! and PGMs by hand, and every expected pixel is worked out in the comments (BT.601 luma
//! `0.299 R + 0.587 G + 0.114 B`, compositing over white `v a/255 + 255 (1 - a/255)`, PGM scaling
//! `v 255 / maxval`, all rounded to nearest). The resize oracles are exact: constant blocks
//! average to themselves, and area averaging preserves the mean up to the final rounding.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use fmnist::image::{
    decode_pgm, decode_png, load_for_model, read_image, to_fashion_mnist, GrayImage, ImageError, SIDE,
};

// ------------------------------------------------------------------------------------------------
// Helpers
// ------------------------------------------------------------------------------------------------

/// A fresh folder under the system temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir =
            std::env::temp_dir().join(format!("fmnist-image-test-{tag}-{}-{n}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    /// Writes `bytes` to `name` in the folder and returns its path.
    fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A PNG built by the `png` crate's encoder. `data` is the raw (packed, big-endian) image data.
fn encode_png(
    (width, height): (u32, u32),
    color: png::ColorType,
    depth: png::BitDepth,
    palette: Option<&[u8]>,
    trns: Option<&[u8]>,
    data: &[u8],
) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, width, height);
        encoder.set_color(color);
        encoder.set_depth(depth);
        if let Some(p) = palette {
            encoder.set_palette(p.to_vec());
        }
        if let Some(t) = trns {
            encoder.set_trns(t.to_vec());
        }
        let mut writer = encoder.write_header().unwrap();
        writer.write_image_data(data).unwrap();
        writer.finish().unwrap();
    }
    out
}

/// An 8-bit grey PNG of `pixels: [height, width]`.
fn grey_png(width: u32, height: u32, pixels: &[u8]) -> Vec<u8> {
    encode_png((width, height), png::ColorType::Grayscale, png::BitDepth::Eight, None, None, pixels)
}

/// A PNG chunk: length, type, data, CRC-32 of type and data (PNG specification, section 5.3).
fn chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut crc = flate2::Crc::new();
    crc.update(kind);
    crc.update(data);
    let mut out = (data.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    out.extend_from_slice(&crc.sum().to_be_bytes());
    out
}

/// A PNG signature and an 8-bit grey IHDR of the given size, and nothing else.
fn png_header_only(width: u32, height: u32) -> Vec<u8> {
    let mut ihdr = width.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 0, 0, 0, 0]); // depth 8, grey, deflate, adaptive filter, no interlace
    let mut out = vec![0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1a, b'\n'];
    out.extend(chunk(b"IHDR", &ihdr));
    out
}

/// A PGM header followed by `raster`.
fn pgm(header: &str, raster: &[u8]) -> Vec<u8> {
    let mut out = header.as_bytes().to_vec();
    out.extend_from_slice(raster);
    out
}

/// Deterministic pseudo-random bytes in `0..modulus` (a 64-bit LCG, Knuth's MMIX constants).
fn lcg_bytes(n: usize, seed: u64, modulus: u64) -> Vec<u8> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 33) % modulus) as u8
        })
        .collect()
}

fn image(width: usize, height: usize, pixels: Vec<u8>) -> GrayImage {
    assert_eq!(pixels.len(), width * height);
    GrayImage { width, height, pixels }
}

// ------------------------------------------------------------------------------------------------
// PNG decoding
// ------------------------------------------------------------------------------------------------

#[test]
fn png_grey8_is_read_as_is() {
    let pixels = [0, 1, 127, 128, 254, 255];
    let img = decode_png(&grey_png(3, 2, &pixels)).unwrap();
    assert_eq!((img.width, img.height), (3, 2));
    assert_eq!(img.pixels, pixels);
}

#[test]
fn png_low_bit_depth_grey_is_scaled_to_255() {
    // 1 bit: 0 -> 0, 1 -> 255. One row of 8 pixels packed MSB first in one byte.
    let img = decode_png(&encode_png(
        (8, 1),
        png::ColorType::Grayscale,
        png::BitDepth::One,
        None,
        None,
        &[0b1011_0010],
    ))
    .unwrap();
    assert_eq!(img.pixels, [255, 0, 255, 255, 0, 0, 255, 0]);
    // 2 bits: v * 255 / 3 = 0, 85, 170, 255.
    let img = decode_png(&encode_png(
        (4, 1),
        png::ColorType::Grayscale,
        png::BitDepth::Two,
        None,
        None,
        &[0b0001_1011],
    ))
    .unwrap();
    assert_eq!(img.pixels, [0, 85, 170, 255]);
}

#[test]
fn png_rgb_uses_bt601_luma() {
    #[rustfmt::skip]
    let rgb = [
        255, 0, 0,     // 0.299 * 255 = 76.245 -> 76
        0, 255, 0,     // 0.587 * 255 = 149.685 -> 150
        0, 0, 255,     // 0.114 * 255 = 29.07 -> 29
        100, 150, 200, // 29.9 + 88.05 + 22.8 = 140.75 -> 141
        255, 255, 255, // 255
        0, 0, 0,       // 0
    ];
    let img =
        decode_png(&encode_png((3, 2), png::ColorType::Rgb, png::BitDepth::Eight, None, None, &rgb)).unwrap();
    assert_eq!((img.width, img.height), (3, 2));
    assert_eq!(img.pixels, [76, 150, 29, 141, 255, 0]);
}

#[test]
fn png_rgba_composites_over_white() {
    #[rustfmt::skip]
    let rgba = [
        0, 0, 0, 0,           // fully transparent -> white 255
        0, 0, 0, 255,         // opaque black -> 0
        0, 0, 0, 128,         // 0 * 128/255 + 255 * 127/255 = 127
        200, 200, 200, 128,   // 200 * 128/255 + 127 = 100.39 + 127 = 227.39 -> 227
        100, 150, 200, 255,   // opaque: luma 140.75 -> 141
        255, 0, 0, 51,        // 76.245 * 0.2 + 255 * 0.8 = 15.249 + 204 = 219.249 -> 219
    ];
    let img = decode_png(&encode_png((6, 1), png::ColorType::Rgba, png::BitDepth::Eight, None, None, &rgba))
        .unwrap();
    assert_eq!(img.pixels, [255, 0, 127, 227, 141, 219]);
}

#[test]
fn png_grey_alpha_composites_over_white() {
    // (v, a): (0, 0) -> 255; (100, 255) -> 100; (0, 51) -> 255 * 204/255 = 204;
    // (50, 102) -> 50 * 0.4 + 255 * 0.6 = 20 + 153 = 173.
    let ga = [0, 0, 100, 255, 0, 51, 50, 102];
    let img = decode_png(&encode_png(
        (4, 1),
        png::ColorType::GrayscaleAlpha,
        png::BitDepth::Eight,
        None,
        None,
        &ga,
    ))
    .unwrap();
    assert_eq!(img.pixels, [255, 100, 204, 173]);
}

#[test]
fn png_grey16_keeps_the_high_byte() {
    // STRIP_16 keeps the most significant byte of each big-endian sample.
    let samples: [u16; 4] = [0x1234, 0xffff, 0x00ff, 0x8000];
    let data: Vec<u8> = samples.iter().flat_map(|s| s.to_be_bytes()).collect();
    let img =
        decode_png(&encode_png((2, 2), png::ColorType::Grayscale, png::BitDepth::Sixteen, None, None, &data))
            .unwrap();
    assert_eq!(img.pixels, [0x12, 0xff, 0x00, 0x80]);
}

#[test]
fn png_rgb16_luma_of_high_bytes() {
    // (0xff00, 0x0000, 0x00ff) -> high bytes (255, 0, 0) -> 76.
    let data = [0xff, 0x00, 0x00, 0x00, 0x00, 0xff];
    let img = decode_png(&encode_png((1, 1), png::ColorType::Rgb, png::BitDepth::Sixteen, None, None, &data))
        .unwrap();
    assert_eq!(img.pixels, [76]);
}

#[test]
fn png_palette_with_and_without_transparency() {
    #[rustfmt::skip]
    let palette = [
        0, 0, 0,     // 0
        255, 0, 0,   // 76
        10, 20, 30,  // 2.99 + 11.74 + 3.42 = 18.15 -> 18
    ];
    let indices = [0, 1, 2, 2];
    let img = decode_png(&encode_png(
        (2, 2),
        png::ColorType::Indexed,
        png::BitDepth::Eight,
        Some(&palette),
        None,
        &indices,
    ))
    .unwrap();
    assert_eq!(img.pixels, [0, 76, 18, 18]);

    // tRNS alphas 255, 0, 128: index 1 is transparent -> 255; index 2 is
    // 18.15 * 128/255 + 255 * 127/255 = 9.11 + 127 = 136.11 -> 136.
    let img = decode_png(&encode_png(
        (2, 2),
        png::ColorType::Indexed,
        png::BitDepth::Eight,
        Some(&palette),
        Some(&[255, 0, 128]),
        &indices,
    ))
    .unwrap();
    assert_eq!(img.pixels, [0, 255, 136, 136]);

    // 1-bit palette indices, packed: 0b0110_0000 over 3 pixels -> indices 0, 1, 1.
    let img = decode_png(&encode_png(
        (3, 1),
        png::ColorType::Indexed,
        png::BitDepth::One,
        Some(&palette[..6]),
        None,
        &[0b0110_0000],
    ))
    .unwrap();
    assert_eq!(img.pixels, [0, 76, 76]);
}

#[test]
fn png_grey_with_trns_key_is_transparent() {
    // tRNS for grey names one grey value (16 bits) as fully transparent: 7 -> white.
    let img = decode_png(&encode_png(
        (3, 1),
        png::ColorType::Grayscale,
        png::BitDepth::Eight,
        None,
        Some(&[0, 7]),
        &[7, 8, 0],
    ))
    .unwrap();
    assert_eq!(img.pixels, [255, 8, 0]);
}

// ------------------------------------------------------------------------------------------------
// PGM decoding
// ------------------------------------------------------------------------------------------------

#[test]
fn pgm_p5_8bit() {
    let img = decode_pgm(&pgm("P5\n3 2\n255\n", &[0, 10, 20, 30, 40, 255])).unwrap();
    assert_eq!((img.width, img.height), (3, 2));
    assert_eq!(img.pixels, [0, 10, 20, 30, 40, 255]);
}

#[test]
fn pgm_p5_small_maxval_is_scaled() {
    // maxval 15: v * 255 / 15 = 17 v exactly. maxval 1: 0 -> 0, 1 -> 255.
    let img = decode_pgm(&pgm("P5 4 1 15 ", &[0, 1, 8, 15])).unwrap();
    assert_eq!(img.pixels, [0, 17, 136, 255]);
    let img = decode_pgm(&pgm("P5 2 1 1\n", &[1, 0])).unwrap();
    assert_eq!(img.pixels, [255, 0]);
}

#[test]
fn pgm_p5_16bit_maxval_65535() {
    // Big-endian samples: 65535 -> 255; 32768 * 255/65535 = 127.502 -> 128; 1000 -> 3.89 -> 4;
    // 0 -> 0.
    let raster = [0xff, 0xff, 0x80, 0x00, 0x03, 0xe8, 0x00, 0x00];
    let img = decode_pgm(&pgm("P5\n2 2\n65535\n", &raster)).unwrap();
    assert_eq!(img.pixels, [255, 128, 4, 0]);
}

#[test]
fn pgm_p5_raster_may_start_with_a_whitespace_value_and_extra_bytes_are_ignored() {
    // Only ONE whitespace byte ends the header: the raster's first byte here is b'\n' (10).
    let img = decode_pgm(&pgm("P5 2 1 255\n", &[b'\n', b' ', 99, 99])).unwrap();
    assert_eq!(img.pixels, [10, 32]);
}

#[test]
fn pgm_p2_with_comments() {
    let text = "P2\n# made by hand\n3 # width\n# height next\n2\n# maxval\n100\n0 50 100\n# a comment in the raster\n\
                25 75\t1\n";
    // v * 255 / 100: 0, 127.5 -> 128, 255, 63.75 -> 64, 191.25 -> 191, 2.55 -> 3.
    let img = decode_pgm(text.as_bytes()).unwrap();
    assert_eq!((img.width, img.height), (3, 2));
    assert_eq!(img.pixels, [0, 128, 255, 64, 191, 3]);
}

#[test]
fn pgm_p2_maxval_65535() {
    let img = decode_pgm(b"P2 3 1 65535 65535 32768 1000").unwrap();
    assert_eq!(img.pixels, [255, 128, 4]);
}

// ------------------------------------------------------------------------------------------------
// to_fashion_mnist
// ------------------------------------------------------------------------------------------------

#[test]
fn dark_28x28_passes_through_unchanged() {
    // A dark border (mean well under 127.5) and arbitrary content: identity.
    let mut pixels = lcg_bytes(SIDE * SIDE, 1, 256);
    for i in 0..SIDE {
        for (x, y) in [(i, 0), (i, SIDE - 1), (0, i), (SIDE - 1, i)] {
            pixels[y * SIDE + x] %= 40;
        }
    }
    let out = to_fashion_mnist(&image(SIDE, SIDE, pixels.clone()));
    assert_eq!(out, pixels);
}

#[test]
fn white_background_is_inverted() {
    // 28x28: white with a black 10x10 square -> black with a white square, no resize.
    let mut pixels = vec![255u8; SIDE * SIDE];
    for y in 9..19 {
        for x in 9..19 {
            pixels[y * SIDE + x] = 0;
        }
    }
    let out = to_fashion_mnist(&image(SIDE, SIDE, pixels.clone()));
    let expected: Vec<u8> = pixels.iter().map(|&v| 255 - v).collect();
    assert_eq!(out, expected);

    // 56x56: light grey 230 with a dark 20 square on even coordinates 20..36 -> after inversion
    // background 25, square 235, halved: square at 10..18.
    let mut big = vec![230u8; 56 * 56];
    for y in 20..36 {
        for x in 20..36 {
            big[y * 56 + x] = 20;
        }
    }
    let out = to_fashion_mnist(&image(56, 56, big));
    for y in 0..SIDE {
        for x in 0..SIDE {
            let inside = (10..18).contains(&x) && (10..18).contains(&y);
            assert_eq!(out[y * SIDE + x], if inside { 235 } else { 25 }, "at ({x}, {y})");
        }
    }
}

#[test]
fn border_of_exactly_127_5_is_not_inverted() {
    // Border alternating 127 / 128: mean 127.5, not brighter than 127.5.
    let pixels: Vec<u8> =
        (0..SIDE * SIDE).map(|i| if (i / SIDE + i % SIDE).is_multiple_of(2) { 127 } else { 128 }).collect();
    assert_eq!(to_fashion_mnist(&image(SIDE, SIDE, pixels.clone())), pixels);
}

/// A `2 bw x 2 bh` image of 2x2 constant blocks: block `(bx, by)` is `value(bx, by)`.
fn blocks(bw: usize, bh: usize, value: impl Fn(usize, usize) -> u8) -> GrayImage {
    let (w, h) = (2 * bw, 2 * bh);
    let pixels = (0..w * h).map(|i| value((i % w) / 2, (i / w) / 2)).collect();
    image(w, h, pixels)
}

#[test]
fn area_average_of_2x2_blocks_is_the_block_values() {
    // All values < 128, so no inversion.
    let value = |bx: usize, by: usize| ((bx * 31 + by * 17) % 120) as u8;
    let out = to_fashion_mnist(&blocks(SIDE, SIDE, value));
    for y in 0..SIDE {
        for x in 0..SIDE {
            assert_eq!(out[y * SIDE + x], value(x, y), "at ({x}, {y})");
        }
    }
}

#[test]
fn area_average_of_3x3_blocks_is_the_block_values() {
    let value = |bx: usize, by: usize| ((bx * 7 + by * 11) % 100) as u8;
    let (w, h) = (3 * SIDE, 3 * SIDE);
    let pixels = (0..w * h).map(|i| value((i % w) / 3, (i / w) / 3)).collect();
    let out = to_fashion_mnist(&image(w, h, pixels));
    for y in 0..SIDE {
        for x in 0..SIDE {
            assert_eq!(out[y * SIDE + x], value(x, y), "at ({x}, {y})");
        }
    }
}

#[test]
fn area_average_rounds_to_nearest() {
    // 56x56, each 2x2 block holds a in its top-left corner and b elsewhere: the output is
    // round((a + 3 b) / 4), e.g. (10 + 33) / 4 = 10.75 -> 11, (13 + 30) / 4 = 10.75 -> 11,
    // (10 + 30) / 4 = 10, (11 + 30) / 4 = 10.25 -> 10, (12 + 30) / 4 = 10.5 -> 11 (half up).
    let a = |bx: usize, by: usize| (10 + (bx + by) % 4) as u8;
    let b = |bx: usize, by: usize| (10 + (bx * 3 + by) % 2) as u8;
    let pixels = (0..56 * 56)
        .map(|i| {
            let (x, y) = (i % 56, i / 56);
            if x % 2 == 0 && y % 2 == 0 {
                a(x / 2, y / 2)
            } else {
                b(x / 2, y / 2)
            }
        })
        .collect();
    let out = to_fashion_mnist(&image(56, 56, pixels));
    for y in 0..SIDE {
        for x in 0..SIDE {
            let exact = (a(x, y) as f64 + 3.0 * b(x, y) as f64) / 4.0;
            assert_eq!(out[y * SIDE + x], (exact + 0.5).floor() as u8, "at ({x}, {y}): {exact}");
        }
    }
}

#[test]
fn odd_padding_puts_the_extra_row_and_column_after() {
    // 28x27: padded to 28x28 with the one extra row at the bottom, then resized 1:1.
    let mut pixels = lcg_bytes(28 * 27, 9, 100);
    for x in 0..28 {
        pixels[x] = 20;
        pixels[26 * 28 + x] = 20;
    }
    for y in 0..27 {
        pixels[y * 28] = 20;
        pixels[y * 28 + 27] = 20;
    }
    let out = to_fashion_mnist(&image(28, 27, pixels.clone()));
    assert_eq!(out[..28 * 27], pixels[..]);
    assert_eq!(out[28 * 27..], [20; 28]);
    // 27x28 (the same pixels read as 27 wide): the extra column on the right.
    let mut pixels = lcg_bytes(27 * 28, 10, 100);
    for (i, v) in pixels.iter_mut().enumerate() {
        let (x, y) = (i % 27, i / 27);
        if x == 0 || x == 26 || y == 0 || y == 27 {
            *v = 20;
        }
    }
    let out = to_fashion_mnist(&image(27, 28, pixels.clone()));
    for y in 0..28 {
        assert_eq!(out[y * 28..y * 28 + 27], pixels[y * 27..y * 27 + 27], "row {y}");
        assert_eq!(out[y * 28 + 27], 20, "row {y}");
    }
}

#[test]
fn wide_image_is_padded_top_and_bottom_with_the_background() {
    // 56x28 = 28x14 blocks: border blocks 10, inner blocks vary (< 128). Padded to 56x56 with
    // 14 rows of 10 above and below, halved: output rows 0..7 and 21..28 are 10, rows 7..21 are
    // the blocks.
    let value = |bx: usize, by: usize| {
        if bx == 0 || by == 0 || bx == SIDE - 1 || by == 13 {
            10
        } else {
            (20 + (bx * 5 + by * 3) % 90) as u8
        }
    };
    let out = to_fashion_mnist(&blocks(SIDE, 14, value));
    for y in 0..SIDE {
        for x in 0..SIDE {
            let expected = if (7..21).contains(&y) { value(x, y - 7) } else { 10 };
            assert_eq!(out[y * SIDE + x], expected, "at ({x}, {y})");
        }
    }
}

#[test]
fn tall_image_is_padded_left_and_right_with_the_background() {
    // 28x56 = 14x28 blocks, the transpose of the wide case.
    let value = |bx: usize, by: usize| {
        if bx == 0 || by == 0 || bx == 13 || by == SIDE - 1 {
            10
        } else {
            (20 + (bx * 3 + by * 5) % 90) as u8
        }
    };
    let out = to_fashion_mnist(&blocks(14, SIDE, value));
    for y in 0..SIDE {
        for x in 0..SIDE {
            let expected = if (7..21).contains(&x) { value(x - 7, y) } else { 10 };
            assert_eq!(out[y * SIDE + x], expected, "at ({x}, {y})");
        }
    }
}

#[test]
fn inverted_wide_image_is_padded_with_the_inverted_background() {
    // White 56x28 with black content: background becomes 0, padding rows are 0.
    let value = |bx: usize, by: usize| if (10..18).contains(&bx) && (4..10).contains(&by) { 0 } else { 255 };
    let out = to_fashion_mnist(&blocks(SIDE, 14, value));
    for y in 0..SIDE {
        for x in 0..SIDE {
            let expected = if (7..21).contains(&y) { 255 - value(x, y - 7) } else { 0 };
            assert_eq!(out[y * SIDE + x], expected, "at ({x}, {y})");
        }
    }
}

#[test]
fn area_average_preserves_the_mean_for_awkward_sizes() {
    // The exact area average of the padded square has the same mean as the square; rounding
    // each of the 784 outputs moves the mean by at most 0.5.
    for (w, h) in [(29, 29), (50, 50), (97, 61), (61, 97), (100, 3), (1, 300), (57, 28)] {
        let pixels = lcg_bytes(w * h, (w * 1000 + h) as u64, 100); // < 128: no inversion
        let img = image(w, h, pixels.clone());
        let side = w.max(h);
        let border: Vec<u8> = (0..w * h)
            .filter(|i| i % w == 0 || i % w == w - 1 || i / w == 0 || i / w == h - 1)
            .map(|i| pixels[i])
            .collect();
        let background = (border.iter().map(|&v| v as f64).sum::<f64>() / border.len() as f64).round();
        let sum: f64 =
            pixels.iter().map(|&v| v as f64).sum::<f64>() + background * (side * side - w * h) as f64;
        let mean_in = sum / (side * side) as f64;
        let out = to_fashion_mnist(&img);
        assert_eq!(out.len(), SIDE * SIDE);
        let mean_out = out.iter().map(|&v| v as f64).sum::<f64>() / out.len() as f64;
        assert!((mean_out - mean_in).abs() <= 0.5, "{w}x{h}: mean {mean_out} vs {mean_in}");
    }
}

#[test]
fn constant_image_of_any_size_stays_constant() {
    for (w, h) in [(1, 1), (5, 5), (27, 27), (28, 28), (29, 29), (83, 83), (200, 200)] {
        let out = to_fashion_mnist(&image(w, h, vec![77; w * h]));
        assert_eq!(out, vec![77; SIDE * SIDE], "{w}x{h}");
    }
}

#[test]
fn upscaling_stays_within_the_input_range() {
    let pixels = lcg_bytes(14 * 14, 7, 100).iter().map(|v| v + 20).collect::<Vec<u8>>(); // 20..120
    let (lo, hi) = (*pixels.iter().min().unwrap(), *pixels.iter().max().unwrap());
    let out = to_fashion_mnist(&image(14, 14, pixels.clone()));
    assert_eq!(out.len(), SIDE * SIDE);
    assert!(out.iter().all(|&v| (lo..=hi).contains(&v)), "values outside {lo}..={hi}");
    // Centre-aligned 2x enlargement: output (0, 0) lies at input (-0.25, -0.25), clamped to
    // (0, 0), so the corner pixels are copied.
    assert_eq!(out[0], pixels[0]);
    assert_eq!(out[SIDE * SIDE - 1], pixels[14 * 14 - 1]);
}

#[test]
fn upscaling_a_ramp_is_exact() {
    // 14x14 horizontal ramp v = 8 x + 10 (10..=114, dark: no inversion). Enlarging 2x with
    // centres aligned, output column o samples input x = o / 2 - 0.25; linear interpolation of a
    // linear ramp is exact, 8 (o / 2 - 0.25) + 10 = 4 o + 8, except at the clamped ends
    // (o = 0 -> x = 0 -> 10, o = 27 -> x = 13 -> 114).
    let pixels = (0..14 * 14).map(|i| (8 * (i % 14) + 10) as u8).collect();
    let out = to_fashion_mnist(&image(14, 14, pixels));
    for y in 0..SIDE {
        for x in 0..SIDE {
            let expected = match x {
                0 => 10,
                27 => 114,
                _ => 4 * x + 8,
            };
            assert_eq!(out[y * SIDE + x] as usize, expected, "at ({x}, {y})");
        }
    }
}

#[test]
fn long_thin_strip_is_cheap_and_centred() {
    // 1 x 100,000: the padded square would be 10^10 pixels; the padding is never materialised.
    let h = 100_000;
    let img = image(1, h, vec![200; h]);
    // All border pixels are 200 -> inverted: strip 55, background (and padding) 55 as well.
    let out = to_fashion_mnist(&img);
    assert_eq!(out, vec![55; SIDE * SIDE]);
    // The wide strip, dark: no inversion, and the padding is the strip's own value again.
    let out = to_fashion_mnist(&image(h, 1, vec![9; h]));
    assert_eq!(out, vec![9; SIDE * SIDE]);
}

#[test]
#[should_panic(expected = "zero side")]
fn empty_image_panics() {
    to_fashion_mnist(&image(0, 5, vec![]));
}

// ------------------------------------------------------------------------------------------------
// Files
// ------------------------------------------------------------------------------------------------

#[test]
fn read_image_tells_formats_by_content() {
    let dir = TempDir::new("content");
    let pixels = [5, 6, 7, 8];
    // A PNG named .pgm, and a PGM named .png.
    let a = dir.file("really-a-png.pgm", &grey_png(2, 2, &pixels));
    let b = dir.file("really-a-pgm.png", &pgm("P5 2 2 255\n", &pixels));
    for path in [a, b] {
        let img = read_image(&path).unwrap();
        assert_eq!((img.width, img.height, img.pixels.as_slice()), (2, 2, &pixels[..]));
    }
}

#[test]
fn load_for_model_gives_784_bytes() {
    let dir = TempDir::new("load");
    // A 56x56 white PNG with a black 2x2-aligned square: inverted, halved.
    let mut pixels = vec![255u8; 56 * 56];
    for y in 10..30 {
        for x in 20..40 {
            pixels[y * 56 + x] = 0;
        }
    }
    let path = dir.file("shirt.png", &grey_png(56, 56, &pixels));
    let out = load_for_model(&path).unwrap();
    assert_eq!(out.len(), SIDE * SIDE);
    for y in 0..SIDE {
        for x in 0..SIDE {
            let inside = (10..20).contains(&x) && (5..15).contains(&y);
            assert_eq!(out[y * SIDE + x], if inside { 255 } else { 0 }, "at ({x}, {y})");
        }
    }
    // A 28x28 P2 file with a dark background passes through unchanged.
    let values = lcg_bytes(SIDE * SIDE, 3, 100);
    let mut text = String::from("P2\n# 28x28\n28 28\n255\n");
    for row in values.chunks(SIDE) {
        text += &row.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(" ");
        text += "\n";
    }
    let path = dir.file("bag.pgm", text.as_bytes());
    assert_eq!(load_for_model(&path).unwrap(), values);
}

/// The error for `name` holding `bytes`: one line, naming the file, its reason containing `needle`.
fn expect_error(dir: &TempDir, name: &str, bytes: &[u8], needle: &str) -> ImageError {
    let path = dir.file(name, bytes);
    check_error(&path, name, needle)
}

fn check_error(path: &Path, name: &str, needle: &str) -> ImageError {
    let err = match read_image(path) {
        Ok(img) => panic!("{name}: expected an error, got {img:?}"),
        Err(e) => e,
    };
    let msg = err.to_string();
    assert!(!msg.contains(['\n', '\r']), "{name}: message is not one line: {msg:?}");
    assert!(msg.contains(name), "{name}: message does not name the file: {msg}");
    assert!(err.reason().contains(needle), "{name}: expected {needle:?} in: {msg}");
    assert_eq!(err.path(), path);
    // load_for_model reports the same error.
    assert_eq!(load_for_model(path).unwrap_err(), err);
    err
}

#[test]
fn file_errors() {
    let dir = TempDir::new("file-errors");
    check_error(&dir.0.join("missing.png"), "missing.png", "cannot read");
    std::fs::create_dir(dir.0.join("folder.png")).unwrap();
    check_error(&dir.0.join("folder.png"), "folder.png", "folder");
    let err = expect_error(&dir, "empty.png", b"", "empty file");
    assert!(err.reason().contains("PNG") && err.reason().contains("PGM"), "{err}");
}

#[test]
fn other_formats_are_named_and_the_supported_ones_listed() {
    let dir = TempDir::new("formats");
    for (name, bytes, needle) in [
        ("notes.png", &b"hello, world\n"[..], "not a PNG or PGM"),
        ("photo.png", &[0xff, 0xd8, 0xff, 0xe0, 0, 0x10][..], "JPEG"),
        ("anim.pgm", &b"GIF89a..."[..], "GIF"),
        ("colour.pgm", &b"P6\n1 1\n255\n\0\0\0"[..], "PPM"),
        ("pic.webp", &b"RIFF\x10\0\0\0WEBPVP8 "[..], "WebP"),
    ] {
        let err = expect_error(&dir, name, bytes, needle);
        assert!(err.reason().contains("supported formats: PNG, PGM"), "{err}");
    }
}

#[test]
fn png_errors() {
    let dir = TempDir::new("png-errors");
    let good = grey_png(16, 16, &lcg_bytes(256, 5, 256));
    // Truncated in the middle of the image data, and right after the signature.
    expect_error(&dir, "truncated.png", &good[..good.len() / 2], "PNG");
    expect_error(&dir, "signature-only.png", &good[..8], "PNG");
    // A flipped byte inside the IDAT data: the chunk's CRC no longer matches.
    let idat = good.windows(4).position(|w| w == b"IDAT").unwrap();
    let mut corrupt = good.clone();
    corrupt[idat + 6] ^= 0x55;
    expect_error(&dir, "corrupt.png", &corrupt, "PNG");
    // Headers that claim a zero side or 400 megapixels (nothing allocated for the latter).
    expect_error(&dir, "zero-width.png", &png_header_only(0, 10), "PNG");
    expect_error(&dir, "zero-height.png", &png_header_only(10, 0), "PNG");
    expect_error(&dir, "huge.png", &png_header_only(20_000, 20_000), "megapixels");
}

#[test]
fn pgm_errors() {
    let dir = TempDir::new("pgm-errors");
    for (name, bytes, needle) in [
        ("letters.pgm", pgm("P5\nabc 2\n255\n", &[0; 6]), "malformed PGM header"),
        ("no-maxval.pgm", pgm("P5\n3 2\n", &[]), "malformed PGM header"),
        ("glued.pgm", pgm("P53 2 255\n", &[0; 6]), "malformed PGM header"),
        ("no-space.pgm", pgm("P5 1 1 255", &[]), "malformed PGM header"),
        ("negative.pgm", pgm("P5 -3 2 255\n", &[0; 6]), "malformed PGM header"),
        ("maxval-0.pgm", pgm("P5 1 1 0\n", &[0]), "maxval"),
        ("maxval-70000.pgm", pgm("P5 1 1 70000\n", &[0, 0]), "maxval"),
        ("short.pgm", pgm("P5 3 2 255\n", &[1, 2, 3, 4, 5]), "5 pixel bytes"),
        ("short16.pgm", pgm("P5 2 2 65535\n", &[0; 7]), "needs 8"),
        ("zero.pgm", pgm("P5 0 5 255\n", &[]), "zero width or height"),
        ("huge.pgm", pgm("P5 20000 20000 255\n", &[]), "megapixels"),
        ("overflow.pgm", pgm("P5 99999999999999999999999 1 255\n", &[]), "too large"),
        ("few.pgm", pgm("P2 3 2 255\n1 2 3 4\n", &[]), "only 4 of the 6"),
        ("bad-value.pgm", pgm("P2 2 1 255\n1 x\n", &[]), "pixel value number 2"),
        ("above-max.pgm", pgm("P2 2 1 10\n5 11\n", &[]), "above maxval"),
        ("above-max5.pgm", pgm("P5 2 1 10\n", &[5, 11]), "above maxval"),
    ] {
        expect_error(&dir, name, &bytes, needle);
    }
}
