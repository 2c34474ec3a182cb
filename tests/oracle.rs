//! PyTorch as the outside oracle: a tiny network with every layer kind, whose logits, loss,
//! gradients, weights after 3 Adam steps and batch-norm running statistics PyTorch computed
//! (tests/oracle/oracle.safetensors, written by tests/oracle/make_oracle.py in a virtualenv
//! with torch; that script's doc lists the conventions it pins). No PyTorch is needed here.
//!
//! PyTorch computed in f64 from f32 starting values; fmnist computes in f32. The tolerances are
//! a few hundred f32 ulps of the values' scale: the sums here are short (at most 48 terms),
//! so rounding alone stays far below them, while any convention that differs (momentum,
//! biased variance, eps placement, padding side, smoothing) moves a value by 1e-3 or more.

use std::path::Path;

use fmnist::model::{LayerConfig as L, Padding, Projection};
use fmnist::optim::{Optimizer, OptimizerConfig};
use fmnist::{Engine, Init, Mode, Rng, Sequential, Tape, Tensor};
use safetensors::SafeTensors;

/// The network of make_oracle.py, layer for layer.
fn layers() -> Vec<L> {
    let bn = L::BatchNorm { momentum: 0.9, eps: 1e-3 };
    vec![
        bn.clone(),
        L::conv(3, 4, Padding::Same),
        L::Relu,
        L::MaxPool2d { size: 2, stride: 2 },
        L::Residual {
            layers: vec![L::conv(3, 3, Padding::Same), bn.clone(), L::Relu, L::conv(3, 3, Padding::Same)],
            projection: None,
        },
        L::Relu,
        L::Residual {
            layers: vec![L::Conv2d { filters: 4, kernel: [3, 3], stride: 2, padding: Padding::Same }],
            projection: Some(Projection { stride: 2, batch_norm: true }),
        },
        L::AvgPool { size: 2, stride: 1 },
        L::GlobalAvgPool,
        L::Dropout { rate: 0.0 },
        L::Dense { units: 6 },
        L::Relu,
        bn,
        L::Dense { units: 3 },
    ]
}

fn tensor(st: &SafeTensors, name: &str) -> Vec<f32> {
    let t = st.tensor(name).unwrap_or_else(|_| panic!("oracle has no {name}"));
    t.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()
}

#[track_caller]
fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-2);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= tol * scale, "{what}[{i}]: fmnist {g}, PyTorch {w} (scale {scale})");
    }
}

#[test]
fn a_tiny_network_of_every_layer_kind_matches_pytorch() {
    let bytes =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oracle/oracle.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let x = Tensor::from_vec(&[4, 1, 8, 8], tensor(&st, "x"));
    let labels: Vec<u8> = tensor(&st, "labels").iter().map(|&v| v as u8).collect();
    for engine in [Engine::Reference, Engine::Fast] {
        let mut model =
            Sequential::new(&[1, 8, 8], &layers(), Init::GlorotUniform, &mut Rng::new(0)).unwrap();
        model.set_engine(engine);
        let names: Vec<(String, bool)> =
            model.params().iter().map(|p| (p.name.clone(), p.trainable)).collect();
        for p in model.params_mut().iter_mut().filter(|p| p.trainable) {
            p.value.data_mut().copy_from_slice(&tensor(&st, &format!("init.{}", p.name)));
        }
        let adam = OptimizerConfig::Adam { lr: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-3, weight_decay: 0.0 };
        let mut opt = Optimizer::new(adam, model.params()).on(engine);
        let mut tape = Tape::new();
        for step in 1..=3 {
            tape.reset();
            let xv = tape.input(x.clone());
            let logits = model.forward(&mut tape, xv, Mode::Train, &mut Rng::new(0));
            let loss = model.loss(&mut tape, logits, &labels, 0.1);
            model.zero_grads();
            model.backward(&mut tape, loss);
            if step == 1 {
                assert_close(
                    &format!("{engine:?} logits"),
                    tape.value(logits).data(),
                    &tensor(&st, "logits"),
                    2e-5,
                );
                assert_close(
                    &format!("{engine:?} loss"),
                    tape.value(loss).data(),
                    &tensor(&st, "loss"),
                    2e-5,
                );
                for p in model.params().iter().filter(|p| p.trainable) {
                    let want = tensor(&st, &format!("grad.{}", p.name));
                    assert_close(&format!("{engine:?} gradient of {}", p.name), p.grad.data(), &want, 1e-4);
                }
            }
            opt.step(model.params_mut());
        }
        for (name, trainable) in &names {
            let got = model.params().iter().find(|p| &p.name == name).unwrap().value.data().to_vec();
            let want = tensor(&st, &format!("step3.{name}"));
            // After 3 Adam steps of 0.01 each the weights moved by up to 0.03.
            let tol = if *trainable { 1e-4 } else { 2e-5 };
            assert_close(&format!("{engine:?} {name} after 3 Adam steps"), &got, &want, tol);
        }
    }
}
