//! Tests of `fmnist::augment` (flips, shifts, rotations and the two ways the trainer applies
//! them), the learning-rate schedules, and the figures over several runs (mean, sample
//! standard deviation, ensemble), each against an independent oracle: an index formula, a
//! hand-computed number, or an identity.

use std::collections::HashSet;

use fmnist::augment::{
    augment_batch, cut_out, expand, flip_horizontal, rotate, shift, BatchAugment, StaticAugment,
};
use fmnist::data::Dataset;
use fmnist::presets;
use fmnist::train::{
    self, ensemble, evaluate, fit, mean_and_sample_std, split_for_run, LrSchedule, ScheduleKind, Silent,
    TrainConfig,
};
use fmnist::{Init, Rng, Sequential};

/// Awkward sizes (rows, cols), square and not, odd and even, and the real one.
const SIZES: [(usize, usize); 7] = [(1, 1), (1, 7), (2, 2), (7, 9), (8, 8), (9, 7), (28, 28)];

fn random_image(rows: usize, cols: usize, rng: &mut Rng) -> Vec<u8> {
    (0..rows * cols).map(|_| rng.below(256) as u8).collect()
}

// ---------------------------------------------------------------- flips and shifts

#[test]
fn flip_moves_each_pixel_to_its_mirror_and_twice_is_the_identity() {
    let mut rng = Rng::new(1);
    for (h, w) in SIZES {
        let src = random_image(h, w, &mut rng);
        let mut once = vec![0u8; h * w];
        let mut twice = vec![0u8; h * w];
        flip_horizontal(&src, h, w, &mut once);
        flip_horizontal(&once, h, w, &mut twice);
        assert_eq!(twice, src, "{h}x{w}");
        for y in 0..h {
            for x in 0..w {
                assert_eq!(once[y * w + x], src[y * w + (w - 1 - x)], "{h}x{w} at ({y}, {x})");
            }
        }
    }
}

#[test]
fn shift_moves_a_known_pixel_and_fills_with_zero() {
    // One bright pixel at (5, 7) of a 28x28 image.
    let mut src = vec![0u8; 784];
    src[5 * 28 + 7] = 255;
    let mut dst = vec![9u8; 784];
    shift(&src, 28, 28, 2, -1, &mut dst);
    assert_eq!(dst.iter().filter(|&&v| v != 0).count(), 1);
    assert_eq!(dst[7 * 28 + 6], 255, "(5, 7) moved 2 down and 1 left is (7, 6)");

    // Shifting a constant image uncovers a zero band of exactly |dy| rows and |dx| columns.
    let ones = vec![1u8; 784];
    for (dy, dx) in [(0isize, 0isize), (2, 2), (-2, 1), (0, -2), (27, 0), (28, 0), (0, -40)] {
        shift(&ones, 28, 28, dy, dx, &mut dst);
        for y in 0..28isize {
            for x in 0..28isize {
                let inside = (0..28).contains(&(y - dy)) && (0..28).contains(&(x - dx));
                assert_eq!(dst[(y * 28 + x) as usize], inside as u8, "shift ({dy}, {dx}) at ({y}, {x})");
            }
        }
    }
}

#[test]
fn shift_agrees_with_the_index_formula_on_awkward_sizes() {
    let mut rng = Rng::new(2);
    for (h, w) in SIZES {
        let src = random_image(h, w, &mut rng);
        for (dy, dx) in [(0isize, 0isize), (1, 0), (0, 1), (-1, 2), (2, -2), (-3, -3)] {
            let mut dst = vec![7u8; h * w];
            shift(&src, h, w, dy, dx, &mut dst);
            for y in 0..h as isize {
                for x in 0..w as isize {
                    let (sy, sx) = (y - dy, x - dx);
                    let expect = if sy >= 0 && sy < h as isize && sx >= 0 && sx < w as isize {
                        src[(sy * w as isize + sx) as usize]
                    } else {
                        0
                    };
                    assert_eq!(
                        dst[(y * w as isize + x) as usize],
                        expect,
                        "{h}x{w} ({dy}, {dx}) at ({y}, {x})"
                    );
                }
            }
        }
    }
}

// ---------------------------------------------------------------- rotations

#[test]
fn rotation_by_zero_is_the_identity() {
    let mut rng = Rng::new(3);
    for (h, w) in SIZES {
        let src = random_image(h, w, &mut rng);
        let mut dst = vec![0u8; h * w];
        rotate(&src, h, w, 0.0, &mut dst);
        assert_eq!(dst, src, "{h}x{w}");
    }
}

#[test]
fn rotation_by_90_degrees_is_a_transpose_and_flip() {
    // Positive angles turn the picture clockwise on screen: out[y][x] = in[N-1-x][y].
    let mut rng = Rng::new(4);
    for n in [1, 2, 7, 8, 28] {
        let src = random_image(n, n, &mut rng);
        let mut cw = vec![0u8; n * n];
        let mut ccw = vec![0u8; n * n];
        rotate(&src, n, n, 90.0, &mut cw);
        rotate(&src, n, n, -90.0, &mut ccw);
        for y in 0..n {
            for x in 0..n {
                assert_eq!(cw[y * n + x], src[(n - 1 - x) * n + y], "+90, {n}x{n} at ({y}, {x})");
                assert_eq!(ccw[y * n + x], src[x * n + (n - 1 - y)], "-90, {n}x{n} at ({y}, {x})");
            }
        }
    }
}

#[test]
fn rotation_by_180_degrees_reverses_both_axes() {
    let mut rng = Rng::new(5);
    for (h, w) in SIZES {
        let src = random_image(h, w, &mut rng);
        let mut dst = vec![0u8; h * w];
        rotate(&src, h, w, 180.0, &mut dst);
        for y in 0..h {
            for x in 0..w {
                assert_eq!(dst[y * w + x], src[(h - 1 - y) * w + (w - 1 - x)], "{h}x{w} at ({y}, {x})");
            }
        }
    }
}

#[test]
fn rotation_samples_bilinearly() {
    // Bilinear interpolation reproduces a linear ramp exactly, so where the rotated sample
    // point stays inside the image the output is the ramp at that point, rounded. The sample
    // point here is worked out from the rotation about the centre (13.5, 13.5) directly.
    let ramp = |y: f64, x: f64| 10.0 + 2.0 * y + 4.0 * x;
    let src: Vec<u8> = (0..784).map(|i| ramp((i / 28) as f64, (i % 28) as f64) as u8).collect();
    for deg in [7.0f32, -10.0, 33.0] {
        let mut dst = vec![0u8; 784];
        rotate(&src, 28, 28, deg, &mut dst);
        let t = (deg as f64).to_radians();
        let mut checked = 0;
        for y in 0..28 {
            for x in 0..28 {
                let (u, v) = (y as f64 - 13.5, x as f64 - 13.5);
                let (sy, sx) = (13.5 + t.cos() * u - t.sin() * v, 13.5 + t.sin() * u + t.cos() * v);
                if (0.0..=27.0).contains(&sy) && (0.0..=27.0).contains(&sx) {
                    let expect = ramp(sy, sx);
                    let got = dst[y * 28 + x] as f64;
                    assert!((got - expect).abs() <= 0.5 + 1e-9, "{deg} deg at ({y}, {x}): {got} vs {expect}");
                    checked += 1;
                }
            }
        }
        assert!(checked > 500, "{checked}");
    }
}

#[test]
fn rotation_fills_from_the_nearest_edge() {
    // A constant image stays constant: no black corners (zero fill would leave them).
    let grey = vec![77u8; 784];
    let mut dst = vec![0u8; 784];
    rotate(&grey, 28, 28, 10.0, &mut dst);
    assert!(dst.iter().all(|&v| v == 77));
    // Only the left column is bright. At 45 degrees the top-left output pixel samples
    // (13.5, 13.5 - 13.5 * sqrt(2)) = (13.5, -5.59): outside, on the left, so it repeats the
    // left column's value.
    let left: Vec<u8> = (0..784).map(|i| if i % 28 == 0 { 200 } else { 0 }).collect();
    rotate(&left, 28, 28, 45.0, &mut dst);
    assert_eq!(dst[0], 200);
    // The top-right pixel samples (-5.59, 13.5): the top row's middle, which is dark.
    assert_eq!(dst[27], 0);
}

// ---------------------------------------------------------------- the two uses

#[test]
fn batch_augmentation_switched_off_or_flip_only() {
    let mut rng = Rng::new(6);
    let src: Vec<u8> = (0..5).flat_map(|_| random_image(28, 28, &mut rng)).collect();
    let mut dst = vec![0u8; src.len()];
    augment_batch(&src, 28, 28, &BatchAugment::default(), &mut Rng::new(0), &mut dst);
    assert_eq!(dst, src);
    let flip_all = BatchAugment { max_shift: 0, flip_prob: 1.0, ..BatchAugment::default() };
    augment_batch(&src, 28, 28, &flip_all, &mut Rng::new(0), &mut dst);
    for (d, s) in dst.chunks(784).zip(src.chunks(784)) {
        let mut f = vec![0u8; 784];
        flip_horizontal(s, 28, 28, &mut f);
        assert_eq!(d, &f[..]);
    }
}

#[test]
fn batch_shifts_cover_the_range_flips_half_and_the_seed_fixes_them() {
    // One bright pixel per image at (10, 5), so where it lands tells the flip and the shift:
    // flipped, it starts at (10, 22); columns 3..=7 and 20..=24 do not overlap.
    let n = 2000;
    let mut src = vec![0u8; n * 784];
    for i in 0..n {
        src[i * 784 + 10 * 28 + 5] = 255;
    }
    let cfg = BatchAugment::shift_flip(2);
    let mut dst = vec![0u8; src.len()];
    augment_batch(&src, 28, 28, &cfg, &mut Rng::new(9), &mut dst);
    let mut again = vec![0u8; src.len()];
    augment_batch(&src, 28, 28, &cfg, &mut Rng::new(9), &mut again);
    assert_eq!(dst, again, "same seed, same batch");

    let mut seen_dy = [0usize; 5];
    let mut flips = 0;
    for img in dst.chunks(784) {
        let p = img.iter().position(|&v| v == 255).expect("a 2-pixel shift keeps (10, 5) inside");
        let (y, x) = ((p / 28) as isize, (p % 28) as isize);
        let dy = y - 10;
        assert!((-2..=2).contains(&dy), "dy {dy}");
        let dx_plain = x - 5;
        let dx_flipped = x - 22;
        assert!((-2..=2).contains(&dx_plain) != (-2..=2).contains(&dx_flipped), "x {x}");
        flips += (-2..=2).contains(&dx_flipped) as usize;
        seen_dy[(dy + 2) as usize] += 1;
    }
    assert!(seen_dy.iter().all(|&c| c > n / 5 - 100), "{seen_dy:?}");
    assert!((flips as f64 / n as f64 - 0.5).abs() < 0.05, "{flips} flips of {n}");
}

#[test]
fn cut_out_zeroes_the_square_clipped_to_the_image() {
    // Hand-counted cases on an all-white 28x28 image: inside, at a corner, at an edge.
    for (cy, cx, size, rows, cols) in
        [(10, 12, 8, 6..14, 8..16), (0, 0, 8, 0..4, 0..4), (27, 5, 5, 25..28, 3..8)]
    {
        let mut img = vec![255u8; 784];
        cut_out(&mut img, 28, 28, cy, cx, size);
        for (p, &v) in img.iter().enumerate() {
            let inside = rows.contains(&(p / 28)) && cols.contains(&(p % 28));
            assert_eq!(v == 0, inside, "centre ({cy}, {cx}) size {size}: pixel {p}");
        }
    }
}

#[test]
fn batch_cutout_cuts_one_clipped_square_per_image_after_the_other_draws() {
    let src: Vec<u8> = (0..200).flat_map(|_| vec![200u8; 784]).collect();
    let mut cut = vec![0u8; src.len()];
    let cutout_only = BatchAugment { cutout: 6, ..BatchAugment::default() };
    augment_batch(&src, 28, 28, &cutout_only, &mut Rng::new(3), &mut cut);
    // A 6x6 square whose centre is any pixel keeps between 3x3 (at a corner) and 6x6 inside.
    let mut full = 0;
    for img in cut.chunks(784) {
        let zeros = img.iter().filter(|&&v| v == 0).count();
        assert!((9..=36).contains(&zeros), "{zeros} pixels cut");
        full += (zeros == 36) as usize;
    }
    assert!(full > 100, "most centres lie far enough from the border: {full} of 200");
    // The first image's shift and flip come before its cutout draws: with the cutout on, it is
    // the image without the cutout with some pixels set to 0.
    let shift_flip = BatchAugment::shift_flip(2);
    let with_cutout = BatchAugment { cutout: 6, ..shift_flip };
    let one: Vec<u8> = (0..784).map(|p| (p % 251) as u8 + 1).collect();
    let (mut plain, mut cut) = (vec![0u8; 784], vec![0u8; 784]);
    augment_batch(&one, 28, 28, &shift_flip, &mut Rng::new(5), &mut plain);
    augment_batch(&one, 28, 28, &with_cutout, &mut Rng::new(5), &mut cut);
    assert!(plain.iter().zip(&cut).all(|(&a, &b)| b == a || b == 0));
    assert!(plain.iter().zip(&cut).filter(|(&a, &b)| a != b).count() >= 1);
}

fn dataset(n: usize, seed: u64) -> Dataset {
    let mut rng = Rng::new(seed);
    let images = (0..n).flat_map(|_| random_image(28, 28, &mut rng)).collect();
    Dataset::new(images, (0..n).map(|i| (i % 10) as u8).collect(), 28, 28)
}

#[test]
fn static_copies_follow_the_originals_with_their_labels() {
    let ds = dataset(7, 10);
    // No rotation, no flip: the copies are the originals.
    let same = StaticAugment { copies: 2, max_degrees: 0.0, flip_prob: 0.0, before_split: false };
    let e = expand(&ds, &same, &mut Rng::new(1));
    assert_eq!(e.len(), 21);
    assert_eq!(e.images, ds.images.repeat(3));
    assert_eq!(e.labels, ds.labels.repeat(3));
    // Always flipped, no rotation: the originals, then their mirrors twice.
    let mirror = StaticAugment { copies: 2, max_degrees: 0.0, flip_prob: 1.0, before_split: false };
    let e = expand(&ds, &mirror, &mut Rng::new(1));
    assert_eq!(&e.images[..7 * 784], &ds.images[..]);
    for j in 7..21 {
        let mut f = vec![0u8; 784];
        flip_horizontal(ds.image(j % 7), 28, 28, &mut f);
        assert_eq!(e.image(j), &f[..], "copy {j}");
    }
    // No copies: the data set itself.
    assert_eq!(expand(&ds, &StaticAugment::default(), &mut Rng::new(1)), ds);
}

/// Each image of `ds` names itself in its first two pixels (index = 256 * p0 + p1), so a
/// split's images can be traced back to their originals.
fn numbered(n: usize) -> Dataset {
    let images = (0..n)
        .flat_map(|i| (0..784).map(move |k| if k < 2 { [(i / 256) as u8, (i % 256) as u8][k] } else { 0 }))
        .collect();
    Dataset::new(images, (0..n).map(|i| (i % 10) as u8).collect(), 28, 28)
}

fn origin(ds: &Dataset, j: usize) -> usize {
    let im = ds.image(j);
    256 * im[0] as usize + im[1] as usize
}

#[test]
fn copies_before_the_split_put_twins_on_both_sides_and_after_it_none() {
    let ds = numbered(50);
    // Copies equal to their originals (no rotation, no flip), so each names its original.
    let same = StaticAugment { copies: 2, max_degrees: 0.0, flip_prob: 0.0, before_split: false };
    let mut cfg = TrainConfig { static_augment: same, ..TrainConfig::default() };

    // Split first (the default): 40 + 10 originals, disjoint; the trainer copies the 40 later.
    let (train, val) = split_for_run(&ds, &cfg, 0.2, &mut Rng::new(3));
    assert_eq!((train.len(), val.len()), (40, 10));
    let seen: HashSet<usize> = (0..train.len()).map(|j| origin(&train, j)).collect();
    assert!((0..val.len()).all(|j| !seen.contains(&origin(&val, j))));

    // The notebook's order: 150 images (50 originals and 100 copies), split 120 / 30.
    cfg.static_augment.before_split = true;
    let (train, val) = split_for_run(&ds, &cfg, 0.2, &mut Rng::new(3));
    assert_eq!((train.len(), val.len()), (120, 30));
    // Every original appears three times over the two sides, with its label.
    let mut count = vec![0usize; 50];
    for (d, j) in (0..train.len()).map(|j| (&train, j)).chain((0..val.len()).map(|j| (&val, j))) {
        let o = origin(d, j);
        count[o] += 1;
        assert_eq!(d.labels[j] as usize, o % 10);
    }
    assert!(count.iter().all(|&c| c == 3), "{count:?}");
    // So training sees a version of every original unless all three of its versions drew
    // validation, and validation shares originals with training.
    let seen: HashSet<usize> = (0..train.len()).map(|j| origin(&train, j)).collect();
    let twins = (0..val.len()).filter(|&j| seen.contains(&origin(&val, j))).count();
    assert!(seen.len() > 40 && twins > 0, "{} originals in training, {twins} twins", seen.len());
    // The trainer makes no further copies of images that already hold them.
    assert!(!cfg.static_augment.after_split() && same.after_split());
}

#[test]
fn static_copies_are_rotations_within_the_range_in_the_documented_draw_order() {
    let ds = dataset(5, 11);
    let cfg = StaticAugment::cmasch();
    let e = expand(&ds, &cfg, &mut Rng::new(42));
    assert_eq!(e, expand(&ds, &cfg, &mut Rng::new(42)), "same seed, same copies");
    assert_ne!(e, expand(&ds, &cfg, &mut Rng::new(43)));
    // Replay the draws: per copy of each image, the angle, then the flip.
    let mut rng = Rng::new(42);
    let mut flips = 0;
    for j in 5..15 {
        let angle = rng.uniform(-10.0, 10.0);
        let flip = rng.next_f32() < 0.5;
        assert!(angle.abs() <= 10.0);
        let mut r = vec![0u8; 784];
        rotate(ds.image(j % 5), 28, 28, angle, &mut r);
        let expect = if flip {
            flips += 1;
            let mut f = vec![0u8; 784];
            flip_horizontal(&r, 28, 28, &mut f);
            f
        } else {
            r
        };
        assert_eq!(e.image(j), &expect[..], "copy {j}");
    }
    assert!(flips > 0 && flips < 10, "{flips} of 10 copies flipped");
}

#[test]
fn augmentation_knobs_are_checked() {
    assert!(BatchAugment { max_shift: 2, flip_prob: 1.5, ..BatchAugment::default() }.validate().is_err());
    assert!(StaticAugment { copies: 2, max_degrees: -1.0, flip_prob: 0.5, before_split: false }
        .validate()
        .is_err());
    assert!(StaticAugment { copies: 2, max_degrees: 10.0, flip_prob: f32::NAN, before_split: false }
        .validate()
        .is_err());
    assert!(StaticAugment::cmasch().validate().is_ok() && BatchAugment::shift_flip(2).validate().is_ok());
    assert!(!BatchAugment::default().is_active() && !StaticAugment::default().is_active());
}

// ---------------------------------------------------------------- learning-rate schedules

fn close(a: f32, b: f64) -> bool {
    (a as f64 - b).abs() <= 1e-6 * b.abs().max(1e-3)
}

#[test]
fn constant_schedule_is_constant() {
    let s = LrSchedule::constant();
    for t in [0, 1, 50, 99] {
        assert_eq!(s.lr_at(0.001, t, 10, 10), 0.001);
    }
}

#[test]
fn cosine_schedule_first_middle_and_last_steps() {
    // 2 epochs of 5 steps, no warm-up: T = 10; lr (1 + cos(pi t / 10)) / 2.
    let s = LrSchedule::cosine(0);
    assert!(close(s.lr_at(1.0, 0, 5, 2), 1.0));
    assert!(close(s.lr_at(1.0, 5, 5, 2), 0.5), "midpoint: cos(pi/2) = 0");
    // t = 9: (1 + cos(0.9 pi)) / 2 = (1 - 0.9510565163) / 2 = 0.02447174185.
    assert!(close(s.lr_at(1.0, 9, 5, 2), 0.024_471_741_85));
    assert!(close(s.lr_at(0.002, 9, 5, 2), 0.002 * 0.024_471_741_85));
}

#[test]
fn cosine_schedule_with_warm_up() {
    // 3 epochs of 4 steps, 1 warm-up epoch: W = 4, T = 12.
    let s = LrSchedule::cosine(1);
    let expect = [
        0.25,
        0.5,
        0.75,
        1.0,             // warm-up: (t + 1) / 4
        1.0,             // t = 4: cos(0) decay starts at lr
        0.961_939_766_3, // (1 + cos(pi / 8)) / 2
        0.853_553_390_6, // (1 + cos(pi / 4)) / 2
        0.691_341_716_2, // (1 + cos(3 pi / 8)) / 2
        0.5,
        0.308_658_283_8,
        0.146_446_609_4,
        0.038_060_233_7, // (1 + cos(7 pi / 8)) / 2
    ];
    for (t, &e) in expect.iter().enumerate() {
        assert!(close(s.lr_at(1.0, t, 4, 3), e), "t {t}: {} vs {e}", s.lr_at(1.0, t, 4, 3));
    }
    // A warm-up as long as the run: a ramp and no decay.
    let long = LrSchedule::cosine(5);
    assert!(close(long.lr_at(1.0, 5, 3, 2), 1.0));
    assert!(close(long.lr_at(1.0, 2, 3, 2), 0.5));
}

#[test]
fn step_schedule_decays_every_few_epochs() {
    let s = LrSchedule { kind: ScheduleKind::Step { every_epochs: 2, gamma: 0.1 }, warmup_epochs: 0 };
    for t in 0..6 {
        assert!(close(s.lr_at(1.0, t, 3, 9), 1.0), "t {t}");
    }
    for t in 6..12 {
        assert!(close(s.lr_at(1.0, t, 3, 9), 0.1), "t {t}");
    }
    assert!(close(s.lr_at(1.0, 12, 3, 9), 0.01));
    assert!(LrSchedule { kind: ScheduleKind::Step { every_epochs: 0, gamma: 0.1 }, warmup_epochs: 0 }
        .validate()
        .is_err());
}

// ---------------------------------------------------------------- several runs

#[test]
fn mean_and_sample_std_of_hand_computed_numbers() {
    // 2, 4, 4, 4, 5, 5, 7, 9: mean 5, squares of deviations sum to 32, sample variance 32/7.
    let (m, s) = mean_and_sample_std(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]);
    assert_eq!(m, 5.0);
    assert!((s - (32.0f64 / 7.0).sqrt()).abs() < 1e-12, "{s}");
    let (m, s) = mean_and_sample_std(&[0.9, 0.92]);
    assert!((m - 0.91).abs() < 1e-12 && (s - 0.02 / 2f64.sqrt()).abs() < 1e-12);
    assert!(mean_and_sample_std(&[3.0]).1.is_nan(), "one value has no sample deviation");
}

#[test]
fn ensemble_of_hand_computed_probabilities() {
    // Two models, two images, three classes; binary fractions, so the means are exact.
    let a = [0.5, 0.25, 0.25, 0.25, 0.5, 0.25];
    let b = [0.25, 0.75, 0.0, 0.0, 0.25, 0.75];
    let labels = [1u8, 0];
    let e = ensemble(&[&a, &b], &labels, 3);
    // Means: [0.375, 0.5, 0.125] (argmax 1, right) and [0.125, 0.375, 0.5] (argmax 2, wrong).
    assert_eq!(e.probabilities, vec![0.375, 0.5, 0.125, 0.125, 0.375, 0.5]);
    assert_eq!(e.predictions, vec![1, 2]);
    assert_eq!(e.accuracy, 0.5);
    let loss = -(0.5f64.ln() + 0.125f64.ln()) / 2.0;
    assert!((e.loss as f64 - loss).abs() < 1e-6, "{} vs {loss}", e.loss);
    // An exact tie goes to the first class.
    assert_eq!(ensemble(&[&[0.25, 0.75], &[0.75, 0.25]], &[1], 2).predictions, vec![0]);
    // A probability of 0 for the true class costs -ln(1e-7), not infinity.
    let c = ensemble(&[&[1.0, 0.0]], &[1], 2);
    assert!((c.loss as f64 - 16.118_095_65).abs() < 1e-4, "{}", c.loss);
}

#[test]
fn ensemble_of_identical_models_is_the_model() {
    let p = presets::preset("c1").unwrap();
    let mut model =
        Sequential::new(&presets::INPUT_SHAPE, &p.layers, Init::GlorotUniform, &mut Rng::new(3)).unwrap();
    let ds = dataset(50, 12);
    let norm = train::Normalization::default();
    let single = evaluate(&mut model, &norm, &ds, 16);
    let e = ensemble(&[&single.probabilities, &single.probabilities, &single.probabilities], &ds.labels, 10);
    assert_eq!(e.predictions, single.predictions);
    assert_eq!(e.accuracy, single.accuracy);
    assert!((e.loss - single.loss).abs() < 1e-5 * single.loss.max(1.0), "{} vs {}", e.loss, single.loss);
    for (x, y) in e.probabilities.iter().zip(&single.probabilities) {
        assert!((x - y).abs() <= 1e-7);
    }
}

#[test]
fn flip_tta_averages_the_image_and_its_mirror() {
    let p = presets::preset("c1").unwrap();
    let mut model =
        Sequential::new(&presets::INPUT_SHAPE, &p.layers, Init::GlorotUniform, &mut Rng::new(4)).unwrap();
    let norm = train::Normalization::default();
    // On mirror-symmetric images TTA changes nothing: both halves of the average are equal.
    let mut sym = dataset(30, 13);
    for img in sym.images.chunks_exact_mut(784) {
        for r in 0..28 {
            for c in 14..28 {
                img[r * 28 + c] = img[r * 28 + 27 - c];
            }
        }
    }
    let plain = evaluate(&mut model, &norm, &sym, 8);
    let tta = train::evaluate_flip_tta(&mut model, &norm, &sym, 8);
    assert_eq!(tta.predictions, plain.predictions);
    for (x, y) in tta.probabilities.iter().zip(&plain.probabilities) {
        assert!((x - y).abs() <= 1e-7, "{x} vs {y}");
    }
    // On other images it is the two-member ensemble of the images and their mirror images.
    let ds = dataset(30, 14);
    let mut mirrored = ds.clone();
    for (d, s) in mirrored.images.chunks_exact_mut(784).zip(ds.images.chunks_exact(784)) {
        flip_horizontal(s, 28, 28, d);
    }
    let (a, b) = (evaluate(&mut model, &norm, &ds, 8), evaluate(&mut model, &norm, &mirrored, 8));
    let want = ensemble(&[&a.probabilities, &b.probabilities], &ds.labels, 10);
    let got = train::evaluate_flip_tta(&mut model, &norm, &ds, 8);
    assert_eq!(got.probabilities, want.probabilities);
    assert_ne!(got.probabilities, a.probabilities, "random images are not symmetric");
}

// ---------------------------------------------------------------- the trainer

fn small_model(seed: u64) -> Sequential {
    let layers = [
        fmnist::LayerConfig::conv(4, 3, fmnist::Padding::Same),
        fmnist::LayerConfig::batch_norm(),
        fmnist::LayerConfig::Relu,
        fmnist::LayerConfig::MaxPool2d { size: 2, stride: 2 },
        fmnist::LayerConfig::Flatten,
        fmnist::LayerConfig::Dense { units: 10 },
    ];
    Sequential::new(&presets::INPUT_SHAPE, &layers, Init::GlorotUniform, &mut Rng::new(seed)).unwrap()
}

fn all_weights(m: &Sequential) -> Vec<f32> {
    m.params().iter().flat_map(|p| p.value.data().to_vec()).collect()
}

#[test]
fn fit_follows_the_schedule_and_the_seed_fixes_augmented_runs() {
    let (train_set, val) = (dataset(96, 20), dataset(20, 21));
    let cfg = TrainConfig {
        epochs: 3,
        batch_size: 32,
        schedule: LrSchedule::cosine(1),
        label_smoothing: 0.1,
        augment: BatchAugment::shift_flip(2),
        static_augment: StaticAugment::cmasch(),
        ..TrainConfig::default()
    };
    let run = |seed: u64| {
        let mut m = small_model(1);
        let r = fit(&mut m, &cfg, &train_set, &val, &mut Rng::new(seed), &mut Silent);
        (all_weights(&m), r)
    };
    let (w1, r1) = run(5);
    let (w2, _) = run(5);
    let (w3, _) = run(6);
    assert_eq!(w1, w2, "same seed, same weights, augmentation included");
    assert_ne!(w1, w3);
    // 96 images and 2 copies each: 288 a pass, 9 batches an epoch, 27 steps. The history's
    // rate is the one of each epoch's last step: warm-up ends at t = 8, then cosine.
    let lrs: Vec<f32> = r1.history.iter().map(|s| s.lr).collect();
    let expect = [
        1e-3,
        1e-3 * 0.5 * (1.0 + (std::f64::consts::PI * 8.0 / 18.0).cos()),
        1e-3 * 0.5 * (1.0 + (std::f64::consts::PI * 17.0 / 18.0).cos()),
    ];
    for (g, e) in lrs.iter().zip(expect) {
        assert!(close(*g, e), "{lrs:?} vs {expect:?}");
    }
}

#[test]
fn fit_without_the_new_knobs_matches_a_constant_rate_run() {
    // Setting the rate before every step must not disturb the update: a constant schedule
    // and a step schedule whose factor is 1 give bit-identical weights.
    let (train_set, val) = (dataset(64, 30), dataset(16, 31));
    let base = TrainConfig { epochs: 2, batch_size: 16, ..TrainConfig::default() };
    let step1 = TrainConfig {
        schedule: LrSchedule { kind: ScheduleKind::Step { every_epochs: 1, gamma: 1.0 }, warmup_epochs: 0 },
        ..base.clone()
    };
    let mut a = small_model(2);
    let mut b = small_model(2);
    fit(&mut a, &base, &train_set, &val, &mut Rng::new(1), &mut Silent);
    fit(&mut b, &step1, &train_set, &val, &mut Rng::new(1), &mut Silent);
    assert_eq!(all_weights(&a), all_weights(&b));
}

#[test]
fn train_config_checks_the_new_knobs() {
    let ok = TrainConfig::default();
    assert!(ok.validate().is_ok());
    let bad_wd = TrainConfig { optimizer: train::with_weight_decay(ok.optimizer, -1.0), ..ok.clone() };
    assert!(bad_wd.validate().unwrap_err().contains("weight decay"));
    let bad_flip = TrainConfig {
        augment: BatchAugment { max_shift: 1, flip_prob: 2.0, ..BatchAugment::default() },
        ..ok.clone()
    };
    assert!(bad_flip.validate().unwrap_err().contains("flip"));
    let bad_smooth = TrainConfig { label_smoothing: 1.0, ..ok };
    assert!(bad_smooth.validate().unwrap_err().contains("label smoothing"));
    let wd = train::with_weight_decay(fmnist::optim::OptimizerConfig::sgd(0.01, 0.9), 5e-4);
    assert_eq!(train::weight_decay(&wd), 5e-4);
    assert_eq!(wd.lr(), 0.01);
}

#[test]
fn normalization_of_raw_pixels_matches_the_dataset_path() {
    let ds = dataset(6, 40);
    let idx = [4, 0, 5];
    let norm = train::Normalization { scale: 1.0 / 255.0, mean: 0.2, std: 0.3 };
    let gathered: Vec<u8> = idx.iter().flat_map(|&i| ds.image(i).to_vec()).collect();
    let a = norm.pixels(&gathered, 3, 28, 28);
    let b = norm.batch(&ds, &idx);
    assert_eq!(a.shape(), &[3, 1, 28, 28]);
    assert_eq!(a.data(), b.data());
    assert_eq!(a.data()[0], (ds.image(4)[0] as f32 / 255.0 - 0.2) / 0.3);
}

#[test]
fn run_streams_fork_in_the_documented_order() {
    let mut root = Rng::new(77);
    let (split, init, fit_rng) = (root.fork(), root.fork(), root.fork());
    let s = train::RunStreams::new(77);
    assert_eq!((s.split, s.init, s.fit), (split, init, fit_rng));
}
