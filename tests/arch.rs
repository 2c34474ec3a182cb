//! Architecture files (`--arch`, `models/*.toml`): the presets read from their files, the
//! example networks' parameter counts by hand, residual blocks, errors that name the file, the
//! layer and the fix, size limits checked before allocation, the PyTorch export's names and
//! layouts, and a model file written before architecture files existed.

mod common;

use std::path::Path;

use common::{run, stderr, stdout, temp_dir, write_bar_idx};
use fmnist::model::{LayerConfig, Padding, Projection};
use fmnist::{arch, presets, Engine, Init, Mode, Rng, Sequential, Tape};

fn parse(text: &str) -> Result<fmnist::presets::Preset, String> {
    arch::parse_checked(text, "test.toml", "test")
}

fn counts(path: &str) -> (usize, usize) {
    let p = arch::load(Path::new(path)).unwrap();
    let m = arch::check(&p.layers).unwrap();
    (m.params().trainable_count(), m.params().buffer_count())
}

#[test]
fn every_preset_is_its_file() {
    for name in presets::NAMES {
        let path = format!("{}/models/{name}.toml", env!("CARGO_MANIFEST_DIR"));
        let from_file = arch::load(Path::new(&path)).unwrap();
        assert_eq!(Some(from_file), presets::preset(name), "{name}");
    }
    let c1 = presets::preset("c1").unwrap();
    assert_eq!(
        c1.layers[0],
        LayerConfig::Conv2d { filters: 32, kernel: [3, 3], stride: 1, padding: Padding::Valid }
    );
    assert_eq!((c1.recipe.epochs, c1.recipe.batch_size), (10, 512));
    let e = presets::preset("cmasch").unwrap();
    assert_eq!(e.recipe.static_augment.copies, 2);
}

/// Parameter counts worked out by hand from the files' layers (a conv has `OC*C*KH*KW + OC`
/// parameters, a dense layer `IN*OUT + OUT`, a batch-norm 2C trainable and 2C running
/// statistics).
#[test]
fn the_example_networks_have_the_hand_counted_parameters() {
    let conv = |c: usize, oc: usize, k: usize| oc * c * k * k + oc;
    let bn = |c: usize| 2 * c;
    // ResNet: stem; stage 1 two blocks of two 16->16 convs; stages 2 and 3: a block with a
    // stride-2 conv C->2C, a 2C->2C conv and a 1x1 projection with batch-norm, then an
    // identity block; dense 64 -> 10.
    let block = |c: usize, oc: usize| conv(c, oc, 3) + bn(oc) + conv(oc, oc, 3) + bn(oc);
    let resnet = conv(1, 16, 3)
        + bn(16)
        + 2 * block(16, 16)
        + block(16, 32)
        + conv(16, 32, 1)
        + bn(32)
        + block(32, 32)
        + block(32, 64)
        + conv(32, 64, 1)
        + bn(64)
        + block(64, 64)
        + (64 * 10 + 10);
    let resnet_bn = 16 + 4 * 16 + 4 * 32 + 32 + 4 * 64 + 64;
    assert_eq!(counts("models/resnet.toml"), (resnet, 2 * resnet_bn));
    assert_eq!(resnet, 175_530);
    // VGG: (conv + BN) pairs 1->32->32, 32->64->64, 64->128->128; 128*3*3 -> 256 -> 10.
    let vgg = conv(1, 32, 3)
        + conv(32, 32, 3)
        + conv(32, 64, 3)
        + conv(64, 64, 3)
        + conv(64, 128, 3)
        + conv(128, 128, 3)
        + 2 * bn(32)
        + 2 * bn(64)
        + 2 * bn(128)
        + (1152 * 256 + 256)
        + (256 * 10 + 10);
    assert_eq!(counts("models/vgg.toml"), (vgg, 2 * (2 * 32 + 2 * 64 + 2 * 128)));
}

#[test]
fn both_layer_notations_and_defaults_parse() {
    let long = r#"
        name = "n"
        [[layers]]
        type = "conv2d"
        filters = 4
        kernel = [3, 5]
        padding = { explicit = { top = 1, left = 2, bottom = 1, right = 2 } }
        [[layers]]
        type = "batch_norm"
        [[layers]]
        type = "avg_pool"
        size = 2
        stride = 2
        [[layers]]
        type = "global_avg_pool"
        [[layers]]
        type = "dense"
        units = 10
    "#;
    let p = parse(long).unwrap();
    assert_eq!(
        p.layers[0],
        LayerConfig::Conv2d {
            filters: 4,
            kernel: [3, 5],
            stride: 1,
            padding: Padding::Explicit { top: 1, left: 2, bottom: 1, right: 2 }
        }
    );
    assert_eq!(p.layers[1], LayerConfig::BatchNorm { momentum: 0.99, eps: 1e-3 });
    assert_eq!(p.recipe.epochs, 10, "the default recipe");
    let short = r#"
        layers = [{ type = "flatten" }, { type = "dense", units = 10 }]
        [recipe]
        optimizer = "sgd"
        lr = 0.05
        schedule = "step"
        epochs = 9
    "#;
    let p = parse(short).unwrap();
    assert_eq!(p.name, "test", "a file without a name takes its stem");
    assert_eq!(p.recipe.optimizer, fmnist::optim::OptimizerConfig::sgd(0.05, 0.9));
    assert_eq!(p.recipe.schedule.kind, fmnist::train::ScheduleKind::Step { every_epochs: 3, gamma: 0.1 });
}

#[test]
fn errors_name_the_layer_and_the_fix() {
    let bad = |text: &str, needle: &str| {
        let e = parse(text).unwrap_err();
        assert!(e.contains(needle), "expected `{needle}` in: {e}");
        assert!(!e.contains('\n'), "one line: {e}");
        assert!(e.starts_with("test.toml"), "names the file: {e}");
    };
    let conv_then = |next: &str| {
        format!(
            r#"layers = [{{ type = "conv2d", filters = 64, kernel = 3, padding = "same" }}, {{ type = "max_pool", size = 2, stride = 2 }},
               {{ type = "max_pool", size = 2, stride = 2 }}, {{ type = "relu" }}, {next}]"#
        )
    };
    bad(
        &conv_then(r#"{ type = "dense", units = 10 }"#),
        "layer 4 (dense): its input is [N, 64, 7, 7]; put a flatten",
    );
    bad(r#"layers = [{ type = "dense", units = 10, size = 3 }]"#, "unknown field `size`");
    bad(r#"layers = [{ type = "conv3d", filters = 1 }]"#, "unknown variant `conv3d`");
    bad(r#"layers = [{ type = "dense" }]"#, "missing field `units`");
    bad("layers = [\n{ type = \"dense\", units = 10 }", "line");
    bad(r#"layrs = []"#, "unknown field `layrs`");
    bad(r#"layers = [{ type = "flatten" }, { type = "dense", units = 3 }]"#, "must end in 10 values");
    bad(
        r#"layers = [{ type = "flatten" }, { type = "dense", units = 10 }]
           [recipe]
           epoch = 3"#,
        "unknown field `epoch`",
    );
    // A residual body that changes the shape without a projection, and with a wrong one.
    let res = |proj: &str| {
        format!(
            r#"layers = [{{ type = "conv2d", filters = 4, kernel = 3 }}, {{ type = "residual", {proj} layers = [
                 {{ type = "conv2d", filters = 8, kernel = 3, stride = 2, padding = "same" }}] }},
               {{ type = "flatten" }}, {{ type = "dense", units = 10 }}]"#
        )
    };
    bad(&res(""), "layer 1 (residual): its body turns [N, 4, 26, 26] into [N, 8, 13, 13]");
    bad(&res("projection = { stride = 1 },"), "the projection's stride must make the same height and width");
    parse(&res("projection = { stride = 2 },")).unwrap();
    // Inside a block, the layer is named by its place in the block.
    bad(
        r#"layers = [{ type = "residual", layers = [{ type = "flatten" }, { type = "conv2d", filters = 1, kernel = 1 }] }]"#,
        "layer 0.1 (conv2d): its input is [N, 784]; it needs images",
    );
}

#[test]
fn absurd_sizes_are_refused_before_allocating() {
    let t = std::time::Instant::now();
    for (layer, needle) in [
        (r#"{ type = "flatten" }, { type = "dense", units = 1099511627776 }"#, "larger than the limit"),
        (r#"{ type = "conv2d", filters = 1099511627776, kernel = 3 }"#, "larger than the limit"),
        (r#"{ type = "flatten" }, { type = "dense", units = 100000 }"#, "larger than the limit"),
        (
            r#"{ type = "conv2d", filters = 4, kernel = 3, padding = { explicit = { top = 9223372036854775808, left = 0, bottom = 0, right = 0 } } }"#,
            "padding",
        ),
        (
            r#"{ type = "conv2d", filters = 2048, kernel = 1 }, { type = "conv2d", filters = 2048, kernel = 1 }"#,
            "per image",
        ),
    ] {
        let e = parse(&format!(
            "layers = [{layer}, {{ type = \"flatten\" }}, {{ type = \"dense\", units = 10 }}]"
        ))
        .unwrap_err();
        assert!(e.contains(needle), "{layer}: {e}");
    }
    assert!(t.elapsed().as_secs() < 5, "refusing took {:?}: something was allocated", t.elapsed());
}

#[test]
fn a_residual_block_adds_its_body_to_its_input() {
    // One identity block around a conv: output = conv(x) + x, checked against the conv alone.
    let conv = LayerConfig::conv(1, 3, Padding::Same);
    let block = LayerConfig::Residual { layers: vec![conv.clone()], projection: None };
    for engine in [Engine::Reference, Engine::Fast] {
        let mut m =
            Sequential::new(&[1, 5, 5], std::slice::from_ref(&block), Init::GlorotUniform, &mut Rng::new(1))
                .unwrap();
        let mut c =
            Sequential::new(&[1, 5, 5], std::slice::from_ref(&conv), Init::GlorotUniform, &mut Rng::new(1))
                .unwrap();
        m.set_engine(engine);
        c.set_engine(engine);
        let x: Vec<f32> = (0..25).map(|i| (i as f32 * 0.37).sin()).collect();
        let out = |m: &mut Sequential| {
            let mut t = Tape::no_grad();
            let xv = t.input(fmnist::Tensor::from_vec(&[1, 1, 5, 5], x.clone()));
            let y = m.forward(&mut t, xv, Mode::Eval, &mut Rng::new(0));
            t.value(y).data().to_vec()
        };
        let (with, without) = (out(&mut m), out(&mut c));
        for i in 0..25 {
            assert_eq!(with[i], without[i] + x[i], "{engine:?} value {i}");
        }
    }
    let projected = LayerConfig::Residual {
        layers: vec![LayerConfig::Conv2d { filters: 3, kernel: [3, 3], stride: 2, padding: Padding::Same }],
        projection: Some(Projection { stride: 2, batch_norm: true }),
    };
    let m = Sequential::new(&[2, 6, 6], &[projected], Init::GlorotUniform, &mut Rng::new(2)).unwrap();
    assert_eq!(m.output_shape(), &[3, 3, 3]);
    let names: Vec<&str> = m.params().iter().map(|p| p.name.as_str()).collect();
    assert!(
        names.contains(&"0.residual.0.conv2d.weight") && names.contains(&"0.residual.proj.conv2d.weight"),
        "{names:?}"
    );
    assert!(m.summary().contains("0.proj conv2d 3@1x1 s2 valid"), "{}", m.summary());
}

/// The export's state dict under PyTorch's names and layouts (the numbers against PyTorch
/// itself: scripts/verify_pytorch_export.py, README).
#[test]
fn the_pytorch_export_uses_pytorchs_names_and_layouts() {
    let preset = arch::load(Path::new("models/resnet.toml")).unwrap();
    let model = arch::check(&preset.layers).unwrap();
    let dense_w = model.params().iter().find(|p| p.name == "16.dense.weight").unwrap().value.clone();
    let saved = fmnist::modelfile::SavedModel {
        model,
        normalization: Default::default(),
        dataset: "fashion-mnist".into(),
        classes: (0..10).map(|c| c.to_string()).collect(),
        preset: "resnet".into(),
    };
    let (code, tensors) = fmnist::export::pytorch(&saved);
    let find = |name: &str| tensors.iter().find(|t| t.name == name).unwrap_or_else(|| panic!("no {name}"));
    assert_eq!(find("0.weight").shape, [16, 1, 3, 3]);
    assert_eq!(find("1.running_var").shape, [16]);
    assert_eq!(find("1.num_batches_tracked").shape, Vec::<usize>::new());
    assert_eq!(find("3.body.0.weight").shape, [16, 16, 3, 3]);
    assert_eq!(find("7.proj.0.weight").shape, [32, 16, 1, 1]);
    assert_eq!(find("7.proj.1.weight").shape, [32]);
    // Linear is [OUT, IN]: element (o, i) is ours (i, o).
    let lin = find("16.weight");
    assert_eq!(lin.shape, [10, 64]);
    let at = |o: usize, i: usize| f32::from_le_bytes(lin.bytes[4 * (o * 64 + i)..][..4].try_into().unwrap());
    assert_eq!(at(3, 17), dense_w.data()[17 * 10 + 3]);
    assert!(code.contains("nn.BatchNorm2d(16, eps=0.001, momentum=0.01)"), "{code}");
    assert!(code.contains("Residual(nn.Sequential("), "{code}");
    assert!(code.contains("GlobalAvgPool()"), "{code}");
    fmnist::export::state_dict_bytes(&tensors).unwrap();
}

/// A model file written by commit cabab60, before architecture files existed (every layer
/// kind that version had; tests/fixtures/model-v1.safetensors), loads and gives the logits
/// that version computed for four pattern images.
#[test]
fn a_model_file_from_before_architecture_files_still_loads_and_predicts() {
    #[rustfmt::skip]
    let old_logits: [f32; 40] = [
        0.03865297, -0.0445512, 0.124470495, 0.07509837, 0.2414176, -0.034423538, -0.05859308, -0.34817427, 0.6544025, 0.55499345,
        0.022256762, -0.01647123, 0.072295986, 0.14570516, 0.25271043, -0.02349726, -0.07432699, -0.38655782, 0.6847851, 0.6666503,
        -0.01842919, -0.045098387, 0.06526374, 0.16769807, 0.23759162, -0.06729672, -0.030055761, -0.29280686, 0.606592, 0.734955,
        0.03432384, -0.03197258, 0.10227043, 0.21150668, 0.26546806, -0.066608675, -0.052915946, -0.2969219, 0.6080817, 0.6346775,
    ];
    let mut saved = fmnist::modelfile::load(Path::new("tests/fixtures/model-v1.safetensors")).unwrap();
    assert_eq!(saved.preset, "tiny-v1");
    let pixels: Vec<u8> = (0..4 * 784)
        .map(|k| {
            let (i, r, c) = (k / 784, k % 784 / 28, k % 28);
            ((37 * i + 11 * r + 5 * c) % 256) as u8
        })
        .collect();
    for engine in [Engine::Fast, Engine::Reference] {
        saved.model.set_engine(engine);
        let x = saved.normalization.pixels(&pixels, 4, 28, 28);
        let mut tape = Tape::no_grad();
        let xv = tape.input(x);
        let y = saved.model.forward(&mut tape, xv, Mode::Eval, &mut Rng::new(0));
        for (i, (&got, &want)) in tape.value(y).data().iter().zip(&old_logits).enumerate() {
            assert!((got - want).abs() <= 1e-5, "{engine:?} logit {i}: {got} vs {want} then");
        }
    }
    // And through the binary: summary and predict.
    let o = run(&["summary", "--model-file", "tests/fixtures/model-v1.safetensors"]);
    assert!(o.status.success() && stdout(&o).contains("Trainable params"), "{}", stderr(&o));
}

/// Every example file trains through the binary for one epoch on 1,000 images (synthetic
/// learnable data, so the test does not depend on the dataset package), and `summary --arch`
/// prints it.
#[test]
fn the_example_files_train_for_an_epoch() {
    let dir = temp_dir("arch-examples");
    write_bar_idx(&dir, 1000, 200, 3);
    for name in ["resnet", "vgg"] {
        let file = format!("models/{name}.toml");
        let out = dir.join(name);
        let args = [
            "train",
            "--arch",
            &file,
            "--limit",
            "1000",
            "--epochs",
            "1",
            "--batch-size",
            "50",
            "--data-dir",
            dir.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ];
        let o = run(&args);
        assert!(o.status.success(), "{name}: {}\n{}", stdout(&o), stderr(&o));
        assert!(stdout(&o).contains("Test loss"), "{}", stdout(&o));
        assert!(out.join("model.safetensors").exists());
        let s = run(&["summary", "--arch", &file]);
        assert!(s.status.success() && stdout(&s).contains("Total params"), "{}", stderr(&s));
    }
    // A bad file through the binary: one line, exit 1.
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "layers = [{ type = \"dense\", units = 10 }]\n[recipe]\nepochs = 0\n").unwrap();
    let o = run(&["train", "--arch", bad.to_str().unwrap(), "--data-dir", dir.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_eq!(stderr(&o).trim_end().lines().count(), 1, "{}", stderr(&o));
    let _ = std::fs::remove_dir_all(&dir);
}
