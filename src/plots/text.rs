//! Text drawn glyph by glyph with `ab_glyph` from the shipped DejaVu Sans, through plotters'
//! text interface (its `BackendTextStyle`), so anchoring and rotation are plotters' own.
//!
//! Why not plotters' text: its `ab_glyph` path (0.3.7) places each glyph at a whole pixel and
//! drops the glyph's left side bearing, so letters sit unevenly ("ep och"). Here each glyph is
//! positioned at its exact fractional pen position on the baseline, with kerning, and its
//! coverage blended in. Plotters' text still draws the charts' tick numbers, where digits of
//! equal width hide the flaw.

use std::sync::OnceLock;

use ab_glyph::{point, Font, FontRef, PxScale, ScaleFont};
use plotters::element::{Drawable, PointCollection};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters_backend::{
    BackendColor, BackendCoord, BackendTextStyle, DrawingErrorKind, FontFamily, FontTransform,
};

use super::{Area, DrawResult, BOLD, REGULAR, TEXT};

fn font(bold: bool) -> Option<&'static FontRef<'static>> {
    static FONTS: OnceLock<Option<(FontRef<'static>, FontRef<'static>)>> = OnceLock::new();
    let pair = FONTS
        .get_or_init(|| Some((FontRef::try_from_slice(REGULAR).ok()?, FontRef::try_from_slice(BOLD).ok()?)));
    pair.as_ref().map(|(r, b)| if bold { b } else { r })
}

/// The shipped font did not parse (it cannot: it is compiled in and tested).
#[derive(Debug)]
pub struct NoFont;

impl std::fmt::Display for NoFont {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("the shipped DejaVu Sans font does not parse")
    }
}

impl std::error::Error for NoFont {}

/// How a line of text looks and where its anchor is.
#[derive(Clone, Copy)]
pub struct Style {
    /// The font's scale in pixels (ascent to descent), as plotters sizes text.
    pub size: f32,
    pub bold: bool,
    pub color: RGBColor,
    pub h: HPos,
    pub v: VPos,
    /// Rotated a quarter turn, reading upwards (a y-axis title).
    pub vertical: bool,
}

impl Style {
    /// Regular text of `size` pixels, dark grey, anchored at its top left.
    pub fn new(size: f32) -> Style {
        Style { size, bold: false, color: TEXT, h: HPos::Left, v: VPos::Top, vertical: false }
    }
    pub fn bold(self) -> Style {
        Style { bold: true, ..self }
    }
    pub fn color(self, color: RGBColor) -> Style {
        Style { color, ..self }
    }
    pub fn anchor(self, h: HPos, v: VPos) -> Style {
        Style { h, v, ..self }
    }
    pub fn vertical(self) -> Style {
        Style { vertical: true, ..self }
    }

    /// The text's width and height in pixels.
    pub fn measure(&self, text: &str) -> (i32, i32) {
        let Some(f) = font(self.bold) else { return (0, 0) };
        let f = f.as_scaled(PxScale::from(self.size));
        let (mut x, mut prev) = (0f32, None);
        for c in text.chars() {
            let g = f.glyph_id(c);
            if let Some(p) = prev {
                x += f.kern(p, g);
            }
            x += f.h_advance(g);
            prev = Some(g);
        }
        (x.ceil() as i32, (f.ascent() - f.descent()).ceil() as i32)
    }
}

impl BackendTextStyle for Style {
    type FontError = NoFont;

    fn color(&self) -> BackendColor {
        BackendColor { alpha: 1.0, rgb: (self.color.0, self.color.1, self.color.2) }
    }
    fn size(&self) -> f64 {
        self.size as f64
    }
    fn transform(&self) -> FontTransform {
        if self.vertical {
            FontTransform::Rotate270
        } else {
            FontTransform::None
        }
    }
    fn anchor(&self) -> Pos {
        Pos::new(self.h, self.v)
    }
    fn family(&self) -> FontFamily<'_> {
        FontFamily::SansSerif
    }
    fn layout_box(&self, text: &str) -> Result<((i32, i32), (i32, i32)), NoFont> {
        font(self.bold).ok_or(NoFont)?;
        Ok(((0, 0), self.measure(text)))
    }
    fn draw<E, F: FnMut(i32, i32, BackendColor) -> Result<(), E>>(
        &self,
        text: &str,
        (x0, y0): BackendCoord,
        mut draw: F,
    ) -> Result<Result<(), E>, NoFont> {
        let f = font(self.bold).ok_or(NoFont)?.as_scaled(PxScale::from(self.size));
        let rgb = (self.color.0, self.color.1, self.color.2);
        let baseline = y0 as f32 + f.ascent();
        let (mut x, mut prev) = (x0 as f32, None);
        for c in text.chars() {
            let id = f.glyph_id(c);
            if let Some(p) = prev {
                x += f.kern(p, id);
            }
            let glyph = id.with_scale_and_position(PxScale::from(self.size), point(x, baseline));
            if let Some(outline) = f.outline_glyph(glyph) {
                let b = outline.px_bounds();
                let mut pixels = Vec::new();
                outline.draw(|gx, gy, cov| {
                    pixels.push((b.min.x as i32 + gx as i32, b.min.y as i32 + gy as i32, cov))
                });
                for (px, py, cov) in pixels {
                    if cov > 0.0 {
                        if let Err(e) = draw(px, py, BackendColor { alpha: cov.min(1.0) as f64, rgb }) {
                            return Ok(Err(e));
                        }
                    }
                }
            }
            x += f.h_advance(id);
            prev = Some(id);
        }
        Ok(Ok(()))
    }
}

/// A line of text at a pixel position, as a plotters element.
pub struct Label {
    pub text: String,
    pub pos: (i32, i32),
    pub style: Style,
}

impl<'a> PointCollection<'a, (i32, i32)> for &'a Label {
    type Point = &'a (i32, i32);
    type IntoIter = std::iter::Once<&'a (i32, i32)>;
    fn point_iter(self) -> Self::IntoIter {
        std::iter::once(&self.pos)
    }
}

impl<DB: DrawingBackend> Drawable<DB> for Label {
    fn draw<I: Iterator<Item = BackendCoord>>(
        &self,
        mut points: I,
        backend: &mut DB,
        _: (u32, u32),
    ) -> Result<(), DrawingErrorKind<DB::ErrorType>> {
        match points.next() {
            Some(p) => backend.draw_text(&self.text, &self.style, p),
            None => Ok(()),
        }
    }
}

/// Draws `text` in `style` at `pos` (pixels of `area`), the argument order of plotters'
/// `draw_text`.
pub(crate) fn label(area: &Area, text: &str, style: Style, pos: (i32, i32)) -> DrawResult {
    area.draw(&Label { text: text.to_string(), pos, style })?;
    Ok(())
}
