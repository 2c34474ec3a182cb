//! Every layer's forward and backward, timed separately, at the reference models' real shapes
//! (STYLE.md habit 14): write-up C's first model (`c1`) at batch 512, the A/B network (`b`) at
//! batch 512, and write-up E (`cmasch`) at batch 250, plus the loss after each.
//!
//! The layers are the presets' own (`fmnist::presets`), built into a `Sequential` and run one at a
//! time through `Layer::forward`, which records the `fmnist::ops` op on a `Tape` exactly as a
//! training step does (`Mode::Train`: dropout draws its mask, batch-norm uses batch statistics).
//! Each layer's input is what the previous layer produced on a forward pass over random pixels,
//! computed once before timing. The first layer's input is data (no input gradient is
//! computed), every later layer's input wants its gradient, as in the network.
//!
//! What is timed, with everything else (resetting the tape, copying the input into a pooled
//! buffer, the untimed forward before a backward) done outside the clock:
//! - `fwd`: the op's forward (its output comes from the tape's buffer pool, warm, as in training);
//! - `bwd`: `Tape::backward` from the op's output, i.e. the op's backward, **plus** the tape
//!   seeding the output gradient with ones (a zeroed pooled buffer, then filled: two write passes
//!   over the output). In a network that gradient comes from the next layer instead, so the
//!   table at the end subtracts the seed, timed on its own for each output shape.
//!
//! Units. Compute-bound layers (conv, dense) report `Throughput::Elements(FLOP)`, so the
//! "elem/s" criterion prints **is FLOP/s** (a multiply-add is 2 FLOP; conv backward counts the
//! weight gradient and, when the input wants one, the input gradient, each as many FLOP as
//! forward; dense likewise). Memory-bound layers (ReLU, max-pool, dropout, flatten, batch-norm,
//! loss) report `Throughput::Bytes`: the least data the op must read and write, at 4 bytes a
//! value (e.g. ReLU forward: read x, write y; backward: read y and dy, write dx).
//!
//! Share of peak, printed in the table at the end: FLOP/s against the machine's FMA peak, an
//! **assumption** printed first: 240 GFLOP/s a core (AVX-512: 2 FMA units x 16 lanes x 2 FLOP x
//! ~3.9 GHz, less a little; `../shared/peers/README.md`) times the threads in rayon's pool; bytes/s
//! against a parallel copy of 64 MiB measured at start (STREAM-copy style: read + write bytes).
//! The last column is the layer's share of the model's summed layer time, fwd + net bwd: where a
//! training step goes, the optimizer and batch assembly aside (`benches/train.rs` times whole
//! steps).
//!
//! Threads: rayon's global pool, all cores unless `RAYON_NUM_THREADS` says otherwise.
//!
//! Run: `cargo bench --bench layers` (about four minutes), one model with a filter, e.g.
//! `cargo bench --bench layers -- layers_c1/`, or `-- --quick` for a fast pass (under a minute).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkGroup, Criterion, Throughput};
use fmnist::presets::{self, INPUT_SHAPE};
use fmnist::{ops, Init, LayerConfig, Mode, Rng, Sequential, Tape, Tensor, Var};
use rayon::prelude::*;

/// Assumed FMA peak of one core, FLOP/s (see the module docs).
const PEAK_FLOPS_PER_CORE: f64 = 240e9;

/// What one pass of a layer must do: FLOP (compute-bound) or bytes moved (memory-bound).
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
}

/// A layer of a model, or the loss after the last one.
#[derive(Clone, Debug)]
enum Op {
    Layer(usize),
    /// Softmax cross-entropy against these labels.
    Loss(Vec<u8>),
}

/// One layer to time: its op, its input (with the batch dimension), and its cost.
struct Case {
    /// Criterion id within the model's group, e.g. `01_conv2d`.
    id: String,
    /// For the table, e.g. `conv2d 32@3x3 [512,1,28,28]->[512,32,26,26]`.
    desc: String,
    op: Op,
    input: Tensor,
    /// Whether the input wants a gradient (every layer but the first).
    input_grad: bool,
    out_shape: Vec<usize>,
    fwd: Cost,
    bwd: Cost,
}

/// A preset's network at its batch size, with one case per layer and one for the loss.
struct Model {
    name: &'static str,
    net: Sequential,
    tape: Tape,
    rng: Rng,
    cases: Vec<Case>,
}

fn shape_str(s: &[usize]) -> String {
    format!("[{}]", s.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(","))
}

/// FLOP or bytes of a layer's forward and backward; `n` images, shapes without the batch.
fn layer_costs(
    cfg: &LayerConfig,
    n: usize,
    in_shape: &[usize],
    out_shape: &[usize],
    input_grad: bool,
) -> (Cost, Cost) {
    let ins = (n * in_shape.iter().product::<usize>()) as u64;
    let outs = (n * out_shape.iter().product::<usize>()) as u64;
    let passes = if input_grad { 2 } else { 1 }; // weight gradient, then the input gradient
    match *cfg {
        LayerConfig::Conv2d { kernel: [kh, kw], .. } => {
            // 2 * N * OC*OH*OW * C*KH*KW
            let f = 2 * outs * (in_shape[0] * kh * kw) as u64;
            (Cost::Flop(f), Cost::Flop(passes * f))
        }
        LayerConfig::Dense { units } => {
            let f = 2 * ins * units as u64; // 2 * N * IN * OUT
            (Cost::Flop(f), Cost::Flop(passes * f))
        }
        // Forward: read x, write y. Backward: read y (or x) and dy, write dx.
        LayerConfig::Relu | LayerConfig::Flatten | LayerConfig::BatchNorm { .. } => {
            (Cost::Bytes(4 * 2 * ins), Cost::Bytes(4 * 3 * ins))
        }
        // Forward: read x, write y and the argmax. Backward: read dy and the argmax, write dx.
        LayerConfig::MaxPool2d { .. } => {
            (Cost::Bytes(4 * (ins + 2 * outs)), Cost::Bytes(4 * (2 * outs + ins)))
        }
        // Forward: write the mask, read x, write y. Backward: read dy and the mask, write dx.
        LayerConfig::Dropout { .. } => (Cost::Bytes(4 * 3 * ins), Cost::Bytes(4 * 3 * ins)),
    }
}

impl Model {
    /// Builds `preset` at `batch` and records each layer's input from one forward pass over
    /// random pixels.
    fn new(preset: &'static str, batch: usize) -> Model {
        let p = presets::preset(preset).expect("a preset name");
        let mut rng = Rng::new(1);
        let mut net = Sequential::new(&INPUT_SHAPE, &p.layers, Init::GlorotUniform, &mut rng)
            .unwrap_or_else(|e| panic!("preset {preset}: {e}"));
        let mut tape = Tape::new();
        let mut in_shape = vec![batch];
        in_shape.extend_from_slice(&INPUT_SHAPE);
        let pixels: Vec<f32> = (0..in_shape.iter().product()).map(|_| rng.next_f32()).collect();
        let mut h = tape.input(Tensor::from_vec(&in_shape, pixels));
        let mut cases = Vec::new();
        for (i, layer) in net.layers.iter().enumerate() {
            let input = tape.value(h).clone();
            let input_grad = i > 0;
            let (fwd, bwd) = layer_costs(&layer.config, batch, &layer.in_shape, &layer.out_shape, input_grad);
            let mut out_shape = vec![batch];
            out_shape.extend_from_slice(&layer.out_shape);
            let kind = match &layer.config {
                LayerConfig::Conv2d { filters, kernel, stride, .. } => {
                    let path = if layer.in_shape[0] == 1 { "direct" } else { "im2col" };
                    format!("conv2d {filters}@{}x{} s{stride} {path}", kernel[0], kernel[1])
                }
                LayerConfig::Dense { units } => format!("dense {units}"),
                LayerConfig::Dropout { rate } => format!("dropout {rate}"),
                LayerConfig::MaxPool2d { size, .. } => format!("max_pool {size}x{size}"),
                LayerConfig::Relu => "relu".into(),
                LayerConfig::Flatten => "flatten".into(),
                LayerConfig::BatchNorm { .. } => "batch_norm".into(),
            };
            let id_kind = kind.split(' ').next().unwrap_or("layer");
            cases.push(Case {
                id: format!("{i:02}_{id_kind}"),
                desc: format!("{kind} {}->{}", shape_str(input.shape()), shape_str(&out_shape)),
                op: Op::Layer(i),
                input,
                input_grad,
                out_shape,
                fwd,
                bwd,
            });
            h = layer.forward(&mut tape, &mut net.params, h, Mode::Train, &mut rng);
        }
        let logits = tape.value(h).clone();
        let k = logits.row_len();
        let labels: Vec<u8> = (0..batch).map(|_| rng.below(k as u64) as u8).collect();
        let bytes = (4 * 2 * logits.len()) as u64; // read logits, write probabilities / gradient
        cases.push(Case {
            id: format!("{:02}_loss", net.layers.len()),
            desc: format!("softmax_xent {}->[1]", shape_str(logits.shape())),
            op: Op::Loss(labels),
            input: logits,
            input_grad: true,
            out_shape: vec![1],
            fwd: Cost::Bytes(bytes),
            bwd: Cost::Bytes(bytes),
        });
        tape.reset();
        Model { name: preset, net, tape, rng, cases }
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
        match &self.cases[ci].op {
            Op::Layer(i) => self.net.layers[*i].forward(
                &mut self.tape,
                &mut self.net.params,
                x,
                Mode::Train,
                &mut self.rng,
            ),
            Op::Loss(labels) => ops::softmax_cross_entropy(&mut self.tape, x, labels, 0.0),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Pass {
    Fwd,
    Bwd,
}

/// Per bench (model, case id, pass): the mean time of each call criterion made, in seconds.
type Records = RefCell<BTreeMap<(String, String, Pass), Vec<f64>>>;

type Group<'a> = BenchmarkGroup<'a, criterion::measurement::WallTime>;

/// Times `iters` runs of one pass of case `ci`, the set-up of each outside the clock.
fn timed(m: &mut Model, ci: usize, pass: Pass, iters: u64) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        m.net.params.zero_grads();
        let x = m.push_input(ci);
        match pass {
            Pass::Fwd => {
                let t = Instant::now();
                let y = m.forward(ci, x);
                total += t.elapsed();
                black_box(m.tape.value(y).data().as_ptr());
            }
            Pass::Bwd => {
                let y = m.forward(ci, x);
                let t = Instant::now();
                m.tape.backward(y, &mut m.net.params);
                total += t.elapsed();
                black_box(m.tape.grad(x).map(|g| g.data().as_ptr()));
            }
        }
    }
    total
}

fn bench_model(c: &mut Criterion, m: &mut Model, records: &Records) {
    let mut g: Group = c.benchmark_group(format!("layers_{}", m.name));
    for ci in 0..m.cases.len() {
        for pass in [Pass::Fwd, Pass::Bwd] {
            let case = &m.cases[ci];
            g.throughput(if pass == Pass::Fwd { case.fwd } else { case.bwd }.throughput());
            let suffix = if pass == Pass::Fwd { "fwd" } else { "bwd" };
            let key = (m.name.to_string(), case.id.clone(), pass);
            g.bench_function(format!("{}_{suffix}", case.id), |b| {
                b.iter_custom(|iters| {
                    let d = timed(m, ci, pass, iters);
                    records.borrow_mut().entry(key.clone()).or_default().push(d.as_secs_f64() / iters as f64);
                    d
                })
            });
        }
    }
    g.finish();
}

/// Median time of the tape seeding an output gradient of `shape` with ones (what `bwd` times
/// besides the op), from a plain timing loop.
fn seed_seconds(shape: &[usize]) -> f64 {
    let mut tape = Tape::new();
    let mut params = fmnist::Params::new();
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
        Cost::Flop(f) => (format!("{:7.1} GFLOP/s", f as f64 / secs / 1e9), f as f64 / secs / peak_flops),
        Cost::Bytes(b) => (format!("{:7.1} GB/s   ", b as f64 / secs / 1e9), b as f64 / secs / copy_bw),
    }
}

fn print_table(models: &[Model], records: &Records, peak_flops: f64, copy_bw: f64) {
    let rec = records.borrow();
    if rec.is_empty() {
        return;
    }
    println!("\nPer-layer summary (median of criterion's calls; bwd net of the tape's seed; % of peak:");
    println!(
        "FLOP/s against {:.0} GFLOP/s, bytes/s against the {:.1} GB/s copy; share: of the model's",
        peak_flops / 1e9,
        copy_bw / 1e9
    );
    println!("summed fwd + net bwd layer time)\n");
    let mut seeds: BTreeMap<Vec<usize>, f64> = BTreeMap::new();
    for m in models {
        let mut rows = Vec::new();
        let mut total = 0.0;
        for case in &m.cases {
            let get =
                |p| rec.get(&(m.name.to_string(), case.id.clone(), p)).and_then(|v| median_skip_first(v));
            let fwd = get(Pass::Fwd);
            let bwd = get(Pass::Bwd).map(|t| {
                let seed =
                    *seeds.entry(case.out_shape.clone()).or_insert_with(|| seed_seconds(&case.out_shape));
                (t - seed).max(0.0)
            });
            total += fwd.unwrap_or(0.0) + bwd.unwrap_or(0.0);
            rows.push((case, fwd, bwd));
        }
        if rows.iter().all(|(_, f, b)| f.is_none() && b.is_none()) {
            continue;
        }
        println!("{} (batch {}):", m.name, m.cases[0].input.dim(0));
        println!(
            "  {:<56} {:>9} {:>15} {:>6}  {:>9} {:>15} {:>6}  {:>6}",
            "layer", "fwd ms", "fwd rate", "%peak", "bwd ms", "bwd rate", "%peak", "share"
        );
        for (case, fwd, bwd) in rows {
            let cell = |t: Option<f64>, cost| match t {
                Some(t) => {
                    let (r, share) = rate(cost, t, peak_flops, copy_bw);
                    format!("{:>9.3} {r:>15} {:>5.1}%", t * 1e3, 100.0 * share)
                }
                None => format!("{:>9} {:>15} {:>6}", "-", "-", "-"),
            };
            let share = 100.0 * (fwd.unwrap_or(0.0) + bwd.unwrap_or(0.0)) / total;
            println!(
                "  {:<56} {}  {}  {share:>5.1}%",
                format!("{} {}", case.id, case.desc),
                cell(fwd, case.fwd),
                cell(bwd, case.bwd)
            );
        }
        let imgs = m.cases[0].input.dim(0) as f64 / total;
        println!(
            "  layers in total: {:.2} ms a step ({imgs:.0} img/s if nothing else took time)\n",
            total * 1e3
        );
    }
}

fn main() {
    let threads = rayon::current_num_threads();
    let peak_flops = PEAK_FLOPS_PER_CORE * threads as f64;
    let copy_bw = copy_bandwidth();
    println!("fmnist layer benchmarks: SIMD compiled in: {}; {threads} threads", kernels::simd::describe());
    println!(
        "peak (assumed): {threads} x 240 GFLOP/s = {:.0} GFLOP/s (AVX-512 FMA at ~3.9 GHz); parallel copy: {:.1} GB/s",
        peak_flops / 1e9,
        copy_bw / 1e9
    );
    println!("conv/dense: elem/s = FLOP/s; other layers: bytes/s of the least traffic; bwd includes the tape's seed");
    let mut models = vec![Model::new("c1", 512), Model::new("b", 512), Model::new("cmasch", 250)];
    let records = Records::default();
    // Short runs: ~2 s a bench; command-line options (`--quick`, a filter) override.
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_millis(1500))
        .configure_from_args();
    for m in &mut models {
        bench_model(&mut c, m, &records);
    }
    c.final_summary();
    print_table(&models, &records, peak_flops, copy_bw);
}
