//! `confusion.png`: the confusion matrix as a heatmap. Rows are true classes, columns
//! predicted classes, each cell holds its count, and its colour is the count's share of its
//! row (the class's recall on the diagonal), on matplotlib's `Blues`: the darker, the larger
//! the share. Shares rather than counts keep the colours comparable when classes have
//! different numbers of images; on Fashion-MNIST's test set (1,000 a class) they order the
//! cells as the counts do. A colour bar on the right gives the scale.

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, VPos};

use super::text::{label, Style};
use super::{colormap, frame, render, shorten, DrawResult, Picture, BLUES, TEXT};

/// The picture's width.
pub const WIDTH: u32 = 1120;
/// The picture's height.
pub const HEIGHT: u32 = 950;
/// The grid's top left corner and side (all cells together), in pixels.
const LEFT: i32 = 190;
const TOP: i32 = 80;
const GRID: i32 = 800;

/// The side of one cell for `k` classes.
fn cell(k: usize) -> i32 {
    GRID / k.max(1) as i32
}

/// The pixel rectangle `((x0, y0), (x1, y1))` (x1, y1 exclusive) of cell (true `i`,
/// predicted `j`) for `k` classes.
pub fn cell_rect(k: usize, i: usize, j: usize) -> ((i32, i32), (i32, i32)) {
    let c = cell(k);
    let (x0, y0) = (LEFT + j as i32 * c, TOP + i as i32 * c);
    ((x0, y0), (x0 + c, y0 + c))
}

/// A row's shares: each count over the row's total (0 for an empty row).
pub fn row_shares(row: &[usize]) -> Vec<f64> {
    let total: usize = row.iter().sum();
    row.iter().map(|&v| if total == 0 { 0.0 } else { v as f64 / total as f64 }).collect()
}

/// Draws `m` (`m[true][predicted]`, `k x k`) with the class `names` under `title`.
pub fn draw(title: &str, m: &[Vec<usize>], names: &[String]) -> Result<Picture, String> {
    let k = m.len();
    if k == 0 || k > 40 || names.len() != k || m.iter().any(|r| r.len() != k) {
        return Err(format!(
            "the confusion matrix must be k x k with k names, 1 <= k <= 40 (got {k} rows, {} names)",
            names.len()
        ));
    }
    render(WIDTH, HEIGHT, |area| {
        label(area, title, Style::new(20.0).bold(), (16, 14))?;
        label(
            area,
            "rows: true class, columns: predicted class; colour: share of the true class's images",
            Style::new(14.0),
            (16, 44),
        )?;
        let c = cell(k);
        let count_size: f32 = if k <= 10 { 16.0 } else { 12.0 };
        for (i, row) in m.iter().enumerate() {
            let shares = row_shares(row);
            for (j, (&count, &share)) in row.iter().zip(&shares).enumerate() {
                let ((x0, y0), (x1, y1)) = cell_rect(k, i, j);
                area.draw(&Rectangle::new([(x0, y0), (x1, y1)], colormap(&BLUES, share).filled()))?;
                let ink = if share > 0.45 { WHITE } else { TEXT };
                let style = if i == j { Style::new(count_size).bold() } else { Style::new(count_size) };
                label(
                    area,
                    &count.to_string(),
                    style.color(ink).anchor(HPos::Center, VPos::Center),
                    ((x0 + x1) / 2, (y0 + y1) / 2),
                )?;
            }
        }
        frame(area, (LEFT, TOP), (LEFT + c * k as i32, TOP + c * k as i32), TEXT)?;
        labels(area, names, c)?;
        colour_bar(area, LEFT + c * k as i32 + 40)?;
        Ok(())
    })
}

fn labels(area: &super::Area, names: &[String], c: i32) -> DrawResult {
    let k = names.len() as i32;
    let size: f32 = if k <= 10 { 14.0 } else { 11.0 };
    let max_chars = (c / 7).max(3) as usize;
    for (i, name) in names.iter().enumerate() {
        let mid = TOP + i as i32 * c + c / 2;
        label(area, name, Style::new(size).anchor(HPos::Right, VPos::Center), (LEFT - 10, mid))?;
        let mid = LEFT + i as i32 * c + c / 2;
        label(
            area,
            &shorten(name, max_chars),
            Style::new(size).anchor(HPos::Center, VPos::Top),
            (mid, TOP + k * c + 8),
        )?;
    }
    label(
        area,
        "predicted class",
        Style::new(16.0).bold().anchor(HPos::Center, VPos::Top),
        (LEFT + k * c / 2, TOP + k * c + 38),
    )?;
    label(
        area,
        "true class",
        Style::new(16.0).bold().vertical().anchor(HPos::Center, VPos::Center),
        (24, TOP + k * c / 2),
    )?;
    Ok(())
}

fn colour_bar(area: &super::Area, x: i32) -> DrawResult {
    let steps = 200;
    for s in 0..steps {
        // Top of the bar is a share of 1.
        let share = 1.0 - s as f64 / (steps - 1) as f64;
        let y0 = TOP + s * GRID / steps;
        let y1 = TOP + (s + 1) * GRID / steps;
        area.draw(&Rectangle::new([(x, y0), (x + 26, y1)], colormap(&BLUES, share).filled()))?;
    }
    frame(area, (x, TOP), (x + 26, TOP + GRID), TEXT)?;
    for (share, tick) in [(1.0, "100%"), (0.75, "75%"), (0.5, "50%"), (0.25, "25%"), (0.0, "0%")] {
        let y = TOP + ((1.0 - share) * GRID as f64) as i32;
        area.draw(&PathElement::new(vec![(x + 26, y), (x + 32, y)], TEXT.stroke_width(1)))?;
        label(area, tick, Style::new(13.0).anchor(HPos::Left, VPos::Center), (x + 36, y))?;
    }
    label(
        area,
        "share of the row",
        Style::new(14.0).vertical().anchor(HPos::Center, VPos::Center),
        (x + 80, TOP + GRID / 2),
    )?;
    Ok(())
}
