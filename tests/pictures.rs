//! The pictures and the report page, checked against independent oracles:
//! - every PNG decodes (with the `png` crate's decoder) to the size its module states;
//! - in the confusion heatmap the darkest cell is the largest count, and darkness grows with
//!   the row share;
//! - `errors.png` holds only misclassified images: a hand-built model whose predictions are
//!   known in closed form, on images whose grey level names them, and the picture read back
//!   tile by tile;
//! - the saliency map equals the central finite difference of the class score, on both
//!   engines, for a tiny convolutional model;
//! - `report.html` refers only to what it embeds (no file, no network), and each embedded
//!   picture is a PNG.

use fmnist::data::Dataset;
use fmnist::explain;
use fmnist::html_report::{self, Block, Page, Section, Table};
use fmnist::plots::{self, confusion, curves, errors, predictions, samples, Picture};
use fmnist::train::{self, EpochStats, Normalization};
use fmnist::{Engine, Init, LayerConfig, Rng, Sequential, Tensor};

/// Decodes PNG bytes with the `png` crate: `(width, height, rgb)`.
fn decode(bytes: &[u8]) -> (u32, u32, Vec<u8>) {
    let dec = png::Decoder::new(std::io::Cursor::new(bytes));
    let mut r = dec.read_info().expect("a PNG header");
    let mut buf = vec![0; r.output_buffer_size().unwrap()];
    let info = r.next_frame(&mut buf).expect("PNG data");
    assert_eq!(info.color_type, png::ColorType::Rgb);
    buf.truncate(info.buffer_size());
    (info.width, info.height, buf)
}

/// Encodes, decodes, and checks the size and the pixels survive.
fn round_trip(p: &Picture, size: (u32, u32)) {
    let (w, h, rgb) = decode(&p.png().unwrap());
    assert_eq!((w, h), size, "decoded size");
    assert_eq!((p.width, p.height), size, "stated size");
    assert_eq!(rgb, p.rgb, "pixels changed through PNG");
}

fn names() -> Vec<String> {
    fmnist::data::DatasetKind::Fashion.class_names().iter().map(|s| s.to_string()).collect()
}

fn history(epochs: usize, lr: impl Fn(usize) -> f32) -> Vec<EpochStats> {
    (1..=epochs)
        .map(|e| EpochStats {
            epoch: e,
            loss: 1.0 / e as f32,
            accuracy: 0.7 + 0.02 * e as f32,
            val_loss: Some(0.9 / e as f32 + 0.01 * e as f32),
            val_accuracy: Some(0.72 + 0.015 * e as f32),
            seconds: 2.0,
            images_per_second: 1000.0,
            lr: lr(e),
        })
        .collect()
}

/// Image `i` of a synthetic set: every pixel `value(i)`.
fn uniform_images(values: &[u8]) -> Vec<u8> {
    values.iter().flat_map(|&v| std::iter::repeat_n(v, 784)).collect()
}

#[test]
fn every_picture_decodes_to_its_stated_size() {
    let n = names();
    // Curves: one run with a constant rate, then with a schedule; several runs.
    let flat = history(5, |_| 1e-3);
    let sched = history(5, |e| 1e-3 / e as f32);
    let one =
        [curves::Run { label: "", history: &flat, best_epoch: Some(4), targets: curves::Targets::default() }];
    round_trip(&curves::draw("t", &one).unwrap(), (curves::WIDTH, curves::PANELS_HEIGHT));
    let one = [curves::Run {
        label: "",
        history: &sched,
        best_epoch: Some(4),
        targets: curves::Targets::default(),
    }];
    round_trip(&curves::draw("t", &one).unwrap(), (curves::WIDTH, curves::PANELS_HEIGHT + curves::LR_HEIGHT));
    let two = [
        curves::Run {
            label: "run 1",
            history: &flat,
            best_epoch: Some(5),
            targets: curves::Targets { smoothing: 0.1, mixed: false },
        },
        curves::Run {
            label: "run 2",
            history: &flat[..3],
            best_epoch: Some(2),
            targets: curves::Targets { smoothing: 0.1, mixed: false },
        },
    ];
    round_trip(&curves::draw("t", &two).unwrap(), curves::size(&two));

    // Confusion matrix.
    let m: Vec<Vec<usize>> =
        (0..10).map(|i| (0..10).map(|j| if i == j { 90 } else { i + j }).collect()).collect();
    round_trip(&confusion::draw("t", &m, &n).unwrap(), (confusion::WIDTH, confusion::HEIGHT));

    // Samples: 3 images of each class.
    let labels: Vec<u8> = (0..30).map(|i| (i % 10) as u8).collect();
    let values: Vec<u8> = (0..30).map(|i| 8 * i as u8).collect();
    let ds = Dataset::new(uniform_images(&values), labels.clone(), 28, 28);
    round_trip(&samples::draw("t", &ds, &n).unwrap(), samples::size(10, (28, 28)));

    // Mistakes: every image predicted as the next class.
    let preds: Vec<u8> = labels.iter().map(|&l| (l + 1) % 10).collect();
    let probs: Vec<f32> = preds
        .iter()
        .flat_map(|&p| (0..10).map(move |c| if c == p as usize { 0.9 } else { 0.0111 }))
        .collect();
    let groups = errors::select(&labels, &preds, &probs, 10, errors::PAIRS, errors::PER_PAIR).unwrap();
    let layout = errors::Layout { image: (28, 28) };
    let pic = errors::draw("t", &groups, &n, (28, 28), |i| ds.image(i)).unwrap();
    round_trip(&pic, layout.size(groups.len()));
    round_trip(&errors::draw("t", &[], &n, (28, 28), |i| ds.image(i)).unwrap(), layout.size(0));

    // predict --out's picture.
    let rows: Vec<predictions::Row> = (0..4)
        .map(|i| predictions::Row {
            name: "test:1",
            pixels: ds.image(i),
            probabilities: &probs[i * 10..(i + 1) * 10],
            truth: Some(labels[i]),
        })
        .collect();
    round_trip(&predictions::draw("t", &rows, &n, (28, 28)).unwrap(), predictions::size(4, 28));
}

#[test]
fn wrong_shapes_are_errors_not_panics() {
    let n = names();
    assert!(confusion::draw("t", &[vec![1, 2]], &n).is_err());
    assert!(confusion::draw("t", &[], &[]).is_err());
    assert!(samples::draw("t", &Dataset::default(), &n).is_err());
    let row = predictions::Row { name: "x", pixels: &[0; 10], probabilities: &[0.1; 10], truth: None };
    assert!(predictions::draw("t", &[row], &n, (28, 28)).is_err());
    assert!(predictions::draw("t", &[], &n, (28, 28)).is_err());
    let groups = vec![errors::Group { classes: (0, 12), count: 1, shown: vec![] }];
    assert!(errors::draw("t", &groups, &n, (28, 28), |_| &[0u8; 784][..]).is_err());
}

#[test]
fn the_darkest_heatmap_cell_is_the_largest_count() {
    // Every row holds 200 images, so shares order the cells as counts do. The largest count
    // is off the diagonal (row 6, column 0: Shirt taken for T-shirt/top), so a picture that
    // merely darkened the diagonal would fail.
    let mut m = vec![vec![0usize; 10]; 10];
    for (i, row) in m.iter_mut().enumerate() {
        row[i] = 120 + i;
        row[(i + 3) % 10] = 200 - (120 + i) - 5;
        row[(i + 5) % 10] += 5;
    }
    m[6] = vec![170, 0, 0, 0, 0, 0, 30, 0, 0, 0];
    for row in &m {
        assert_eq!(row.iter().sum::<usize>(), 200);
    }
    let pic = confusion::draw("t", &m, &names()).unwrap();
    // Read each cell's colour near its top left corner, away from the count's digits.
    let lum = |i: usize, j: usize| {
        let ((x0, y0), _) = confusion::cell_rect(10, i, j);
        plots::luminance(pic.pixel(x0 as u32 + 4, y0 as u32 + 4))
    };
    let mut cells: Vec<(usize, usize)> = (0..10).flat_map(|i| (0..10).map(move |j| (i, j))).collect();
    let darkest = *cells.iter().min_by(|a, b| lum(a.0, a.1).total_cmp(&lum(b.0, b.1))).unwrap();
    assert_eq!(darkest, (6, 0), "the darkest cell is not the largest count (170)");
    // Darkness follows the count: sorting by count sorts by luminance, strictly where counts differ.
    cells.sort_by_key(|&(i, j)| m[i][j]);
    for w in cells.windows(2) {
        let (a, b) = (w[0], w[1]);
        if m[a.0][a.1] < m[b.0][b.1] {
            assert!(lum(b.0, b.1) < lum(a.0, a.1), "count {} not darker than {}", m[b.0][b.1], m[a.0][a.1]);
        }
    }
}

/// A model whose predictions are known in closed form: flatten, then a dense layer with
/// `w[p][k] = 2 c_k / 784` and `b_k = -c_k^2`, `c_k = k / 9`. On an image whose every pixel is
/// `s` (after normalisation), `z_k = 2 c_k s - c_k^2 = s^2 - (s - c_k)^2`: the class whose
/// centre `c_k` is nearest `s` wins, i.e. class `round(9 s)`.
fn nearest_centre_model() -> Sequential {
    let layers = [LayerConfig::Flatten, LayerConfig::Dense { units: 10 }];
    let mut model = Sequential::new(&[1, 28, 28], &layers, Init::GlorotUniform, &mut Rng::new(1)).unwrap();
    let ids = model.layers[1].param_ids();
    let params = model.params_mut();
    let w = params.value_mut(ids[0]).data_mut(); // [784, 10]
    for p in 0..784 {
        for k in 0..10 {
            w[p * 10 + k] = 2.0 * (k as f32 / 9.0) / 784.0;
        }
    }
    let b = params.value_mut(ids[1]).data_mut();
    for (k, v) in b.iter_mut().enumerate() {
        *v = -(k as f32 / 9.0).powi(2);
    }
    model
}

#[test]
fn errors_png_holds_only_misclassified_images() {
    // 30 images, image i uniformly grey 5 + 8i: its grey level names it in the picture, and
    // its predicted class is round(9 (5 + 8i) / 255). Every third image gets a wrong label.
    let values: Vec<u8> = (0..30).map(|i| 5 + 8 * i as u8).collect();
    let known: Vec<u8> = values.iter().map(|&v| (9.0 * v as f64 / 255.0).round() as u8).collect();
    let labels: Vec<u8> =
        known.iter().enumerate().map(|(i, &p)| if i % 3 == 0 { (p + 1) % 10 } else { p }).collect();
    let ds = Dataset::new(uniform_images(&values), labels.clone(), 28, 28);
    let mut model = nearest_centre_model();
    let eval = train::evaluate(&mut model, &Normalization::default(), &ds, 7);
    assert_eq!(eval.predictions, known, "the model's predictions are the closed form's");

    let groups =
        errors::select(&labels, &eval.predictions, &eval.probabilities, 10, errors::PAIRS, errors::PER_PAIR)
            .unwrap();
    let pic = errors::draw("t", &groups, &names(), (28, 28), |i| ds.image(i)).unwrap();
    let (_, _, rgb) = decode(&pic.png().unwrap());
    let layout = errors::Layout { image: (28, 28) };
    let mut drawn = Vec::new();
    for (row, g) in groups.iter().enumerate() {
        for col in 0..errors::PER_PAIR {
            let ((x0, y0), (x1, y1)) = layout.image_rect(row, col);
            // Every pixel of the tile has one grey level: an image's, or the white page.
            let at = |x: i32, y: i32| {
                let i = 3 * (y as usize * pic.width as usize + x as usize);
                [rgb[i], rgb[i + 1], rgb[i + 2]]
            };
            let c = at((x0 + x1) / 2, (y0 + y1) / 2);
            assert!(
                (y0..y1).all(|y| (x0..x1).all(|x| at(x, y) == c)),
                "tile ({row}, {col}) is not one image"
            );
            if col >= g.shown.len() {
                assert_eq!(c, [255, 255, 255], "tile ({row}, {col}) should be empty");
                continue;
            }
            assert!(c[0] == c[1] && c[1] == c[2]);
            let i = values.iter().position(|&v| v == c[0]).expect("a tile shows one of the images");
            assert_ne!(labels[i], known[i], "image {i} is drawn but correctly classified");
            assert_eq!(i, g.shown[col].index);
            drawn.push(i);
        }
    }
    // Ten mistakes over nine pairs of neighbouring classes; five pairs are drawn.
    assert_eq!(labels.iter().zip(&known).filter(|(l, p)| l != p).count(), 10);
    assert_eq!(groups.len(), errors::PAIRS);
    assert!(drawn.len() >= errors::PAIRS, "{drawn:?}");
}

/// A tiny convolutional model on 8x8 inputs: conv 2@3x3, ReLU, max-pool 2, flatten, dense 10.
fn tiny_cnn(seed: u64) -> Sequential {
    let layers = [
        LayerConfig::conv(2, 3, fmnist::Padding::Valid),
        LayerConfig::Relu,
        LayerConfig::MaxPool2d { size: 2, stride: 2 },
        LayerConfig::Flatten,
        LayerConfig::Dense { units: 10 },
    ];
    let mut model = Sequential::new(&[1, 8, 8], &layers, Init::GlorotUniform, &mut Rng::new(seed)).unwrap();
    // Non-zero biases, so the ReLU's kinks are not all at the same input.
    let ids: Vec<_> = model.layers.iter().flat_map(|l| l.param_ids()).collect();
    let mut rng = Rng::new(seed + 100);
    for id in ids {
        if model.params().value(id).shape().len() == 1 {
            model.params_mut().value_mut(id).data_mut().iter_mut().for_each(|v| *v = rng.uniform(-0.3, 0.3));
        }
    }
    model
}

/// Where the ReLU is active and which element wins each pooling window: the saliency is
/// only comparable with a finite difference when a perturbation changes neither.
fn kink_pattern(model: &mut Sequential, x: &Tensor) -> Vec<u32> {
    let acts = explain::conv_activations(model, x);
    let maps = &acts[0].maps; // [2, 6, 6], after the ReLU
    let mut pat: Vec<u32> = maps.data().iter().map(|&v| (v > 0.0) as u32).collect();
    for c in 0..2 {
        for py in 0..3 {
            for px in 0..3 {
                let at = |dy: usize, dx: usize| maps.data()[c * 36 + (2 * py + dy) * 6 + 2 * px + dx];
                let win = [(0, 0), (0, 1), (1, 0), (1, 1)];
                let best =
                    (0..4)
                        .fold(0, |b, k| if at(win[k].0, win[k].1) > at(win[b].0, win[b].1) { k } else { b });
                pat.push(best as u32);
            }
        }
    }
    pat
}

#[test]
fn saliency_equals_the_finite_difference_of_the_class_score() {
    const EPS: f32 = 1e-2;
    for engine in [Engine::Reference, Engine::Fast] {
        for seed in [3, 4] {
            let mut model = tiny_cnn(seed);
            model.set_engine(engine);
            let mut rng = Rng::new(seed + 7);
            let x = Tensor::from_vec(&[1, 1, 8, 8], (0..64).map(|_| rng.uniform(0.0, 1.0)).collect());
            let sal = explain::saliency(&mut model, &x, None);
            assert_eq!(sal.gradient.shape(), &[1, 8, 8]);
            let z = explain::logits(&mut model, &x);
            assert_eq!(sal.class, train::argmax(&z));
            let base = kink_pattern(&mut model, &x);
            let (mut checked, mut nonzero) = (0, 0);
            for p in 0..64 {
                let mut plus = x.clone();
                plus.data_mut()[p] += EPS;
                let mut minus = x.clone();
                minus.data_mut()[p] -= EPS;
                if kink_pattern(&mut model, &plus) != base || kink_pattern(&mut model, &minus) != base {
                    continue; // the step crossed a kink: the derivative is not defined there
                }
                let zp = explain::logits(&mut model, &plus)[sal.class] as f64;
                let zm = explain::logits(&mut model, &minus)[sal.class] as f64;
                let numeric = ((zp - zm) / (2.0 * EPS as f64)) as f32;
                let analytic = sal.gradient.data()[p];
                assert!(
                    (analytic - numeric).abs() <= 1e-3 + 1e-2 * analytic.abs().max(numeric.abs()),
                    "{engine:?} seed {seed} pixel {p}: saliency {analytic}, finite difference {numeric}"
                );
                checked += 1;
                nonzero += (numeric.abs() > 1e-3) as usize;
            }
            assert!(checked >= 48, "{engine:?} seed {seed}: only {checked} of 64 pixels away from kinks");
            assert!(nonzero >= 10, "{engine:?} seed {seed}: a saliency of zeros proves nothing");
            // The parameters' gradients are left at zero.
            assert!(model.params().iter().all(|p| p.grad.data().iter().all(|&g| g == 0.0)));
        }
    }
}

#[test]
fn explain_picture_has_its_layout_size() {
    // A 28x28 model for the picture: conv, ReLU, pool, flatten, dense.
    let layers = [
        LayerConfig::conv(4, 3, fmnist::Padding::Valid),
        LayerConfig::Relu,
        LayerConfig::MaxPool2d { size: 2, stride: 2 },
        LayerConfig::Flatten,
        LayerConfig::Dense { units: 10 },
    ];
    let mut model = Sequential::new(&[1, 28, 28], &layers, Init::GlorotUniform, &mut Rng::new(9)).unwrap();
    let pixels: Vec<u8> = (0..784).map(|i| (i % 251) as u8).collect();
    let x = Normalization::default().pixels(&pixels, 1, 28, 28);
    let sal = explain::saliency(&mut model, &x, None);
    let (_, filters) = explain::first_filters(&model).unwrap();
    let acts = explain::conv_activations(&mut model, &x);
    assert_eq!(acts.len(), 1);
    assert_eq!(acts[0].maps.shape(), &[4, 26, 26]);
    assert!(acts[0].description.contains("after ReLU"), "{}", acts[0].description);
    let n = names();
    let view = plots::explain::View {
        title: "t",
        pixels: &pixels,
        shape: (28, 28),
        saliency: &sal,
        names: &n,
        truth: Some(3),
        filters: Some(&filters),
        activations: &acts,
    };
    let layout = plots::explain::Layout::new(&view);
    round_trip(&plots::explain::draw(&view).unwrap(), (plots::explain::WIDTH, layout.height));
}

/// Every `attr="..."` value of `html`.
fn attributes<'a>(html: &'a str, attr: &str) -> Vec<&'a str> {
    let key = format!("{attr}=\"");
    html.match_indices(&key)
        .map(|(i, _)| {
            let rest = &html[i + key.len()..];
            &rest[..rest.find('"').unwrap()]
        })
        .collect()
}

/// Standard base64 decoding (RFC 4648), written here from the RFC's table as the test's own
/// oracle for the page's encoder.
fn unbase64(s: &str) -> Vec<u8> {
    let digit = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not a base64 digit: {c}"),
    } as u32;
    let mut out = Vec::new();
    for quad in s.as_bytes().chunks(4) {
        let pad = quad.iter().filter(|&&c| c == b'=').count();
        let n = quad.iter().take(4 - pad).enumerate().fold(0u32, |n, (k, &c)| n | digit(c) << (18 - 6 * k));
        out.extend_from_slice(&[(n >> 16) as u8, (n >> 8) as u8, n as u8][..3 - pad]);
    }
    out
}

#[test]
fn the_page_refers_only_to_what_it_embeds() {
    let pic = confusion::draw("t", &vec![vec![5usize; 10]; 10], &names()).unwrap();
    let png = pic.png().unwrap();
    let page = Page {
        title: "A run <with> \"quotes\"".into(),
        subtitle: "made by a test".into(),
        sections: vec![
            Section {
                id: "metrics".into(),
                heading: "Test metrics".into(),
                blocks: vec![Block::Table(Table {
                    header: vec!["a".into(), "b".into()],
                    rows: vec![vec!["http://example.invalid/x.png".into(), "1".into()]],
                    highlight: vec![0],
                })],
            },
            Section {
                id: "confusion".into(),
                heading: "Confusion".into(),
                blocks: vec![
                    Block::Picture {
                        id: "confusion".into(),
                        caption: "c".into(),
                        png: png.clone(),
                        width: pic.width,
                        height: pic.height,
                    },
                    Block::Pre("a < b".into()),
                ],
            },
        ],
    };
    let html = html_report::render(&page);
    // Nothing fetched: no script, style sheet, font or frame from elsewhere.
    for bad in ["<script", "<link", "<iframe", "@import", "url("] {
        assert!(!html.contains(bad), "the page contains {bad}");
    }
    // Text that looks like an address stays text: escaped, never an attribute.
    let srcs = attributes(&html, "src");
    assert_eq!(srcs.len(), 1);
    for s in &srcs {
        let data = s.strip_prefix("data:image/png;base64,").expect("an embedded PNG");
        let bytes = unbase64(data);
        assert_eq!(bytes, png, "the embedded bytes are the picture's PNG");
        let (w, h, _) = decode(&bytes);
        assert_eq!((w, h), (confusion::WIDTH, confusion::HEIGHT));
    }
    // Links go only to the page's own sections.
    let hrefs = attributes(&html, "href");
    assert_eq!(hrefs.len(), 2);
    for h in hrefs {
        let id = h.strip_prefix('#').expect("an in-page link");
        assert!(html.contains(&format!("id=\"{id}\"")), "link to a missing section #{id}");
    }
    assert!(html.contains("&lt;with&gt; &quot;quotes&quot;"));
    assert_eq!(unbase64("Zm9vYmE="), b"fooba");
}
