//! The pictures through the binary, on a small synthetic data set (`common::bar_images`):
//! `train` writes them and `report.html`; a picture that cannot be written warns in one line
//! and costs neither the model, the metrics nor the exit status; `report RUN_DIR` redraws
//! them; `eval --report`, `predict --out` and `explain` draw theirs; `--runs 2` gets a page of
//! all the runs.

mod common;

use std::path::Path;

use common::{read_json, run, stderr, stdout, temp_dir};

/// The PNG's `(width, height)`, decoded by the `png` crate.
fn png_size(path: &Path) -> (u32, u32) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let dec = png::Decoder::new(std::io::Cursor::new(bytes));
    let mut r = dec.read_info().unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut buf = vec![0; r.output_buffer_size().unwrap()];
    let info = r.next_frame(&mut buf).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (info.width, info.height)
}

/// Trains 2 epochs (unless `extra` says otherwise) on 600 synthetic images; returns the data
/// folder and the run folder.
fn train_small(name: &str, extra: &[&str]) -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = temp_dir(name);
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    common::write_bar_idx(&data, 600, 200, 5);
    let out = dir.join("run");
    let mut args = vec![
        "train",
        "--epochs",
        "2",
        "--batch-size",
        "32",
        "--threads",
        "1",
        "--data-dir",
        data.to_str().unwrap(),
        "--no-download",
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let o = run(&args);
    assert!(o.status.success(), "train failed:\n{}\n{}", stdout(&o), stderr(&o));
    (data, out)
}

fn check_run_pictures(out: &Path) {
    assert_eq!(png_size(&out.join("curves.png")), (1200, 500));
    assert_eq!(png_size(&out.join("confusion.png")), (1120, 950));
    assert_eq!(png_size(&out.join("samples.png")), fmnist::plots::samples::size(10, (28, 28)));
    let (w, _) = png_size(&out.join("errors.png"));
    assert_eq!(w, fmnist::plots::errors::Layout { image: (28, 28) }.size(0).0);
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert_eq!(html.matches("src=\"data:image/png;base64,").count(), 4, "four pictures embedded");
    for section in [
        "id=\"metrics\"",
        "id=\"curves\"",
        "id=\"confusion\"",
        "id=\"errors\"",
        "id=\"samples\"",
        "id=\"recipe\"",
        "id=\"model\"",
    ] {
        assert!(html.contains(section), "{section} missing from report.html");
    }
    assert!(html.contains("weighted avg"), "the classification report is on the page");
    assert!(html.contains("Trainable params"), "the model summary is on the page");
}

#[test]
fn train_writes_the_pictures_and_report_redraws_them() {
    let (data, out) = train_small("pics-train", &[]);
    check_run_pictures(&out);
    let first = std::fs::read(out.join("confusion.png")).unwrap();

    // `report` redraws every picture and the page from the folder alone.
    for f in ["curves.png", "confusion.png", "samples.png", "errors.png", "report.html"] {
        std::fs::remove_file(out.join(f)).unwrap();
    }
    let o = run(&["report", out.to_str().unwrap(), "--data-dir", data.to_str().unwrap(), "--threads", "1"]);
    assert!(o.status.success(), "report failed:\n{}\n{}", stdout(&o), stderr(&o));
    check_run_pictures(&out);
    assert_eq!(
        std::fs::read(out.join("confusion.png")).unwrap(),
        first,
        "the same model gives the same picture"
    );

    // eval --report, predict --out and explain on the model file.
    let model = out.join("model.safetensors");
    let m = model.to_str().unwrap();
    let d = data.to_str().unwrap();
    let rep = out.join("eval-report");
    let o = run(&["eval", "--model-file", m, "--data-dir", d, "--report", rep.to_str().unwrap()]);
    assert!(o.status.success(), "eval --report failed:\n{}", stderr(&o));
    assert_eq!(png_size(&rep.join("confusion.png")), (1120, 950));
    assert!(rep.join("errors.png").is_file());
    let html = std::fs::read_to_string(rep.join("report.html")).unwrap();
    assert_eq!(html.matches("src=\"data:image/png;base64,").count(), 2);

    let pred = out.join("pred.png");
    let o = run(&[
        "predict",
        "--model-file",
        m,
        "--data-dir",
        d,
        "test:0",
        "test:1",
        "test:2",
        "--out",
        pred.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "predict --out failed:\n{}", stderr(&o));
    assert_eq!(png_size(&pred), fmnist::plots::predictions::size(3, 28));

    let ex = out.join("explain.png");
    let o = run(&["explain", "--model-file", m, "--data-dir", d, "test:3", "--out", ex.to_str().unwrap()]);
    assert!(o.status.success(), "explain failed:\n{}", stderr(&o));
    assert!(stdout(&o).contains("(true: "), "{}", stdout(&o));
    let (w, h) = png_size(&ex);
    assert_eq!(w, fmnist::plots::explain::WIDTH);
    assert!(h > 600, "explain.png is {w}x{h}: the filters and maps are missing");

    // Bad input: one line, exit 1, no panic.
    for args in [
        vec!["report".into(), out.join("nothing-here").to_str().unwrap().to_string()],
        vec!["report".into(), data.to_str().unwrap().to_string()],
        vec![
            "explain".into(),
            "--model-file".into(),
            m.into(),
            "--data-dir".into(),
            d.into(),
            "test:99999".into(),
        ],
        vec![
            "predict".into(),
            "--model-file".into(),
            m.into(),
            "--data-dir".into(),
            d.into(),
            "test:0".into(),
            "--out".into(),
            "/proc/no/such/dir/x.png".into(),
        ],
    ] {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = run(&a);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{a:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{a:?}: not one line:\n{err}");
        assert!(err.starts_with("error: "), "{a:?}: {err}");
    }
}

#[test]
fn an_unwritable_picture_warns_and_costs_nothing_else() {
    // Folders where the pictures and the page should go: every write of them fails.
    let dir = temp_dir("pics-unwritable");
    let out = dir.join("run");
    for f in ["curves.png", "confusion.png", "samples.png", "errors.png", "report.html"] {
        std::fs::create_dir_all(out.join(f).join("in-the-way")).unwrap();
    }
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    common::write_bar_idx(&data, 400, 100, 6);
    let o = run(&[
        "train",
        "--epochs",
        "2",
        "--batch-size",
        "32",
        "--threads",
        "1",
        "--data-dir",
        data.to_str().unwrap(),
        "--no-download",
        "--out",
        out.to_str().unwrap(),
        // The folder is not empty (it holds the obstacles).
        "--overwrite",
    ]);
    let err = stderr(&o);
    assert!(o.status.success(), "a failed picture must not fail training:\n{err}");
    assert!(out.join("model.safetensors").is_file() && out.join("metrics.json").is_file());
    assert!(read_json(&out.join("metrics.json"))["test_accuracy"].as_f64().is_some());
    for f in ["curves.png", "confusion.png", "samples.png", "errors.png", "report.html"] {
        let lines: Vec<&str> = err.lines().filter(|l| l.contains(f)).collect();
        assert!(!lines.is_empty(), "no warning for {f}:\n{err}");
        assert!(lines.iter().all(|l| l.starts_with("warning: ")), "{lines:?}");
    }
    // curves.png fails after every epoch but warns once.
    assert_eq!(err.lines().filter(|l| l.contains("curves.png")).count(), 2, "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn several_runs_get_one_page_with_the_table_of_runs() {
    let (_, out) = train_small("pics-runs", &["--runs", "2"]);
    for k in [1, 2] {
        assert!(out.join(format!("run-{k}/report.html")).is_file());
    }
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("id=\"runs\"") && html.contains("ensemble (mean softmax)"), "no table of runs");
    assert!(html.contains("mean ± sample std"));
    assert_eq!(html.matches("src=\"data:image/png;base64,").count(), 4);
    assert_eq!(png_size(&out.join("curves.png")).0, 1200);
    let summary = read_json(&out.join("summary.json"));
    let ens = summary["ensemble_test_accuracy"].as_f64().unwrap();
    assert!(html.contains(&format!("{:.2}%", 100.0 * ens)), "the page's ensemble is summary.json's");
}
