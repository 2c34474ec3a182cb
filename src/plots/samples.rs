//! `samples.png`: training images with their labels, the first few of each class in file
//! order, one row a class with its name on the left. It shows what the classes look like,
//! and that the data reached the network as images (a wrong reader or a transposed file
//! shows here first).

use plotters::style::text_anchor::{HPos, VPos};

use super::text::{label, Style};
use super::{gray_image, render, Picture};
use crate::data::Dataset;

/// Images shown per class.
pub const PER_CLASS: usize = 10;
/// Each image pixel is drawn as a `SCALE x SCALE` block.
pub const SCALE: u32 = 3;
const LEFT: i32 = 140;
const TOP: i32 = 64;
const GAP: i32 = 6;

/// The first `per_class` indices of each of the `k` classes, in file order (fewer when a class
/// has fewer images).
pub fn pick(labels: &[u8], k: usize, per_class: usize) -> Vec<Vec<usize>> {
    let mut picked = vec![Vec::new(); k];
    for (i, &l) in labels.iter().enumerate() {
        if let Some(row) = picked.get_mut(l as usize) {
            if row.len() < per_class {
                row.push(i);
            }
        }
    }
    picked
}

/// The picture's `(width, height)` for `k` classes of `rows x cols` images.
pub fn size(k: usize, (rows, cols): (usize, usize)) -> (u32, u32) {
    let (tw, th) = (cols as i32 * SCALE as i32 + GAP, rows as i32 * SCALE as i32 + GAP);
    ((LEFT + PER_CLASS as i32 * tw + 14) as u32, (TOP + k as i32 * th + 10) as u32)
}

/// The top left corner of the image in class row `row`, column `col`.
pub fn image_pos(ds_shape: (usize, usize), row: usize, col: usize) -> (i32, i32) {
    let (tw, th) = (ds_shape.1 as i32 * SCALE as i32 + GAP, ds_shape.0 as i32 * SCALE as i32 + GAP);
    (LEFT + col as i32 * tw, TOP + row as i32 * th)
}

/// Draws the first [`PER_CLASS`] images of each class of `ds`, named by `names`.
pub fn draw(title: &str, ds: &Dataset, names: &[String]) -> Result<Picture, String> {
    let k = names.len();
    if k == 0 || ds.is_empty() || ds.rows == 0 || ds.cols == 0 {
        return Err("no images or no classes to draw".into());
    }
    let picked = pick(&ds.labels, k, PER_CLASS);
    let shape = (ds.rows, ds.cols);
    let (w, h) = size(k, shape);
    render(w, h, |area| {
        label(area, title, Style::new(20.0).bold(), (16, 14))?;
        let th = ds.rows as i32 * SCALE as i32;
        for (row, (idx, name)) in picked.iter().zip(names).enumerate() {
            let (_, y) = image_pos(shape, row, 0);
            let text = format!("{row} {name}");
            label(area, &text, Style::new(15.0).anchor(HPos::Right, VPos::Center), (LEFT - 12, y + th / 2))?;
            for (col, &i) in idx.iter().enumerate() {
                area.draw(&gray_image(ds.image(i), shape, SCALE, image_pos(shape, row, col)))?;
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pick_takes_the_first_of_each_class_in_order() {
        let labels = [2, 0, 2, 1, 2, 0, 2];
        assert_eq!(pick(&labels, 3, 2), vec![vec![1, 5], vec![3], vec![0, 2]]);
        // A label outside the k classes is ignored, not a panic.
        assert_eq!(pick(&[5, 0], 2, 3), vec![vec![1], vec![]]);
    }
}
