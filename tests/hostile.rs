//! Hostile and careless inputs through the `fmnist` binary: model files that parse but cannot
//! be a trained model, sizes that would allocate absurd memory, files that never end, data
//! that does not fit the models, and flags out of range. Each must end in one line on stderr
//! that names the file (or flag) and the fault, exit status 1, no panic, and no change to the
//! user's files.
//!
//! The model-file cases run under a memory limit (`ulimit -v`, address space), so a reader
//! that builds or allocates from what a file declares before checking it fails here with an
//! abort instead of passing quietly: the old loader took 2 GB for a 648-byte file declaring a
//! dense layer of 100,000 units.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{stderr, temp_dir};
use fmnist::model::{LayerConfig, Padding};
use fmnist::modelfile::{self, SavedModel};
use fmnist::{Init, Rng, Sequential};
use safetensors::tensor::{Dtype, TensorView};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_fmnist");

/// Address space for one run, in KiB: the binary evaluates the whole test set within 128 MiB
/// on one thread.
const MEMORY_KB: u64 = 160 * 1024;
/// For a file that never ends: read up to its 257 MiB limit in a doubling buffer, which holds
/// the old and the new buffer for a moment while it grows.
const MEMORY_KB_LARGE_READ: u64 = 768 * 1024;

/// Runs the binary on one thread under an address-space limit of `kb` KiB.
fn run_limited(kb: u64, args: &[&str]) -> Output {
    Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -v {kb} && exec \"$0\" \"$@\""))
        .arg(BIN)
        .args(args)
        .env("RAYON_NUM_THREADS", "1")
        .env("FMNIST_PLAN", "rule")
        .output()
        .expect("sh runs the binary")
}

/// Exit status 1, no panic, one line starting `error:` that contains every needle.
fn assert_clean(o: &Output, args: &[&str], needles: &[&str]) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(1), "{args:?} should fail with exit 1; stderr:\n{err}");
    assert!(!err.contains("panicked"), "{args:?} panicked:\n{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{args:?} should print one line:\n{err}");
    assert!(err.len() < 2000, "{args:?}: a message of {} bytes", err.len());
    assert!(err.starts_with("error: "), "{args:?}: {err}");
    for needle in needles {
        assert!(err.contains(needle), "{args:?}: `{needle}` not in:\n{err}");
    }
}

fn clean_error(args: &[&str], needles: &[&str]) {
    assert_clean(&run_limited(MEMORY_KB, args), args, needles);
}

// ------------------------------------------------------------------------------------------
// Building model files, good and bad
// ------------------------------------------------------------------------------------------

fn c1_layers() -> Vec<LayerConfig> {
    fmnist::presets::preset("c1").unwrap().layers
}

/// A small network with every layer kind: batch-norm in front, conv, pool, dense.
fn small_layers() -> Vec<LayerConfig> {
    use LayerConfig as L;
    vec![
        L::batch_norm(),
        L::Conv2d { filters: 4, kernel: [3, 3], stride: 1, padding: Padding::Same },
        L::Relu,
        L::MaxPool2d { size: 2, stride: 2 },
        L::Dropout { rate: 0.25 },
        L::Flatten,
        L::Dense { units: 16 },
        L::batch_norm(),
        L::Relu,
        L::Dense { units: 10 },
    ]
}

fn saved(layers: &[LayerConfig]) -> SavedModel {
    let model = Sequential::new(&[1, 28, 28], layers, Init::GlorotUniform, &mut Rng::new(5)).unwrap();
    SavedModel {
        model,
        normalization: Default::default(),
        dataset: "fashion-mnist".into(),
        classes: fmnist::data::DatasetKind::Fashion.class_names().iter().map(|s| s.to_string()).collect(),
        preset: "test".into(),
    }
}

/// The JSON header and the data of a safetensors file.
fn split(bytes: &[u8]) -> (Value, Vec<u8>) {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    (serde_json::from_slice(&bytes[8..8 + n]).unwrap(), bytes[8 + n..].to_vec())
}

fn join_text(header: &str, data: &[u8]) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

fn join(header: &Value, data: &[u8]) -> Vec<u8> {
    join_text(&header.to_string(), data)
}

/// The small model's file with one metadata value replaced (a JSON text, as stored).
fn with_meta(key: &str, value: &str) -> Vec<u8> {
    let (mut h, data) = split(&modelfile::to_bytes(&saved(&small_layers())));
    h["__metadata__"][key] = Value::String(value.to_string());
    join(&h, &data)
}

/// A file of the small model's metadata with `layers` replaced and no tensors at all.
fn layers_without_tensors(layers: Value) -> Vec<u8> {
    let (h, _) = split(&modelfile::to_bytes(&saved(&small_layers())));
    let mut meta = h["__metadata__"].clone();
    meta["layers"] = Value::String(layers.to_string());
    join(&json!({ "__metadata__": meta }), &[])
}

/// The small model's metadata with `layers` replaced, keeping its tensors.
fn with_layers(layers: Value) -> Vec<u8> {
    with_meta("layers", &layers.to_string())
}

/// A file with the small model's metadata and these tensors (name, dtype, shape, bytes).
fn with_tensors(edit: impl FnOnce(&mut Vec<(String, Dtype, Vec<usize>, Vec<u8>)>)) -> Vec<u8> {
    let s = saved(&small_layers());
    let (h, _) = split(&modelfile::to_bytes(&s));
    let meta: std::collections::HashMap<String, String> =
        serde_json::from_value(h["__metadata__"].clone()).unwrap();
    let mut tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = s
        .model
        .params()
        .iter()
        .map(|p| {
            let bytes = p.value.data().iter().flat_map(|v| v.to_le_bytes()).collect();
            (p.name.clone(), Dtype::F32, p.value.shape().to_vec(), bytes)
        })
        .collect();
    edit(&mut tensors);
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(n, d, shape, b)| (n.clone(), TensorView::new(*d, shape.clone(), b).unwrap()))
        .collect();
    safetensors::serialize(views, Some(meta)).unwrap()
}

/// The small model with one parameter's values changed before saving.
fn with_values(name: &str, edit: impl Fn(&mut [f32])) -> Vec<u8> {
    let mut s = saved(&small_layers());
    let p = s.model.params_mut().iter_mut().find(|p| p.name == name).unwrap();
    edit(p.value.data_mut());
    modelfile::to_bytes(&s)
}

/// The header text with `extra` inserted right after the opening brace of `object_key`'s
/// object (or of the whole header when `None`): JSON with a repeated key, which a
/// `serde_json::Value` cannot hold.
fn insert_in_header(bytes: &[u8], object_key: Option<&str>, extra: &str) -> Vec<u8> {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let text = std::str::from_utf8(&bytes[8..8 + n]).unwrap();
    let at = match object_key {
        None => 1,
        Some(k) => text.find(&format!("\"{k}\":{{")).unwrap() + k.len() + 4,
    };
    let mut t = text.to_string();
    t.insert_str(at, extra);
    join_text(&t, &bytes[8 + n..])
}

fn conv(filters: u64, k: u64, stride: u64, padding: Value) -> Value {
    json!({"type": "conv2d", "filters": filters, "kernel": [k, k], "stride": stride, "padding": padding})
}

fn dense(units: u64) -> Value {
    json!({"type": "dense", "units": units})
}

/// Every class of bad model file: (name, bytes, what the message must say).
fn bad_model_files() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let flat = json!({"type": "flatten"});
    let relu = json!({"type": "relu"});
    let pool = json!({"type": "max_pool2d", "size": 2, "stride": 2});
    let bn = json!({"type": "batch_norm", "momentum": 0.99, "eps": 0.001});
    let explicit =
        |t: u64, l: u64, b: u64, r: u64| json!({"explicit": {"top": t, "left": l, "bottom": b, "right": r}});
    let c1_32 = {
        let (mut h, data) = split(&modelfile::to_bytes(&saved(&c1_layers())));
        h["__metadata__"]["input_shape"] = Value::String("[1,32,32]".into());
        join(&h, &data)
    };
    let good = modelfile::to_bytes(&saved(&small_layers()));
    let first_tensor = {
        let (h, _) = split(&good);
        let name = h.as_object().unwrap().keys().find(|k| *k != "__metadata__").unwrap().clone();
        format!("\"{name}\":{},", h[&name])
    };
    vec![
        // The architecture does not fit the data or the task.
        ("input-32x32", c1_32, "inputs of shape [1, 32, 32]"),
        ("input-empty-bn-first", with_meta("input_shape", "[]"), "inputs of shape []"),
        ("head-3-classes", with_layers(json!([flat, dense(3)])), "outputs of shape [3]"),
        (
            "classes-3",
            with_meta("classes", "[\"T-shirt/top\",\"Trouser\",\"Pullover\"]"),
            "does not list the 10 classes",
        ),
        ("classes-renamed", with_meta("classes", &json!(vec!["a"; 10]).to_string()), "classes"),
        ("dataset-unknown", with_meta("dataset", "cifar10"), "`cifar10`, not one this program reads"),
        // Sizes that would allocate absurd memory, or wrap around.
        (
            "padding-2^63",
            with_layers(json!([conv(2, 3, 1, explicit(1 << 63, 0, 1 << 63, 0)), flat, dense(10)])),
            "padding",
        ),
        (
            "padding-wraps",
            with_layers(json!([conv(2, 3, 1, explicit(0, 0, 0, u64::MAX)), flat, dense(10)])),
            "padding",
        ),
        ("dense-2^40", layers_without_tensors(json!([flat, dense(1 << 40)])), "2^24"),
        ("conv-2^40-filters", layers_without_tensors(json!([conv(1 << 40, 3, 1, "valid".into())])), "2^24"),
        (
            "dense-100000-no-tensors",
            layers_without_tensors(json!([
                conv(32, 3, 1, "valid".into()),
                relu,
                pool,
                flat,
                dense(100_000),
                dense(10)
            ])),
            "2^24",
        ),
        (
            // Each layer within its bound, 2^26 values in all: refused by the total.
            "model-2^26-values",
            layers_without_tensors(json!([
                flat,
                dense(16384),
                dense(1024),
                dense(16384),
                dense(1024),
                dense(16384),
                dense(10)
            ])),
            "over the limit of 67108864 (2^26)",
        ),
        (
            // Within every bound, but no tensors: refused before the 18 million values are built.
            "big-no-tensors",
            layers_without_tensors(json!([flat, dense(16384), dense(1024), dense(10)])),
            "is missing",
        ),
        (
            "activations",
            layers_without_tensors(json!([conv(8192, 1, 1, "valid".into())])),
            "activations per image",
        ),
        (
            // 64 3x3 convolutions of 32 channels at 28x28, within every other bound: 4.6 * 10^8
            // multiply-adds per image, hours of `eval`.
            "compute",
            layers_without_tensors(json!(vec![conv(32, 3, 1, "same".into()); 64])),
            "multiply-adds per image",
        ),
        ("too-many-layers", layers_without_tensors(json!(vec![relu.clone(); 300])), "300 layers"),
        ("kernel-29", layers_without_tensors(json!([conv(1, 29, 1, "same".into())])), "kernel height 29"),
        ("stride-0", layers_without_tensors(json!([conv(1, 3, 0, "valid".into())])), "stride 0"),
        (
            "pool-too-big",
            layers_without_tensors(json!([{"type": "max_pool2d", "size": 29, "stride": 1}])),
            "29",
        ),
        ("dense-on-image", layers_without_tensors(json!([dense(10)])), "needs a vector input"),
        (
            "bn-eps-0",
            layers_without_tensors(json!([{"type": "batch_norm", "momentum": 0.9, "eps": 0.0}])),
            "epsilon",
        ),
        (
            "bn-eps-inf",
            layers_without_tensors(json!([{"type": "batch_norm", "momentum": 0.9, "eps": 1e39}])),
            "epsilon",
        ),
        (
            "bn-momentum-2",
            layers_without_tensors(json!([{"type": "batch_norm", "momentum": 2.0, "eps": 0.1}])),
            "momentum",
        ),
        ("dropout-1", layers_without_tensors(json!([{"type": "dropout", "rate": 1.0}])), "rate 1"),
        ("bn-then-dense-3", layers_without_tensors(json!([bn, flat, dense(3)])), "outputs of shape [3]"),
        // Values that load and would quietly give nonsense.
        (
            "bn-negative-variance",
            with_values("7.batch_norm.running_var", |v| v[3] = -0.5),
            "negative batch-norm running variance",
        ),
        ("weight-nan", with_values("9.dense.weight", |v| v[7] = f32::NAN), "non-finite"),
        ("bias-inf", with_values("1.conv2d.bias", |v| v[0] = f32::INFINITY), "non-finite"),
        (
            "std-0",
            with_meta("normalization", r#"{"scale":0.0039,"mean":0.0,"std":0.0}"#),
            "standard deviation",
        ),
        (
            "std-negative",
            with_meta("normalization", r#"{"scale":0.0039,"mean":0.0,"std":-1.0}"#),
            "standard deviation",
        ),
        ("scale-0", with_meta("normalization", r#"{"scale":0.0,"mean":0.0,"std":1.0}"#), "scale"),
        (
            "scale-overflows",
            with_meta("normalization", r#"{"scale":3e38,"mean":0.0,"std":0.001}"#),
            "overflow",
        ),
        // 1e39 overflows f32: the JSON reader refuses it as it parses (serde_json's
        // float_roundtrip), before the range check would name `mean`.
        (
            "mean-inf",
            with_meta("normalization", r#"{"scale":0.0039,"mean":1e39,"std":1.0}"#),
            "normalization` is not valid: number out of range",
        ),
        (
            "scale-collapses",
            with_meta("normalization", r#"{"scale":1e-30,"mean":-1.0,"std":1.0}"#),
            "same value",
        ),
        (
            "normalization-nan",
            with_meta("normalization", r#"{"scale":NaN,"mean":0,"std":1}"#),
            "`normalization` is not valid",
        ),
        // Metadata of the wrong types.
        ("layers-a-string", with_meta("layers", "\"hello\""), "`layers` is not valid"),
        ("layers-unknown-kind", with_layers(json!([{"type": "attention"}])), "`layers` is not valid"),
        (
            "layers-kind-multiline",
            with_layers(json!([{"type": format!("relu\nerror: all is fine{}", "x".repeat(100_000))}])),
            "unknown variant",
        ),
        ("version-huge", with_meta("version", &"9".repeat(500_000)), "this program reads version 1"),
        ("input-negative", with_meta("input_shape", "[-1,28,28]"), "`input_shape` is not valid"),
        ("classes-an-object", with_meta("classes", "{}"), "`classes` is not valid"),
        ("preset-multiline", with_meta("preset", "c1\nerror: fake"), "preset"),
        ("version-2", with_meta("version", "2"), "version"),
        (
            "metadata-not-strings",
            {
                let (mut h, data) = split(&good);
                h["__metadata__"]["layers"] = json!([{"type": "relu"}]);
                join(&h, &data)
            },
            "not a safetensors model file",
        ),
        // Tensors that do not match the architecture.
        (
            "tensor-extra",
            with_tensors(|t| t.push(("10.dense.weight".into(), Dtype::F32, vec![1], vec![0; 4]))),
            "`10.dense.weight` does not belong",
        ),
        (
            "tensor-missing",
            with_tensors(|t| t.retain(|x| x.0 != "6.dense.bias")),
            "`6.dense.bias` is missing",
        ),
        (
            "tensor-f16",
            with_tensors(|t| {
                let x = t.iter_mut().find(|x| x.0 == "6.dense.bias").unwrap();
                x.1 = Dtype::F16;
                x.3.truncate(x.3.len() / 2);
            }),
            "expected F32",
        ),
        (
            "tensor-shape",
            with_tensors(|t| {
                let x = t.iter_mut().find(|x| x.0 == "9.dense.weight").unwrap();
                x.2.reverse();
            }),
            "has shape [10, 16]",
        ),
        ("tensor-twice", insert_in_header(&good, None, &first_tensor), "appears twice"),
        (
            "metadata-key-twice",
            insert_in_header(&good, Some("__metadata__"), "\"dataset\":\"mnist\","),
            "`dataset` appears twice",
        ),
        // Broken safetensors structure.
        ("empty", Vec::new(), "not a safetensors model file"),
        (
            "header-length-2^62",
            {
                let mut b = (1u64 << 62).to_le_bytes().to_vec();
                b.extend_from_slice(b"{}");
                b
            },
            "header length",
        ),
        (
            "offsets-absurd",
            {
                let (mut h, data) = split(&good);
                h["6.dense.bias"]["data_offsets"] = json!([0u64, 1u64 << 60]);
                join(&h, &data)
            },
            "not a safetensors model file",
        ),
        (
            "offsets-overlap",
            {
                let (mut h, data) = split(&good);
                h["6.dense.bias"]["data_offsets"] = json!([0, 64]);
                join(&h, &data)
            },
            "not a safetensors model file",
        ),
        ("truncated", good[..good.len() - 3].to_vec(), "not a safetensors model file"),
    ]
}

#[test]
fn bad_model_files_are_refused_by_every_command() {
    let dir = temp_dir("hostile-models");
    let cases = bad_model_files();
    // The controls: the untouched files load, so each failure is the edit's.
    for layers in [small_layers(), c1_layers()] {
        modelfile::from_bytes(&modelfile::to_bytes(&saved(&layers))).unwrap();
    }
    for (name, bytes, needle) in &cases {
        let path = dir.join(format!("{name}.safetensors"));
        std::fs::write(&path, bytes).unwrap();
        let p = path.to_str().unwrap();
        let data = dir.join("no-data");
        let d = data.to_str().unwrap();
        let start = Instant::now();
        for args in [
            &["eval", "--threads", "1", "--model-file", p, "--data-dir", d, "--no-download"][..],
            &["predict", "--model-file", p, "--data-dir", d, "--no-download", "test:0"][..],
            &["summary", "--model-file", p][..],
        ] {
            // The needle must be in the message itself, not only in the file's name.
            let o = run_limited(MEMORY_KB, args);
            assert_clean(&o, args, &[p]);
            assert!(stderr(&o).replace(p, "").contains(needle), "{name}: `{needle}` not in {}", stderr(&o));
        }
        assert!(start.elapsed() < Duration::from_secs(5), "{name}: {:?} for three runs", start.elapsed());
        // The library says the same.
        let err = modelfile::from_bytes(bytes).map(|_| ()).unwrap_err();
        assert!(err.contains(needle), "{name}: {err}");
        assert_eq!(std::fs::read(&path).unwrap(), *bytes, "{name}: the file changed");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn model_files_that_are_not_files() {
    let dir = temp_dir("hostile-notfiles");
    let d = dir.to_str().unwrap();
    clean_error(&["summary", "--model-file", d], &[d, "is a folder"]);
    // A device that never ends: refused after the 257 MiB limit, quickly, within memory.
    if Path::new("/dev/zero").exists() {
        let start = Instant::now();
        let args = ["summary", "--model-file", "/dev/zero"];
        assert_clean(
            &run_limited(MEMORY_KB_LARGE_READ, &args),
            &args,
            &["/dev/zero", "larger than the limit"],
        );
        assert!(start.elapsed() < Duration::from_secs(10), "{:?}", start.elapsed());
        let args = ["predict", "--model-file", "/dev/null", "/dev/zero"];
        assert_clean(&run_limited(MEMORY_KB, &args), &args, &["/dev/null", "not a safetensors model file"]);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

// ------------------------------------------------------------------------------------------
// Models that load but do not fit the data, and outputs that overflow
// ------------------------------------------------------------------------------------------

/// A folder with synthetic 28x28 IDX data (the format of both datasets).
fn bar_data(name: &str) -> PathBuf {
    let dir = temp_dir(name);
    common::write_bar_idx(&dir, 50, 30, 3);
    dir
}

fn write_idx_folder(dir: &Path, rows: u32, cols: u32, labels: &[u8]) {
    let n = labels.len() as u32;
    for prefix in ["train", "t10k"] {
        let mut img = Vec::new();
        for v in [0x803u32, n, rows, cols] {
            img.extend_from_slice(&v.to_be_bytes());
        }
        img.resize(16 + (n * rows * cols) as usize, 7);
        let mut lab = Vec::new();
        for v in [0x801u32, n] {
            lab.extend_from_slice(&v.to_be_bytes());
        }
        lab.extend_from_slice(labels);
        std::fs::write(dir.join(format!("{prefix}-images-idx3-ubyte")), img).unwrap();
        std::fs::write(dir.join(format!("{prefix}-labels-idx1-ubyte")), lab).unwrap();
    }
}

#[test]
fn models_that_overflow_or_do_not_fit_the_data() {
    let data = bar_data("hostile-fit");
    let d = data.to_str().unwrap();
    // Finite weights whose products overflow f32: the outputs are refused, not printed as 10%.
    let mut s = saved(&small_layers());
    for p in s.model.params_mut().iter_mut().filter(|p| p.name.ends_with(".weight")) {
        p.value.data_mut().iter_mut().for_each(|v| *v = 3e38);
    }
    let huge = data.join("huge.safetensors");
    modelfile::save(&huge, &s).unwrap();
    let h = huge.to_str().unwrap();
    let predictions = data.join("predictions.csv");
    std::fs::write(&predictions, "the user's file\n").unwrap();
    let pr = predictions.to_str().unwrap();
    clean_error(
        &["eval", "--threads", "1", "--model-file", h, "--data-dir", d, "--predictions", pr],
        &[h, "not finite"],
    );
    assert_eq!(
        std::fs::read_to_string(&predictions).unwrap(),
        "the user's file\n",
        "predictions file changed"
    );
    clean_error(&["predict", "--model-file", h, "--data-dir", d, "test:0"], &[h, "not finite"]);

    // A good model, and data of another image size: refused before any op sees it.
    let good = data.join("good.safetensors");
    modelfile::save(&good, &saved(&small_layers())).unwrap();
    let g = good.to_str().unwrap();
    let ok = run_limited(MEMORY_KB, &["eval", "--threads", "1", "--model-file", g, "--data-dir", d]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    let wide = data.join("wide");
    std::fs::create_dir_all(&wide).unwrap();
    write_idx_folder(&wide, 32, 32, &[1, 2, 3]);
    let w = wide.to_str().unwrap();
    clean_error(
        &["eval", "--threads", "1", "--model-file", g, "--data-dir", w],
        &["images are 32x32", "28x28"],
    );
    clean_error(&["predict", "--model-file", g, "--data-dir", w, "test:1"], &["images are 32x32"]);
    // Labels out of range in the data.
    let labels = data.join("labels");
    std::fs::create_dir_all(&labels).unwrap();
    write_idx_folder(&labels, 28, 28, &[1, 12, 3]);
    clean_error(
        &["eval", "--threads", "1", "--model-file", g, "--data-dir", labels.to_str().unwrap()],
        &["labels-idx1-ubyte", "label 12 at index 1"],
    );

    // --predictions naming the model file would replace the model: refused, model kept.
    let before = std::fs::read(&good).unwrap();
    clean_error(
        &["eval", "--threads", "1", "--model-file", g, "--data-dir", d, "--predictions", g],
        &["--predictions", "overwrite the model file"],
    );
    assert_eq!(std::fs::read(&good).unwrap(), before);
    let _ = std::fs::remove_dir_all(&data);
}

// ------------------------------------------------------------------------------------------
// Data and image files
// ------------------------------------------------------------------------------------------

fn png_header_only(width: u32, height: u32) -> Vec<u8> {
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, width, height);
    enc.set_color(png::ColorType::Rgba);
    enc.set_depth(png::BitDepth::Eight);
    drop(enc.write_header().unwrap());
    out
}

#[test]
fn hostile_images_and_data_files() {
    let data = bar_data("hostile-files");
    let d = data.to_str().unwrap();
    let model = data.join("m.safetensors");
    modelfile::save(&model, &saved(&small_layers())).unwrap();
    let m = model.to_str().unwrap();
    let predict = |input: &str, needles: &[&str]| {
        let args = ["predict", "--model-file", m, "--data-dir", d, input];
        assert_clean(&run_limited(MEMORY_KB, &args), &args, needles);
    };
    // Images: a folder, a device that never ends, absurd sizes, a header with no pixels.
    predict(d, &[d, "is a folder"]);
    if Path::new("/dev/zero").exists() {
        let start = Instant::now();
        let args = ["predict", "--model-file", m, "/dev/zero"];
        assert_clean(&run_limited(MEMORY_KB_LARGE_READ, &args), &args, &["/dev/zero", "over the limit"]);
        assert!(start.elapsed() < Duration::from_secs(10));
    }
    for (name, bytes, needle) in [
        ("huge.png", png_header_only(100_000, 100_000), "megapixels"),
        ("lying.png", png_header_only(10_000, 10_000), "deflate"),
        ("huge.pgm", b"P5 100000 100000 255\n".to_vec(), "megapixels"),
        ("lying.pgm", b"P5 10000 10000 255\n\x00\x01".to_vec(), "pixel bytes"),
        ("empty.png", Vec::new(), "empty file"),
        ("text.pgm", b"P2 2 1 255\n1 x\n".to_vec(), "pixel value"),
    ] {
        let path = data.join(name);
        std::fs::write(&path, &bytes).unwrap();
        let p = path.to_str().unwrap();
        predict(p, &[p, needle]);
    }
    predict("test:-1", &["test:-1", "must be a number"]);
    predict("test:99999999999999999999999", &["must be a number"]);
    predict("test:30", &["test:30", "the test set has 30 images"]);

    // IDX: a header that declares 4 billion images of 65535x65535, and a gzip bomb.
    let liar = data.join("liar");
    std::fs::create_dir_all(&liar).unwrap();
    write_idx_folder(&liar, 28, 28, &[1, 2]);
    let mut head = Vec::new();
    for v in [0x803u32, u32::MAX, 65535, 65535] {
        head.extend_from_slice(&v.to_be_bytes());
    }
    std::fs::write(liar.join("t10k-images-idx3-ubyte"), &head).unwrap();
    let l = liar.to_str().unwrap();
    clean_error(
        &["eval", "--threads", "1", "--model-file", m, "--data-dir", l],
        &["t10k-images-idx3-ubyte", "truncated"],
    );

    let bomb = data.join("bomb");
    std::fs::create_dir_all(&bomb).unwrap();
    write_idx_folder(&bomb, 28, 28, &[1, 2]);
    // One member inflating 1 MiB of zeros, repeated: 300 MiB once decompressed.
    let member = {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(&vec![0u8; 1 << 20]).unwrap();
        enc.finish().unwrap()
    };
    std::fs::write(bomb.join("t10k-images-idx3-ubyte.gz"), member.repeat(300)).unwrap();
    let _ = std::fs::remove_file(bomb.join("t10k-images-idx3-ubyte"));
    let b = bomb.to_str().unwrap();
    let args = ["eval", "--threads", "1", "--model-file", m, "--data-dir", b];
    let o = run_limited(MEMORY_KB_LARGE_READ, &args);
    assert_clean(&o, &args, &["t10k-images-idx3-ubyte.gz", "decompresses to more than"]);

    // CSV: a row of a million columns.
    let csv = data.join("csv");
    std::fs::create_dir_all(&csv).unwrap();
    let mut header = String::from("label");
    (1..=784).for_each(|i| header += &format!(",pixel{i}"));
    let row = format!("1{}\n", ",0".repeat(1_000_000));
    std::fs::write(csv.join("fashion-mnist_train.csv"), format!("{header}\n{row}")).unwrap();
    std::fs::write(csv.join("fashion-mnist_test.csv"), format!("{header}\n")).unwrap();
    let c = csv.to_str().unwrap();
    clean_error(
        &["eval", "--threads", "1", "--model-file", m, "--data-dir", c],
        &["fashion-mnist_train.csv:2", "line longer than"],
    );
    let _ = std::fs::remove_dir_all(&data);
}

#[test]
fn readers_bound_what_they_read() {
    use fmnist::data::{decode_idx_images, parse_csv, read_idx_images};
    if Path::new("/dev/zero").exists() {
        let start = Instant::now();
        let err = read_idx_images(Path::new("/dev/zero")).unwrap_err().to_string();
        assert!(err.contains("larger than the limit"), "{err}");
        assert!(start.elapsed() < Duration::from_secs(5));
    }
    // A CSV that never ends a line.
    let err = parse_csv(Path::new("zeros.csv"), std::io::BufReader::new(std::io::repeat(b'0'))).unwrap_err();
    assert!(err.to_string().contains("line longer than"), "{err}");
    // Declared sizes are compared with the bytes, never allocated: 2^32 images of 2^32 pixels.
    let mut b = Vec::new();
    for v in [0x803u32, u32::MAX, u32::MAX, u32::MAX] {
        b.extend_from_slice(&v.to_be_bytes());
    }
    let err = decode_idx_images(Path::new("lie"), b).unwrap_err().to_string();
    assert!(err.contains("lie: "), "{err}");
}

// ------------------------------------------------------------------------------------------
// Flags
// ------------------------------------------------------------------------------------------

#[test]
fn flags_out_of_bounds_are_refused_before_anything_happens() {
    let out = temp_dir("hostile-flags");
    std::fs::write(out.join("config.json"), "{\"keep\": true}").unwrap();
    let o = out.to_str().unwrap();
    let train = |flags: &[&str], needle: &str| {
        let mut args = vec!["train", "--out", o, "--no-download", "--data-dir", "/nonexistent"];
        args.extend_from_slice(flags);
        clean_error(&args, &[needle]);
    };
    train(&["--threads", "100000"], "--threads 100000 is over the limit of 256");
    train(&["--threads", "0"], "--threads");
    train(&["--static-copies", "1000000000000"], "--static-copies 1000000000000 is over the limit of 10");
    train(&["--batch-size", "1000000"], "--batch-size 1000000 is over the limit of 60000");
    train(&["--model", "ours", "--batch-size", "5000"], "for `ours`");
    train(&["--limit", "1000000000000"], "--limit 1000000000000 is over the limit of 60000");
    train(&["--epochs", "1000000000000000000"], "--epochs");
    train(&["--warmup-epochs", "1000000000"], "--warmup-epochs");
    train(&["--schedule", "step", "--step-epochs", "1000000000"], "--step-epochs");
    train(&["--runs", "1000000"], "--runs 1000000 is over the limit of 100");
    train(&["--shift", "100000000000"], "--shift");
    train(&["--cutout", "100000000000"], "--cutout");
    train(&["--static-copies", "2", "--static-rotation", "NaN"], "rotation");
    train(&["--static-copies", "2", "--static-rotation", "inf"], "rotation");
    train(&["--label-smoothing", "NaN"], "label smoothing");
    train(&["--lr", "inf"], "learning rate");
    train(&["--lr", "NaN"], "learning rate");
    train(&["--flip", "NaN"], "flip probability");
    train(&["--val-split", "NaN"], "--val-split");
    train(&["--weight-decay", "inf"], "weight decay");
    train(&["--schedule", "step", "--step-gamma", "inf"], "factor");
    let dir: Vec<_> = std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(dir.len(), 1, "the run folder changed: {dir:?}");
    assert_eq!(std::fs::read_to_string(out.join("config.json")).unwrap(), "{\"keep\": true}");

    // rayon's own variable is bounded like --threads.
    let o = Command::new(BIN)
        .args(["summary", "--model", "c1"])
        .env("RAYON_NUM_THREADS", "100000")
        .env("FMNIST_PLAN", "rule")
        .output()
        .unwrap();
    assert_clean(&o, &["summary"], &["RAYON_NUM_THREADS=100000 is over the limit of 256"]);

    let model = out.join("m.safetensors");
    modelfile::save(&model, &saved(&small_layers())).unwrap();
    let m = model.to_str().unwrap();
    clean_error(&["eval", "--model-file", m, "--threads", "100000"], &["--threads 100000 is over the limit"]);
    clean_error(&["eval", "--threads", "1", "--model-file", m, "--batch-size", "0"], &["--batch-size"]);
    clean_error(
        &["eval", "--threads", "1", "--model-file", m, "--batch-size", "100000000"],
        &["--batch-size 100000000 is over the limit of"],
    );
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn help_states_the_bounds() {
    let help = |cmd: &str| {
        String::from_utf8(Command::new(BIN).args([cmd, "--help"]).output().unwrap().stdout).unwrap()
    };
    let train = help("train");
    for bound in [
        "1 to 256",
        "1 to 60000",
        "2^28 activation values",
        "at most 10 (0: off)",
        "1 to 10000",
        "at most 27",
        "at most 56",
        "0 to 180",
        "1 to 100",
    ] {
        assert!(train.contains(bound), "train --help lacks `{bound}`:\n{train}");
    }
    let eval = help("eval");
    for bound in ["1 to 256", "1 to 60000", "at most 257 MiB"] {
        assert!(eval.contains(bound), "eval --help lacks `{bound}`:\n{eval}");
    }
    assert!(help("predict").contains("100 megapixels and 256 MiB"));
}

/// The presets, with their recipes' batch sizes, stay well within the bounds (the margins the
/// docs of `src/limits.rs` state).
#[test]
fn presets_fit_the_bounds_with_a_margin() {
    use fmnist::limits::*;
    for name in fmnist::presets::NAMES {
        let p = fmnist::presets::preset(name).unwrap();
        let arch = check_architecture(&fmnist::presets::INPUT_SHAPE, &p.layers).unwrap();
        let largest = arch.tensors.iter().map(|t| t.shape.iter().product::<usize>()).max().unwrap();
        eprintln!(
            "{name}: {} layers, {} tensor values (largest {largest}), {} activations and {} multiply-adds per image, batch at most {}",
            p.layers.len(),
            arch.tensor_values,
            arch.activation_values,
            arch.macs,
            arch.max_batch()
        );
        assert!(p.layers.len() * 10 <= MAX_LAYERS, "{name}");
        assert!(largest * 16 <= MAX_LAYER_WEIGHTS, "{name}");
        assert!(arch.tensor_values * 32 <= MAX_MODEL_VALUES, "{name}");
        assert!(arch.activation_values * 16 <= MAX_ACTIVATIONS_PER_IMAGE, "{name}");
        assert!(arch.macs * 14 <= MAX_MACS_PER_IMAGE, "{name}: {} multiply-adds", arch.macs);
        assert!(p.recipe.batch_size * 2 <= arch.max_batch(), "{name}: batch {}", p.recipe.batch_size);
        assert!(p.recipe.epochs <= MAX_EPOCHS / 100, "{name}");
        assert!(p.recipe.static_augment.copies <= MAX_STATIC_COPIES, "{name}");
    }
}

// ------------------------------------------------------------------------------------------
// Plan files (`--plan FILE`)
// ------------------------------------------------------------------------------------------

/// A plan file that is malformed, of another format, for another model, oversized, endless
/// or a folder: one clean error line from `eval` and `predict`, before any data is read. The
/// model's own plan replays.
#[test]
fn plan_files_that_do_not_fit_are_refused() {
    use fmnist::planfile;
    let dir = temp_dir("hostile-plans");
    let model = dir.join("m.safetensors");
    modelfile::save(&model, &saved(&small_layers())).unwrap();
    let m = model.to_str().unwrap();
    let own = planfile::current(&saved(&small_layers()).model, "rule");
    let foreign = planfile::current(&saved(&c1_layers()).model, "rule");
    let mut old_format = own.clone();
    old_format.format = "fmnist-plan-0".into();
    let mut extra: Value = serde_json::from_str(&planfile::to_json(&own)).unwrap();
    extra["layers"][0]["choice"]["speed"] = json!("fast");
    let cases: [(&str, Vec<u8>, &str); 6] = [
        ("malformed.json", b"{\"format\": \"fmnist-plan-1\", \"layers\": [".to_vec(), "not a plan file"),
        ("extra.json", extra.to_string().into_bytes(), "unknown field"),
        ("format.json", planfile::to_json(&old_format).into_bytes(), "format `fmnist-plan-0`"),
        ("foreign.json", planfile::to_json(&foreign).into_bytes(), "another model"),
        ("big.json", vec![b' '; (fmnist::limits::MAX_PLAN_FILE_BYTES + 1) as usize], "larger than the limit"),
        ("empty.json", Vec::new(), "not a plan file"),
    ];
    let nodata = dir.join("no-data");
    let d = nodata.to_str().unwrap();
    for (name, bytes, needle) in &cases {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        let p = path.to_str().unwrap();
        for args in [
            &["eval", "--threads", "1", "--model-file", m, "--plan", p, "--data-dir", d, "--no-download"][..],
            &["predict", "--model-file", m, "--plan", p, "--data-dir", d, "--no-download", "test:0"][..],
        ] {
            clean_error(args, &["--plan", p, needle]);
        }
    }
    let folder = dir.to_str().unwrap();
    clean_error(&["eval", "--model-file", m, "--plan", folder, "--data-dir", d], &["is a folder"]);
    if Path::new("/dev/zero").exists() {
        clean_error(
            &["eval", "--model-file", m, "--plan", "/dev/zero", "--data-dir", d],
            &["larger than the limit"],
        );
    }

    // The model's own plan replays, and says so.
    let good = dir.join("good.json");
    std::fs::write(&good, planfile::to_json(&own)).unwrap();
    let data = bar_data("hostile-plans-data");
    let args =
        ["eval", "--model-file", m, "--plan", good.to_str().unwrap(), "--data-dir", data.to_str().unwrap()];
    let o = run_limited(MEMORY_KB, &args);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains("plan: replayed"), "{}", stderr(&o));
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&data);
}
