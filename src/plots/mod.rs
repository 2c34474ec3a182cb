//! Pictures of a run: one file per picture, each a pure function from figures (a history, a
//! confusion matrix, images and predictions) to a [`Picture`], an RGB bitmap of a stated size.
//!
//! Drawing goes through plotters on an in-memory bitmap (its `BitMapBackend` over a
//! `Vec<u8>`, 3 bytes a pixel, row-major from the top left); [`Picture::png`] encodes it with
//! the `png` crate, and [`write_png`] writes it atomically. Text is DejaVu Sans, shipped in
//! `assets/fonts/` and compiled in (`include_bytes!`), rasterised by `ab_glyph`: drawing needs
//! no system font and no C library.
//!
//! Images of the data set are drawn as the network sees them: a light object on black, pixel
//! byte `v` as grey `(v, v, v)`, enlarged by whole pixels (nearest neighbour), never smoothed.
//!
//! | file | picture | size (pixels) |
//! |---|---|---|
//! | `curves.rs` | loss and accuracy per epoch, best epoch, learning rate | [`curves::size`] |
//! | `confusion.rs` | the confusion matrix as a heatmap | [`confusion::WIDTH`] x [`confusion::HEIGHT`] |
//! | `samples.rs` | training images, a few per class | [`samples::size`] |
//! | `errors.rs` | misclassified images, most confused pairs first | [`errors::Layout`] |
//! | `predictions.rs` | `predict`'s inputs beside their top-3 classes | [`predictions::size`] |
//! | `explain.rs` | filters, activation maps and saliency of one image | [`explain::Layout`] |
//!
//! Nothing here reads or computes model outputs: the callers hand in the numbers
//! ([`crate::explain`] computes the activations and the saliency map). A drawing that fails
//! returns an error message, never panics.

pub mod confusion;
pub mod curves;
pub mod errors;
pub mod explain;
pub mod predictions;
pub mod samples;
pub mod text;

use std::path::Path;
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::files::write_atomic;

/// DejaVu Sans, regular and bold (Bitstream Vera licence, `assets/fonts/LICENSE-DejaVu.txt`).
static REGULAR: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
static BOLD: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans-Bold.ttf");

/// The family name the pictures ask plotters for.
pub(crate) const FAMILY: &str = "sans-serif";

static FONTS: Once = Once::new();

/// Registers the shipped fonts with plotters, once per process. A font that does not parse
/// (it cannot: it is compiled in) would make text drawing fail with an error, not a panic.
fn register_fonts() {
    FONTS.call_once(|| {
        let _ = plotters::style::register_font(FAMILY, FontStyle::Normal, REGULAR);
        let _ = plotters::style::register_font(FAMILY, FontStyle::Bold, BOLD);
    });
}

/// An RGB bitmap: `rgb` is `[height, width, 3]`, row-major from the top left.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Picture {
    pub width: u32,
    pub height: u32,
    pub rgb: Vec<u8>,
}

impl Picture {
    /// The pixel at column `x`, row `y`.
    ///
    /// # Panics
    /// If `(x, y)` is outside the picture.
    pub fn pixel(&self, x: u32, y: u32) -> [u8; 3] {
        assert!(
            x < self.width && y < self.height,
            "pixel ({x}, {y}) of a {}x{} picture",
            self.width,
            self.height
        );
        let i = 3 * (y as usize * self.width as usize + x as usize);
        [self.rgb[i], self.rgb[i + 1], self.rgb[i + 2]]
    }

    /// The picture as PNG bytes (8-bit RGB, default compression).
    pub fn png(&self) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        {
            let mut enc = png::Encoder::new(&mut out, self.width, self.height);
            enc.set_color(png::ColorType::Rgb);
            enc.set_depth(png::BitDepth::Eight);
            let mut w = enc.write_header().map_err(|e| format!("PNG encoding: {e}"))?;
            w.write_image_data(&self.rgb).map_err(|e| format!("PNG encoding: {e}"))?;
        }
        Ok(out)
    }
}

/// Encodes `picture` as PNG and writes it to `path` atomically; the error is one line naming
/// the file.
pub fn write_png(path: &Path, picture: &Picture) -> Result<(), String> {
    let bytes = picture.png().map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    write_atomic(path, &bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// A drawing area over the picture being drawn.
pub(crate) type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

/// What a drawing function returns: plotters' errors, boxed.
pub(crate) type DrawResult = Result<(), Box<dyn std::error::Error>>;

/// Draws a `width` x `height` picture on a white background with `f`.
pub(crate) fn render(
    width: u32,
    height: u32,
    f: impl FnOnce(&Area) -> DrawResult,
) -> Result<Picture, String> {
    if width == 0 || height == 0 || width > 16_384 || height > 16_384 {
        return Err(format!("a {width}x{height} picture is empty or too large to draw"));
    }
    register_fonts();
    let mut rgb = vec![255u8; width as usize * height as usize * 3];
    {
        let area = BitMapBackend::with_buffer(&mut rgb, (width, height)).into_drawing_area();
        f(&area).map_err(|e| format!("drawing failed: {e}"))?;
        area.present().map_err(|e| format!("drawing failed: {e}"))?;
    }
    Ok(Picture { width, height, rgb })
}

/// Plotters' text style of `size` pixels, for the charts' tick numbers (the rest of the
/// text goes through [`text::label`]).
pub(crate) fn text(size: f64) -> TextStyle<'static> {
    TextStyle::from((FAMILY, size).into_font()).color(&TEXT)
}

/// Near-black for text and axes.
pub(crate) const TEXT: RGBColor = RGBColor(30, 30, 30);
/// Light grey for frames and grids.
pub(crate) const GRID: RGBColor = RGBColor(215, 215, 215);
/// The two series colours (train, validation), from the Tableau 10 palette matplotlib uses.
pub(crate) const BLUE: RGBColor = RGBColor(31, 119, 180);
pub(crate) const ORANGE: RGBColor = RGBColor(255, 127, 14);
pub(crate) const GREEN: RGBColor = RGBColor(44, 160, 44);
pub(crate) const RED: RGBColor = RGBColor(214, 39, 40);
pub(crate) const PURPLE: RGBColor = RGBColor(148, 103, 189);
/// Tableau 10, for series that need more colours (several runs).
pub(crate) const TABLEAU: [RGBColor; 10] = [
    BLUE,
    ORANGE,
    GREEN,
    RED,
    PURPLE,
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// Linear interpolation through colour `stops` at `t` in `[0, 1]` (clamped; NaN reads as 0).
pub(crate) fn colormap(stops: &[[u8; 3]], t: f64) -> RGBColor {
    let t = if t.is_nan() { 0.0 } else { t.clamp(0.0, 1.0) };
    let pos = t * (stops.len() - 1) as f64;
    let i = (pos.floor() as usize).min(stops.len() - 2);
    let f = pos - i as f64;
    let mix = |a: u8, b: u8| (a as f64 + (b as f64 - a as f64) * f).round() as u8;
    let (a, b) = (stops[i], stops[i + 1]);
    RGBColor(mix(a[0], b[0]), mix(a[1], b[1]), mix(a[2], b[2]))
}

/// matplotlib's `Blues`, white to dark blue: a sequential map whose darkness grows with `t`.
pub(crate) const BLUES: [[u8; 3]; 5] =
    [[247, 251, 255], [198, 219, 239], [107, 174, 214], [33, 113, 181], [8, 48, 107]];

/// matplotlib's `RdBu_r`, blue (negative) through white (0) to red (positive).
pub(crate) const RED_BLUE: [[u8; 3]; 5] =
    [[33, 102, 172], [146, 197, 222], [247, 247, 247], [244, 165, 130], [178, 24, 43]];

/// matplotlib's `viridis`, dark purple to yellow, in five stops.
pub(crate) const VIRIDIS: [[u8; 3]; 5] =
    [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];

/// Relative luminance (ITU-R BT.709 weights, on the 0..255 values): lower is darker.
pub fn luminance(rgb: [u8; 3]) -> f64 {
    0.2126 * rgb[0] as f64 + 0.7152 * rgb[1] as f64 + 0.0722 * rgb[2] as f64
}

/// A bitmap of `rows x cols` values coloured by `color`, each value a `scale x scale` block,
/// ready to place with its top left at `pos`.
pub(crate) fn blocks(
    values: &[f32],
    (rows, cols): (usize, usize),
    scale: u32,
    pos: (i32, i32),
    color: impl Fn(f32) -> RGBColor,
) -> BitMapElement<'static, (i32, i32)> {
    assert_eq!(values.len(), rows * cols, "blocks: {} values for {rows}x{cols}", values.len());
    let (w, h) = (cols as u32 * scale, rows as u32 * scale);
    let mut buf = vec![0u8; (w * h * 3) as usize];
    for y in 0..h as usize {
        for x in 0..w as usize {
            let c = color(values[(y / scale as usize) * cols + x / scale as usize]);
            let i = 3 * (y * w as usize + x);
            buf[i..i + 3].copy_from_slice(&[c.0, c.1, c.2]);
        }
    }
    BitMapElement::with_owned_buffer(pos, (w, h), buf).expect("the buffer has w * h * 3 bytes")
}

/// A data-set image (`rows x cols` bytes, light object on black) enlarged `scale` times,
/// with its top left at `pos`.
pub(crate) fn gray_image(
    pixels: &[u8],
    (rows, cols): (usize, usize),
    scale: u32,
    pos: (i32, i32),
) -> BitMapElement<'static, (i32, i32)> {
    let values: Vec<f32> = pixels.iter().map(|&v| v as f32).collect();
    blocks(&values, (rows, cols), scale, pos, |v| RGBColor(v as u8, v as u8, v as u8))
}

/// `name` shortened to `max` characters with an ellipsis (for labels in narrow places).
pub(crate) fn shorten(name: &str, max: usize) -> String {
    if name.chars().count() <= max {
        name.to_string()
    } else {
        let mut s: String = name.chars().take(max.saturating_sub(1)).collect();
        s.push('…');
        s
    }
}

/// A thin frame around the rectangle `(x0, y0)`-`(x1, y1)`.
pub(crate) fn frame(area: &Area, (x0, y0): (i32, i32), (x1, y1): (i32, i32), color: RGBColor) -> DrawResult {
    area.draw(&Rectangle::new([(x0, y0), (x1, y1)], color.stroke_width(1)))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colormap_hits_its_stops_and_interpolates_between() {
        let stops = [[0, 0, 0], [100, 200, 50], [200, 0, 250]];
        assert_eq!(colormap(&stops, 0.0), RGBColor(0, 0, 0));
        assert_eq!(colormap(&stops, 0.5), RGBColor(100, 200, 50));
        assert_eq!(colormap(&stops, 1.0), RGBColor(200, 0, 250));
        // A quarter of the way: half-way between the first two stops.
        assert_eq!(colormap(&stops, 0.25), RGBColor(50, 100, 25));
        assert_eq!(colormap(&stops, -3.0), RGBColor(0, 0, 0));
        assert_eq!(colormap(&stops, f64::NAN), RGBColor(0, 0, 0));
    }

    #[test]
    fn blues_darken_monotonically() {
        let l: Vec<f64> = (0..=20)
            .map(|i| {
                let c = colormap(&BLUES, i as f64 / 20.0);
                luminance([c.0, c.1, c.2])
            })
            .collect();
        assert!(l.windows(2).all(|w| w[1] < w[0]), "{l:?}");
    }

    #[test]
    fn a_picture_encodes_to_a_png_of_its_size() {
        let pic = render(7, 5, |a| {
            a.fill(&RED)?;
            Ok(())
        })
        .unwrap();
        let bytes = pic.png().unwrap();
        let dec = png::Decoder::new(std::io::Cursor::new(bytes));
        let mut r = dec.read_info().unwrap();
        let mut buf = vec![0; r.output_buffer_size().unwrap()];
        let info = r.next_frame(&mut buf).unwrap();
        assert_eq!((info.width, info.height), (7, 5));
        assert_eq!(&buf[..3], &[RED.0, RED.1, RED.2]);
    }

    #[test]
    fn text_draws_with_the_shipped_font() {
        let pic = render(120, 40, |a| {
            text::label(a, "Shirt", text::Style::new(20.0), (5, 5))?;
            Ok(())
        })
        .unwrap();
        let dark = pic.rgb.chunks(3).filter(|p| luminance([p[0], p[1], p[2]]) < 128.0).count();
        assert!(dark > 50, "only {dark} dark pixels: no glyphs were drawn");
    }

    #[test]
    fn shorten_keeps_short_names_and_cuts_long_ones() {
        assert_eq!(shorten("Bag", 5), "Bag");
        assert_eq!(shorten("T-shirt/top", 6), "T-shi…");
    }
}
