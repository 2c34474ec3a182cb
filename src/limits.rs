//! What the program accepts: the byte limits on the files it reads, the largest architecture
//! a model file may declare, and the largest values of the flags that size memory, threads or
//! time. Every bound is derived from the data the program is for (Fashion-MNIST and MNIST:
//! 28x28 grey images, 10 classes, 60,000 training and 10,000 test images), with a wide margin
//! over the largest preset; every error that enforces one states it.
//!
//! Two tools enforce them before anything large is allocated:
//! - [`read_file`] reads at most a limit of bytes, whatever size the file system reports (a
//!   device such as `/dev/zero` reports 0 and never ends): it reads `limit + 1` bytes at most
//!   and calls the file too large if the last one arrives.
//! - [`check_architecture`] is a dry run of building a model: from the input shape and the
//!   layer configs alone it derives every layer's output shape, the tensors the layers hold
//!   and their sizes, with checked arithmetic, and refuses what does not fit the bounds. It
//!   allocates nothing in proportion to the declared sizes, so a 600-byte model file that
//!   declares a dense layer of 2^40 units costs microseconds.
//!
//! Not here: the checks of values (finiteness, ranges), which belong to the readers.

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::Path;

use crate::model::{same_padding, LayerConfig, Padding};

/// The side of a Fashion-MNIST and MNIST image, in pixels.
pub const IMAGE_SIDE: usize = 28;

/// Most layers in a model: 11 times the longest preset's (`c3`, 23).
pub const MAX_LAYERS: usize = 256;

/// Most values in one layer's weights, 2^24 (64 MiB of f32): 20 times the largest preset
/// layer's (`ours`'s dense 3136 x 256, 802,816).
pub const MAX_LAYER_WEIGHTS: usize = 1 << 24;

/// Most values in all of a model's tensors, 2^26 (256 MiB of f32): 76 times the largest
/// preset's (`ours`, 872,426).
pub const MAX_MODEL_VALUES: usize = 1 << 26;

/// Most activation values per image, summed over the input and the layers' outputs, 2^22 (16 MiB of f32):
/// 16 times the largest preset's (`ours`, 249,562). A batch's forward pass holds them
/// all, so this bounds the memory of evaluation per image.
pub const MAX_ACTIVATIONS_PER_IMAGE: usize = 1 << 22;

/// Most multiply-adds per image, summed over the convolutions and dense layers, 2^28: 14
/// times the largest preset's (`ours`, 19 million). It bounds the time a model file can cost:
/// `eval` does 10,000 images, so at most 2.7 * 10^12 multiply-adds, minutes on one core.
pub const MAX_MACS_PER_IMAGE: usize = 1 << 28;

/// Most activation values of one batch (batch size times [`MAX_ACTIVATIONS_PER_IMAGE`]'s
/// sum), 2^28 (1 GiB of f32): `ours` fits batches of up to 1,075, write-up C's first network
/// 4,869, every preset at least twice its recipe's batch. It caps `--batch-size` per model.
pub const MAX_BATCH_ACTIVATIONS: usize = 1 << 28;

/// Largest convolution kernel side, pooling window and stride: the image side. A window
/// wider than the image sees only padding.
pub const MAX_WINDOW: usize = IMAGE_SIDE;

/// Largest safetensors header of a model file, 1 MiB (the presets' headers are under 4 KiB).
pub const MAX_MODEL_HEADER_BYTES: u64 = 1 << 20;

/// Largest model file: the 8-byte header length, the header, and [`MAX_MODEL_VALUES`] f32
/// values (257 MiB in all).
pub const MAX_MODEL_FILE_BYTES: u64 = 8 + MAX_MODEL_HEADER_BYTES + 4 * MAX_MODEL_VALUES as u64;

/// Largest IDX file, before and after gzip decompression, 2^28 bytes (256 MiB): five times the
/// largest real one (60,000 images of 28x28, 47 MB).
pub const MAX_IDX_BYTES: u64 = 1 << 28;

/// Largest CSV file, 2^29 bytes (512 MiB): four times Kaggle's training file (133 MB).
pub const MAX_CSV_BYTES: u64 = 1 << 29;

/// Longest CSV line, 64 KiB: a row of 785 fields of up to three digits takes 3,140 bytes.
pub const MAX_CSV_LINE_BYTES: usize = 1 << 16;

/// Most bytes of a plan file (`--plan FILE`), 1 MiB: a plan holds one entry of about 300
/// bytes per layer with weights, so this is 3,000 entries, ten times [`MAX_LAYERS`].
pub const MAX_PLAN_FILE_BYTES: u64 = 1 << 20;

/// Most bytes of the per-machine plan cache, 16 MiB; a larger one is ignored and rebuilt.
pub const MAX_PLAN_CACHE_BYTES: u64 = 1 << 24;

/// Most worker threads (`--threads`): more threads than cores only slow a run down (every
/// parallel op wakes each of them), and each thread reserves its own stack.
pub const MAX_THREADS: usize = 256;

/// Largest `--batch-size`: the larger training set (60,000 images). Each model also caps it
/// at [`MAX_BATCH_ACTIVATIONS`] divided by its activations per image.
pub const MAX_BATCH_SIZE: usize = 60_000;

/// Largest `--limit`: the training sets hold 60,000 images.
pub const MAX_LIMIT: usize = 60_000;

/// Largest `--epochs`, `--warmup-epochs` and `--step-epochs`: 125 times the longest recipe
/// (80 epochs); it keeps every step count far from overflowing.
pub const MAX_EPOCHS: usize = 10_000;

/// Largest `--runs`.
pub const MAX_RUNS: usize = 100;

/// Largest `--static-copies`: the training images are held 11 times over (about 400 MB for
/// Fashion-MNIST); write-up E makes 2.
pub const MAX_STATIC_COPIES: usize = 10;

/// Largest `--shift`: one pixel less than the image side (a larger shift leaves nothing).
pub const MAX_SHIFT: usize = IMAGE_SIDE - 1;

/// Largest `--cutout`: twice the image side, from which on every cutout blanks the whole
/// image wherever its centre falls.
pub const MAX_CUTOUT: usize = 2 * IMAGE_SIDE;

/// Why [`read_file`] failed.
#[derive(Debug)]
pub enum ReadError {
    /// The file could not be opened or read.
    Io(std::io::Error),
    /// A folder, not a file.
    Folder,
    /// The file holds more than `limit` bytes.
    TooLarge { limit: u64 },
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Io(e) => write!(f, "cannot read: {e}"),
            ReadError::Folder => f.write_str("cannot read: is a folder, not a file"),
            ReadError::TooLarge { limit } => {
                write!(f, "larger than the limit of {limit} bytes ({})", human_bytes(*limit))
            }
        }
    }
}

impl std::error::Error for ReadError {}

/// `1 GiB`, `256 MiB`, `64 KiB`, or plain bytes.
fn human_bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.0} GiB", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.0} MiB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.0} KiB", n as f64 / (1u64 << 10) as f64),
        n => format!("{n} B"),
    }
}

/// The whole content of `path`, if it holds at most `limit` bytes.
///
/// Reads through `take(limit + 1)`, so a file that grows, lies about its size, or never ends
/// (`/dev/zero`) costs at most `limit + 1` bytes of memory and of reading. The reported size
/// only sizes the first allocation, and only when it is below the limit.
pub fn read_file(path: &Path, limit: u64) -> Result<Vec<u8>, ReadError> {
    let file = File::open(path).map_err(ReadError::Io)?;
    let meta = file.metadata().map_err(ReadError::Io)?;
    if meta.is_dir() {
        return Err(ReadError::Folder);
    }
    if meta.len() > limit {
        return Err(ReadError::TooLarge { limit });
    }
    read_limited(file, meta.len(), limit)
}

/// Everything `reader` yields, if it is at most `limit` bytes; `hint` (a reported size) sizes
/// the first allocation.
///
/// The buffer doubles from there but never past `limit + 1` bytes, so even a reader that never
/// ends costs at most that much memory (a plain `read_to_end` could reserve twice the limit).
pub fn read_limited(mut reader: impl Read, hint: u64, limit: u64) -> Result<Vec<u8>, ReadError> {
    let cap = limit.saturating_add(1);
    // One byte more than the hint, so that a file of exactly its reported size ends without
    // a reallocation.
    let mut buf = vec![0u8; hint.saturating_add(1).max(1 << 13).min(cap) as usize];
    let mut len = 0;
    loop {
        if len == buf.len() {
            if len as u64 >= cap {
                break;
            }
            let grown = (len as u64).saturating_mul(2).min(cap) as usize;
            buf.resize(grown, 0);
        }
        match reader.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(ReadError::Io(e)),
        }
    }
    if len as u64 > limit {
        return Err(ReadError::TooLarge { limit });
    }
    buf.truncate(len);
    Ok(buf)
}

/// A tensor a layer holds: its name in a model file and its shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    pub shape: Vec<usize>,
}

/// What [`check_architecture`] derived: the sizes a built model will have.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Architecture {
    /// Each layer's output shape (without the batch dimension).
    pub out_shapes: Vec<Vec<usize>>,
    /// Every parameter and buffer, in the order the model creates them, named as in a model
    /// file (`"0.conv2d.weight"`).
    pub tensors: Vec<TensorSpec>,
    /// Values in all tensors.
    pub tensor_values: usize,
    /// Activation values per image, summed over the input and the layers' outputs.
    pub activation_values: usize,
    /// Multiply-adds per image of the convolutions and dense layers.
    pub macs: usize,
}

impl Architecture {
    /// The shape of one output (the input shape for a model without layers).
    pub fn output_shape<'a>(&'a self, input_shape: &'a [usize]) -> &'a [usize] {
        self.out_shapes.last().map_or(input_shape, |s| s.as_slice())
    }

    /// The largest batch whose activations stay within [`MAX_BATCH_ACTIVATIONS`] (at least 1).
    pub fn max_batch(&self) -> usize {
        (MAX_BATCH_ACTIVATIONS / self.activation_values.max(1)).max(1)
    }
}

/// The name `model.rs` gives a layer kind in tensor names and messages.
pub fn layer_kind(config: &LayerConfig) -> &'static str {
    config.kind()
}

/// The product of `dims`, or `None` on overflow.
fn product(dims: &[usize]) -> Option<usize> {
    dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

/// Checks an architecture against the bounds above without building it, and derives its
/// sizes. The rules are those of building a model (`Sequential::new`), plus the bounds: at
/// most [`MAX_LAYERS`] layers; kernels, pooling windows and strides of 1 to [`MAX_WINDOW`];
/// explicit padding of at most the kernel side minus 1 (more gives outputs that see only
/// padding); at most [`MAX_LAYER_WEIGHTS`] values in a layer's weights, [`MAX_MODEL_VALUES`]
/// in all tensors, [`MAX_ACTIVATIONS_PER_IMAGE`] activations and [`MAX_MACS_PER_IMAGE`]
/// multiply-adds per image; finite dropout rates in
/// `[0, 1)`, batch-norm momentum in `[0, 1]` and a finite, positive epsilon.
///
/// The error names the layer (`layer 4 (dense): ...`) and the bound it breaks.
pub fn check_architecture(input_shape: &[usize], layers: &[LayerConfig]) -> Result<Architecture, String> {
    if input_shape.is_empty() || input_shape.contains(&0) {
        return Err(format!("input shape {input_shape:?} must be non-empty with no zero dimension"));
    }
    let input_values = product(input_shape).filter(|&n| n <= MAX_ACTIVATIONS_PER_IMAGE).ok_or_else(|| {
        format!("input shape {input_shape:?} has over {MAX_ACTIVATIONS_PER_IMAGE} values (2^22)")
    })?;
    if layers.len() > MAX_LAYERS {
        return Err(format!("{} layers, over the limit of {MAX_LAYERS}", layers.len()));
    }
    // The input counts: a forward pass holds it beside the layers' outputs.
    let mut arch = Architecture {
        out_shapes: Vec::new(),
        tensors: Vec::new(),
        tensor_values: 0,
        activation_values: input_values,
        macs: 0,
    };
    let mut shape = input_shape.to_vec();
    for (i, config) in layers.iter().enumerate() {
        let prefix = format!("{i}.{}", config.kind());
        shape = check_layer(&mut arch, &i.to_string(), &prefix, config, &shape)?;
        arch.out_shapes.push(shape.clone());
    }
    Ok(arch)
}

/// Checks one layer (named `label` in messages, `3` or `3.1` inside block 3) on an input of
/// `shape`, adds its tensors (named under `prefix`, as `model.rs` names them), activations and
/// multiply-adds to `arch`, and returns its output shape. A residual block checks its body and
/// projection the same way.
fn check_layer(
    arch: &mut Architecture,
    label: &str,
    prefix: &str,
    config: &LayerConfig,
    shape: &[usize],
) -> Result<Vec<usize>, String> {
    let kind = layer_kind(config);
    let err = |why: String| format!("layer {label} ({kind}): {why}");
    let image = |shape: &[usize]| match *shape {
        [c, h, w] => Ok((c, h, w)),
        _ => Err(err(format!("needs an image input [C, H, W], got {shape:?}"))),
    };
    let window = |what: &str, v: usize| {
        if (1..=MAX_WINDOW).contains(&v) {
            Ok(())
        } else {
            Err(err(format!("{what} {v} is not in 1..={MAX_WINDOW} (the image side)")))
        }
    };
    let weights = |dims: &[usize]| {
        product(dims).filter(|&n| n <= MAX_LAYER_WEIGHTS).ok_or_else(|| {
            err(format!(
                "weights of shape {dims:?} hold over {MAX_LAYER_WEIGHTS} values (2^24, the limit per layer)"
            ))
        })
    };
    let mut tensors: Vec<(&str, Vec<usize>)> = Vec::new();
    let mut macs = 0usize; // at most MAX_LAYER_WEIGHTS * MAX_ACTIVATIONS_PER_IMAGE: no overflow
    let out: Vec<usize> = match *config {
        LayerConfig::Conv2d { filters, kernel: [kh, kw], stride, padding } => {
            let (c, h, w) = image(shape)?;
            if filters == 0 {
                return Err(err("filters must be at least 1".into()));
            }
            window("kernel height", kh)?;
            window("kernel width", kw)?;
            window("stride", stride)?;
            let (pt, pb, pl, pr) = match padding {
                Padding::Valid => (0, 0, 0, 0),
                Padding::Same => {
                    let (t, b) = same_padding(h, kh, stride);
                    let (l, r) = same_padding(w, kw, stride);
                    (t, b, l, r)
                }
                Padding::Explicit { top, left, bottom, right } => {
                    if top.max(bottom) >= kh || left.max(right) >= kw {
                        return Err(err(format!(
                            "padding {top},{left},{bottom},{right} (top, left, bottom, right) exceeds the \
                             {kh}x{kw} kernel's side minus 1"
                        )));
                    }
                    (top, bottom, left, right)
                }
            };
            // Each term is at most the input side or 2 * MAX_WINDOW: no overflow.
            let (ph, pw) = (h + pt + pb, w + pl + pr);
            if ph < kh || pw < kw {
                return Err(err(format!("{kh}x{kw} kernel is larger than the padded {ph}x{pw} input")));
            }
            let per_pixel = weights(&[filters, c, kh, kw])?;
            tensors.push(("weight", vec![filters, c, kh, kw]));
            tensors.push(("bias", vec![filters]));
            let (oh, ow) = ((ph - kh) / stride + 1, (pw - kw) / stride + 1);
            macs = per_pixel.saturating_mul(oh).saturating_mul(ow);
            vec![filters, oh, ow]
        }
        LayerConfig::MaxPool2d { size, stride } | LayerConfig::AvgPool { size, stride } => {
            let (c, h, w) = image(shape)?;
            window("pooling window", size)?;
            window("stride", stride)?;
            if h < size || w < size {
                return Err(err(format!("{size}x{size} window is larger than the {h}x{w} input")));
            }
            vec![c, (h - size) / stride + 1, (w - size) / stride + 1]
        }
        LayerConfig::GlobalAvgPool => vec![image(shape)?.0],
        LayerConfig::Relu => shape.to_vec(),
        // The input's product was checked as the previous layer's output.
        LayerConfig::Flatten => vec![product(shape).unwrap_or(usize::MAX)],
        LayerConfig::Dropout { rate } => {
            if !(0.0..1.0).contains(&rate) {
                return Err(err(format!("rate {rate} is not in [0, 1)")));
            }
            shape.to_vec()
        }
        LayerConfig::Dense { units } => {
            let [fin] = *shape else {
                return Err(err(format!("needs a vector input [F] (add a flatten layer), got {shape:?}")));
            };
            if units == 0 {
                return Err(err("units must be at least 1".into()));
            }
            macs = weights(&[fin, units])?;
            tensors.push(("weight", vec![fin, units]));
            tensors.push(("bias", vec![units]));
            vec![units]
        }
        LayerConfig::BatchNorm { momentum, eps } => {
            if !(0.0..=1.0).contains(&momentum) {
                return Err(err(format!("momentum {momentum} is not in [0, 1]")));
            }
            if !(eps > 0.0 && eps.is_finite()) {
                return Err(err(format!("epsilon {eps} must be a positive number")));
            }
            let Some(&c) = shape.first() else {
                return Err(err("needs a non-empty input shape".into()));
            };
            for what in ["gamma", "beta", "running_mean", "running_var"] {
                tensors.push((what, vec![c]));
            }
            shape.to_vec()
        }
        LayerConfig::Residual { ref layers, projection } => {
            if layers.len() > MAX_LAYERS {
                return Err(err(format!(
                    "{} layers in the block, over the limit of {MAX_LAYERS}",
                    layers.len()
                )));
            }
            let mut body = shape.to_vec();
            for (j, sub) in layers.iter().enumerate() {
                let sub_prefix = format!("{prefix}.{j}.{}", sub.kind());
                body = check_layer(arch, &format!("{label}.{j}"), &sub_prefix, sub, &body)?;
            }
            let mut short = shape.to_vec();
            if let Some(p) = projection {
                let filters =
                    *body.first().ok_or_else(|| err("a projection needs an image output".into()))?;
                let conv = p.conv(filters);
                let proj = format!("{label}.proj");
                short = check_layer(arch, &proj, &format!("{prefix}.proj.conv2d"), &conv, shape)?;
                if p.batch_norm {
                    let bn = LayerConfig::batch_norm();
                    short = check_layer(arch, &proj, &format!("{prefix}.proj.batch_norm"), &bn, &short)?;
                }
            }
            if short != body {
                return Err(err(format!(
                    "its body's output {body:?} cannot be added to its input's {short:?}"
                )));
            }
            body
        }
    };
    let out_values = product(&out).filter(|&n| n <= MAX_ACTIVATIONS_PER_IMAGE);
    arch.activation_values = out_values
        .and_then(|n| arch.activation_values.checked_add(n))
        .filter(|&n| n <= MAX_ACTIVATIONS_PER_IMAGE)
        .ok_or_else(|| {
            err(format!(
                "output {out:?} brings the activations per image over {MAX_ACTIVATIONS_PER_IMAGE} values (2^22)"
            ))
        })?;
    arch.macs = arch.macs.saturating_add(macs);
    if arch.macs > MAX_MACS_PER_IMAGE {
        return Err(err(format!(
            "brings the multiply-adds per image to {}, over the limit of {MAX_MACS_PER_IMAGE} (2^28)",
            arch.macs
        )));
    }
    for (what, shape) in tensors {
        let n = product(&shape).unwrap_or(usize::MAX);
        arch.tensor_values = arch.tensor_values.saturating_add(n);
        arch.tensors.push(TensorSpec { name: format!("{prefix}.{what}"), shape });
    }
    if arch.tensor_values > MAX_MODEL_VALUES {
        return Err(err(format!(
            "brings the model's tensors to {} values, over the limit of {MAX_MODEL_VALUES} (2^26)",
            arch.tensor_values
        )));
    }
    Ok(out)
}
