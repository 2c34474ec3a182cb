//! The plan as data (`fmnist::planfile`, `kernels::planner`): every choice computes the same
//! layer, the same plan gives the same bits at any thread count, a plan file round-trips, and
//! a plan that does not fit the model is refused with the model unchanged.
//!
//! No test here measures: the plans are the rule's or written by hand, so the tests are
//! deterministic and fast (measuring is timed, and timings differ from run to run).

use fmnist::model::{Choice, Padding};
use fmnist::optim::{Optimizer, OptimizerConfig};
use fmnist::planfile::{self, LayerChoice, PathName, PlanFile, WayName};
use fmnist::{Init, LayerConfig, Mode, Rng, Sequential, Tape, Tensor};
use kernels::conv_direct::{conv_backward_input_ref, conv_backward_weights_ref, conv_forward_ref};
use kernels::im2col::ConvGeom;
use kernels::{ConvChoice, ConvGrad, ConvPath, ConvPlan, Engine, InputGradWay};

/// Convolutions of three kinds (one input channel, several with 'same' padding, stride 2)
/// with a fused pool, and a dense layer wide enough to split one image between threads.
fn layers() -> Vec<LayerConfig> {
    vec![
        LayerConfig::conv(4, 3, Padding::Same),
        LayerConfig::Relu,
        LayerConfig::MaxPool2d { size: 2, stride: 2 },
        LayerConfig::conv(8, 3, Padding::Same),
        LayerConfig::Relu,
        LayerConfig::Conv2d { filters: 8, kernel: [3, 3], stride: 2, padding: Padding::Valid },
        LayerConfig::Relu,
        LayerConfig::Flatten,
        LayerConfig::Dense { units: 48 },
        LayerConfig::Relu,
        LayerConfig::Dense { units: 10 },
    ]
}

fn model(seed: u64) -> Sequential {
    Sequential::new(&[1, 28, 28], &layers(), Init::GlorotUniform, &mut Rng::new(seed)).unwrap()
}

/// Choices unlike the rule's for every layer (the rule takes the direct path for the first,
/// the implicit GEMM for the others, and never splits these dense layers).
fn unusual(rule: &PlanFile) -> PlanFile {
    let mut plan = rule.clone();
    let choices = [
        LayerChoice::Conv2d {
            forward: PathName::Im2col,
            backward: PathName::Implicit,
            input_grad: WayName::Gemm,
            group: 3,
            sparse: true,
        },
        LayerChoice::Conv2d {
            forward: PathName::Direct,
            backward: PathName::Im2col,
            input_grad: WayName::Implicit,
            group: 5,
            sparse: false,
        },
        LayerChoice::Conv2d {
            forward: PathName::Im2col,
            backward: PathName::Direct,
            input_grad: WayName::Direct,
            group: 1,
            sparse: false,
        },
        LayerChoice::Dense { split_one_image: true },
        LayerChoice::Dense { split_one_image: true },
    ];
    assert_eq!(plan.layers.len(), choices.len());
    for (e, c) in plan.layers.iter_mut().zip(choices) {
        assert_ne!(e.choice, c, "layer {}: the rule's choice already", e.layer);
        e.choice = c;
    }
    plan
}

fn bits(v: &[Vec<f32>]) -> Vec<u32> {
    v.iter().flatten().map(|f| f.to_bits()).collect()
}

/// Two training steps (Adam) at batch 40 in a pool of `threads`, then one image's logits;
/// returns the weights and the logits.
fn train(plan: Option<&PlanFile>, engine: Engine, threads: usize) -> (Vec<Vec<f32>>, Vec<f32>) {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
    pool.install(|| {
        let mut m = model(3);
        m.set_engine(engine);
        if let Some(p) = plan {
            planfile::apply(&mut m, p).unwrap();
        }
        let mut rng = Rng::new(4);
        let n = 40;
        let x = Tensor::from_vec(&[n, 1, 28, 28], (0..n * 784).map(|_| rng.next_f32()).collect());
        let y: Vec<u8> = (0..n).map(|_| rng.below(10) as u8).collect();
        let mut opt = Optimizer::new(OptimizerConfig::adam(1e-3), m.params());
        for _ in 0..2 {
            let mut tape = Tape::new();
            let input = tape.input(x.clone());
            let logits = m.forward(&mut tape, input, Mode::Train, &mut rng);
            let loss = m.loss(&mut tape, logits, &y, 0.0);
            m.zero_grads();
            m.backward(&mut tape, loss);
            opt.step(m.params_mut());
        }
        let mut tape = Tape::no_grad();
        let one = tape.input(Tensor::from_vec(&[1, 1, 28, 28], x.data()[..784].to_vec()));
        let logits = m.forward(&mut tape, one, Mode::Eval, &mut rng);
        (m.params().iter().map(|p| p.value.data().to_vec()).collect(), tape.value(logits).data().to_vec())
    })
}

#[test]
fn the_same_plan_gives_the_same_bits_at_any_thread_count() {
    let rule = planfile::current(&model(3), "rule");
    let plan = unusual(&rule);
    // Through a file, as `--plan FILE` reads it.
    let dir = std::env::temp_dir().join(format!("fmnist-plan-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("plan.json");
    std::fs::write(&path, planfile::to_json(&plan)).unwrap();
    let read = planfile::read(&path).unwrap();
    assert_eq!(read, plan, "a plan file round-trips");

    let (w1, y1) = train(Some(&read), Engine::Fast, 1);
    let (w2, y2) = train(Some(&read), Engine::Fast, 2);
    let (w3, y3) = train(Some(&read), Engine::Fast, 2);
    assert_eq!(bits(&w1), bits(&w2), "1 vs 2 threads");
    assert_eq!(bits(&w2), bits(&w3), "two runs at 2 threads");
    assert_eq!(
        bits(std::slice::from_ref(&y1)),
        bits(&[y2]),
        "one image's logits (split dense layers at 2 threads)"
    );
    assert_eq!(bits(std::slice::from_ref(&y1)), bits(&[y3]), "one image's logits, again");

    // The unusual plan really runs other kernels than the rule (the test can fail) ...
    let (wr, _) = train(None, Engine::Fast, 2);
    assert_ne!(bits(&wr), bits(&w2), "the plan changed nothing");
    // ... and computes the same network: against the reference engine, within the rounding
    // bound of tests/engines.rs (2e-2 of the change, plus 1e-6), here after two steps.
    let (wref, yref) = train(None, Engine::Reference, 2);
    let (w0, _) = {
        let m = model(3);
        (m.params().iter().map(|p| p.value.data().to_vec()).collect::<Vec<_>>(), ())
    };
    for (((a, r), w0), name) in w2.iter().zip(&wref).zip(&w0).zip(0..) {
        let moved = r.iter().zip(w0).map(|(r, w)| (r - w).abs()).fold(0.0f32, f32::max);
        let diff = a.iter().zip(r).map(|(a, r)| (a - r).abs()).fold(0.0f32, f32::max);
        assert!(diff <= 2e-2 * moved + 1e-6, "tensor {name}: {diff} apart, moved {moved}");
    }
    for (a, r) in y1.iter().zip(&yref) {
        assert!((a - r).abs() <= 1e-3 * (1.0 + r.abs()), "logits {a} vs {r}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_plan_for_another_model_is_refused_and_changes_nothing() {
    let other = Sequential::new(
        &[1, 28, 28],
        &fmnist::presets::preset("c1").unwrap().layers,
        Init::GlorotUniform,
        &mut Rng::new(1),
    )
    .unwrap();
    let foreign = planfile::current(&other, "rule");
    let mut m = model(3);
    let before = planfile::current(&m, "rule");
    let err = planfile::apply(&mut m, &foreign).unwrap_err();
    assert!(err.contains("another model"), "{err}");
    // Same count, other shapes: still refused.
    let mut shifted = unusual(&before);
    if let fmnist::planfile::LayerKey::Dense { units, .. } = &mut shifted.layers[3].key {
        *units += 1;
    }
    let err = planfile::apply(&mut m, &shifted).unwrap_err();
    assert!(err.contains("layer 8") && err.contains("another model"), "{err}");
    // Both layers read as layers, not as a debug print of the key.
    assert!(err.contains(" is dense ") && err.contains("'s entry") && !err.contains('{'), "{err}");
    assert_eq!(planfile::current(&m, "rule"), before, "the model's plan changed");
}

#[test]
fn a_choice_that_does_not_take_its_layer_is_refused() {
    let mut m = model(3);
    let before = planfile::current(&m, "rule");
    for (choice, needle) in [
        // The implicit input gradient has no stride-2 form (layer 5).
        (
            LayerChoice::Conv2d {
                forward: PathName::Direct,
                backward: PathName::Direct,
                input_grad: WayName::Implicit,
                group: 1,
                sparse: false,
            },
            "input gradient",
        ),
        (
            LayerChoice::Conv2d {
                forward: PathName::Direct,
                backward: PathName::Direct,
                input_grad: WayName::Gemm,
                group: 0,
                sparse: false,
            },
            "group of 0",
        ),
        (
            LayerChoice::Conv2d {
                forward: PathName::Direct,
                backward: PathName::Direct,
                input_grad: WayName::Gemm,
                group: 17,
                sparse: false,
            },
            "group of 17",
        ),
        // No pool follows layer 5, so it has no argmaxes for the sparse backward.
        (
            LayerChoice::Conv2d {
                forward: PathName::Direct,
                backward: PathName::Direct,
                input_grad: WayName::Gemm,
                group: 1,
                sparse: true,
            },
            "no ReLU and max-pool",
        ),
        (LayerChoice::Dense { split_one_image: false }, "another kind"),
    ] {
        let mut bad = before.clone();
        bad.layers[2].choice = choice;
        let err = planfile::apply(&mut m, &bad).unwrap_err();
        assert!(err.contains("layer 5") && err.contains(needle), "{err}");
    }
    // The implicit GEMM takes kernels up to 5 wide.
    let g = ConvGeom::new(2, 10, 10, 6, 6, (1, 1), (0, 0, 0, 0));
    let c = ConvChoice { forward: ConvPath::Implicit, ..ConvChoice::rule(&g) };
    assert!(c.check(&g, 3).unwrap_err().contains("6x6"));
    assert_eq!(planfile::current(&m, "rule"), before);
    let err = m.set_choices(&[Choice::Dense(kernels::DenseChoice::RULE)]).unwrap_err();
    assert!(err.contains("1 choices for 5 layers"), "{err}");
}

/// Every path, input-gradient way and group computes the convolution of the plain loops
/// (`conv_direct`'s reference twins), forward and backward, within the f32 rounding bound of
/// a sum of `C*KH*KW` (forward, input gradient) or `N*OH*OW` (weights) products.
#[test]
fn every_choice_computes_the_reference_convolution() {
    let geoms = [
        ConvGeom::new(1, 9, 9, 3, 3, (1, 1), (1, 1, 1, 1)),
        ConvGeom::new(3, 8, 7, 4, 4, (1, 1), (1, 1, 2, 2)),
        ConvGeom::new(5, 9, 9, 3, 3, (2, 2), (0, 0, 0, 0)),
    ];
    let (n, oc) = (7, 17);
    for g in geoms {
        let mut rng = Rng::new(5);
        let mut rand = |len: usize| (0..len).map(|_| rng.uniform(-1.0, 1.0)).collect::<Vec<f32>>();
        let (xs, w, b, dy) =
            (rand(n * g.in_len()), rand(oc * g.col_rows()), rand(oc), rand(n * oc * g.out_plane()));
        let out = oc * g.out_plane();
        // The reference, image by image.
        let (mut y0, mut dw0, mut dx0) = (vec![0.0; n * out], vec![0.0; w.len()], vec![0.0; xs.len()]);
        for i in 0..n {
            let x = &xs[i * g.in_len()..][..g.in_len()];
            let dyi = &dy[i * out..][..out];
            conv_forward_ref(&g, oc, x, &w, &mut y0[i * out..][..out]);
            conv_backward_weights_ref(&g, oc, x, dyi, &mut dw0);
            conv_backward_input_ref(&g, oc, &w, dyi, &mut dx0[i * g.in_len()..][..g.in_len()]);
        }
        for (j, y) in y0.iter_mut().enumerate() {
            *y += b[j / g.out_plane() % oc];
        }
        let tol = |k: usize, scale: f32| k as f32 * f32::EPSILON * scale + 1e-5;
        let paths = [ConvPath::Direct, ConvPath::Implicit, ConvPath::Im2col];
        let ways = [InputGradWay::Direct, InputGradWay::Implicit, InputGradWay::Scatter, InputGradWay::Gemm];
        let mut tried = 0;
        for (fwd, bwd, way, group) in paths
            .iter()
            .flat_map(|&f| paths.iter().map(move |&bk| (f, bk)))
            .flat_map(|(f, bk)| ways.iter().map(move |&wy| (f, bk, wy)))
            .flat_map(|(f, bk, wy)| [1, 3, 16].map(|gr| (f, bk, wy, gr)))
        {
            let c = ConvChoice { forward: fwd, backward: bwd, input_grad: way, group, sparse: false };
            if c.check(&g, oc).is_err() {
                continue;
            }
            tried += 1;
            let plan = ConvPlan::with_choice(Engine::Fast, g, oc, c);
            plan.refresh(&w);
            let mut y = vec![f32::NAN; n * out];
            plan.forward(&xs, &w, &b, &mut y);
            let (mut dw, mut db, mut dx) = (vec![0.0; w.len()], vec![0.0; oc], vec![0.0; xs.len()]);
            plan.backward(&ConvGrad::Direct(&dy), &xs, &w, &mut dw, &mut db, Some(&mut dx));
            let close = |a: &[f32], r: &[f32], k: usize, what: &str| {
                for (i, (a, r)) in a.iter().zip(r).enumerate() {
                    assert!((a - r).abs() <= tol(k, 1.0 + r.abs()), "{g:?} {c:?} {what}[{i}]: {a} vs {r}");
                }
            };
            close(&y, &y0, g.col_rows(), "y");
            close(&dw, &dw0, n * g.out_plane(), "dw");
            close(&dx, &dx0, oc * g.kh * g.kw, "dx");
            let db0: Vec<f32> = (0..oc)
                .map(|o| {
                    (0..n)
                        .map(|i| dy[i * out + o * g.out_plane()..][..g.out_plane()].iter().sum::<f32>())
                        .sum()
                })
                .collect();
            close(&db, &db0, n * g.out_plane(), "db");
        }
        assert!(tried >= 18, "{g:?}: only {tried} choices take it");
    }
}
