//! `train --runs N` through the binary, on a small synthetic data set (tests/common): one
//! subfolder per run, a `summary.json` whose mean, sample deviation and ensemble are
//! recomputed here from the runs' own files, and a single run that stays as it always was.

mod common;

use std::path::Path;

use common::{number_after, read_json, run, stderr, stdout, temp_dir, write_bar_idx};
use fmnist::data::{load, DatasetKind, LoadOptions};

const RUN_FILES: [&str; 5] =
    ["model.safetensors", "config.json", "history.json", "history.csv", "metrics.json"];

fn synthetic_data(name: &str) -> std::path::PathBuf {
    let data = temp_dir(name);
    write_bar_idx(&data, 200, 300, 7);
    data
}

#[test]
fn several_runs_write_their_folders_and_a_summary() {
    let data = synthetic_data("runs-data");
    let out = temp_dir("runs-out").join("three");
    // 40 images, 32 of them trained on in 4 steps of 8: models far from perfect and
    // different from each other, so the ensemble has something to average.
    let o = run(&[
        "train",
        "--dataset",
        "mnist",
        "--data-dir",
        data.to_str().unwrap(),
        "--no-download",
        "--runs",
        "3",
        "--seed",
        "5",
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--limit",
        "40",
        "--out",
        out.to_str().unwrap(),
    ]);
    let text = stdout(&o);
    assert!(o.status.success(), "train failed:\n{text}\n{}", stderr(&o));
    assert!(text.contains("Run 1 of 3: seed 5") && text.contains("Run 3 of 3: seed 7"), "{text}");
    assert_eq!(text.matches("Trainable params").count(), 1, "the summary table once:\n{text}");
    assert!(!out.join("model.safetensors").exists(), "with --runs 3 the models live in run-K/");

    // Each run's folder, with its own seed.
    let mut accs = Vec::new();
    for k in 1..=3 {
        let dir = out.join(format!("run-{k}"));
        for f in RUN_FILES {
            assert!(dir.join(f).is_file(), "run-{k}/{f} missing");
        }
        let config = read_json(&dir.join("config.json"));
        assert_eq!(config["seed"], 4 + k as u64);
        assert_eq!(config["run"], k);
        let metrics = read_json(&dir.join("metrics.json"));
        accs.push(metrics["test_accuracy"].as_f64().unwrap());
    }

    // summary.json: per-run figures, mean and sample standard deviation by hand.
    let summary = read_json(&out.join("summary.json"));
    assert_eq!(summary["runs"], 3);
    let per_run = summary["per_run"].as_array().unwrap();
    for (k, r) in per_run.iter().enumerate() {
        assert_eq!(r["test_accuracy"].as_f64().unwrap(), accs[k]);
        assert_eq!(r["folder"], format!("run-{}", k + 1));
    }
    let mean = (accs[0] + accs[1] + accs[2]) / 3.0;
    let std = (accs.iter().map(|a| (a - mean) * (a - mean)).sum::<f64>() / 2.0).sqrt();
    assert!((summary["test_accuracy_mean"].as_f64().unwrap() - mean).abs() < 1e-9);
    assert!((summary["test_accuracy_std"].as_f64().unwrap() - std).abs() < 1e-9);
    let printed_mean = number_after(&text, "Test accuracy over 3 runs: mean ");
    assert!((printed_mean - 100.0 * mean).abs() < 0.006, "{printed_mean} vs {mean}");

    // The ensemble, recomputed from the three model files: mean of their probabilities.
    let (_, test, _) =
        load(&LoadOptions { kind: DatasetKind::Digits, data_dir: Some(&data), allow_download: false })
            .unwrap();
    let mut sum = vec![0.0f64; test.len() * 10];
    for k in 1..=3 {
        let mut saved = fmnist::modelfile::load(&out.join(format!("run-{k}/model.safetensors"))).unwrap();
        assert_eq!(saved.dataset, "mnist");
        let e = fmnist::train::evaluate(&mut saved.model, &saved.normalization, &test, 64);
        assert!((e.accuracy as f64 - accs[k - 1]).abs() < 1e-6, "run-{k}'s model reproduces its metrics");
        sum.iter_mut().zip(&e.probabilities).for_each(|(s, &p)| *s += p as f64);
    }
    let correct = sum
        .chunks(10)
        .zip(&test.labels)
        .filter(|(p, &l)| {
            let best = (0..10).fold(0, |b, j| if p[j] > p[b] { j } else { b });
            best == l as usize
        })
        .count();
    let ens = correct as f64 / test.len() as f64;
    assert!((summary["ensemble_test_accuracy"].as_f64().unwrap() - ens).abs() < 1e-6, "{summary}");
    let printed_ens = number_after(&text, "(mean of their softmax outputs): test loss ");
    assert!(printed_ens > 0.0);
    let _ = std::fs::remove_dir_all(out.parent().unwrap());
    let _ = std::fs::remove_dir_all(&data);
}

fn train_once(data: &Path, out: &Path, extra: &[&str]) -> String {
    let mut args = vec![
        "train",
        "--dataset",
        "mnist",
        "--data-dir",
        data.to_str().unwrap(),
        "--no-download",
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--limit",
        "50",
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let o = run(&args);
    let text = stdout(&o);
    assert!(o.status.success(), "train {extra:?} failed:\n{text}\n{}", stderr(&o));
    text
}

#[test]
fn one_run_is_the_plain_run_and_the_seed_repeats_it() {
    let data = synthetic_data("one-run-data");
    let root = temp_dir("one-run-out");
    let a = train_once(&data, &root.join("a"), &["--runs", "1", "--seed", "3"]);
    let b = train_once(&data, &root.join("b"), &["--seed", "3"]);
    for f in RUN_FILES {
        assert!(root.join("a").join(f).is_file(), "{f}");
    }
    assert!(!root.join("a/summary.json").exists() && !root.join("a/run-1").exists());
    assert!(!a.contains("Run 1 of") && !a.contains("Summary of"), "{a}");
    let config = read_json(&root.join("a/config.json"));
    assert!(config.get("run").is_none() && config.get("runs").is_none());
    // Same seed, same figures; `--runs 1` is the default.
    assert_eq!(number_after(&a, "test accuracy "), number_after(&b, "test accuracy "));
    assert_eq!(number_after(&a, "Test loss "), number_after(&b, "Test loss "));
    let _ = std::fs::remove_dir_all(&root);
    let _ = std::fs::remove_dir_all(&data);
}

#[test]
fn static_copies_come_from_the_training_part_only() {
    let data = synthetic_data("static-data");
    let root = temp_dir("static-out");
    let text = train_once(&data, &root, &["--static-copies", "2", "--val-split", "0.2"]);
    // 50 images: 10 held out first, then 40 training images and their 80 copies.
    assert!(
        text.contains("Images: 40 train (120 with 2 rotated/flipped copies of each), 10 validation"),
        "{text}"
    );
    let config = read_json(&root.join("config.json"));
    assert_eq!(config["train_images"], 40);
    assert_eq!(config["val_images"], 10);
    let sa = &config["train"]["static_augment"];
    assert_eq!(sa["copies"], 2);
    assert_eq!(sa["max_degrees"], 10.0);
    assert_eq!(sa["flip_prob"], 0.5);
    // 120 images in batches of 8: 15 steps, all trained on.
    let history = read_json(&root.join("history.json"));
    assert_eq!(history.as_array().unwrap().len(), 1);
    let _ = std::fs::remove_dir_all(&root);
    let _ = std::fs::remove_dir_all(&data);
}
