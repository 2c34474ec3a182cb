//! `errors.png`: misclassified images, grouped by the most confused pairs of classes (the
//! pairs with the most mistakes in both directions, as `eval` lists them), most confused
//! first; within a pair, the most confident mistakes first. Under each image: its true class,
//! and the predicted class with the probability the model gave it.
//!
//! Only images whose prediction differs from their label are ever drawn: [`select`] filters
//! on that before anything else.

use plotters::style::text_anchor::{HPos, VPos};

use super::text::{label, Style};
use super::{gray_image, render, shorten, Picture, RED, TEXT};
use crate::report;

/// One misclassified image.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Mistake {
    /// The image's index in the data set.
    pub index: usize,
    pub label: u8,
    pub predicted: u8,
    /// The probability of the predicted class.
    pub probability: f32,
}

/// The mistakes of one pair of classes, both directions.
#[derive(Clone, Debug, PartialEq)]
pub struct Group {
    pub classes: (usize, usize),
    /// All the mistakes between the two classes, both directions.
    pub count: usize,
    /// The ones drawn, most confident first.
    pub shown: Vec<Mistake>,
}

/// Pairs of classes drawn.
pub const PAIRS: usize = 5;
/// Images drawn per pair.
pub const PER_PAIR: usize = 6;
/// Each image pixel is drawn as a `SCALE x SCALE` block.
pub const SCALE: u32 = 3;

/// The mistakes to draw: for each of the `pairs` most confused pairs (in
/// [`report::most_confused`]'s order), up to `per_pair` misclassified images of the pair, the
/// highest predicted probability first (ties: lower index first).
///
/// # Shapes
/// `labels`, `predictions`: `[N]`; `probabilities`: `[N, k]`.
pub fn select(
    labels: &[u8],
    predictions: &[u8],
    probabilities: &[f32],
    k: usize,
    pairs: usize,
    per_pair: usize,
) -> Result<Vec<Group>, String> {
    let n = labels.len();
    if predictions.len() != n || probabilities.len() != n * k {
        return Err(format!(
            "{n} labels, {} predictions and {} probabilities do not match {k} classes",
            predictions.len(),
            probabilities.len()
        ));
    }
    if labels.iter().chain(predictions).any(|&c| c as usize >= k) {
        return Err(format!("a label or prediction is not one of the {k} classes"));
    }
    let mistakes: Vec<Mistake> = (0..n)
        .filter(|&i| labels[i] != predictions[i])
        .map(|i| Mistake {
            index: i,
            label: labels[i],
            predicted: predictions[i],
            probability: probabilities[i * k + predictions[i] as usize],
        })
        .collect();
    let m = report::confusion_matrix(labels, predictions, k);
    Ok(report::most_confused(&m, pairs)
        .into_iter()
        .map(|(a, b, count)| {
            let mut shown: Vec<Mistake> = mistakes
                .iter()
                .filter(|x| {
                    let (l, p) = (x.label as usize, x.predicted as usize);
                    (l, p) == (a, b) || (l, p) == (b, a)
                })
                .copied()
                .collect();
            shown.sort_by(|x, y| y.probability.total_cmp(&x.probability).then(x.index.cmp(&y.index)));
            shown.truncate(per_pair);
            Group { classes: (a, b), count, shown }
        })
        .collect())
}

const MARGIN: i32 = 20;
const TOP: i32 = 64;
const TILE_W: i32 = 164;
const HEADER: i32 = 32;
const CAPTION: i32 = 42;
const GROUP_GAP: i32 = 14;

/// Where things go for images of `rows x cols` pixels.
#[derive(Clone, Copy, Debug)]
pub struct Layout {
    pub image: (usize, usize),
}

impl Layout {
    fn group_height(&self) -> i32 {
        HEADER + self.image.0 as i32 * SCALE as i32 + CAPTION + GROUP_GAP
    }

    /// The picture's `(width, height)` for `groups` groups (a short note when there are none).
    pub fn size(&self, groups: usize) -> (u32, u32) {
        let w = 2 * MARGIN + PER_PAIR as i32 * TILE_W;
        let h = if groups == 0 { TOP + 60 } else { TOP + groups as i32 * self.group_height() + 4 };
        (w as u32, h as u32)
    }

    /// The pixel rectangle `((x0, y0), (x1, y1))` (exclusive ends) of image `col` of group `row`.
    pub fn image_rect(&self, row: usize, col: usize) -> ((i32, i32), (i32, i32)) {
        let (iw, ih) = (self.image.1 as i32 * SCALE as i32, self.image.0 as i32 * SCALE as i32);
        let x0 = MARGIN + col as i32 * TILE_W + (TILE_W - iw) / 2;
        let y0 = TOP + row as i32 * self.group_height() + HEADER;
        ((x0, y0), (x0 + iw, y0 + ih))
    }
}

/// Draws `groups` (from [`select`]); `image(i)` gives image `i`'s pixels (`rows x cols`).
pub fn draw<'a>(
    title: &str,
    groups: &[Group],
    names: &[String],
    (rows, cols): (usize, usize),
    image: impl Fn(usize) -> &'a [u8],
) -> Result<Picture, String> {
    let k = names.len();
    if groups.iter().any(|g| g.classes.0 >= k || g.classes.1 >= k) {
        return Err(format!("a group names a class outside the {k} classes"));
    }
    if groups.iter().flat_map(|g| &g.shown).any(|m| image(m.index).len() != rows * cols) {
        return Err(format!("an image is not {rows}x{cols} pixels"));
    }
    let layout = Layout { image: (rows, cols) };
    let (w, h) = layout.size(groups.len());
    render(w, h, |area| {
        label(area, title, Style::new(20.0).bold(), (16, 14))?;
        if groups.is_empty() {
            label(area, "No misclassified images.", Style::new(16.0), (MARGIN, TOP + 10))?;
            return Ok(());
        }
        for (row, g) in groups.iter().enumerate() {
            let ((_, y0), _) = layout.image_rect(row, 0);
            let header = format!(
                "{} <-> {}: {} mistake{}{}",
                names[g.classes.0],
                names[g.classes.1],
                g.count,
                if g.count == 1 { "" } else { "s" },
                if g.count > g.shown.len() { ", the most confident shown" } else { "" }
            );
            label(area, &header, Style::new(15.0).bold(), (MARGIN, y0 - HEADER + 6))?;
            for (col, m) in g.shown.iter().enumerate() {
                let ((x0, _), (x1, y1)) = layout.image_rect(row, col);
                area.draw(&gray_image(image(m.index), (rows, cols), SCALE, (x0, y0)))?;
                let mid = (x0 + x1) / 2;
                let truth = format!("true: {}", shorten(&names[m.label as usize], 14));
                let pred = format!(
                    "pred: {} {:.0}%",
                    shorten(&names[m.predicted as usize], 12),
                    100.0 * m.probability
                );
                label(
                    area,
                    &truth,
                    Style::new(13.0).color(TEXT).anchor(HPos::Center, VPos::Top),
                    (mid, y1 + 5),
                )?;
                label(
                    area,
                    &pred,
                    Style::new(13.0).color(RED).anchor(HPos::Center, VPos::Top),
                    (mid, y1 + 23),
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
    fn select_keeps_only_mistakes_in_pair_order_most_confident_first() {
        // 3 classes; images 1, 2, 4 and 5 are wrong: 0->1 (p .6), 1->0 (p .9), 2->1 (p .5),
        // 0->1 (p .7). Pair (0, 1) has 3 mistakes, pair (1, 2) one.
        let labels = [0, 0, 1, 2, 2, 0];
        let predictions = [0, 1, 0, 2, 1, 1];
        #[rustfmt::skip]
        let probs = [
            0.8, 0.1, 0.1,  0.3, 0.6, 0.1,  0.9, 0.05, 0.05,
            0.1, 0.1, 0.8,  0.2, 0.5, 0.3,  0.2, 0.7, 0.1,
        ];
        let groups = select(&labels, &predictions, &probs, 3, 5, 2).unwrap();
        assert_eq!(groups.len(), 2);
        assert_eq!((groups[0].classes, groups[0].count), ((0, 1), 3));
        let idx: Vec<usize> = groups[0].shown.iter().map(|m| m.index).collect();
        assert_eq!(idx, vec![2, 5]);
        assert_eq!(groups[0].shown[0].probability, 0.9);
        assert_eq!((groups[1].classes, groups[1].count), ((1, 2), 1));
        assert_eq!(groups[1].shown[0], Mistake { index: 4, label: 2, predicted: 1, probability: 0.5 });
    }

    #[test]
    fn select_rejects_mismatched_shapes() {
        assert!(select(&[0, 1], &[0], &[0.5; 4], 2, 5, 6).is_err());
        assert!(select(&[0, 3], &[0, 1], &[0.5; 4], 2, 5, 6).is_err());
    }
}
