//! `curves.png`: loss and accuracy per epoch, train and validation, side by side, with the
//! best epoch (the one whose weights `train` keeps) marked; below them the learning rate per
//! epoch when it changes during the run (a schedule), as `history.json` records it (the rate
//! of each epoch's last update).
//!
//! One run: train in blue, validation in orange, the best epoch a dashed grey line. Several
//! runs (`train --runs N`): one colour per run, train dashed and validation solid, each run's
//! best epoch a ring on its validation curve.
//!
//! Training figures are means over the epoch's batches in training mode (dropout on), as
//! Keras reports them; validation figures are computed after the epoch, in evaluation mode.

use std::ops::Range;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, VPos};

use super::text::{label, Style};
use super::{render, text, Area, DrawResult, Picture, BLUE, GRID, ORANGE, TABLEAU, TEXT};
use crate::train::{EpochStats, TrainConfig};

/// One run's curves.
#[derive(Clone, Copy, Debug)]
pub struct Run<'a> {
    /// The legend's name of the run (`"run 2 (seed 1)"`); unused for a single run.
    pub label: &'a str,
    pub history: &'a [EpochStats],
    /// The 1-based epoch whose weights were kept, if known.
    pub best_epoch: Option<usize>,
    /// How the training loss's targets differ from the plain labels.
    pub targets: Targets,
}

/// What the training loss is measured against, besides the plain labels: smoothed targets
/// and mixed batches (mixup, CutMix). The validation loss is always against the plain labels,
/// so with either the two losses sit apart (0.6 against 0.2 at smoothing 0.1; 1.2 against 0.26
/// with CutMix) and the panels say why.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Targets {
    /// The label smoothing (0: none).
    pub smoothing: f32,
    /// Whether batches were mixed: then the training accuracy counts each image's own label.
    pub mixed: bool,
}

impl Targets {
    /// The targets of a run with this configuration.
    pub fn of(cfg: &TrainConfig) -> Targets {
        Targets { smoothing: cfg.label_smoothing, mixed: !cfg.mix.is_off() }
    }
}

/// The loss panel's caption: what the training loss is measured against when that is not
/// the plain labels, and that validation is against them (when a run validated).
fn loss_caption(runs: &[Run]) -> String {
    let smoothing = runs.iter().map(|r| r.targets.smoothing).fold(0.0f32, f32::max);
    let mixed = runs.iter().any(|r| r.targets.mixed);
    let training = match (smoothing > 0.0, mixed) {
        (false, false) => return "Loss".to_string(),
        (true, false) => format!("targets smoothed by {smoothing}"),
        (false, true) => "mixed batches".to_string(),
        (true, true) => format!("mixed batches, targets smoothed by {smoothing}"),
    };
    let validated = runs.iter().any(|r| r.history.iter().any(|s| s.val_loss.is_some()));
    if validated {
        format!("Loss (training: {training}; validation: plain)")
    } else {
        format!("Loss (training: {training})")
    }
}

/// The legend's name for the marked epoch: chosen by the validation loss, or, without
/// validation (`--val-split 0`), simply the last, whose weights are kept.
fn kept_label(epoch: usize, validated: bool) -> String {
    if validated {
        format!("best epoch: {epoch}")
    } else {
        format!("kept: the last, {epoch} (no validation)")
    }
}

/// The picture's width.
pub const WIDTH: u32 = 1200;
/// The height of the loss and accuracy panels (the picture's height without a schedule).
pub const PANELS_HEIGHT: u32 = 500;
/// The height added by the learning-rate panel.
pub const LR_HEIGHT: u32 = 240;

/// Whether the learning rate changed during any of the runs (then it is drawn).
pub fn has_schedule(runs: &[Run]) -> bool {
    runs.iter().any(|r| r.history.windows(2).any(|w| w[0].lr != w[1].lr))
}

/// The picture's `(width, height)` for these runs.
pub fn size(runs: &[Run]) -> (u32, u32) {
    (WIDTH, PANELS_HEIGHT + if has_schedule(runs) { LR_HEIGHT } else { 0 })
}

/// Draws the curves of `runs` under `title`.
pub fn draw(title: &str, runs: &[Run]) -> Result<Picture, String> {
    let epochs = runs.iter().map(|r| r.history.len()).max().unwrap_or(0);
    if epochs == 0 {
        return Err("no epochs to draw".into());
    }
    let (w, h) = size(runs);
    render(w, h, |root| {
        let (head, body) = root.split_vertically(44);
        label(&head, title, Style::new(20.0).bold(), (16, 12))?;
        let (panels, lr_area) = body.split_vertically(PANELS_HEIGHT - 44);
        let (left, right) = panels.split_horizontally(w / 2);
        let loss = |s: &EpochStats| (Some(s.loss as f64), s.val_loss.map(|v| v as f64));
        let acc =
            |s: &EpochStats| (Some(100.0 * s.accuracy as f64), s.val_accuracy.map(|v| 100.0 * v as f64));
        let caption = loss_caption(runs);
        let mixed = runs.iter().any(|r| r.targets.mixed);
        let acc_caption = if mixed { "Accuracy (training: each image's own label)" } else { "Accuracy" };
        panel(&left, runs, epochs, &caption, "loss (cross-entropy)", &loss, false)?;
        panel(&right, runs, epochs, acc_caption, "accuracy (%)", &acc, true)?;
        if has_schedule(runs) {
            lr_panel(&lr_area, runs, epochs)?;
        }
        Ok(())
    })
}

/// The x range that shows epochs `1..=epochs` with half an epoch of room on each side.
fn x_range(epochs: usize) -> std::ops::Range<f64> {
    0.5..epochs as f64 + 0.5
}

/// An integer epoch label, blank between epochs.
fn epoch_label(x: &f64) -> String {
    if (x - x.round()).abs() < 1e-6 {
        format!("{}", x.round() as i64)
    } else {
        String::new()
    }
}

/// `(lo, hi)` of the values with a 6% margin; a flat series gets a small band around it.
fn y_range(values: impl Iterator<Item = f64>, at_least_zero: bool) -> (f64, f64) {
    let (mut lo, mut hi) =
        values.filter(|v| v.is_finite()).fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(v), b.max(v)));
    if lo > hi {
        return (0.0, 1.0);
    }
    if hi - lo < 1e-9 {
        (lo, hi) = (lo - 0.5 * lo.abs().max(1e-3), hi + 0.5 * hi.abs().max(1e-3));
    }
    let pad = 0.06 * (hi - lo);
    let lo = if at_least_zero { (lo - pad).max(0.0) } else { lo - pad };
    (lo, hi + pad)
}

/// One legend line: its name, colour, and whether its line is dashed.
struct Entry {
    name: String,
    color: RGBColor,
    dashed: bool,
}

/// Titles the chart of `area`: `caption` above, `x_desc` under the x axis, `y_desc` (upright)
/// left of the y axis. `plot` is the chart's plotting area, in root pixels.
fn titles(
    area: &Area,
    plot: (Range<i32>, Range<i32>),
    caption: &str,
    x_desc: &str,
    y_desc: &str,
) -> DrawResult {
    let (bx, by) = area.get_base_pixel();
    let (xr, yr) = plot;
    let mid_x = (xr.start + xr.end) / 2 - bx;
    label(area, caption, Style::new(18.0).bold().anchor(HPos::Center, VPos::Top), (mid_x, 8))?;
    label(area, x_desc, Style::new(15.0).anchor(HPos::Center, VPos::Top), (mid_x, yr.end - by + 28))?;
    let mid_y = (yr.start + yr.end) / 2 - by;
    label(area, y_desc, Style::new(15.0).vertical().anchor(HPos::Center, VPos::Center), (14, mid_y))?;
    Ok(())
}

/// A legend box in the right-hand corner of the plotting area `plot` (root pixels), upper or
/// lower, whichever covers fewer of the `curve` pixels (root pixels along the drawn lines).
fn legend(
    area: &Area,
    plot: (Range<i32>, Range<i32>),
    entries: &[Entry],
    curve: &[(i32, i32)],
) -> DrawResult {
    let (bx, by) = area.get_base_pixel();
    let style = Style::new(14.0);
    let line_h = 20;
    let w = entries.iter().map(|e| style.measure(&e.name).0).max().unwrap_or(0) + 54;
    let h = entries.len() as i32 * line_h + 10;
    let (xr, yr) = plot;
    let x0 = xr.end - w - 10;
    let covered =
        |y0: i32| curve.iter().filter(|&&(x, y)| x >= x0 && x <= x0 + w && y >= y0 && y <= y0 + h).count();
    let (top, bottom) = (yr.start + 10, yr.end - h - 10);
    let y0 = if covered(top) <= covered(bottom) { top } else { bottom } - by;
    let x0 = x0 - bx;
    area.draw(&Rectangle::new([(x0, y0), (x0 + w, y0 + h)], WHITE.mix(0.92).filled()))?;
    area.draw(&Rectangle::new([(x0, y0), (x0 + w, y0 + h)], GRID.stroke_width(1)))?;
    for (i, e) in entries.iter().enumerate() {
        let y = y0 + 5 + i as i32 * line_h + line_h / 2;
        let (a, b) = (x0 + 10, x0 + 38);
        if e.dashed {
            for s in (a..b).step_by(9) {
                area.draw(&PathElement::new(vec![(s, y), ((s + 5).min(b), y)], e.color.stroke_width(2)))?;
            }
        } else {
            area.draw(&PathElement::new(vec![(a, y), (b, y)], e.color.stroke_width(2)))?;
        }
        label(area, &e.name, style.anchor(HPos::Left, VPos::Center), (x0 + 46, y))?;
    }
    Ok(())
}

#[allow(clippy::type_complexity)]
fn panel(
    area: &Area,
    runs: &[Run],
    epochs: usize,
    caption: &str,
    y_desc: &str,
    figures: &dyn Fn(&EpochStats) -> (Option<f64>, Option<f64>),
    percent: bool,
) -> DrawResult {
    let all = runs.iter().flat_map(|r| r.history.iter()).flat_map(|s| {
        let (a, b) = figures(s);
        [a, b].into_iter().flatten()
    });
    let (y0, mut y1) = y_range(all, true);
    if percent {
        y1 = y1.min(100.5);
    }
    let mut chart = ChartBuilder::on(area)
        .margin(12)
        .margin_top(40)
        .margin_left(30)
        .margin_right(24)
        .x_label_area_size(54)
        .y_label_area_size(56)
        .build_cartesian_2d(x_range(epochs), y0..y1)?;
    chart
        .configure_mesh()
        .x_labels(epochs.min(12) + 1)
        .x_label_formatter(&epoch_label)
        .y_label_formatter(&|v| if percent { format!("{v:.1}") } else { format!("{v:.2}") })
        .label_style(text(14.0))
        .bold_line_style(GRID.stroke_width(1))
        .light_line_style(WHITE)
        .axis_style(TEXT.stroke_width(1))
        .draw()?;

    let single = runs.len() == 1;
    let mut entries = Vec::new();
    for (k, run) in runs.iter().enumerate() {
        let color = TABLEAU[k % TABLEAU.len()];
        let (train_color, val_color) = if single { (BLUE, ORANGE) } else { (color, color) };
        let train: Vec<(f64, f64)> =
            run.history.iter().filter_map(|s| figures(s).0.map(|v| (s.epoch as f64, v))).collect();
        let val: Vec<(f64, f64)> =
            run.history.iter().filter_map(|s| figures(s).1.map(|v| (s.epoch as f64, v))).collect();
        if single {
            chart.draw_series(LineSeries::new(train.clone(), train_color.stroke_width(2)))?;
            entries.push(Entry { name: "train".into(), color: train_color, dashed: false });
        } else {
            chart.draw_series(DashedLineSeries::new(train.clone(), 6, 4, train_color.stroke_width(2)))?;
        }
        chart.draw_series(train.iter().map(|&p| Circle::new(p, 3, train_color.filled())))?;
        if !val.is_empty() {
            chart.draw_series(LineSeries::new(val.clone(), val_color.stroke_width(2)))?;
            chart.draw_series(val.iter().map(|&p| Circle::new(p, 3, val_color.filled())))?;
            let name = if single { "validation".to_string() } else { run.label.to_string() };
            entries.push(Entry { name, color: val_color, dashed: false });
        }
        if let Some(b) = run.best_epoch {
            if single {
                let grey = RGBColor(110, 110, 110);
                let line = vec![(b as f64, y0), (b as f64, y1)];
                chart.draw_series(DashedLineSeries::new(line, 5, 4, grey.stroke_width(2)))?;
                entries.push(Entry { name: kept_label(b, !val.is_empty()), color: grey, dashed: true });
            }
            if let Some(&(x, v)) = val.iter().find(|p| p.0 as usize == b) {
                chart.draw_series(std::iter::once(Circle::new((x, v), 7, val_color.stroke_width(2))))?;
            }
        }
    }
    if !single {
        entries.push(Entry { name: "train (dashed)".into(), color: RGBColor(110, 110, 110), dashed: true });
    }
    // Pixels along every drawn line (20 samples a segment), for the legend to avoid.
    let mut curve = Vec::new();
    for run in runs {
        for which in [0, 1] {
            let pts: Vec<(f64, f64)> = run
                .history
                .iter()
                .filter_map(|s| {
                    let f = figures(s);
                    if which == 0 { f.0 } else { f.1 }.map(|v| (s.epoch as f64, v))
                })
                .collect();
            for seg in pts.windows(2) {
                for k in 0..=20 {
                    let t = k as f64 / 20.0;
                    let p = (seg[0].0 + t * (seg[1].0 - seg[0].0), seg[0].1 + t * (seg[1].1 - seg[0].1));
                    curve.push(chart.backend_coord(&p));
                }
            }
            curve.extend(pts.iter().map(|p| chart.backend_coord(p)));
        }
    }
    let plot = chart.plotting_area().get_pixel_range();
    titles(area, plot.clone(), caption, "epoch", y_desc)?;
    legend(area, plot, &entries, &curve)?;
    Ok(())
}

fn lr_panel(area: &Area, runs: &[Run], epochs: usize) -> DrawResult {
    let (_, y1) = y_range(runs.iter().flat_map(|r| r.history.iter()).map(|s| s.lr as f64), true);
    let mut chart = ChartBuilder::on(area)
        .margin(12)
        .margin_top(40)
        .margin_left(30)
        .margin_right(24)
        .x_label_area_size(54)
        .y_label_area_size(64)
        .build_cartesian_2d(x_range(epochs), 0.0..y1)?;
    chart
        .configure_mesh()
        .x_labels(epochs.min(12) + 1)
        .x_label_formatter(&epoch_label)
        .y_labels(4)
        .y_label_formatter(&|v| if *v == 0.0 { "0".into() } else { format!("{v:.1e}") })
        .label_style(text(14.0))
        .bold_line_style(GRID.stroke_width(1))
        .light_line_style(WHITE)
        .axis_style(TEXT.stroke_width(1))
        .draw()?;
    for (k, run) in runs.iter().enumerate() {
        let color = if runs.len() == 1 { super::GREEN } else { TABLEAU[k % TABLEAU.len()] };
        let pts: Vec<(f64, f64)> = run.history.iter().map(|s| (s.epoch as f64, s.lr as f64)).collect();
        chart.draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))?;
        chart.draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
    }
    let plot = chart.plotting_area().get_pixel_range();
    titles(area, plot, "Learning rate (at each epoch's last update)", "epoch", "learning rate")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(epoch: usize, lr: f32) -> EpochStats {
        EpochStats {
            epoch,
            loss: 1.0 / epoch as f32,
            accuracy: 0.5 + 0.04 * epoch as f32,
            val_loss: Some(1.1 / epoch as f32),
            val_accuracy: Some(0.5 + 0.03 * epoch as f32),
            seconds: 1.0,
            images_per_second: 100.0,
            lr,
        }
    }

    #[test]
    fn the_learning_rate_panel_appears_only_with_a_schedule() {
        let flat: Vec<EpochStats> = (1..=4).map(|e| stats(e, 1e-3)).collect();
        let decaying: Vec<EpochStats> = (1..=4).map(|e| stats(e, 1e-3 / e as f32)).collect();
        let run = |h| Run { label: "", history: h, best_epoch: Some(4), targets: Targets::default() };
        assert_eq!(size(&[run(&flat)]), (WIDTH, PANELS_HEIGHT));
        assert_eq!(size(&[run(&decaying)]), (WIDTH, PANELS_HEIGHT + LR_HEIGHT));
        let pic = draw("t", &[run(&decaying)]).unwrap();
        assert_eq!((pic.width, pic.height), (WIDTH, PANELS_HEIGHT + LR_HEIGHT));
    }

    /// A run trained without validation (`--val-split 0`) keeps its last epoch: the picture
    /// names it so, and its caption does not speak of a validation it does not have.
    #[test]
    fn a_run_without_validation_says_so() {
        let validated: Vec<EpochStats> = (1..=3).map(|e| stats(e, 1e-3)).collect();
        let plain: Vec<EpochStats> = validated
            .iter()
            .map(|s| EpochStats { val_loss: None, val_accuracy: None, ..s.clone() })
            .collect();
        let smoothed = Targets { smoothing: 0.1, mixed: false };
        let run = |h| Run { label: "", history: h, best_epoch: Some(3), targets: smoothed };
        assert_eq!(
            loss_caption(&[run(&validated)]),
            "Loss (training: targets smoothed by 0.1; validation: plain)"
        );
        assert_eq!(loss_caption(&[run(&plain)]), "Loss (training: targets smoothed by 0.1)");
        assert_eq!(loss_caption(&[Run { targets: Targets::default(), ..run(&plain) }]), "Loss");
        assert_eq!(kept_label(3, true), "best epoch: 3");
        assert_eq!(kept_label(3, false), "kept: the last, 3 (no validation)");
        assert!(draw("t", &[run(&plain)]).is_ok());
    }

    #[test]
    fn no_epochs_is_an_error_not_a_panic() {
        assert!(draw("t", &[Run { label: "", history: &[], best_epoch: None, targets: Targets::default() }])
            .is_err());
        assert!(draw("t", &[]).is_err());
    }

    #[test]
    fn y_range_pads_and_handles_flat_series() {
        let (lo, hi) = y_range([1.0, 2.0].into_iter(), true);
        assert!((lo - 0.94).abs() < 1e-12 && (hi - 2.06).abs() < 1e-12);
        let (lo, hi) = y_range([0.5, 0.5].into_iter(), true);
        assert!(lo < 0.5 && hi > 0.5);
        assert_eq!(y_range(std::iter::empty(), true), (0.0, 1.0));
    }
}
