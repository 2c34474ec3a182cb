//! Every layer's forward and backward, timed separately, at the reference models' real shapes
//! (the write-ups of `fmnist::presets`): write-up C's first model (`c1`) at batch 512, the A/B network (`b`) at
//! batch 512, and write-up E (`cmasch`) at batch 250, and the small ResNet of
//! `models/resnet.toml` at batch 128 (residual blocks with their adds, 1x1 and stride-2
//! convolutions, global average pooling), plus the loss after each and the whole network as a
//! check.
//!
//! # What runs
//! The layers are the presets' own (`fmnist::presets`), cut into the ops the network really
//! runs: `Sequential::forward` fuses conv -> ReLU -> max-pool into one op
//! (`ops::conv2d_relu_maxpool`) and lets a dense layer read its input unflattened, so those runs
//! of layers are one case each (`conv2d+relu+max_pool`, `flatten+dense`); every other layer is a
//! case of its own. Each case is its layers built as a `Sequential` of their own and run through
//! `Sequential::forward`, so it takes exactly the network's code path (`Mode::Train`: dropout
//! draws its mask, batch-norm uses batch statistics), recording `fmnist::ops` ops on a `Tape`.
//! The split mirrors `Sequential::forward`'s two fusion rules ([`segments`]); should they
//! change, the `whole network` line at the end of each model's table stops matching the sum of
//! its cases, which is the sign to update [`segments`].
//!
//! Group `layers_unfused` times the fused layers one by one (C1's conv, ReLU and max-pool; E's
//! two convolutions, the direct path for one input channel and im2col + GEMM for 64): the
//! convolution paths on their own, and what the fusion saves.
//!
//! A case's input is what the cases before it produced on a forward pass over random pixels,
//! computed once before timing. The network's first case has a data input (no input gradient is
//! computed); every later case's input wants its gradient, as in the network.
//!
//! # What is timed
//! Everything else (resetting the tape, copying the input into a pooled buffer, the untimed
//! forward before a backward) is done outside the clock:
//! - `fwd`: the case's forward (its output comes from the tape's buffer pool, warm, as in
//!   training);
//! - `bwd`: `Tape::backward` from the case's output, i.e. its backward, **plus** the tape seeding
//!   the output gradient with ones (a zeroed pooled buffer, then filled: two write passes over the
//!   output). In a network that gradient comes from the next layer instead, so the table at the
//!   end subtracts the seed, timed on its own for each output shape.
//!
//! # Units
//! Cases with a conv or dense layer report `Throughput::Elements(FLOP)`, so the "elem/s"
//! criterion prints **is FLOP/s**: the conv or dense layer's multiply-adds at 2 FLOP each (a fused
//! ReLU and max-pool add none); backward counts the weight gradient and, when the input wants one,
//! the input gradient, each as many FLOP as forward. The other layers (ReLU, max-pool, dropout,
//! batch-norm, loss) are memory-bound and report `Throughput::Bytes`: the least data the op must
//! read and write, at 4 bytes a value (e.g. ReLU forward: read x, write y; backward: read y and
//! dy, write dx).
//!
//! # The table at the end
//! Median time of each case (criterion's calls; bwd net of the seed), its rate, and its share of
//! peak: FLOP/s against the machine's FMA peak, **measured** at start and printed first
//! (`kernels::peak`: register-only FMAs with independent chains on every thread of rayon's
//! pool, the best of three calibrations); bytes/s against a parallel copy of 64 MiB measured at start (STREAM-copy
//! style: read + write bytes; on this shared machine it varies from run to run). The last
//! column is the case's share of the model's summed case time, fwd + net bwd: where a training
//! step goes, the optimizer and batch assembly aside (`benches/train.rs` times whole steps).
//!
//! Threads: rayon's global pool, all cores unless `RAYON_NUM_THREADS` says otherwise.
//!
//! Run: `cargo bench --bench layers` (about three minutes), one model with a filter, e.g.
//! `cargo bench --bench layers -- layers_c1/`, or `-- --quick` for a fast pass (about a minute).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::hint::black_box;
use std::ops::Range;
use std::time::{Duration, Instant};

use criterion::{BenchmarkGroup, Criterion, Throughput};
use fmnist::model::Layer;
use fmnist::presets::{self, INPUT_SHAPE};
use fmnist::{ops, Engine, Init, LayerConfig, Mode, Padding, Params, Rng, Sequential, Tape, Tensor, Var};
use rayon::prelude::*;

/// What one pass of a case must do: FLOP (compute-bound) or bytes moved (memory-bound).
#[derive(Clone, Copy, Debug)]
enum Cost {
    Flop(u64),
    Bytes(u64),
}

impl Cost {
    fn throughput(self) -> Throughput {
        match self {
            Cost::Flop(f) => Throughput::Elements(f),
            Cost::Bytes(b) => Throughput::Bytes(b),
        }
    }

    /// A run of layers costs its FLOP when it holds a conv or dense layer, else its bytes.
    fn sum(costs: impl IntoIterator<Item = Cost>) -> Cost {
        let (mut flop, mut bytes) = (0, 0);
        for c in costs {
            match c {
                Cost::Flop(f) => flop += f,
                Cost::Bytes(b) => bytes += b,
            }
        }
        if flop > 0 {
            Cost::Flop(flop)
        } else {
            Cost::Bytes(bytes)
        }
    }
}

/// What a case runs.
enum Op {
    /// A run of layers, built as their own model so that `Sequential::forward` runs them as the
    /// network does.
    Layers(Sequential),
    /// Softmax cross-entropy against these labels.
    Loss(Vec<u8>),
    /// The whole network, then the loss.
    Network(Sequential, Vec<u8>),
}

/// One thing to time: its op, its input (with the batch dimension), and its cost.
struct Case {
    /// Criterion id within the group, e.g. `00_conv2d+relu+max_pool`.
    id: String,
    /// For the table, e.g. `conv2d 32@3x3 direct, relu, max_pool 2x2 [512,1,28,28]->[512,32,13,13]`.
    desc: String,
    op: Op,
    input: Tensor,
    /// Whether the input wants a gradient (every case but a network's first).
    input_grad: bool,
    out_shape: Vec<usize>,
    fwd: Cost,
    bwd: Cost,
}

/// A criterion group: a model's cases, or the unfused layers.
struct Group {
    name: String,
    cases: Vec<Case>,
    tape: Tape,
    rng: Rng,
    /// The loss has no parameters; its backward gets these.
    no_params: Params,
}

fn shape_str(s: &[usize]) -> String {
    format!("[{}]", s.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(","))
}

fn with_batch(n: usize, shape: &[usize]) -> Vec<usize> {
    let mut s = vec![n];
    s.extend_from_slice(shape);
    s
}

/// The runs of layers `Sequential::forward` executes as one op: conv -> ReLU -> max-pool (fused),
/// flatten -> dense (the flatten is skipped); every other layer alone.
fn segments(configs: &[LayerConfig]) -> Vec<Range<usize>> {
    use LayerConfig as L;
    let mut out = Vec::new();
    let mut i = 0;
    while i < configs.len() {
        let len = match &configs[i..] {
            [L::Conv2d { .. }, L::Relu, L::MaxPool2d { .. }, ..] => 3,
            [L::Flatten, L::Dense { .. }, ..] => 2,
            _ => 1,
        };
        out.push(i..i + len);
        i += len;
    }
    out
}

/// FLOP or bytes of one layer's forward and backward; `n` images, shapes without the batch.
fn layer_costs(
    cfg: &LayerConfig,
    n: usize,
    in_shape: &[usize],
    out_shape: &[usize],
    input_grad: bool,
) -> (Cost, Cost) {
    let ins = (n * in_shape.iter().product::<usize>()) as u64;
    let outs = (n * out_shape.iter().product::<usize>()) as u64;
    let passes = if input_grad { 2 } else { 1 }; // the weight gradient, then the input gradient
    match *cfg {
        LayerConfig::Conv2d { kernel: [kh, kw], .. } => {
            let f = 2 * outs * (in_shape[0] * kh * kw) as u64; // 2 * N * OC*OH*OW * C*KH*KW
            (Cost::Flop(f), Cost::Flop(passes * f))
        }
        LayerConfig::Dense { units } => {
            let f = 2 * ins * units as u64; // 2 * N * IN * OUT
            (Cost::Flop(f), Cost::Flop(passes * f))
        }
        // Forward: read x, write y. Backward: read y (or x) and dy, write dx.
        LayerConfig::Relu | LayerConfig::BatchNorm { .. } => {
            (Cost::Bytes(4 * 2 * ins), Cost::Bytes(4 * 3 * ins))
        }
        // Nothing when a dense layer follows (the only place the presets have one).
        LayerConfig::Flatten => (Cost::Bytes(0), Cost::Bytes(0)),
        // Forward: read x, write y and the argmax. Backward: read dy and the argmax, write dx.
        LayerConfig::MaxPool2d { .. } => {
            (Cost::Bytes(4 * (ins + 2 * outs)), Cost::Bytes(4 * (2 * outs + ins)))
        }
        // Forward: write the mask, read x, write y. Backward: read dy and the mask, write dx.
        LayerConfig::Dropout { .. } => (Cost::Bytes(4 * 3 * ins), Cost::Bytes(4 * 3 * ins)),
        // Forward: read x, write y. Backward: read dy, write dx.
        LayerConfig::AvgPool { .. } | LayerConfig::GlobalAvgPool => {
            (Cost::Bytes(4 * (ins + outs)), Cost::Bytes(4 * (outs + ins)))
        }
        // The body's layers, the projection's convolution, and the add (read two, write one;
        // backward: read dy, add it into both inputs' gradients).
        LayerConfig::Residual { ref layers, projection } => {
            let body = Sequential::new(in_shape, layers, Init::GlorotUniform, &mut Rng::new(0))
                .expect("a built block");
            let mut costs: Vec<(Cost, Cost)> = body
                .layers
                .iter()
                .map(|l| layer_costs(&l.config, n, &l.in_shape, &l.out_shape, true))
                .collect();
            if let Some(p) = projection {
                let conv = LayerConfig::Conv2d {
                    filters: out_shape[0],
                    kernel: [1, 1],
                    stride: p.stride,
                    padding: Padding::Valid,
                };
                costs.push(layer_costs(&conv, n, in_shape, out_shape, input_grad));
            }
            costs.push((Cost::Bytes(4 * 3 * outs), Cost::Bytes(4 * 5 * outs)));
            (Cost::sum(costs.iter().map(|c| c.0)), Cost::sum(costs.iter().map(|c| c.1)))
        }
    }
}

fn layer_desc(layer: &Layer) -> String {
    match &layer.config {
        LayerConfig::Conv2d { filters, kernel, stride, padding } => {
            let path = layer.conv_plan().map_or("?", |p| p.path_name());
            let pad = if *padding == Padding::Valid { "valid" } else { "same" };
            format!("conv2d {filters}@{}x{} s{stride} {pad} {path}", kernel[0], kernel[1])
        }
        LayerConfig::Dense { units } => format!("dense {units}"),
        LayerConfig::Dropout { rate } => format!("dropout {rate}"),
        LayerConfig::MaxPool2d { size, .. } => format!("max_pool {size}x{size}"),
        other => other.kind().into(),
    }
}

fn layer_kind(cfg: &LayerConfig) -> &'static str {
    match cfg {
        LayerConfig::MaxPool2d { .. } => "max_pool",
        other => other.kind(),
    }
}

/// A case running `configs` on `input` (`[N, in_shape...]`) as a model of their own; returns it
/// with its output on `input` (the next case's input).
fn layers_case(
    prefix: &str,
    configs: &[LayerConfig],
    input: Tensor,
    input_grad: bool,
    rng: &mut Rng,
) -> (Case, Tensor) {
    let n = input.dim(0);
    let mut net = Sequential::new(&input.shape()[1..], configs, Init::GlorotUniform, rng)
        .unwrap_or_else(|e| panic!("layers {configs:?}: {e}"));
    let (mut fwd, mut bwd, mut desc, mut kinds) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (k, layer) in net.layers.iter().enumerate() {
        let (f, b) = layer_costs(&layer.config, n, &layer.in_shape, &layer.out_shape, input_grad || k > 0);
        fwd.push(f);
        bwd.push(b);
        desc.push(layer_desc(layer));
        kinds.push(layer_kind(&layer.config));
    }
    let mut tape = Tape::new();
    let x = tape.input(input.clone());
    let y = net.forward(&mut tape, x, Mode::Train, rng);
    let output = tape.value(y).clone();
    let case = Case {
        id: format!("{prefix}{}", kinds.join("+")),
        desc: format!("{} {}->{}", desc.join(", "), shape_str(input.shape()), shape_str(output.shape())),
        op: Op::Layers(net),
        input,
        input_grad,
        out_shape: output.shape().to_vec(),
        fwd: Cost::sum(fwd),
        bwd: Cost::sum(bwd),
    };
    (case, output)
}

fn random(shape: &[usize], lo: f32, hi: f32, rng: &mut Rng) -> Tensor {
    let data = (0..shape.iter().product()).map(|_| rng.uniform(lo, hi)).collect();
    Tensor::from_vec(shape, data)
}

impl Group {
    fn new(name: String, cases: Vec<Case>, rng: Rng) -> Group {
        Group { name, cases, tape: Tape::new(), rng, no_params: Params::new() }
    }

    /// A preset at `batch`: one case per op the network runs ([`segments`]), the loss, and the
    /// whole network.
    fn model(preset: &str, batch: usize) -> Group {
        Group::network(preset, presets::preset(preset).expect("a preset name"), batch)
    }

    /// An architecture file's network at `batch`, as [`Group::model`].
    fn file(path: &str, batch: usize) -> Group {
        let p = fmnist::arch::load(std::path::Path::new(path)).expect("an architecture file");
        Group::network(&p.name.clone(), p, batch)
    }

    fn network(preset: &str, p: presets::Preset, batch: usize) -> Group {
        let mut rng = Rng::new(1);
        let mut x = random(&with_batch(batch, &INPUT_SHAPE), 0.0, 1.0, &mut rng); // pixels in [0, 1)
        let mut cases = Vec::new();
        for r in segments(&p.layers) {
            let (case, y) =
                layers_case(&format!("{:02}_", r.start), &p.layers[r.clone()], x, r.start > 0, &mut rng);
            cases.push(case);
            x = y;
        }
        let k = x.row_len();
        let labels: Vec<u8> = (0..batch).map(|_| rng.below(k as u64) as u8).collect();
        let bytes = (4 * 2 * x.len()) as u64; // read the logits, write probabilities / gradient
        cases.push(Case {
            id: format!("{:02}_loss", p.layers.len()),
            desc: format!("softmax_xent {}->[1]", shape_str(x.shape())),
            op: Op::Loss(labels.clone()),
            input: x,
            input_grad: true,
            out_shape: vec![1],
            fwd: Cost::Bytes(bytes),
            bwd: Cost::Bytes(bytes),
        });
        let net =
            Sequential::new(&INPUT_SHAPE, &p.layers, Init::GlorotUniform, &mut rng).expect("a preset model");
        let flop = |c: Cost| if let Cost::Flop(f) = c { f } else { 0 };
        let (fwd, bwd) = (cases.iter().map(|c| flop(c.fwd)).sum(), cases.iter().map(|c| flop(c.bwd)).sum());
        cases.push(Case {
            id: "network".into(),
            desc: format!("all layers, then the loss, {}->[1]", shape_str(cases[0].input.shape())),
            op: Op::Network(net, labels),
            input: cases[0].input.clone(),
            input_grad: false,
            out_shape: vec![1],
            fwd: Cost::Flop(fwd),
            bwd: Cost::Flop(bwd),
        });
        Group::new(format!("layers_{preset}"), cases, rng)
    }

    /// The layers the network fuses, one by one: C1's conv, ReLU and max-pool (batch 512), and
    /// E's two convolutions (batch 250), its first behind batch-norm so wanting an input gradient.
    fn unfused() -> Group {
        let mut rng = Rng::new(2);
        let c1 = presets::preset("c1").expect("preset c1").layers;
        let e = presets::preset("cmasch").expect("preset cmasch").layers;
        let mut cases = Vec::new();
        let x = random(&with_batch(512, &INPUT_SHAPE), 0.0, 1.0, &mut rng);
        let mut h = x;
        for (i, cfg) in c1[..3].iter().enumerate() {
            let (case, y) = layers_case("c1_", std::slice::from_ref(cfg), h, i > 0, &mut rng);
            cases.push(case);
            h = y;
        }
        let x = random(&with_batch(250, &INPUT_SHAPE), -1.0, 1.0, &mut rng); // batch-normalised
        cases.push(layers_case("e_1_", &e[1..2], x, true, &mut rng).0);
        let x = random(&with_batch(250, &[64, 14, 14]), 0.0, 1.0, &mut rng); // after ReLU and pool
        cases.push(layers_case("e_2_", &e[5..6], x, true, &mut rng).0);
        Group::new("layers_unfused".into(), cases, rng)
    }

    /// Resets the tape and records case `ci`'s input on it (untimed set-up).
    fn push_input(&mut self, ci: usize) -> Var {
        let case = &self.cases[ci];
        self.tape.reset();
        let mut t = self.tape.scratch(case.input.shape());
        t.data_mut().copy_from_slice(case.input.data());
        if case.input_grad {
            self.tape.leaf(t)
        } else {
            self.tape.input(t)
        }
    }

    /// Records case `ci`'s op on `x`.
    fn forward(&mut self, ci: usize, x: Var) -> Var {
        let (tape, rng) = (&mut self.tape, &mut self.rng);
        match &mut self.cases[ci].op {
            Op::Layers(net) => net.forward(tape, x, Mode::Train, rng),
            Op::Loss(labels) => ops::softmax_cross_entropy(tape, x, labels, 0.0, Engine::Fast),
            Op::Network(net, labels) => {
                let logits = net.forward(tape, x, Mode::Train, rng);
                net.loss(tape, logits, labels, 0.0)
            }
        }
    }

    /// The parameters case `ci` trains.
    fn params(&mut self, ci: usize) -> &mut Params {
        match &mut self.cases[ci].op {
            Op::Layers(net) | Op::Network(net, _) => net.params_mut(),
            Op::Loss(_) => &mut self.no_params,
        }
    }

    /// Backpropagates from `y`, the output of case `ci`.
    fn backward(&mut self, ci: usize, y: Var) {
        let params = match &mut self.cases[ci].op {
            Op::Layers(net) | Op::Network(net, _) => net.params_mut(),
            Op::Loss(_) => &mut self.no_params,
        };
        self.tape.backward(y, params);
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Pass {
    Fwd,
    Bwd,
}

/// Per bench (group, case id, pass): the mean time of each call criterion made, in seconds.
type Records = RefCell<BTreeMap<(String, String, Pass), Vec<f64>>>;

type CriterionGroup<'a> = BenchmarkGroup<'a, criterion::measurement::WallTime>;

/// Times `iters` runs of one pass of case `ci`, the set-up of each outside the clock.
fn timed(g: &mut Group, ci: usize, pass: Pass, iters: u64) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let x = g.push_input(ci);
        match pass {
            Pass::Fwd => {
                let t = Instant::now();
                let y = g.forward(ci, x);
                total += t.elapsed();
                black_box(g.tape.value(y).data().as_ptr());
            }
            Pass::Bwd => {
                let y = g.forward(ci, x);
                g.params(ci).zero_grads(); // a step of its own in training
                let t = Instant::now();
                g.backward(ci, y);
                total += t.elapsed();
                black_box(g.tape.grad(x).map(|d| d.data().as_ptr()));
            }
        }
    }
    total
}

fn bench_group(c: &mut Criterion, g: &mut Group, records: &Records) {
    let mut cg: CriterionGroup = c.benchmark_group(g.name.clone());
    for ci in 0..g.cases.len() {
        for pass in [Pass::Fwd, Pass::Bwd] {
            let case = &g.cases[ci];
            cg.throughput(if pass == Pass::Fwd { case.fwd } else { case.bwd }.throughput());
            let suffix = if pass == Pass::Fwd { "fwd" } else { "bwd" };
            let key = (g.name.clone(), case.id.clone(), pass);
            cg.bench_function(format!("{}_{suffix}", case.id), |b| {
                b.iter_custom(|iters| {
                    let d = timed(g, ci, pass, iters);
                    records.borrow_mut().entry(key.clone()).or_default().push(d.as_secs_f64() / iters as f64);
                    d
                })
            });
        }
    }
    cg.finish();
}

/// Median time of the tape seeding an output gradient of `shape` with ones (what `bwd` times
/// besides the op), from a plain timing loop.
fn seed_seconds(shape: &[usize]) -> f64 {
    let mut tape = Tape::new();
    let mut params = Params::new();
    let mut times: Vec<f64> = (0..23)
        .map(|_| {
            tape.reset();
            let t = tape.scratch(shape);
            let v = tape.leaf(t);
            let start = Instant::now();
            tape.backward(v, &mut params);
            start.elapsed().as_secs_f64()
        })
        .skip(3)
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// Bytes/s of a parallel copy of 64 MiB (read + write bytes), best of 5.
fn copy_bandwidth() -> f64 {
    let n = 16 << 20; // f32 values: 64 MiB
    let src = vec![1.0f32; n];
    let mut dst = vec![0.0f32; n];
    let best = (0..5)
        .map(|_| {
            let t = Instant::now();
            dst.par_chunks_mut(1 << 18).zip(src.par_chunks(1 << 18)).for_each(|(d, s)| d.copy_from_slice(s));
            black_box(&dst);
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min);
    (2 * 4 * n) as f64 / best
}

fn median_skip_first(v: &[f64]) -> Option<f64> {
    let mut s: Vec<f64> = if v.len() > 1 { v[1..].to_vec() } else { v.to_vec() };
    if s.is_empty() {
        return None;
    }
    s.sort_by(f64::total_cmp);
    Some(s[s.len() / 2])
}

/// Rate and share of peak of `cost` done in `secs`.
fn rate(cost: Cost, secs: f64, peak_flops: f64, copy_bw: f64) -> (String, f64) {
    match cost {
        Cost::Flop(f) => (format!("{:6.1} GFLOP/s", f as f64 / secs / 1e9), f as f64 / secs / peak_flops),
        Cost::Bytes(b) => (format!("{:6.1} GB/s   ", b as f64 / secs / 1e9), b as f64 / secs / copy_bw),
    }
}

fn print_table(groups: &[Group], records: &Records, peak_flops: f64, copy_bw: f64) {
    let rec = records.borrow();
    if rec.is_empty() {
        return;
    }
    println!("\nPer-case summary: median of criterion's calls; bwd net of the tape's seed; %peak: FLOP/s");
    println!(
        "against {:.0} GFLOP/s, bytes/s against the {:.1} GB/s copy; share: of the model's summed",
        peak_flops / 1e9,
        copy_bw / 1e9
    );
    println!("fwd + net bwd time over its cases (not the network line)\n");
    let mut seeds: BTreeMap<Vec<usize>, f64> = BTreeMap::new();
    for g in groups {
        let mut rows = Vec::new();
        let (mut total, mut sum_fwd, mut sum_bwd) = (0.0, 0.0, 0.0);
        let mut network = None;
        for case in &g.cases {
            let get = |p| rec.get(&(g.name.clone(), case.id.clone(), p)).and_then(|v| median_skip_first(v));
            let fwd = get(Pass::Fwd);
            let bwd = get(Pass::Bwd).map(|t| {
                let seed =
                    *seeds.entry(case.out_shape.clone()).or_insert_with(|| seed_seconds(&case.out_shape));
                (t - seed).max(0.0)
            });
            if let Op::Network(..) = case.op {
                network = Some((fwd, bwd));
                continue;
            }
            sum_fwd += fwd.unwrap_or(0.0);
            sum_bwd += bwd.unwrap_or(0.0);
            total += fwd.unwrap_or(0.0) + bwd.unwrap_or(0.0);
            rows.push((case, fwd, bwd));
        }
        if rows.iter().all(|(_, f, b)| f.is_none() && b.is_none()) {
            continue;
        }
        let is_model = network.is_some();
        println!("{}:", g.name);
        println!(
            "  {:<84} {:>8} {:>15} {:>6}  {:>8} {:>15} {:>6}  {:>6}",
            "case", "fwd ms", "fwd rate", "%peak", "bwd ms", "bwd rate", "%peak", "share"
        );
        for (case, fwd, bwd) in rows {
            let cell = |t: Option<f64>, cost| match t {
                Some(t) => {
                    let (r, share) = rate(cost, t, peak_flops, copy_bw);
                    format!("{:>8.3} {r:>15} {:>5.1}%", t * 1e3, 100.0 * share)
                }
                None => format!("{:>8} {:>15} {:>6}", "-", "-", "-"),
            };
            let share = if is_model {
                format!("{:>5.1}%", 100.0 * (fwd.unwrap_or(0.0) + bwd.unwrap_or(0.0)) / total)
            } else {
                String::new()
            };
            println!(
                "  {:<84} {}  {}  {share}",
                format!("{} {}", case.id, case.desc),
                cell(fwd, case.fwd),
                cell(bwd, case.bwd)
            );
        }
        if is_model {
            let batch = g.cases[0].input.dim(0) as f64;
            println!(
                "  sum of the cases: {:.2} + {:.2} = {:.2} ms a step ({:.0} img/s if nothing else took time)",
                sum_fwd * 1e3,
                sum_bwd * 1e3,
                total * 1e3,
                batch / total
            );
            if let Some((Some(f), Some(b))) = network {
                println!(
                    "  whole network (fwd, then bwd from the loss): {:.2} + {:.2} = {:.2} ms ({:.0} img/s)",
                    f * 1e3,
                    b * 1e3,
                    (f + b) * 1e3,
                    batch / (f + b)
                );
            }
        }
        println!();
    }
}

fn main() {
    // The pool as the CLI sets it up: the main thread is one of its workers.
    fmnist::cli::set_threads(None).expect("the thread pool");
    let threads = rayon::current_num_threads();
    // The best of three calibrations: a lower one means the machine was busy.
    let peak_flops =
        (0..3).map(|_| kernels::peak::measure_fma_peak(Duration::from_millis(300))).fold(0.0, f64::max);
    let copy_bw = copy_bandwidth();
    println!("fmnist layer benchmarks: SIMD compiled in: {}; {threads} threads", kernels::simd::describe());
    println!(
        "peak (measured, register-only FMAs on {threads} threads): {:.0} GFLOP/s; parallel copy: {:.1} GB/s",
        peak_flops / 1e9,
        copy_bw / 1e9
    );
    println!("conv/dense cases: elem/s = FLOP/s; other layers: bytes/s of the least traffic; bwd includes the tape's seed");
    let mut groups = vec![
        Group::model("c1", 512),
        Group::model("b", 512),
        Group::model("cmasch", 250),
        Group::file("models/resnet.toml", 128),
        Group::unfused(),
    ];
    let records = Records::default();
    // Short runs: ~2 s a bench; command-line options (`--quick`, a filter) override.
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_millis(1500))
        .configure_from_args();
    for g in &mut groups {
        bench_group(&mut c, g, &records);
    }
    c.final_summary();
    print_table(&groups, &records, peak_flops, copy_bw);
}
