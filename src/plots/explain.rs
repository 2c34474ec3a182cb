//! `fmnist explain`'s picture: one image as the network sees it, its saliency map (signed, and
//! its magnitude over the image), the top-3 classes, the first convolution's filters and the
//! activation maps of every convolution. The numbers come from [`crate::explain`].
//!
//! Colours: the saliency map and the filters on matplotlib's `RdBu_r` (red positive, blue
//! negative, white 0), each scaled by its largest magnitude; activation maps on `viridis`,
//! from 0 (dark) to the layer's largest value (yellow), one scale for all maps of a layer so
//! that quiet channels look quiet.

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, VPos};

use super::text::{label, Style};
use super::{
    blocks, colormap, frame, gray_image, render, Area, DrawResult, Picture, BLUE, GRID, RED_BLUE, TEXT,
    VIRIDIS,
};
use crate::explain::{Activation, Saliency};
use crate::tensor::Tensor;

/// What the picture shows.
#[derive(Clone, Copy, Debug)]
pub struct View<'a> {
    pub title: &'a str,
    /// The input as the network sees it, `rows x cols` bytes.
    pub pixels: &'a [u8],
    pub shape: (usize, usize),
    pub saliency: &'a Saliency,
    pub names: &'a [String],
    /// The true class, when known.
    pub truth: Option<u8>,
    /// The first convolution's weights `[OC, C, KH, KW]`.
    pub filters: Option<&'a Tensor>,
    pub activations: &'a [Activation],
}

/// The picture's width.
pub const WIDTH: u32 = 1200;
/// Maps drawn per convolution, at most.
pub const MAX_MAPS: usize = 64;
const MARGIN: i32 = 20;
const PER_ROW: usize = 16;
const TOP_SCALE: u32 = 7;
const TOP: i32 = 84;
const SECTION_HEADER: i32 = 34;
const TILE_GAP: i32 = 6;

/// One grid section: its top, the scale of a tile's pixels and how many tiles.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Grid {
    pub top: i32,
    pub scale: u32,
    pub tiles: usize,
    /// `(rows, cols)` of one tile's values.
    pub tile: (usize, usize),
}

impl Grid {
    fn tile_px(&self) -> (i32, i32) {
        (self.tile.1 as i32 * self.scale as i32, self.tile.0 as i32 * self.scale as i32)
    }
    fn height(&self) -> i32 {
        let rows = self.tiles.div_ceil(PER_ROW) as i32;
        SECTION_HEADER + rows * (self.tile_px().1 + TILE_GAP) + 10
    }
    /// The top left of tile `n`.
    pub fn tile_pos(&self, n: usize) -> (i32, i32) {
        let (tw, th) = self.tile_px();
        let (r, c) = ((n / PER_ROW) as i32, (n % PER_ROW) as i32);
        (MARGIN + c * (tw + TILE_GAP), self.top + SECTION_HEADER + r * (th + TILE_GAP))
    }
}

/// Where everything goes: the grids (filters first, then one per convolution) and the height.
#[derive(Clone, Debug, PartialEq)]
pub struct Layout {
    pub grids: Vec<Grid>,
    pub height: u32,
}

/// The largest whole scale that fits `PER_ROW` tiles of `cols` values across the picture,
/// capped at `max`.
fn fit_scale(cols: usize, max: u32) -> u32 {
    let room = (WIDTH as i32 - 2 * MARGIN) / PER_ROW as i32 - TILE_GAP;
    ((room / cols.max(1) as i32).max(1) as u32).min(max)
}

impl Layout {
    pub fn new(view: &View) -> Layout {
        let mut top = TOP + 30 + view.shape.0 as i32 * TOP_SCALE as i32 + 30;
        let mut grids = Vec::new();
        if let Some(w) = view.filters {
            let s = w.shape();
            let g = Grid { top, scale: fit_scale(s[3], 12), tiles: s[0], tile: (s[2], s[3]) };
            top += g.height();
            grids.push(g);
        }
        for a in view.activations {
            let s = a.maps.shape();
            let g = Grid { top, scale: fit_scale(s[2], 4), tiles: s[0].min(MAX_MAPS), tile: (s[1], s[2]) };
            top += g.height();
            grids.push(g);
        }
        Layout { grids, height: (top + 10) as u32 }
    }
}

/// Draws `view`.
pub fn draw(view: &View) -> Result<Picture, String> {
    let (rows, cols) = view.shape;
    let sal = view.saliency;
    if view.pixels.len() != rows * cols || sal.gradient.len() < rows * cols {
        return Err(format!("explain: the input is not {rows}x{cols}"));
    }
    if sal.probabilities.len() != view.names.len() {
        return Err(format!(
            "explain: {} probabilities for {} classes",
            sal.probabilities.len(),
            view.names.len()
        ));
    }
    if view.filters.is_some_and(|w| w.shape().len() != 4)
        || view.activations.iter().any(|a| a.maps.shape().len() != 3)
    {
        return Err("explain: filters must be [OC, C, KH, KW] and maps [C, H, W]".into());
    }
    let layout = Layout::new(view);
    render(WIDTH, layout.height, |area| {
        label(area, view.title, Style::new(20.0).bold(), (16, 14))?;
        let c = sal.class;
        let mut sub = format!("predicted: {} ({:.1}%)", view.names[c], 100.0 * sal.probabilities[c]);
        if let Some(t) = view.truth {
            sub += &format!("; true class: {}", view.names[t as usize]);
        }
        label(area, &sub, Style::new(16.0), (16, 44))?;
        top_row(area, view)?;
        let mut grids = layout.grids.iter();
        if let Some(w) = view.filters {
            let g = grids.next().expect("a grid per filter bank");
            let s = w.shape();
            let extra = if s[1] > 1 { format!(", input channel 0 of {}", s[1]) } else { String::new() };
            let header = format!(
                "The first convolution's {} filters ({}x{} weights{extra}; red positive, blue negative, white 0)",
                s[0], s[2], s[3]
            );
            let m = w.data().iter().fold(0f32, |a, v| a.max(v.abs())).max(1e-12);
            let per = s[1] * s[2] * s[3];
            let tiles: Vec<&[f32]> = (0..s[0]).map(|o| &w.data()[o * per..o * per + s[2] * s[3]]).collect();
            grid(area, g, &header, &tiles, |v| colormap(&RED_BLUE, 0.5 + 0.5 * (v / m) as f64))?;
        }
        for (a, g) in view.activations.iter().zip(grids) {
            let s = a.maps.shape();
            let shown =
                if s[0] > MAX_MAPS { format!(", the first {MAX_MAPS} of {}", s[0]) } else { String::new() };
            let header =
                format!("Activation maps, {} ({} maps of {}x{}{shown})", a.description, s[0], s[1], s[2]);
            let (lo, hi) = a.maps.data().iter().fold((0f32, 0f32), |(l, h), &v| (l.min(v), h.max(v)));
            let span = (hi - lo).max(1e-12);
            let per = s[1] * s[2];
            let tiles: Vec<&[f32]> =
                (0..g.tiles).map(|ch| &a.maps.data()[ch * per..(ch + 1) * per]).collect();
            grid(area, g, &header, &tiles, |v| colormap(&VIRIDIS, ((v - lo) / span) as f64))?;
        }
        Ok(())
    })
}

/// The input, the signed saliency, its magnitude over the input, and the top-3 bars.
fn top_row(area: &Area, view: &View) -> DrawResult {
    let (rows, cols) = view.shape;
    let g = &view.saliency.gradient.data()[..rows * cols];
    let m = g.iter().fold(0f32, |a, v| a.max(v.abs())).max(1e-12);
    let side = cols as i32 * TOP_SCALE as i32;
    let y = TOP + 30;
    let captions =
        ["the input, as the network sees it", "saliency: d score / d pixel", "|saliency| over the input"];
    for (k, caption) in captions.iter().enumerate() {
        let x = MARGIN + k as i32 * (side + 30);
        label(area, caption, Style::new(14.0), (x, TOP + 4))?;
        frame(area, (x - 1, y - 1), (x + side, y + side), GRID)?;
    }
    area.draw(&gray_image(view.pixels, (rows, cols), TOP_SCALE, (MARGIN, y)))?;
    let signed: Vec<f32> = g.to_vec();
    area.draw(&blocks(&signed, (rows, cols), TOP_SCALE, (MARGIN + side + 30, y), |v| {
        colormap(&RED_BLUE, 0.5 + 0.5 * (v / m) as f64)
    }))?;
    // Magnitude as red over the dimmed image: alpha = |g| / max |g|.
    let over: Vec<f32> = (0..rows * cols).map(|i| i as f32).collect();
    area.draw(&blocks(&over, (rows, cols), TOP_SCALE, (MARGIN + 2 * (side + 30), y), |i| {
        let i = i as usize;
        let (a, v) = ((g[i].abs() / m) as f64, 0.45 * view.pixels[i] as f64);
        let mix = |target: f64| (v + (target - v) * a).round() as u8;
        RGBColor(mix(255.0), mix(40.0), mix(40.0))
    }))?;
    let note = "red: a brighter pixel raises the score of the predicted class; blue: lowers it";
    label(area, note, Style::new(13.0).color(TEXT), (MARGIN, y + side + 8))?;

    // The top-3 classes as bars.
    let x0 = MARGIN + 3 * (side + 30) + 150;
    label(area, "top 3 classes", Style::new(15.0).bold(), (x0 - 140, TOP + 4))?;
    let p = &view.saliency.probabilities;
    for (rank, &c) in super::predictions::top3(p).iter().enumerate() {
        let yb = y + 10 + rank as i32 * 44;
        let len = (p[c].clamp(0.0, 1.0) as f64 * 220.0).round() as i32;
        area.draw(&Rectangle::new([(x0, yb), (x0 + 220, yb + 28)], RGBColor(242, 242, 242).filled()))?;
        if len > 0 {
            let color = if rank == 0 { BLUE } else { RGBColor(150, 180, 210) };
            area.draw(&Rectangle::new([(x0, yb), (x0 + len, yb + 28)], color.filled()))?;
        }
        label(area, &view.names[c], Style::new(14.0).anchor(HPos::Right, VPos::Center), (x0 - 8, yb + 14))?;
        label(
            area,
            &format!("{:.1}%", 100.0 * p[c]),
            Style::new(14.0).anchor(HPos::Left, VPos::Center),
            (x0 + 228, yb + 14),
        )?;
    }
    Ok(())
}

fn grid(
    area: &Area,
    g: &Grid,
    header: &str,
    tiles: &[&[f32]],
    color: impl Fn(f32) -> RGBColor + Copy,
) -> DrawResult {
    label(area, header, Style::new(15.0).bold(), (MARGIN, g.top + 8))?;
    for (n, t) in tiles.iter().enumerate() {
        let pos = g.tile_pos(n);
        area.draw(&blocks(t, g.tile, g.scale, pos, color))?;
    }
    Ok(())
}
