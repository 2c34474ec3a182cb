//! `predict --out FILE.png`: each input as the network sees it (28x28 after `predict`'s
//! conversion: grey, light object on black, padded and resized) beside a bar chart of its top
//! three classes, with the true class when it is known (`test:INDEX`).

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, VPos};

use super::text::{label, Style};
use super::{frame, gray_image, render, shorten, Picture, BLUE, GREEN, GRID, RED, TEXT};
use crate::train::argmax;

/// One input and what the model made of it.
#[derive(Clone, Copy, Debug)]
pub struct Row<'a> {
    /// How the user named the input (a path or `test:INDEX`).
    pub name: &'a str,
    /// The image, `rows x cols` bytes.
    pub pixels: &'a [u8],
    /// One probability per class.
    pub probabilities: &'a [f32],
    pub truth: Option<u8>,
}

/// Most inputs one picture holds.
pub const MAX_ROWS: usize = 100;
/// Each image pixel is drawn as a `SCALE x SCALE` block.
pub const SCALE: u32 = 4;
const WIDTH: i32 = 820;
const TOP: i32 = 56;
const ROW_GAP: i32 = 20;
const HEADER: i32 = 26;
const BAR_X: i32 = 290;
const BAR_W: i32 = 360;

/// The picture's `(width, height)` for `n` inputs of `rows` pixel rows.
pub fn size(n: usize, rows: usize) -> (u32, u32) {
    (WIDTH as u32, (TOP + n as i32 * (HEADER + rows as i32 * SCALE as i32 + ROW_GAP) + 8) as u32)
}

/// The indices of the three largest probabilities, largest first (ties: lower index first).
pub fn top3(p: &[f32]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..p.len()).collect();
    order.sort_by(|&i, &j| p[j].total_cmp(&p[i]).then(i.cmp(&j)));
    order.truncate(3);
    order
}

/// Draws `rows` (images of `shape` pixels) with the class `names`.
pub fn draw(title: &str, rows: &[Row], names: &[String], shape: (usize, usize)) -> Result<Picture, String> {
    if rows.is_empty() || rows.len() > MAX_ROWS {
        return Err(format!("a picture holds 1 to {MAX_ROWS} inputs, not {}", rows.len()));
    }
    for r in rows {
        if r.pixels.len() != shape.0 * shape.1 || r.probabilities.len() != names.len() {
            return Err(format!(
                "{}: not a {}x{} image with {} probabilities",
                r.name,
                shape.0,
                shape.1,
                names.len()
            ));
        }
    }
    let (w, h) = size(rows.len(), shape.0);
    let ih = shape.0 as i32 * SCALE as i32;
    render(w, h, |area| {
        label(area, title, Style::new(20.0).bold(), (16, 14))?;
        for (n, r) in rows.iter().enumerate() {
            let top = TOP + n as i32 * (HEADER + ih + ROW_GAP);
            label(area, &shorten(r.name, 60), Style::new(15.0).bold(), (20, top))?;
            let best = argmax(r.probabilities);
            if let Some(t) = r.truth {
                let (mark, color) = if t as usize == best { ("right", GREEN) } else { ("wrong", RED) };
                let x = 20 + Style::new(15.0).bold().measure(&shorten(r.name, 60)).0 + 16;
                let truth = format!("true: {}", names[t as usize]);
                label(area, &truth, Style::new(15.0), (x, top))?;
                let x = x + Style::new(15.0).measure(&truth).0 + 12;
                label(area, mark, Style::new(15.0).bold().color(color), (x, top))?;
            }
            let y0 = top + HEADER;
            area.draw(&gray_image(r.pixels, shape, SCALE, (20, y0)))?;
            frame(area, (19, y0 - 1), (20 + shape.1 as i32 * SCALE as i32, y0 + ih), GRID)?;
            for (rank, &c) in top3(r.probabilities).iter().enumerate() {
                let p = r.probabilities[c].clamp(0.0, 1.0);
                let yb = y0 + 8 + rank as i32 * (ih - 8) / 3;
                let bh = (ih - 8) / 3 - 10;
                let color = if rank == 0 { BLUE } else { RGBColor(150, 180, 210) };
                area.draw(&Rectangle::new(
                    [(BAR_X, yb), (BAR_X + BAR_W, yb + bh)],
                    RGBColor(242, 242, 242).filled(),
                ))?;
                let len = (p as f64 * BAR_W as f64).round() as i32;
                if len > 0 {
                    area.draw(&Rectangle::new([(BAR_X, yb), (BAR_X + len, yb + bh)], color.filled()))?;
                }
                label(
                    area,
                    &names[c],
                    Style::new(14.0).anchor(HPos::Right, VPos::Center),
                    (BAR_X - 8, yb + bh / 2),
                )?;
                label(
                    area,
                    &format!("{:.1}%", 100.0 * p),
                    Style::new(14.0).color(TEXT).anchor(HPos::Left, VPos::Center),
                    (BAR_X + BAR_W + 8, yb + bh / 2),
                )?;
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top3_orders_by_probability_then_index() {
        assert_eq!(top3(&[0.1, 0.5, 0.1, 0.3]), vec![1, 3, 0]);
        assert_eq!(top3(&[0.5, 0.5]), vec![0, 1]);
    }
}
