//! Tests of `fmnist::mix` (mixup and CutMix) against hand-computed batches, the Beta and
//! Gamma samplers against their moments, and a short training run with mixing on.

use fmnist::mix::{beta_symmetric, cutmix, cutmix_box, gamma, mix_batch, mixup, BatchMix};
use fmnist::train::{fit, Silent, TrainConfig};
use fmnist::{presets, Init, Rng, Sequential};

#[test]
fn mixup_blends_each_image_with_its_mirror_in_the_batch() {
    // Two images of two pixels, lam 0.25: a' = 0.25 a + 0.75 b, b' = 0.25 b + 0.75 a.
    let mut x = vec![1.0, 2.0, 3.0, 5.0];
    mixup(&mut x, 2, 0.25);
    assert_eq!(x, vec![2.5, 4.25, 1.5, 2.75]);
    // Three images: the middle one is its own partner and stays.
    let mut x = vec![0.0, 8.0, 4.0];
    mixup(&mut x, 3, 0.5);
    assert_eq!(x, vec![2.0, 8.0, 2.0]);
}

#[test]
fn cutmix_pastes_the_box_from_the_partner_and_returns_the_share_left() {
    // Three 4x4 images filled with 1, 2, 3; the box rows 1..3, columns 0..2 (4 of 16 pixels).
    let mut x: Vec<f32> = (1..=3).flat_map(|v| vec![v as f32; 16]).collect();
    let lam = cutmix(&mut x, 3, 4, 4, (1, 3, 0, 2));
    assert_eq!(lam, 0.75);
    let in_box = |k: usize| (1..3).contains(&(k / 4)) && k % 4 < 2;
    for k in 0..16 {
        assert_eq!(x[k], if in_box(k) { 3.0 } else { 1.0 }, "image 0 pixel {k}");
        assert_eq!(x[16 + k], 2.0, "image 1 is its own partner");
        assert_eq!(x[32 + k], if in_box(k) { 1.0 } else { 3.0 }, "image 2 pixel {k}");
    }
}

#[test]
fn cutmix_box_has_the_papers_size_and_is_clipped() {
    // lam 0.75: sqrt(0.25) = 0.5 of each side, 14 of 28, half of it either side of the centre.
    assert_eq!(cutmix_box(28, 28, 0.75, 10, 12), (3, 17, 5, 19));
    // Centred in a corner: clipped to the image.
    assert_eq!(cutmix_box(28, 28, 0.75, 27, 0), (20, 28, 0, 7));
    // lam 1: no box; lam 0: the whole side (28 wide, centred at 14).
    let (y0, y1, _, _) = cutmix_box(28, 28, 1.0, 5, 5);
    assert_eq!(y0, y1);
    assert_eq!(cutmix_box(28, 28, 0.0, 14, 14), (0, 28, 0, 28));
}

/// Sample mean and variance of `n` draws.
fn moments(n: usize, mut draw: impl FnMut() -> f64) -> (f64, f64) {
    let v: Vec<f64> = (0..n).map(|_| draw()).collect();
    let mean = v.iter().sum::<f64>() / n as f64;
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    (mean, var)
}

#[test]
fn gamma_and_beta_samples_have_their_moments() {
    let mut rng = Rng::new(7);
    // Gamma(k, 1): mean k, variance k (below and above 1, where the method changes).
    for k in [0.3, 1.0, 3.0] {
        let (m, v) = moments(40_000, || gamma(k, &mut rng));
        assert!((m - k).abs() < 0.03 * k.max(1.0), "Gamma({k}) mean {m}");
        assert!((v - k).abs() < 0.06 * k.max(1.0), "Gamma({k}) variance {v}");
    }
    // Beta(a, a): mean 1/2, variance 1 / (4 (2a + 1)); within [0, 1].
    for a in [0.2f32, 1.0, 4.0] {
        let (m, v) = moments(40_000, || {
            let b = beta_symmetric(a, &mut rng) as f64;
            assert!((0.0..=1.0).contains(&b));
            b
        });
        let want = 1.0 / (4.0 * (2.0 * a as f64 + 1.0));
        assert!((m - 0.5).abs() < 0.01, "Beta({a}) mean {m}");
        assert!((v - want).abs() < 0.05 * want, "Beta({a}) variance {v}, want {want}");
    }
}

#[test]
fn mix_batch_draws_in_the_documented_order_and_nothing_when_off() {
    let batch: Vec<f32> = (0..4 * 9).map(|v| v as f32).collect();
    // Off: the batch and the stream untouched.
    let mut x = batch.clone();
    let mut rng = Rng::new(3);
    assert_eq!(mix_batch(&mut x, 4, 3, 3, &BatchMix::default(), &mut rng), None);
    assert_eq!((x, rng.state()), (batch.clone(), Rng::new(3).state()));
    // Mixup alone: lam, then the blend.
    let mut x = batch.clone();
    let m = mix_batch(&mut x, 4, 3, 3, &BatchMix { mixup: 0.4, cutmix: 0.0 }, &mut Rng::new(3)).unwrap();
    let mut replay = Rng::new(3);
    let lam = beta_symmetric(0.4, &mut replay);
    let mut want = batch.clone();
    mixup(&mut want, 4, lam);
    assert_eq!((m, x), (lam, want));
    // CutMix alone: lam, the centre row, the centre column, then the box.
    let mut x = batch.clone();
    let m = mix_batch(&mut x, 4, 3, 3, &BatchMix { mixup: 0.0, cutmix: 1.0 }, &mut Rng::new(3)).unwrap();
    let mut replay = Rng::new(3);
    let lam = beta_symmetric(1.0, &mut replay);
    let (cy, cx) = (replay.below(3) as usize, replay.below(3) as usize);
    let mut want = batch.clone();
    let left = cutmix(&mut want, 4, 3, 3, cutmix_box(3, 3, lam, cy, cx));
    assert_eq!((m, x), (left, want));
    // Both: a coin first picks one; over many batches both get picked.
    let mut rng = Rng::new(4);
    let both = BatchMix { mixup: 0.4, cutmix: 1.0 };
    let (mut blends, mut boxes) = (0, 0);
    for _ in 0..50 {
        let mut x = batch.clone();
        mix_batch(&mut x, 4, 3, 3, &both, &mut rng).unwrap();
        // CutMix leaves every value one of the batch's own; mixup (0 < lam < 1) makes new ones.
        if x.iter().all(|v| batch.contains(v)) {
            boxes += 1
        } else {
            blends += 1
        }
    }
    assert!(blends > 10 && boxes > 10, "{blends} blends, {boxes} boxes");
}

#[test]
fn bad_alphas_are_refused() {
    assert!(BatchMix { mixup: -0.1, cutmix: 0.0 }.validate().is_err());
    assert!(BatchMix { mixup: 0.0, cutmix: f32::NAN }.validate().is_err());
    assert!(BatchMix { mixup: 0.0, cutmix: 11.0 }.validate().unwrap_err().contains("cutmix"));
    assert!(BatchMix { mixup: 0.2, cutmix: 1.0 }.validate().is_ok());
}

#[test]
fn a_model_learns_with_mixing_on_and_it_changes_the_run() {
    // Tiny separable data: each class a bright square at its own place.
    let n = 200;
    let mut images = vec![0u8; n * 784];
    let labels: Vec<u8> = (0..n).map(|i| (i % 4) as u8).collect();
    for (i, &l) in labels.iter().enumerate() {
        let (y0, x0) = (4 + 10 * (l as usize / 2), 4 + 10 * (l as usize % 2));
        for y in y0..y0 + 8 {
            images[i * 784 + y * 28 + x0..i * 784 + y * 28 + x0 + 8].fill(200);
        }
    }
    let ds = fmnist::data::Dataset::new(images, labels, 28, 28);
    let preset = presets::preset("c1").unwrap();
    let run = |mix: BatchMix| {
        let cfg = TrainConfig { epochs: 3, batch_size: 20, mix, ..TrainConfig::default() };
        let mut model =
            Sequential::new(&[1, 28, 28], &preset.layers, Init::GlorotUniform, &mut Rng::new(1)).unwrap();
        let r = fit(&mut model, &cfg, &ds, &ds, &mut Rng::new(2), &mut Silent);
        (r.history.last().unwrap().val_accuracy.unwrap(), r.history.last().unwrap().loss)
    };
    let (plain_acc, plain_loss) = run(BatchMix::default());
    let (mixed_acc, mixed_loss) = run(BatchMix { mixup: 0.4, cutmix: 1.0 });
    assert!(plain_acc > 0.95 && mixed_acc > 0.95, "{plain_acc} {mixed_acc}");
    // Mixed targets cannot be fitted to zero loss: the training loss stays higher.
    assert!(mixed_loss > plain_loss, "{mixed_loss} vs {plain_loss}");
}
