//! Checkpoints: a training run's whole state in one file, written so that a kill at any moment
//! leaves a sound one behind, and read back so that the run continues to the same bits.
//!
//! A checkpoint holds either a run that has not taken a step yet ([`Contents::Start`], the
//! run's identity alone), a run in progress ([`Contents::Training`]: the weights and
//! batch-norm statistics, the optimizer's moments and step count, the random streams, the
//! position in the data with the pass's shuffled order, the step count (the learning-rate
//! schedule is a function of it), the epoch's running sums, the best weights so far with
//! their score, the history, and the weights' moving average when the run keeps one) or a
//! finished run ([`Contents::Finished`]: the final weights and
//! the history), and always a [`RunInfo`]: the program, the command that started the run, its
//! resolved recipe and the data's checksums.
//!
//! # File layout
//! All integers little-endian:
//!
//! | bytes | contents |
//! |---|---|
//! | 0..8 | magic `FMNCKPT\n` |
//! | 8..12 | format version, `u32` ([`FORMAT_VERSION`]) |
//! | 12..20 | `H`, the header's length, `u64` |
//! | 20..28 | `D`, the data's length, `u64` |
//! | 28..28+H | the header: JSON `{"format", "run", "training" or "finished" (or neither, at the start), "tensors"}` |
//! | then D bytes | the tensors, back to back in the order of `tensors` (`f32` or `u32`) |
//! | last 4 | CRC-32 (IEEE, as in gzip and PNG) of every byte before it |
//!
//! A file whose length is not `28 + H + D + 4` is truncated; one whose CRC does not match is
//! corrupt; both are refused with a message that says which. The tensors are named
//! `model/<parameter>`, `best/<parameter>` (left out when the best weights are the model's,
//! as right after an epoch that improved), `ema/<parameter>` (only with a moving average),
//! `optimizer/<parameter>/<slot>` and `order`. Every
//! float the next step reads (running sums, learning rate, scores, the history) is stored in
//! the header as its IEEE-754 bit pattern (an integer), so it comes back exactly, NaN included.
//!
//! # On disk
//! A run folder keeps two: [`LATEST`] and [`PREVIOUS`]. [`write()`] writes a temporary file,
//! flushes it, renames the latest to the previous, renames the temporary file to the latest and
//! flushes the folder; a kill at any point leaves at least one complete checkpoint. [`read()`]
//! takes the latest, or the previous when the latest is missing, truncated or corrupt, and
//! moves the bad one aside so that the next rotation cannot push it over the good one.
//!
//! This module does not decide when to write (the `train` command does), does not check that
//! a checkpoint belongs to the command resuming it (the command compares [`RunInfo`]s), and
//! runs no threads.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::files::{sync_dir, temp_path};
use crate::params::Params;
use crate::train::{Best, EpochStats, Progress, StepperPosition, TrainSnapshot, TrainState};

/// The latest checkpoint's file name in a run folder.
pub const LATEST: &str = "checkpoint.ckpt";
/// The one before it, kept until the next is complete.
pub const PREVIOUS: &str = "checkpoint.prev.ckpt";
/// The version of the layout above.
pub const FORMAT_VERSION: u32 = 1;

const MAGIC: &[u8; 8] = b"FMNCKPT\n";
const PREFIX: usize = 28;
const FORMAT: &str = "fmnist-checkpoint";

/// Who the run is: written by the `train` command, checked by it on resume. Opaque here.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    /// `fmnist <version>` of the program that wrote the checkpoint.
    pub program: String,
    /// Shared by the runs of one `train` command (so a run folder left from another command
    /// is told apart).
    pub group: String,
    /// 1-based run of `runs` (`--runs N`), with its seed.
    pub run: usize,
    pub runs: usize,
    pub seed: u64,
    /// The flags of the `train` command that started the run.
    pub args: Vec<String>,
    /// The resolved recipe (preset, layers, training configuration, split, seed, ...).
    pub recipe: serde_json::Value,
    /// The data's identity: checksums and sizes.
    pub data: serde_json::Value,
    /// Wall-clock seconds of the sessions so far; of them, the main thread's seconds spent on
    /// checkpoints; and the CPU seconds of the background threads that wrote them.
    pub wall_seconds: f64,
    pub checkpoint_seconds: f64,
    pub checkpoint_writer_cpu_seconds: f64,
}

/// What a finished run leaves in its last checkpoint.
#[derive(Clone, Debug)]
pub struct Finished {
    /// The final weights (the best epoch's), in the model's parameter order.
    pub params: Vec<Vec<f32>>,
    pub history: Vec<EpochStats>,
    pub best_epoch: usize,
    pub train_seconds: f64,
}

/// A checkpoint's state.
#[derive(Clone, Debug)]
pub enum Contents {
    /// A run about to take its first step: the [`RunInfo`] alone. Everything else is rebuilt
    /// from the seed, so a resume starts the run afresh.
    Start,
    Training(Box<TrainState>),
    Finished(Finished),
}

/// A checkpoint read back: who the run is and where it stands.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    pub info: RunInfo,
    pub contents: Contents,
}

// ---------------------------------------------------------------------------------------------
// Floats as bit patterns, so JSON carries them exactly (NaN and infinities too).

mod f32_bits {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &f32, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u32(v.to_bits())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f32, D::Error> {
        u32::deserialize(d).map(f32::from_bits)
    }
}

mod f64_bits {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(v.to_bits())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        u64::deserialize(d).map(f64::from_bits)
    }
}

mod opt_f32_bits {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &Option<f32>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.serialize_some(&v.to_bits()),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f32>, D::Error> {
        Option::<u32>::deserialize(d).map(|b| b.map(f32::from_bits))
    }
}

/// [`EpochStats`] with exact floats.
#[derive(Clone, Copy, Serialize, Deserialize)]
struct EpochRecord {
    epoch: usize,
    #[serde(with = "f32_bits")]
    loss: f32,
    #[serde(with = "f32_bits")]
    accuracy: f32,
    #[serde(with = "opt_f32_bits")]
    val_loss: Option<f32>,
    #[serde(with = "opt_f32_bits")]
    val_accuracy: Option<f32>,
    #[serde(with = "f32_bits")]
    seconds: f32,
    #[serde(with = "f32_bits")]
    images_per_second: f32,
    #[serde(with = "f32_bits")]
    lr: f32,
}

impl From<&EpochStats> for EpochRecord {
    fn from(s: &EpochStats) -> Self {
        EpochRecord {
            epoch: s.epoch,
            loss: s.loss,
            accuracy: s.accuracy,
            val_loss: s.val_loss,
            val_accuracy: s.val_accuracy,
            seconds: s.seconds,
            images_per_second: s.images_per_second,
            lr: s.lr,
        }
    }
}

impl From<EpochRecord> for EpochStats {
    fn from(r: EpochRecord) -> Self {
        EpochStats {
            epoch: r.epoch,
            loss: r.loss,
            accuracy: r.accuracy,
            val_loss: r.val_loss,
            val_accuracy: r.val_accuracy,
            seconds: r.seconds,
            images_per_second: r.images_per_second,
            lr: r.lr,
        }
    }
}

/// The header's record of a run in progress (its tensors are separate).
#[derive(Serialize, Deserialize)]
struct TrainingRecord {
    epoch: usize,
    batch: usize,
    #[serde(with = "f64_bits")]
    loss_sum: f64,
    correct: usize,
    seen: usize,
    #[serde(with = "f32_bits")]
    lr: f32,
    #[serde(with = "f64_bits")]
    epoch_train_seconds: f64,
    #[serde(with = "f64_bits")]
    epoch_seconds: f64,
    #[serde(with = "f64_bits")]
    train_seconds: f64,
    history: Vec<EpochRecord>,
    step: usize,
    cursor: usize,
    shuffle_rng: [u64; 4],
    dropout_rng: [u64; 4],
    augment_rng: [u64; 4],
    optimizer_step: u64,
    /// Slots per parameter (0 for buffers).
    optimizer_slots: Vec<usize>,
    best: Option<BestRecord>,
    /// Whether `ema/` tensors (the weights' moving average) are stored; absent (false) in
    /// checkpoints from before it existed.
    #[serde(default)]
    ema: bool,
}

#[derive(Serialize, Deserialize)]
struct BestRecord {
    #[serde(with = "f32_bits")]
    val_loss: f32,
    epoch: usize,
    /// The best weights are the model's, bit for bit (a checkpoint right after an epoch that
    /// improved): no `best/` tensors are stored.
    same_as_model: bool,
}

#[derive(Serialize, Deserialize)]
struct FinishedRecord {
    history: Vec<EpochRecord>,
    best_epoch: usize,
    #[serde(with = "f64_bits")]
    train_seconds: f64,
}

#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "lowercase")]
enum Dtype {
    F32,
    U32,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
struct TensorEntry {
    name: String,
    dtype: Dtype,
    shape: Vec<usize>,
    /// Byte offset into the data section.
    offset: u64,
}

#[derive(Serialize, Deserialize)]
struct Header {
    format: String,
    run: RunInfo,
    training: Option<TrainingRecord>,
    finished: Option<FinishedRecord>,
    tensors: Vec<TensorEntry>,
}

// ---------------------------------------------------------------------------------------------
// Encoding.

/// A tensor to write: its entry and where its values are.
enum Source<'a> {
    F32(&'a [f32]),
    U32(Vec<u32>),
}

fn entries_and_bytes(header: &mut Header, sources: Vec<(String, Vec<usize>, Source)>) -> Vec<u8> {
    let mut offset = 0u64;
    for (name, shape, src) in &sources {
        let (dtype, len) = match src {
            Source::F32(v) => (Dtype::F32, v.len()),
            Source::U32(v) => (Dtype::U32, v.len()),
        };
        header.tensors.push(TensorEntry { name: name.clone(), dtype, shape: shape.clone(), offset });
        offset += 4 * len as u64;
    }
    let json = serde_json::to_vec(header).expect("the header serialises");
    let mut out = vec![0u8; PREFIX + json.len() + offset as usize + 4];
    out[..8].copy_from_slice(MAGIC);
    out[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    out[12..20].copy_from_slice(&(json.len() as u64).to_le_bytes());
    out[20..28].copy_from_slice(&offset.to_le_bytes());
    out[PREFIX..PREFIX + json.len()].copy_from_slice(&json);
    let mut at = PREFIX + json.len();
    for (_, _, src) in &sources {
        match src {
            Source::F32(v) => {
                for (dst, x) in out[at..at + 4 * v.len()].chunks_exact_mut(4).zip(v.iter()) {
                    dst.copy_from_slice(&x.to_le_bytes());
                }
                at += 4 * v.len();
            }
            Source::U32(v) => {
                for (dst, x) in out[at..at + 4 * v.len()].chunks_exact_mut(4).zip(v.iter()) {
                    dst.copy_from_slice(&x.to_le_bytes());
                }
                at += 4 * v.len();
            }
        }
    }
    let crc = crc32(&out[..at]);
    out[at..].copy_from_slice(&crc.to_le_bytes());
    out
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut c = flate2::Crc::new();
    c.update(bytes);
    c.sum()
}

/// Whether two parameter sets hold the same values, bit for bit.
fn same_values(a: &Params, b: &Params) -> bool {
    a.len() == b.len()
        && a.iter().zip(b.iter()).all(|(p, q)| {
            p.value.len() == q.value.len()
                && p.value.data().iter().zip(q.value.data()).all(|(x, y)| x.to_bits() == y.to_bits())
        })
}

fn params_sources<'a>(
    prefix: &str,
    params: &'a Params,
) -> impl Iterator<Item = (String, Vec<usize>, Source<'a>)> + 'a {
    let prefix = prefix.to_string();
    params
        .iter()
        .map(move |p| (format!("{prefix}/{}", p.name), p.value.shape().to_vec(), Source::F32(p.value.data())))
}

/// The bytes of a checkpoint of a run in progress.
///
/// # Panics
/// If the training set has more than `u32::MAX` images (the order is stored as `u32`).
pub fn encode_training(info: &RunInfo, s: &TrainSnapshot) -> Vec<u8> {
    let p = &s.progress;
    let opt = s.optimizer;
    let best_is_model = s.best.as_ref().is_some_and(|b| same_values(b.params, s.params));
    let record = TrainingRecord {
        epoch: p.epoch,
        batch: p.batch,
        loss_sum: p.loss_sum,
        correct: p.correct,
        seen: p.seen,
        lr: p.lr,
        epoch_train_seconds: p.epoch_train_seconds,
        epoch_seconds: p.epoch_seconds,
        train_seconds: p.train_seconds,
        history: p.history.iter().map(EpochRecord::from).collect(),
        step: s.stepper.step,
        cursor: s.stepper.cursor,
        shuffle_rng: s.stepper.shuffle_rng,
        dropout_rng: s.stepper.dropout_rng,
        augment_rng: s.stepper.augment_rng,
        optimizer_step: opt.step,
        optimizer_slots: opt.state.iter().map(Vec::len).collect(),
        best: s.best.as_ref().map(|b| BestRecord {
            val_loss: b.val_loss,
            epoch: b.epoch,
            same_as_model: best_is_model,
        }),
        ema: s.ema.is_some(),
    };
    let mut header = Header {
        format: FORMAT.into(),
        run: info.clone(),
        training: Some(record),
        finished: None,
        tensors: vec![],
    };
    let mut sources: Vec<_> = params_sources("model", s.params).collect();
    if let Some(b) = s.best.as_ref().filter(|_| !best_is_model) {
        sources.extend(params_sources("best", b.params));
    }
    if let Some(e) = s.ema {
        sources.extend(params_sources("ema", e));
    }
    for (p, slots) in s.params.iter().zip(&opt.state) {
        for (k, slot) in slots.iter().enumerate() {
            sources.push((format!("optimizer/{}/{k}", p.name), vec![slot.len()], Source::F32(slot)));
        }
    }
    let order: Vec<u32> = s
        .stepper
        .order
        .iter()
        .map(|&i| u32::try_from(i).expect("at most u32::MAX training images"))
        .collect();
    sources.push(("order".into(), vec![order.len()], Source::U32(order)));
    entries_and_bytes(&mut header, sources)
}

/// The bytes of a checkpoint of a run before its first step.
pub fn encode_start(info: &RunInfo) -> Vec<u8> {
    let mut header =
        Header { format: FORMAT.into(), run: info.clone(), training: None, finished: None, tensors: vec![] };
    entries_and_bytes(&mut header, Vec::new())
}

/// The bytes of a finished run's checkpoint: `params` are the final weights.
pub fn encode_finished(
    info: &RunInfo,
    params: &Params,
    history: &[EpochStats],
    best_epoch: usize,
    train_seconds: f64,
) -> Vec<u8> {
    let record = FinishedRecord {
        history: history.iter().map(EpochRecord::from).collect(),
        best_epoch,
        train_seconds,
    };
    let mut header = Header {
        format: FORMAT.into(),
        run: info.clone(),
        training: None,
        finished: Some(record),
        tensors: vec![],
    };
    entries_and_bytes(&mut header, params_sources("model", params).collect())
}

// ---------------------------------------------------------------------------------------------
// Decoding.

/// A checkpoint file checked and parsed, its tensors not yet matched with a model.
pub struct Decoded {
    pub info: RunInfo,
    header: Header,
    bytes: Vec<u8>,
    data_start: usize,
}

impl std::fmt::Debug for Decoded {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.debug_struct("Decoded").field("info", &self.info).finish_non_exhaustive()
    }
}

/// Checks a checkpoint's bytes (magic, version, length, CRC) and parses its header; the
/// error says what is wrong, without the file name.
pub fn decode(bytes: Vec<u8>) -> Result<Decoded, String> {
    if bytes.len() < PREFIX || &bytes[..8] != MAGIC {
        return Err("not an fmnist checkpoint".into());
    }
    let word = |r: std::ops::Range<usize>| u64::from_le_bytes(bytes[r].try_into().expect("8 bytes"));
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if version != FORMAT_VERSION {
        return Err(format!(
            "checkpoint format version {version}, this program reads version {FORMAT_VERSION}"
        ));
    }
    let (h, d) = (word(12..20), word(20..28));
    let expected =
        (PREFIX as u64).checked_add(h).and_then(|x| x.checked_add(d)).and_then(|x| x.checked_add(4));
    match expected {
        Some(n) if n == bytes.len() as u64 => {}
        Some(n) if n > bytes.len() as u64 => {
            return Err(format!("truncated: {} bytes, its header announces {n}", bytes.len()));
        }
        _ => return Err(format!("corrupt: {} bytes, its header announces {expected:?}", bytes.len())),
    }
    let body = bytes.len() - 4;
    let stored = u32::from_le_bytes(bytes[body..].try_into().expect("4 bytes"));
    let actual = crc32(&bytes[..body]);
    if stored != actual {
        return Err(format!("corrupt: fails its checksum (CRC-32 {actual:08x}, stored {stored:08x})"));
    }
    let h = h as usize;
    let header: Header = serde_json::from_slice(&bytes[PREFIX..PREFIX + h])
        .map_err(|e| format!("corrupt: its header is not valid ({e})"))?;
    if header.format != FORMAT {
        return Err(format!("not an fmnist checkpoint (format `{}`)", header.format));
    }
    if header.training.is_some() && header.finished.is_some() {
        return Err("corrupt: its header holds both a run in progress and a finished one".into());
    }
    let data_len = d as usize;
    for t in &header.tensors {
        let n = t.shape.iter().try_fold(4usize, |a, &b| a.checked_mul(b));
        let fits = n.and_then(|n| (t.offset as usize).checked_add(n)).is_some_and(|end| end <= data_len);
        if !fits {
            return Err(format!("corrupt: tensor `{}` lies outside the file", t.name));
        }
    }
    Ok(Decoded { info: header.run.clone(), header, bytes, data_start: PREFIX + h })
}

impl Decoded {
    /// Whether the checkpoint is a finished run's.
    pub fn is_finished(&self) -> bool {
        self.header.finished.is_some()
    }

    /// Where the run stands, for messages: "epoch 2, batch 37 of 94", "the end of epoch 1",
    /// "the start of training" or "the end of the run".
    pub fn position(&self, batches: usize) -> String {
        match &self.header.training {
            Some(t) if t.batch == 0 && t.epoch <= 1 => "the start of training".into(),
            Some(t) if t.batch == 0 => format!("the end of epoch {}", t.epoch - 1),
            Some(t) => format!("epoch {}, batch {} of {batches}", t.epoch, t.batch),
            None if self.header.finished.is_some() => "the end of the run".into(),
            None => "the start of training".into(),
        }
    }

    fn tensor_index(&self) -> Result<HashMap<&str, &TensorEntry>, String> {
        let mut map = HashMap::new();
        for t in &self.header.tensors {
            if map.insert(t.name.as_str(), t).is_some() {
                return Err(format!("corrupt: tensor `{}` appears twice", t.name));
            }
        }
        Ok(map)
    }

    fn f32s(&self, t: &TensorEntry) -> Vec<f32> {
        let n: usize = t.shape.iter().product();
        let at = self.data_start + t.offset as usize;
        self.bytes[at..at + 4 * n]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4")))
            .collect()
    }

    /// Every parameter of `params` under `prefix`, each with the shape the model has.
    fn params_under(
        &self,
        index: &HashMap<&str, &TensorEntry>,
        prefix: &str,
        params: &Params,
    ) -> Result<Vec<Vec<f32>>, String> {
        params
            .iter()
            .map(|p| {
                let name = format!("{prefix}/{}", p.name);
                let t = index.get(name.as_str()).ok_or_else(|| format!("it has no tensor `{name}`"))?;
                if t.dtype != Dtype::F32 || t.shape != p.value.shape() {
                    return Err(format!(
                        "tensor `{name}` is {:?} {:?}, the model's is f32 {:?}",
                        t.dtype,
                        t.shape,
                        p.value.shape()
                    ));
                }
                Ok(self.f32s(t))
            })
            .collect()
    }

    /// The state, matched with `params` (a model built from the run's recipe): every tensor
    /// must be there with the model's shapes.
    pub fn into_checkpoint(self, params: &Params) -> Result<Checkpoint, String> {
        if self.header.training.is_none() && self.header.finished.is_none() {
            return Ok(Checkpoint { info: self.info, contents: Contents::Start });
        }
        let index = self.tensor_index()?;
        let weights = self.params_under(&index, "model", params)?;
        let contents = if let Some(f) = &self.header.finished {
            Contents::Finished(Finished {
                params: weights,
                history: f.history.iter().map(|r| EpochStats::from(*r)).collect(),
                best_epoch: f.best_epoch,
                train_seconds: f.train_seconds,
            })
        } else {
            let t = self.header.training.as_ref().expect("decode checked one is there");
            if t.optimizer_slots.len() != params.len() {
                return Err(format!(
                    "its optimizer has {} parameters, the model {}",
                    t.optimizer_slots.len(),
                    params.len()
                ));
            }
            let mut moments = Vec::with_capacity(params.len());
            for (p, &slots) in params.iter().zip(&t.optimizer_slots) {
                let mut per = Vec::with_capacity(slots);
                for k in 0..slots {
                    let name = format!("optimizer/{}/{k}", p.name);
                    let e = index.get(name.as_str()).ok_or_else(|| format!("it has no tensor `{name}`"))?;
                    if e.dtype != Dtype::F32 || e.shape != [p.value.len()] {
                        return Err(format!("tensor `{name}` does not have the parameter's length"));
                    }
                    per.push(self.f32s(e));
                }
                moments.push(per);
            }
            let order_entry = index.get("order").ok_or("it has no tensor `order`")?;
            if order_entry.dtype != Dtype::U32 || order_entry.shape.len() != 1 {
                return Err("tensor `order` is not a list of u32".into());
            }
            let at = self.data_start + order_entry.offset as usize;
            let order: Vec<usize> = self.bytes[at..at + 4 * order_entry.shape[0]]
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes(c.try_into().expect("4")) as usize)
                .collect();
            let best = match &t.best {
                Some(b) => Some(Best {
                    val_loss: b.val_loss,
                    epoch: b.epoch,
                    params: if b.same_as_model {
                        weights.clone()
                    } else {
                        self.params_under(&index, "best", params)?
                    },
                }),
                None => None,
            };
            let ema = if t.ema { Some(self.params_under(&index, "ema", params)?) } else { None };
            Contents::Training(Box::new(TrainState {
                progress: Progress {
                    epoch: t.epoch,
                    batch: t.batch,
                    loss_sum: t.loss_sum,
                    correct: t.correct,
                    seen: t.seen,
                    lr: t.lr,
                    epoch_train_seconds: t.epoch_train_seconds,
                    epoch_seconds: t.epoch_seconds,
                    train_seconds: t.train_seconds,
                    history: t.history.iter().map(|r| EpochStats::from(*r)).collect(),
                },
                stepper: StepperPosition {
                    step: t.step,
                    order,
                    cursor: t.cursor,
                    shuffle_rng: t.shuffle_rng,
                    dropout_rng: t.dropout_rng,
                    augment_rng: t.augment_rng,
                },
                optimizer_step: t.optimizer_step,
                moments,
                params: weights,
                best,
                ema,
            }))
        };
        Ok(Checkpoint { info: self.info, contents })
    }
}

// ---------------------------------------------------------------------------------------------
// Files.

/// Writes `bytes` as `dir`'s latest checkpoint and keeps the one it replaces as the previous
/// (the module docs give the order of the steps). `halfway` runs after the first half of the
/// temporary file is written (a test hook: a kill there must leave the old checkpoints whole).
/// On an error the temporary file is removed and the checkpoints already there are untouched,
/// unless the error came after the first rename (then the previous one is the latest sound).
pub fn write(dir: &Path, bytes: &[u8], halfway: &mut dyn FnMut()) -> std::io::Result<()> {
    let latest = dir.join(LATEST);
    let tmp = temp_path(&latest, ".tmp");
    let half = bytes.len() / 2;
    let result = (|| {
        use std::io::Write;
        std::fs::create_dir_all(dir)?;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes[..half])?;
        halfway();
        f.write_all(&bytes[half..])?;
        // The data and the length (fdatasync); the rest of the metadata can wait.
        f.sync_data()
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    if latest.exists() {
        std::fs::rename(&latest, dir.join(PREVIOUS))?;
    }
    std::fs::rename(&tmp, &latest)?;
    sync_dir(dir)
}

/// Writes `bytes` to `dir`'s latest checkpoint in one go (see [`write()`]).
pub fn write_now(dir: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write(dir, bytes, &mut || {})
}

/// A checkpoint file read back, with the notes on the files passed over to reach it.
#[derive(Debug)]
pub struct Loaded {
    pub decoded: Decoded,
    pub path: PathBuf,
    /// One line per checkpoint refused on the way (the file and why), to show the user.
    pub warnings: Vec<String>,
}

/// Whether `dir` holds a checkpoint file (sound or not).
pub fn present(dir: &Path) -> bool {
    dir.join(LATEST).is_file() || dir.join(PREVIOUS).is_file()
}

/// Reads `dir`'s latest sound checkpoint: the latest, or the previous if the latest is
/// missing, truncated or corrupt. A refused latest is renamed `checkpoint.ckpt.bad` (so a
/// later rotation does not push it over the previous) and a warning says why. `Ok(None)` if
/// the folder holds no checkpoint file; an error (naming each file and its fault) if it holds
/// only unsound ones.
pub fn read(dir: &Path) -> Result<Option<Loaded>, String> {
    let mut warnings = Vec::new();
    let mut faults = Vec::new();
    for (k, name) in [LATEST, PREVIOUS].into_iter().enumerate() {
        let path = dir.join(name);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                faults.push(format!("{}: cannot read it: {e}", path.display()));
                continue;
            }
        };
        match decode(bytes) {
            Ok(decoded) => {
                if !faults.is_empty() {
                    let bad = dir.join(format!("{LATEST}.bad"));
                    let moved = k == 1 && std::fs::rename(dir.join(LATEST), &bad).is_ok();
                    let kept = if moved { format!(", kept as {}", bad.display()) } else { String::new() };
                    warnings.push(format!("{}{kept}; using the previous checkpoint", faults.join("; ")));
                }
                return Ok(Some(Loaded { decoded, path, warnings }));
            }
            Err(why) => faults.push(format!("{}: {why}", path.display())),
        }
    }
    if faults.is_empty() {
        Ok(None)
    } else {
        Err(format!("no sound checkpoint: {}", faults.join("; ")))
    }
}
