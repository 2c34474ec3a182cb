//! The pictures and the one-page report of a run folder: `curves.png` (redrawn after every
//! epoch by [`CurvesObserver`]), then, after training, `confusion.png`, `samples.png`,
//! `errors.png` and `report.html`; with `--runs N`, the same at the top of the run folder for
//! all the runs together (their curves, the ensemble's confusion matrix and mistakes) with the
//! table of runs. `fmnist report RUN_DIR` and `eval --report DIR` call the same functions.
//!
//! Everything is read back from the run folder's files (`config.json`, `history.json`,
//! `metrics.json`, `model.safetensors`, `summary.json`), so a page drawn right after training
//! and one redrawn later by `report` are the same; only the test-set evaluation is handed in.
//!
//! Nothing here can fail a command: a picture or a page that cannot be drawn or written
//! prints one line, `warning: ...`, and the rest goes on. The model file, the metrics and the
//! exit status are the callers', written before any of this runs.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::data::Dataset;
use crate::files::write_atomic;
use crate::html_report::{self, Block, Page, Section, Table};
use crate::modelfile::{self, SavedModel};
use crate::plots::{self, confusion, curves, errors, samples, Picture};
use crate::report;
use crate::train::{EpochStats, Evaluation, Observer};

/// Prints a one-line warning.
pub(super) fn warn(msg: &str) {
    eprintln!("warning: {}", msg.replace('\n', " "));
}

/// Passes every callback to `inner` (the console), and after each epoch redraws
/// `curves.png` in the run folder from the epochs so far, so a long run can be watched. A
/// failure warns once; later epochs try again quietly.
pub(super) struct CurvesObserver<O: Observer> {
    inner: O,
    path: PathBuf,
    title: String,
    /// The run's training targets, for the panels' captions.
    targets: curves::Targets,
    history: Vec<EpochStats>,
    warned: bool,
    /// Whether to draw after each epoch (see [`CurvesObserver::live`]).
    live: bool,
}

impl<O: Observer> CurvesObserver<O> {
    pub(super) fn new(inner: O, dir: &Path, title: String, targets: curves::Targets) -> Self {
        CurvesObserver {
            inner,
            path: dir.join("curves.png"),
            title,
            targets,
            history: Vec::new(),
            warned: false,
            live: true,
        }
    }

    /// Draws after each epoch only when `on`: a run that `--overwrite`s another's folder must
    /// not replace that run's picture before its own files replace the rest (the final picture
    /// comes with the run's report).
    pub(super) fn live(mut self, on: bool) -> Self {
        self.live = on;
        self
    }

    /// The epochs trained before (a resumed run's), drawn with the ones to come.
    pub(super) fn with_history(mut self, history: &[EpochStats]) -> Self {
        self.history = history.to_vec();
        self
    }

    /// The observer every callback is passed to.
    pub(super) fn inner(&self) -> &O {
        &self.inner
    }

    pub(super) fn inner_mut(&mut self) -> &mut O {
        &mut self.inner
    }
}

impl<O: Observer> Observer for CurvesObserver<O> {
    fn epoch_start(&mut self, epoch: usize, epochs: usize, batches: usize) {
        self.inner.epoch_start(epoch, epochs, batches);
    }
    fn batch_end(&mut self, batch: usize, images: usize, running_loss: f32) {
        self.inner.batch_end(batch, images, running_loss);
    }
    fn epoch_end(&mut self, stats: &EpochStats) {
        self.inner.epoch_end(stats);
        self.history.push(stats.clone());
        if !self.live {
            return;
        }
        let best_epoch = best_so_far(&self.history);
        let run = curves::Run { label: "", history: &self.history, best_epoch, targets: self.targets };
        let result = curves::draw(&self.title, &[run]).and_then(|p| plots::write_png(&self.path, &p));
        if let Err(e) = result {
            if !self.warned {
                warn(&format!("curves.png: {e}"));
                self.warned = true;
            }
        }
    }
}

/// The epoch with the lowest validation loss so far (the first on ties, as `fit` keeps it).
fn best_so_far(history: &[EpochStats]) -> Option<usize> {
    let mut best: Option<(f32, usize)> = None;
    for s in history {
        if let Some(v) = s.val_loss {
            if best.is_none_or(|(b, _)| v < b) {
                best = Some((v, s.epoch));
            }
        }
    }
    best.map(|(_, e)| e)
}

/// The data a run's pictures show.
pub(super) struct Images<'a> {
    pub(super) test: &'a Dataset,
    /// Training images for `samples.png` (the training file, after `--limit`).
    pub(super) train: Option<&'a Dataset>,
}

/// What a run folder holds, read back.
struct RunFiles {
    config: Option<Value>,
    metrics: Option<Value>,
    history: Vec<EpochStats>,
    saved: Option<SavedModel>,
}

fn read_json(path: &Path) -> Result<Value, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: not JSON: {e}", path.display()))
}

/// Reads what exists of a run folder; a missing or broken file is a warning and an absent
/// section.
fn read_run(dir: &Path) -> RunFiles {
    let opt = |r: Result<Value, String>| r.map_err(|e| warn(&e)).ok();
    let history = match read_json(&dir.join("history.json")) {
        Ok(v) => serde_json::from_value(v).unwrap_or_else(|e| {
            warn(&format!("{}: {e}", dir.join("history.json").display()));
            Vec::new()
        }),
        Err(e) => {
            warn(&e);
            Vec::new()
        }
    };
    let model_path = dir.join("model.safetensors");
    let saved = modelfile::load(&model_path).map_err(|e| warn(&e.to_string())).ok();
    RunFiles {
        config: opt(read_json(&dir.join("config.json"))),
        metrics: opt(read_json(&dir.join("metrics.json"))),
        history,
        saved,
    }
}

/// Draws a picture with `draw`, writes it to `dir/name`, and returns it as a page block (also
/// when only the write failed: the page embeds it all the same). Failures warn.
fn picture(
    dir: &Path,
    name: &str,
    caption: &str,
    draw: impl FnOnce() -> Result<Picture, String>,
) -> Option<Block> {
    let pic = draw().map_err(|e| warn(&format!("{name}: {e}"))).ok()?;
    if let Err(e) = plots::write_png(&dir.join(name), &pic) {
        warn(&e);
    }
    let png = pic.png().map_err(|e| warn(&format!("{name}: {e}"))).ok()?;
    let id = name.trim_end_matches(".png").to_string();
    Some(Block::Picture { id, caption: caption.to_string(), png, width: pic.width, height: pic.height })
}

/// Writes the page to `dir/report.html`; warns on failure and returns whether it was written.
fn write_page(dir: &Path, page: &Page) -> bool {
    let path = dir.join("report.html");
    match write_atomic(&path, html_report::render(page).as_bytes()) {
        Ok(()) => true,
        Err(e) => {
            warn(&format!("cannot write {}: {e}", path.display()));
            false
        }
    }
}

fn class_names(saved: Option<&SavedModel>, k: usize) -> Vec<String> {
    match saved {
        Some(s) if s.classes.len() == k => s.classes.clone(),
        _ => (0..k).map(|c| format!("class {c}")).collect(),
    }
}

/// `1234567` as `1,234,567`.
fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A JSON value as a table cell: strings bare, numbers as written, the rest as compact JSON.
fn cell(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// The rows `(key, value)` of a JSON object, nested objects flattened to `a.b`; `skip` keys
/// left out.
fn flatten(prefix: &str, v: &Value, skip: &[&str], rows: &mut Vec<Vec<String>>) {
    match v {
        Value::Object(map) => {
            for (k, x) in map {
                if skip.contains(&k.as_str()) {
                    continue;
                }
                let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                flatten(&key, x, skip, rows);
            }
        }
        other => rows.push(vec![prefix.to_string(), cell(other)]),
    }
}

fn key_value_table(v: &Value, skip: &[&str]) -> Table {
    let mut rows = Vec::new();
    flatten("", v, skip, &mut rows);
    Table { header: vec!["setting".into(), "value".into()], rows, highlight: vec![] }
}

fn history_table(history: &[EpochStats], best: Option<usize>) -> Table {
    let f = |v: Option<f32>, d: usize| v.map(|x| format!("{x:.d$}")).unwrap_or_else(|| "-".into());
    Table {
        header: [
            "epoch",
            "loss",
            "accuracy",
            "val_loss",
            "val_accuracy",
            "seconds",
            "images/s",
            "learning rate",
        ]
        .map(String::from)
        .to_vec(),
        rows: history
            .iter()
            .map(|s| {
                vec![
                    s.epoch.to_string(),
                    format!("{:.4}", s.loss),
                    format!("{:.4}", s.accuracy),
                    f(s.val_loss, 4),
                    f(s.val_accuracy, 4),
                    format!("{:.1}", s.seconds),
                    format!("{:.0}", s.images_per_second),
                    format!("{:.3e}", s.lr),
                ]
            })
            .collect(),
        highlight: history.iter().position(|s| Some(s.epoch) == best).into_iter().collect(),
    }
}

/// The sections about the test set: headline figures, the confusion matrix with the
/// classification report, and the mistakes.
fn test_sections(
    dir: &Path,
    eval: &Evaluation,
    test: &Dataset,
    names: &[String],
    what: &str,
    metrics: Option<&Value>,
) -> Vec<Section> {
    let k = names.len();
    let mut sections = Vec::new();
    let mut rows = vec![
        vec!["test accuracy".into(), format!("{:.2}%", 100.0 * eval.accuracy)],
        vec!["test loss".into(), format!("{:.4}", eval.loss)],
        vec!["test images".into(), thousands(test.len())],
    ];
    if let Some(m) = metrics {
        for key in [
            "best_epoch",
            "epochs",
            "wall_seconds",
            "train_seconds",
            "train_images_per_second",
            "seed",
            "threads",
        ] {
            if let Some(v) = m.get(key) {
                let text = match v.as_f64() {
                    Some(x) if key.ends_with("seconds") => format!("{x:.1}"),
                    Some(x) if key.ends_with("second") => format!("{x:.0}"),
                    _ => cell(v),
                };
                rows.push(vec![key.replace('_', " "), text]);
            }
        }
    }
    sections.push(Section {
        id: "metrics".into(),
        heading: "Test metrics".into(),
        blocks: vec![
            Block::Text(format!("{what}, evaluated once on the test set after training.")),
            Block::Table(Table { header: vec!["figure".into(), "value".into()], rows, highlight: vec![] }),
        ],
    });

    let m = report::confusion_matrix(&test.labels, &eval.predictions, k);
    let title = format!(
        "Confusion matrix: {} test images, accuracy {:.2}%",
        thousands(test.len()),
        100.0 * eval.accuracy
    );
    let mut blocks: Vec<Block> = picture(dir, "confusion.png", "The confusion matrix on the test set: rows are the true classes, columns the predicted ones; the colour is the share of the row.", || confusion::draw(&title, &m, names))
        .into_iter()
        .collect();
    blocks.push(Block::Pre(report::classification_report(&m, names)));
    let pairs: Vec<Vec<String>> = report::most_confused(&m, 5)
        .into_iter()
        .map(|(a, b, n)| vec![format!("{} <-> {}", names[a], names[b]), n.to_string()])
        .collect();
    if !pairs.is_empty() {
        blocks.push(Block::Text("Most confused pairs (mistakes in both directions):".into()));
        blocks.push(Block::Table(Table {
            header: vec!["pair".into(), "mistakes".into()],
            rows: pairs,
            highlight: vec![],
        }));
    }
    sections.push(Section {
        id: "confusion".into(),
        heading: "Confusion matrix and classification report".into(),
        blocks,
    });

    let groups = errors::select(
        &test.labels,
        &eval.predictions,
        &eval.probabilities,
        k,
        errors::PAIRS,
        errors::PER_PAIR,
    );
    let blocks = match groups {
        Ok(groups) => {
            let wrong = eval.predictions.iter().zip(&test.labels).filter(|(p, l)| p != l).count();
            let title = format!(
                "Misclassified test images ({} of {}), most confused pairs first",
                thousands(wrong),
                thousands(test.len())
            );
            picture(dir, "errors.png", "Test images the model gets wrong, grouped by the most confused pairs of classes; under each, the true class and the predicted one with its probability.", || {
                errors::draw(&title, &groups, names, (test.rows, test.cols), |i| test.image(i))
            })
            .into_iter()
            .collect()
        }
        Err(e) => {
            warn(&format!("errors.png: {e}"));
            vec![]
        }
    };
    sections.push(Section { id: "errors".into(), heading: "Mistakes".into(), blocks });
    sections
}

fn samples_section(dir: &Path, train: Option<&Dataset>, names: &[String]) -> Option<Section> {
    let train = train?;
    let title = format!("Training images: the first {} of each class", samples::PER_CLASS);
    let block = picture(
        dir,
        "samples.png",
        "The first training images of each class, in file order, as the network sees them.",
        || samples::draw(&title, train, names),
    )?;
    Some(Section { id: "samples".into(), heading: "Training images".into(), blocks: vec![block] })
}

fn model_section(saved: Option<&SavedModel>, file: &str) -> Option<Section> {
    let s = saved?;
    Some(Section {
        id: "model".into(),
        heading: "Model".into(),
        blocks: vec![
            Block::Text(format!("{file}: preset {}, trained on {}.", s.preset, s.dataset)),
            Block::Pre(s.model.summary()),
        ],
    })
}

fn page_title(preset: &str, extra: &str) -> String {
    format!("fmnist {extra}: {preset}")
}

fn preset_of(files: &RunFiles) -> String {
    files.saved.as_ref().map(|s| s.preset.clone()).unwrap_or_else(|| "model".into())
}

/// The run's training targets as its `config.json` records them: the label smoothing (0 when
/// absent) and whether batches were mixed (`/train/mix` is saved only when on).
fn targets_of(files: &RunFiles) -> curves::Targets {
    let config = files.config.as_ref();
    let smoothing =
        config.and_then(|c| c.pointer("/train/label_smoothing")).and_then(Value::as_f64).unwrap_or(0.0)
            as f32;
    curves::Targets { smoothing, mixed: config.and_then(|c| c.pointer("/train/mix")).is_some() }
}

/// Draws one run's pictures and page in its folder `dir`, from the folder's files and the
/// test-set evaluation `eval` of its model.
pub(super) fn write_run_report(dir: &Path, eval: &Evaluation, images: &Images, made_by: &str) -> bool {
    let files = read_run(dir);
    let names = class_names(files.saved.as_ref(), eval.probabilities.len() / images.test.len().max(1));
    let best =
        files.metrics.as_ref().and_then(|m| m.get("best_epoch")).and_then(Value::as_u64).map(|b| b as usize);
    let preset = preset_of(&files);
    let seed = files.config.as_ref().and_then(|c| c.get("seed")).map(cell).unwrap_or_else(|| "?".into());
    let mut sections = Vec::new();
    let mut test = test_sections(
        dir,
        eval,
        images.test,
        &names,
        "The weights of the best epoch",
        files.metrics.as_ref(),
    );
    let rest = test.split_off(1.min(test.len()));
    sections.extend(test);
    if !files.history.is_empty() {
        let targets = targets_of(&files);
        let run = curves::Run { label: "", history: &files.history, best_epoch: best, targets };
        let title = format!("Training curves: {preset}, seed {seed}");
        let mut blocks: Vec<Block> = picture(dir, "curves.png", "Loss and accuracy per epoch on the training images (mean over the epoch, training mode) and the validation images (after the epoch); the dashed line marks the epoch whose weights were kept.", || curves::draw(&title, &[run]))
            .into_iter()
            .collect();
        blocks.push(Block::Table(history_table(&files.history, best)));
        sections.push(Section {
            id: "curves".into(),
            heading: "Training curves and per-epoch figures".into(),
            blocks,
        });
    }
    sections.extend(rest);
    sections.extend(samples_section(dir, images.train, &names));
    if let Some(c) = &files.config {
        sections.push(Section {
            id: "recipe".into(),
            heading: "Recipe".into(),
            blocks: vec![
                Block::Text("The run's config.json: preset, recipe, optimizer, seed, data and split.".into()),
                Block::Table(key_value_table(c, &["layers"])),
            ],
        });
    }
    sections.extend(model_section(files.saved.as_ref(), "model.safetensors"));
    let page = Page {
        title: page_title(&preset, "run"),
        subtitle: format!("{made_by}; folder {}", dir.display()),
        sections,
    };
    write_page(dir, &page)
}

/// Draws the pictures and page of a model file evaluated on the test set into `dir`
/// (`eval --report DIR`): the test metrics, the confusion matrix and the mistakes.
pub(super) fn write_eval_report(
    dir: &Path,
    model_file: &Path,
    saved: &SavedModel,
    eval: &Evaluation,
    test: &Dataset,
    made_by: &str,
) -> bool {
    if let Err(e) = std::fs::create_dir_all(dir) {
        warn(&format!("cannot create {}: {e}", dir.display()));
        return false;
    }
    let mut sections =
        test_sections(dir, eval, test, &saved.classes, &format!("The model {}", model_file.display()), None);
    sections.extend(model_section(Some(saved), &model_file.display().to_string()));
    let page =
        Page { title: page_title(&saved.preset, "evaluation"), subtitle: made_by.to_string(), sections };
    write_page(dir, &page)
}

/// Draws the top-level pictures and page of a `--runs N` folder `dir` (with `summary.json`
/// and `run-1/`, `run-2/`, ...): every run's curves, the table of runs with their mean and
/// spread, and the ensemble's confusion matrix and mistakes. `evals[k]` is run `k + 1`'s
/// test-set evaluation.
pub(super) fn write_runs_report(dir: &Path, evals: &[&Evaluation], images: &Images, made_by: &str) -> bool {
    let summary = match read_json(&dir.join("summary.json")) {
        Ok(v) => v,
        Err(e) => {
            warn(&e);
            return false;
        }
    };
    let runs: Vec<(String, RunFiles)> = (1..=evals.len())
        .map(|k| (format!("run {k}"), read_run(&dir.join(super::run_dir::run_folder(k)))))
        .collect();
    let first = runs.first().map(|r| &r.1);
    let preset = first.map(preset_of).unwrap_or_else(|| "model".into());
    let k = evals.first().map(|e| e.probabilities.len() / images.test.len().max(1)).unwrap_or(0);
    let names = class_names(first.and_then(|f| f.saved.as_ref()), k);
    let probs: Vec<&[f32]> = evals.iter().map(|e| e.probabilities.as_slice()).collect();
    if probs.is_empty() || probs.iter().any(|p| p.len() != images.test.len() * k) {
        warn("the runs' evaluations do not match the test set: no report for the runs");
        return false;
    }
    let ens = crate::train::ensemble(&probs, &images.test.labels, k);

    let mut sections = Vec::new();
    let per_run = summary.get("per_run").and_then(Value::as_array).cloned().unwrap_or_default();
    let pct = |v: Option<&Value>| {
        v.and_then(Value::as_f64).map(|x| format!("{:.2}%", 100.0 * x)).unwrap_or_else(|| "-".into())
    };
    let num = |v: Option<&Value>, d: usize| {
        v.and_then(Value::as_f64).map(|x| format!("{x:.d$}")).unwrap_or_else(|| "-".into())
    };
    let mut rows: Vec<Vec<String>> = per_run
        .iter()
        .map(|r| {
            vec![
                r.get("folder").map(cell).unwrap_or_default(),
                r.get("seed").map(cell).unwrap_or_default(),
                pct(r.get("test_accuracy")),
                num(r.get("test_loss"), 4),
                r.get("best_epoch").map(cell).unwrap_or_default(),
                num(r.get("wall_seconds"), 1),
            ]
        })
        .collect();
    rows.push(vec![
        "mean ± sample std".into(),
        "".into(),
        format!("{} ± {}", pct(summary.get("test_accuracy_mean")), pct(summary.get("test_accuracy_std"))),
        format!("{} ± {}", num(summary.get("test_loss_mean"), 4), num(summary.get("test_loss_std"), 4)),
        "".into(),
        "".into(),
    ]);
    rows.push(vec![
        "ensemble (mean softmax)".into(),
        "".into(),
        format!("{:.2}%", 100.0 * ens.accuracy),
        format!("{:.4}", ens.loss),
        "".into(),
        "".into(),
    ]);
    let n = rows.len();
    sections.push(Section {
        id: "runs".into(),
        heading: "Runs, their mean and spread, and the ensemble".into(),
        blocks: vec![
            Block::Text(format!(
                "{} runs with seeds one apart, each with its own split; the standard deviation is the sample one (divisor n - 1); the ensemble averages the models' softmax probabilities.",
                evals.len()
            )),
            Block::Table(Table {
                header: ["run", "seed", "test accuracy", "test loss", "best epoch", "wall seconds"].map(String::from).to_vec(),
                rows,
                highlight: vec![n - 1],
            }),
        ],
    });
    let curve_runs: Vec<(String, Option<usize>)> = runs
        .iter()
        .map(|(label, f)| {
            let seed = f.config.as_ref().and_then(|c| c.get("seed")).map(cell).unwrap_or_default();
            let best = f
                .metrics
                .as_ref()
                .and_then(|m| m.get("best_epoch"))
                .and_then(Value::as_u64)
                .map(|b| b as usize);
            (format!("{label} (seed {seed})"), best)
        })
        .collect();
    let series: Vec<curves::Run> = runs
        .iter()
        .zip(&curve_runs)
        .filter(|((_, f), _)| !f.history.is_empty())
        .map(|((_, f), (label, best))| curves::Run {
            label,
            history: &f.history,
            best_epoch: *best,
            targets: targets_of(f),
        })
        .collect();
    if !series.is_empty() {
        let title = format!("Training curves of the {} runs: {preset}", series.len());
        let mut blocks: Vec<Block> = picture(dir, "curves.png", "Loss and accuracy per epoch of every run: training dashed, validation solid; a ring marks the epoch whose weights each run kept.", || curves::draw(&title, &series))
            .into_iter()
            .collect();
        for (label, f) in &runs {
            let best = f
                .metrics
                .as_ref()
                .and_then(|m| m.get("best_epoch"))
                .and_then(Value::as_u64)
                .map(|b| b as usize);
            blocks.push(Block::Text(format!("Per-epoch figures, {label}:")));
            blocks.push(Block::Table(history_table(&f.history, best)));
        }
        sections.push(Section {
            id: "curves".into(),
            heading: "Training curves and per-epoch figures".into(),
            blocks,
        });
    }
    let what = format!("The ensemble of the {} models (mean of their softmax probabilities)", evals.len());
    sections.extend(test_sections(dir, &ens, images.test, &names, &what, None));
    sections.extend(samples_section(dir, images.train, &names));
    if let Some(c) = first.and_then(|f| f.config.as_ref()) {
        sections.push(Section {
            id: "recipe".into(),
            heading: "Recipe".into(),
            blocks: vec![
                Block::Text("run-1's config.json (the other runs differ only in their seed).".into()),
                Block::Table(key_value_table(c, &["layers"])),
            ],
        });
    }
    sections.extend(model_section(first.and_then(|f| f.saved.as_ref()), "run-1/model.safetensors"));
    let page = Page {
        title: page_title(&preset, &format!("{} runs", evals.len())),
        subtitle: format!("{made_by}; folder {}", dir.display()),
        sections,
    };
    write_page(dir, &page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn best_so_far_is_the_first_lowest_validation_loss() {
        let s = |epoch, v: Option<f32>| EpochStats {
            epoch,
            loss: 1.0,
            accuracy: 0.5,
            val_loss: v,
            val_accuracy: v,
            seconds: 1.0,
            images_per_second: 1.0,
            lr: 1e-3,
        };
        assert_eq!(best_so_far(&[s(1, Some(0.5)), s(2, Some(0.4)), s(3, Some(0.4))]), Some(2));
        assert_eq!(best_so_far(&[s(1, None)]), None);
    }

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(10000), "10,000");
        assert_eq!(thousands(1234567), "1,234,567");
    }
}
