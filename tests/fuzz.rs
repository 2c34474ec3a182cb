//! Fuzz tests of every reader of user files (IDX, CSV, PNG, PGM, model files) and of the
//! architecture check: seeded mutations of valid inputs, each parsed under `catch_unwind`, so
//! a panic becomes a test failure that prints the seed, the case number and the input.
//!
//! The readers must never panic, and must never allocate more than the input justifies: they
//! read a bounded number of bytes and compare every size a header declares with the bytes
//! that are there before allocating for it. (`tests/hostile.rs` checks the allocation side
//! through the binary, under a memory limit.)
//!
//! The mutator works on bytes: bit flips, bytes and 32-bit words set to the values that break
//! parsers (0, 1, 0x7f, 0x80, 0xff, 2^31 - 1, 2^32 - 1, ...), runs inserted, deleted,
//! duplicated or cut off. Model files also get mutations of their JSON header (numbers turned
//! huge, zero or negative; layer kinds, dtypes and names swapped; layers repeated or replaced)
//! with the length prefix kept right, which reach the checks behind the safetensors parser.
//!
//! Case counts, and the time of each test alone on one core of the 2-core machine (release):
//! IDX images and labels 100,000 each (0.6 s), CSV 100,000 (0.8 s), PNG and PGM 100,000 each
//! (0.5 s), model files 50,000 byte mutations and 50,000 header mutations, every accepted
//! one run on both engines (2.7 s), architectures 20,000 (1.1 s). `FMNIST_FUZZ_CASES=N` runs
//! N cases per target instead (e.g. 1,000,000 for a long session); `FMNIST_FUZZ_SEED=S`
//! changes the seed.

use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use fmnist::limits::{check_architecture, Architecture};
use fmnist::model::{LayerConfig, Padding};
use fmnist::{Engine, Init, Mode, Rng, Sequential, Tape, Tensor};

/// Cases per target: the default, or `FMNIST_FUZZ_CASES`.
fn cases(default: usize) -> usize {
    std::env::var("FMNIST_FUZZ_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

fn seed() -> u64 {
    std::env::var("FMNIST_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(14)
}

/// Values that break parsers: boundaries of signed and unsigned widths.
const WORDS: [u32; 12] = [0, 1, 2, 3, 28, 255, 0x7f, 0x80, 0xffff, 0x7fff_ffff, 0x8000_0000, 0xffff_ffff];

/// One random mutation of `input` (never longer than twice the input plus 64 bytes).
fn mutate(input: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut v = input.to_vec();
    let rounds = 1 + rng.below(4);
    for _ in 0..rounds {
        let len = v.len() as u64;
        let at = |rng: &mut Rng| if len == 0 { 0 } else { rng.below(len) as usize };
        match rng.below(9) {
            0 if len > 0 => {
                let i = at(rng);
                v[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = at(rng);
                v[i] = [0u8, 1, 0x7f, 0x80, 0xff, b'0', b'9', b'\n', b',', b' '][rng.below(10) as usize];
            }
            2 if len >= 4 => {
                let i = rng.below(len - 3) as usize;
                let w = WORDS[rng.below(WORDS.len() as u64) as usize];
                let bytes = if rng.below(2) == 0 { w.to_be_bytes() } else { w.to_le_bytes() };
                v[i..i + 4].copy_from_slice(&bytes);
            }
            3 => {
                let n = v.len().min(input.len() + 64);
                v.truncate(at(rng).min(n));
            }
            4 if len > 0 => {
                let i = at(rng);
                let n = (rng.below(64) as usize).min(v.len() - i);
                v.drain(i..i + n);
            }
            5 if v.len() < 2 * input.len() + 64 => {
                let i = at(rng);
                let n = rng.below(16) as usize;
                let byte = rng.below(256) as u8;
                v.splice(i..i, std::iter::repeat_n(byte, n));
            }
            6 if len > 0 && v.len() < 2 * input.len() + 64 => {
                // Duplicate a run.
                let i = at(rng);
                let n = (rng.below(32) as usize).min(v.len() - i);
                let run: Vec<u8> = v[i..i + n].to_vec();
                let j = at(rng);
                v.splice(j..j, run);
            }
            7 if len >= 8 => {
                // A 64-bit word, as a safetensors length or offset would be.
                let i = rng.below(len - 7) as usize;
                let w = [0u64, 1, 1 << 31, 1 << 32, 1 << 40, 1 << 62, u64::MAX][rng.below(7) as usize];
                v[i..i + 8].copy_from_slice(&w.to_le_bytes());
            }
            _ => {}
        }
    }
    v
}

/// Runs `parse` on `cases` mutations of the seeds (and on the seeds themselves); a panic fails
/// the test with the case and the input, written to a file for replay.
fn fuzz<T>(target: &str, seeds: &[Vec<u8>], cases: usize, mut parse: impl FnMut(&[u8]) -> T) {
    let mut rng =
        Rng::new(seed() ^ target.bytes().fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64)));
    for case in 0..cases + seeds.len() {
        let input = match seeds.get(case) {
            Some(s) => s.clone(),
            None => mutate(&seeds[rng.below(seeds.len() as u64) as usize], &mut rng),
        };
        if catch_unwind(AssertUnwindSafe(|| parse(&input))).is_err() {
            let path = std::env::temp_dir().join(format!("fmnist-fuzz-{target}-{case}.bin"));
            let _ = std::fs::write(&path, &input);
            panic!(
                "{target}: case {case} (seed {}) panicked; the input ({} bytes) is in {}",
                seed(),
                input.len(),
                path.display()
            );
        }
    }
}

// ------------------------------------------------------------------------------------------
// IDX and CSV
// ------------------------------------------------------------------------------------------

fn idx_images(n: u32, rows: u32, cols: u32) -> Vec<u8> {
    let mut v = Vec::new();
    for x in [0x803, n, rows, cols] {
        v.extend_from_slice(&x.to_be_bytes());
    }
    v.extend((0..n * rows * cols).map(|i| (i * 37 % 256) as u8));
    v
}

fn idx_labels(n: u32) -> Vec<u8> {
    let mut v = Vec::new();
    for x in [0x801, n] {
        v.extend_from_slice(&x.to_be_bytes());
    }
    v.extend((0..n).map(|i| (i % 10) as u8));
    v
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

#[test]
fn fuzz_idx_readers() {
    let path = Path::new("fuzz-idx");
    let images = vec![idx_images(3, 4, 5), idx_images(1, 28, 28), gzip(&idx_images(2, 3, 3))];
    fuzz("idx-images", &images, cases(100_000), |b| {
        if let Ok(r) = fmnist::data::decode_idx_images(path, b.to_vec()) {
            assert_eq!(r.images.len(), r.n * r.rows * r.cols, "sizes agree with the pixels");
        }
    });
    let labels = vec![idx_labels(7), gzip(&idx_labels(12))];
    fuzz("idx-labels", &labels, cases(100_000), |b| {
        if let Ok(l) = fmnist::data::decode_idx_labels(path, b.to_vec()) {
            assert!(l.iter().all(|&x| x < 10));
        }
    });
}

fn csv_text(n: usize) -> Vec<u8> {
    let mut s = String::from("label");
    for i in 1..=784 {
        s += &format!(",pixel{i}");
    }
    s.push('\n');
    for r in 0..n {
        s += &(r % 10).to_string();
        for p in 0..784 {
            s += &format!(",{}", (r * 31 + p * 7) % 256);
        }
        s += if r % 2 == 0 { "\n" } else { "\r\n" };
    }
    s.into_bytes()
}

#[test]
fn fuzz_csv_reader() {
    let seeds = vec![csv_text(2), csv_text(1)];
    fuzz("csv", &seeds, cases(100_000), |b| {
        if let Ok(ds) = fmnist::data::parse_csv(Path::new("fuzz.csv"), b) {
            assert_eq!(ds.images.len(), ds.len() * 784);
        }
    });
}

// ------------------------------------------------------------------------------------------
// PNG and PGM
// ------------------------------------------------------------------------------------------

fn png(width: u32, height: u32, color: png::ColorType, depth: png::BitDepth) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, width, height);
        enc.set_color(color);
        enc.set_depth(depth);
        if color == png::ColorType::Indexed {
            enc.set_palette(vec![0u8, 0, 0, 255, 255, 255, 10, 200, 30, 40, 50, 60]);
            enc.set_trns(vec![255u8, 0]);
        }
        let mut w = enc.write_header().unwrap();
        let bits = color.samples() * depth as usize;
        let line = (width as usize * bits).div_ceil(8);
        let data: Vec<u8> =
            (0..line * height as usize).map(|i| (i * 53 % 256) as u8 & mask(color, depth)).collect();
        w.write_image_data(&data).unwrap();
    }
    out
}

/// Keeps palette indices within the 4-entry palette.
fn mask(color: png::ColorType, depth: png::BitDepth) -> u8 {
    match (color, depth) {
        (png::ColorType::Indexed, png::BitDepth::Eight) => 3,
        (png::ColorType::Indexed, _) => 0b0101_0101,
        _ => 0xff,
    }
}

#[test]
fn fuzz_image_decoders() {
    use png::{BitDepth as D, ColorType as C};
    let seeds = vec![
        png(5, 4, C::Grayscale, D::Eight),
        png(3, 7, C::Rgba, D::Eight),
        png(6, 2, C::Rgb, D::Sixteen),
        png(9, 3, C::Indexed, D::Two),
        png(4, 4, C::GrayscaleAlpha, D::Eight),
        png(17, 1, C::Grayscale, D::One),
    ];
    fuzz("png", &seeds, cases(100_000), |b| {
        if let Ok(img) = fmnist::image::decode_png(b) {
            assert_eq!(img.pixels.len(), img.width * img.height);
            assert_eq!(fmnist::image::to_fashion_mnist(&img).len(), 784);
        }
    });
    let mut p5 = b"P5\n# a comment\n4 3\n255\n".to_vec();
    p5.extend((0..12).map(|i| i * 20));
    let mut p5_16 = b"P5 2 2 65535\n".to_vec();
    p5_16.extend([0, 1, 255, 255, 128, 0, 0, 0]);
    let p2 = b"P2\n3 2\n# c\n15\n0 1 2\n15 14 13\n".to_vec();
    let seeds = vec![p5, p5_16, p2];
    fuzz("pgm", &seeds, cases(100_000), |b| {
        if let Ok(img) = fmnist::image::decode_pgm(b) {
            assert_eq!(img.pixels.len(), img.width * img.height);
            assert_eq!(fmnist::image::to_fashion_mnist(&img).len(), 784);
        }
    });
}

// ------------------------------------------------------------------------------------------
// Model files
// ------------------------------------------------------------------------------------------

/// A small valid model file for `layers` (random weights, batch-norm variances of 1).
fn model_file(layers: &[LayerConfig]) -> Vec<u8> {
    let model = Sequential::new(&[1, 28, 28], layers, Init::GlorotUniform, &mut Rng::new(3)).unwrap();
    fmnist::modelfile::to_bytes(&fmnist::modelfile::SavedModel {
        model,
        normalization: Default::default(),
        dataset: "fashion-mnist".into(),
        classes: fmnist::data::DatasetKind::Fashion.class_names().iter().map(|s| s.to_string()).collect(),
        preset: "fuzz".into(),
    })
}

fn small_layers() -> Vec<Vec<LayerConfig>> {
    use LayerConfig as L;
    vec![
        vec![
            L::Conv2d { filters: 2, kernel: [3, 3], stride: 2, padding: Padding::Same },
            L::Relu,
            L::MaxPool2d { size: 2, stride: 2 },
            L::Flatten,
            L::Dense { units: 10 },
        ],
        vec![
            L::batch_norm(),
            L::Conv2d { filters: 1, kernel: [5, 4], stride: 3, padding: Padding::Valid },
            L::Dropout { rate: 0.25 },
            L::Flatten,
            L::batch_norm(),
            L::Dense { units: 10 },
        ],
    ]
}

/// Mutates the JSON header of a safetensors file as text (numbers, keys), keeping the length
/// prefix consistent, so the mutation reaches the checks behind the safetensors parser.
fn mutate_header(file: &[u8], rng: &mut Rng) -> Vec<u8> {
    let n = u64::from_le_bytes(file[..8].try_into().unwrap()) as usize;
    let (header, data) = (&file[8..8 + n], &file[8 + n..]);
    let mut text = String::from_utf8(header.to_vec()).unwrap();
    let numbers: Vec<(usize, usize)> = {
        let b = text.as_bytes();
        let mut v = Vec::new();
        let mut i = 0;
        while i < b.len() {
            if b[i].is_ascii_digit() {
                let s = i;
                while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.') {
                    i += 1;
                }
                v.push((s, i));
            } else {
                i += 1;
            }
        }
        v
    };
    let replacements = [
        "0",
        "1",
        "3",
        "27",
        "28",
        "29",
        "-1",
        "1e39",
        "-1e39",
        "255",
        "65536",
        "1099511627776",
        "9223372036854775808",
        "18446744073709551615",
        "0.5",
        "1.0",
        "2",
    ];
    for _ in 0..1 + rng.below(3) {
        match rng.below(4) {
            0 | 1 if !numbers.is_empty() => {
                let (s, e) = numbers[rng.below(numbers.len() as u64) as usize];
                if e <= text.len() && text.is_char_boundary(s) && text.is_char_boundary(e) {
                    text.replace_range(s..e, replacements[rng.below(replacements.len() as u64) as usize]);
                }
            }
            2 => {
                // Swap two words the format uses.
                let words = [
                    "valid",
                    "same",
                    "conv2d",
                    "dense",
                    "flatten",
                    "relu",
                    "batch_norm",
                    "max_pool2d",
                    "dropout",
                    "F32",
                    "F16",
                    "I64",
                    "weight",
                    "bias",
                    "running_var",
                    "mnist",
                    "Trouser",
                ];
                let a = words[rng.below(words.len() as u64) as usize];
                let b = words[rng.below(words.len() as u64) as usize];
                text = text.replacen(a, b, 1);
            }
            _ => {
                // Drop or repeat a layer in the layers list (JSON in a string: escaped quotes).
                let marker = "{\\\"type\\\":";
                if let Some(i) = text.match_indices(marker).map(|(i, _)| i).nth(rng.below(4) as usize) {
                    if let Some(len) = text[i..].find('}') {
                        let layer = text[i..=i + len].to_string();
                        if rng.below(2) == 0 {
                            text.insert_str(i, &format!("{layer},"));
                        } else {
                            text.replace_range(i..=i + len, "{\\\"type\\\":\\\"relu\\\"}");
                        }
                    }
                }
            }
        }
    }
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(data);
    out
}

#[test]
fn fuzz_model_files() {
    let seeds: Vec<Vec<u8>> = small_layers().iter().map(|l| model_file(l)).collect();
    for s in &seeds {
        fmnist::modelfile::from_bytes(s).expect("the seeds are valid model files");
    }
    fuzz("model-bytes", &seeds, cases(50_000), |b| {
        let _ = fmnist::modelfile::from_bytes(b);
    });
    let mut rng = Rng::new(seed());
    let header_mutants: Vec<Vec<u8>> =
        (0..cases(50_000)).map(|i| mutate_header(&seeds[i % seeds.len()], &mut rng)).collect();
    let mut accepted = 0;
    fuzz("model-header", &header_mutants, 0, |b| {
        if let Ok(saved) = fmnist::modelfile::from_bytes(b) {
            accepted += 1;
            run_model(saved.model, &saved.normalization);
        }
    });
    eprintln!("model-header: {accepted} accepted");
    assert!(accepted > 0, "some header mutations stay valid and run");
}

/// Runs a loaded model on two images on both engines (what `eval` and `predict` do).
fn run_model(mut model: Sequential, norm: &fmnist::train::Normalization) {
    let ds = fmnist::data::Dataset::new((0..2 * 784).map(|i| (i % 251) as u8).collect(), vec![3, 7], 28, 28);
    for engine in [Engine::Fast, Engine::Reference] {
        model.set_engine(engine);
        let e = fmnist::train::evaluate(&mut model, norm, &ds, 2);
        assert_eq!(e.probabilities.len(), 20);
    }
}

// ------------------------------------------------------------------------------------------
// Architectures
// ------------------------------------------------------------------------------------------

/// A random layer stack: mostly small sizes, sometimes the boundaries of the checks.
fn random_layers(rng: &mut Rng) -> Vec<LayerConfig> {
    use LayerConfig as L;
    let mut pick = |choices: &[usize]| choices[rng.below(choices.len() as u64) as usize];
    let n = pick(&[1, 2, 3, 4, 5, 6, 8]);
    let mut layers = Vec::new();
    for _ in 0..n {
        let k = [pick(&[1, 2, 3, 4, 5, 7, 28, 29]), pick(&[1, 2, 3, 4, 5, 7, 28, 29])];
        let layer = match pick(&[0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9]) {
            0 => L::Conv2d {
                filters: pick(&[1, 2, 3, 5]),
                kernel: k,
                stride: pick(&[1, 1, 2, 3, 5, 28, 30]),
                padding: match pick(&[0, 1, 2]) {
                    0 => Padding::Valid,
                    1 => Padding::Same,
                    _ => Padding::Explicit {
                        top: pick(&[0, 1, 2, 6, 1 << 63]),
                        left: pick(&[0, 1, 3]),
                        bottom: pick(&[0, 1, 2, 1 << 63]),
                        right: pick(&[0, 2, 27, usize::MAX]),
                    },
                },
            },
            1 => L::MaxPool2d { size: pick(&[1, 2, 3, 5, 28]), stride: pick(&[1, 2, 3, 7, 29]) },
            2 => L::Relu,
            3 => L::Flatten,
            4 => L::Dropout { rate: [0.0, 0.5, 0.99][pick(&[0, 1, 2])] },
            5 => L::Dense { units: pick(&[1, 3, 10]) },
            6 => L::BatchNorm { momentum: 0.9, eps: [1e-3, 1e-30, 1.0][pick(&[0, 1, 2])] },
            7 => L::AvgPool { size: pick(&[1, 2, 3, 28]), stride: pick(&[1, 2, 3, 29]) },
            8 => L::GlobalAvgPool,
            // A residual block: one or two layers that mostly keep or halve the shape, and a
            // projection that matches, mismatches or is missing.
            _ => {
                let filters = pick(&[1, 2, 3]);
                let stride = pick(&[1, 1, 2]);
                let mut body = vec![L::Conv2d { filters, kernel: [3, 3], stride, padding: Padding::Same }];
                match pick(&[0, 1, 2, 3]) {
                    0 => body.push(L::Relu),
                    1 => body.push(L::BatchNorm { momentum: 0.9, eps: 1e-3 }),
                    2 => body.push(L::Conv2d { filters, kernel: [1, 1], stride: 1, padding: Padding::Valid }),
                    _ => {}
                }
                let projection = match pick(&[0, 1, 2]) {
                    0 => None,
                    p => Some(fmnist::model::Projection { stride: pick(&[1, 2]), batch_norm: p == 2 }),
                };
                L::Residual { layers: body, projection }
            }
        };
        layers.push(layer);
    }
    if pick(&[0, 1]) == 1 {
        layers.extend([L::Flatten, L::Dense { units: 10 }]);
    }
    layers
}

/// The dry run must agree with building: same output shapes, same tensors, and a model that
/// passes it runs on both engines, forward in both modes and backward, without a panic.
#[test]
fn fuzz_architectures_agree_with_building_and_run() {
    let mut rng = Rng::new(seed());
    let mut accepted = 0;
    let n = cases(20_000);
    for case in 0..n {
        let layers = random_layers(&mut rng);
        let Ok(arch) = check_architecture(&[1, 28, 28], &layers) else { continue };
        accepted += 1;
        let result = catch_unwind(AssertUnwindSafe(|| build_and_run(&layers, &arch)));
        assert!(result.is_ok(), "case {case}: {layers:?} passed the check but panicked");
    }
    eprintln!("architectures: {accepted} of {n} accepted");
    // About a quarter pass (most stacks break a shape rule or a bound on purpose); a fifth
    // keeps the comparison with building meaningful.
    assert!(accepted > n / 5, "only {accepted} of {n} random stacks were accepted");
}

fn build_and_run(layers: &[LayerConfig], arch: &Architecture) {
    let mut model = Sequential::new(&[1, 28, 28], layers, Init::GlorotUniform, &mut Rng::new(1))
        .unwrap_or_else(|e| panic!("the check accepted what does not build: {e}"));
    let shapes: Vec<Vec<usize>> = model.layers.iter().map(|l| l.out_shape.clone()).collect();
    assert_eq!(shapes, arch.out_shapes, "output shapes");
    let tensors: Vec<(String, Vec<usize>)> =
        model.params().iter().map(|p| (p.name.clone(), p.value.shape().to_vec())).collect();
    let expected: Vec<(String, Vec<usize>)> =
        arch.tensors.iter().map(|t| (t.name.clone(), t.shape.clone())).collect();
    assert_eq!(tensors, expected, "tensors");
    let x = Tensor::from_vec(&[2, 1, 28, 28], (0..2 * 784).map(|i| (i % 13) as f32 / 13.0).collect());
    let labels = [1u8, 2];
    for engine in [Engine::Fast, Engine::Reference] {
        model.set_engine(engine);
        let mut rng = Rng::new(2);
        let mut tape = Tape::no_grad();
        let input = tape.input(x.clone());
        let out = model.forward(&mut tape, input, Mode::Eval, &mut rng);
        assert_eq!(tape.value(out).shape()[1..], *arch.output_shape(&[1, 28, 28]));
        if arch.output_shape(&[1, 28, 28]) == [10] {
            let mut tape = Tape::new();
            let input = tape.input(x.clone());
            let logits = model.forward(&mut tape, input, Mode::Train, &mut rng);
            let loss = model.loss(&mut tape, logits, &labels, 0.0);
            model.zero_grads();
            model.backward(&mut tape, loss);
        }
    }
}
