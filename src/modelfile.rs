//! Model files: safetensors (the format PyTorch, candle and burn share), with everything
//! needed to rebuild the model stored in the header's metadata, so `eval` and `predict`
//! need nothing but the file.
//!
//! Metadata keys: `format` (always `fmnist-model`), `version`, `input_shape`, `layers` (the
//! [`LayerConfig`] list as JSON), `normalization`, `dataset`, `classes`, `preset`.
//! Tensors: every parameter and batch-norm running statistic by name (`"0.conv2d.weight"`),
//! `F32`, little-endian. Dense weights are `[IN, OUT]` as in Keras (PyTorch stores
//! `[OUT, IN]`); convolution weights `[OC, C, KH, KW]` as in PyTorch.
//!
//! A file comes from the user, so [`load`] trusts nothing in it: it reads at most
//! [`MAX_MODEL_FILE_BYTES`], and [`from_bytes`] checks the structure, the metadata, the
//! architecture's sizes (by [`limits::check_architecture`], without allocating them) and
//! every tensor's dtype, shape and values before it builds the model. The rules are listed
//! at [`from_bytes`] and in the README ("What a model file must satisfy").

use std::collections::{HashMap, HashSet};
use std::path::Path;

use kernels::Rng;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::data::{DatasetKind, NUM_CLASSES};
use crate::files::write_atomic;
use crate::limits::{self, MAX_MODEL_FILE_BYTES, MAX_MODEL_HEADER_BYTES};
use crate::model::{Init, LayerConfig};
use crate::presets::INPUT_SHAPE;
use crate::train::Normalization;
use crate::Sequential;

const FORMAT: &str = "fmnist-model";
const VERSION: &str = "1";

/// A model with what it needs to be used: how to scale pixels and what the classes are.
#[derive(Clone, Debug)]
pub struct SavedModel {
    pub model: Sequential,
    pub normalization: Normalization,
    pub dataset: String,
    pub classes: Vec<String>,
    pub preset: String,
}

/// Why a model file could not be read: one line naming the file.
#[derive(Debug)]
pub struct ModelFileError(pub String);

impl std::fmt::Display for ModelFileError {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ModelFileError {}

/// Serialises `saved` to bytes.
pub fn to_bytes(saved: &SavedModel) -> Vec<u8> {
    let m = &saved.model;
    let mut meta = HashMap::new();
    meta.insert("format".to_string(), FORMAT.to_string());
    meta.insert("version".to_string(), VERSION.to_string());
    meta.insert("input_shape".to_string(), json(&m.input_shape));
    meta.insert("layers".to_string(), json(&m.configs));
    meta.insert("normalization".to_string(), json(&saved.normalization));
    meta.insert("dataset".to_string(), saved.dataset.clone());
    meta.insert("classes".to_string(), json(&saved.classes));
    meta.insert("preset".to_string(), saved.preset.clone());
    let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = m
        .params()
        .iter()
        .map(|p| {
            (
                p.name.clone(),
                p.value.data().iter().flat_map(|v| v.to_le_bytes()).collect(),
                p.value.shape().to_vec(),
            )
        })
        .collect();
    let views: Vec<(String, TensorView)> = bytes
        .iter()
        .map(|(name, b, shape)| {
            (name.clone(), TensorView::new(Dtype::F32, shape.clone(), b).expect("sizes agree"))
        })
        .collect();
    safetensors::serialize(views, Some(meta)).expect("serialising in memory cannot fail")
}

/// Writes the model file atomically.
pub fn save(path: &Path, saved: &SavedModel) -> std::io::Result<()> {
    write_atomic(path, &to_bytes(saved))
}

/// Reads a model file written by [`save`] and checks it in full (see [`from_bytes`]). The
/// file is read up to [`MAX_MODEL_FILE_BYTES`] bytes, whatever size the file system reports.
pub fn load(path: &Path) -> Result<SavedModel, ModelFileError> {
    let shown = path.display();
    let bytes = limits::read_file(path, MAX_MODEL_FILE_BYTES)
        .map_err(|e| ModelFileError(format!("{shown}: cannot read the model file: {e}")))?;
    from_bytes(&bytes).map_err(|why| ModelFileError(format!("{shown}: {}", one_line(&why))))
}

/// Parses model-file bytes; the error says what is wrong (without the file name).
///
/// Checked, in this order, before the model is built (so before anything is allocated in
/// proportion to what the file declares):
/// 1. the safetensors structure: a header of at most [`MAX_MODEL_HEADER_BYTES`], offsets that
///    tile the data exactly, no key (tensor name or metadata key) given twice;
/// 2. the metadata: `format` and `version`, every key present with the right JSON type, a
///    known `dataset` whose class names `classes` lists in order, the input shape `[1, 28,
///    28]` of both datasets' images, a `preset` name of at most 100 printable characters, a
///    normalisation that maps the pixels 0..=255 to finite, distinct values;
/// 3. the architecture, by [`limits::check_architecture`] (every size against its documented
///    bound) with an output of one value per class;
/// 4. the tensors: exactly those the architecture holds, each `F32` with the expected shape,
///    every value finite, every batch-norm running variance at least 0.
pub fn from_bytes(bytes: &[u8]) -> Result<SavedModel, String> {
    check_header_size(bytes)?;
    let (header_len, header) =
        SafeTensors::read_metadata(bytes).map_err(|e| format!("not a safetensors model file ({e})"))?;
    check_unique_keys(bytes.get(8..8 + header_len).unwrap_or_default())?;
    let tensors = SafeTensors::deserialize(bytes).map_err(|e| format!("corrupt safetensors file ({e})"))?;
    let meta = header.metadata().clone().unwrap_or_default();
    if meta.get("format").map(String::as_str) != Some(FORMAT) {
        return Err(
            "a safetensors file, but not a model saved by fmnist (no `format: fmnist-model` metadata)".into(),
        );
    }
    if meta.get("version").map(String::as_str) != Some(VERSION) {
        let found = meta.get("version").map_or("none".to_string(), |v| format!("`{}`", show(v)));
        return Err(format!("model file version {found}, this program reads version {VERSION}"));
    }
    let get = |k: &str| meta.get(k).ok_or_else(|| format!("metadata has no `{k}`"));
    // serde's messages quote the offending value, which the file controls: shortened.
    let parse_err =
        |k: &str, e: serde_json::Error| format!("metadata `{k}` is not valid: {}", show(&e.to_string()));
    let input_shape: Vec<usize> =
        serde_json::from_str(get("input_shape")?).map_err(|e| parse_err("input_shape", e))?;
    let layers: Vec<LayerConfig> =
        serde_json::from_str(get("layers")?).map_err(|e| parse_err("layers", e))?;
    let normalization: Normalization =
        serde_json::from_str(get("normalization")?).map_err(|e| parse_err("normalization", e))?;
    let classes: Vec<String> = serde_json::from_str(get("classes")?).map_err(|e| parse_err("classes", e))?;
    let dataset = get("dataset")?.clone();
    let preset = meta.get("preset").cloned().unwrap_or_default();

    let kind = DatasetKind::from_folder(&dataset).ok_or_else(|| {
        format!(
            "metadata `dataset` is `{}`, not one this program reads (fashion-mnist, mnist)",
            show(&dataset)
        )
    })?;
    if classes.iter().map(String::as_str).ne(kind.class_names()) {
        return Err(format!(
            "metadata `classes` does not list the {} classes of {dataset} in order (found {} names)",
            NUM_CLASSES,
            classes.len()
        ));
    }
    if input_shape != INPUT_SHAPE {
        return Err(format!(
            "the model takes inputs of shape {input_shape:?}, but {} images are {INPUT_SHAPE:?} (channels, height, width)",
            kind.name()
        ));
    }
    if preset.chars().count() > 100 || preset.chars().any(char::is_control) {
        return Err("metadata `preset` must be at most 100 printable characters".into());
    }
    check_normalization(&normalization)?;
    let arch = limits::check_architecture(&input_shape, &layers)
        .map_err(|e| format!("the architecture in the file is refused: {e}"))?;
    let out = arch.output_shape(&input_shape);
    if out != [classes.len()] {
        return Err(format!(
            "the model has outputs of shape {out:?} but the file names {} classes",
            classes.len()
        ));
    }
    check_tensors(&tensors, &arch)?;

    // Every size is now bounded and every tensor present: building allocates what the file holds.
    let mut model = Sequential::new(&input_shape, &layers, Init::GlorotUniform, &mut Rng::new(0))
        .map_err(|e| format!("the architecture in the file does not build: {e}"))?;
    for p in model.params_mut().iter_mut() {
        let view = tensors.tensor(&p.name).map_err(|_| format!("tensor `{}` is missing", p.name))?;
        if view.shape() != p.value.shape() || view.dtype() != Dtype::F32 {
            return Err(format!(
                "tensor `{}` has shape {:?} but the built model expects {:?}",
                p.name,
                view.shape(),
                p.value.shape()
            ));
        }
        for (dst, src) in p.value.data_mut().iter_mut().zip(view.data().chunks_exact(4)) {
            *dst = f32_le(src);
        }
    }
    Ok(SavedModel { model, normalization, dataset, classes, preset })
}

/// Refuses a header length over [`MAX_MODEL_HEADER_BYTES`] before the header is parsed.
fn check_header_size(bytes: &[u8]) -> Result<(), String> {
    if let Some(len) = bytes.get(..8) {
        let n = u64::from_le_bytes(len.try_into().unwrap_or_default());
        if n > MAX_MODEL_HEADER_BYTES {
            return Err(format!(
                "not a safetensors model file (its header length {n} is over the limit of {MAX_MODEL_HEADER_BYTES} bytes)"
            ));
        }
    }
    Ok(())
}

/// Refuses a header whose JSON names a tensor or a metadata key twice: the safetensors crate
/// (and serde) would keep the last one silently, so two readers could see two models.
fn check_unique_keys(header: &[u8]) -> Result<(), String> {
    let mut de = serde_json::Deserializer::from_slice(header);
    serde::de::DeserializeSeed::deserialize(UniqueKeys { top: true }, &mut de)
        .map_err(|e| format!("corrupt safetensors header ({e})"))
}

/// A serde visitor over a JSON object that fails on a repeated key; at the top level it also
/// looks into `__metadata__`.
struct UniqueKeys {
    top: bool,
}

impl<'de> serde::de::DeserializeSeed<'de> for UniqueKeys {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for UniqueKeys {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if self.top && key == "__metadata__" {
                map.next_value_seed(UniqueKeys { top: false })?;
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
            if !seen.insert(key.clone()) {
                let what = if self.top { "tensor" } else { "metadata key" };
                return Err(serde::de::Error::custom(format!("{what} `{}` appears twice", show(&key))));
            }
        }
        Ok(())
    }
}

/// Refuses a normalisation that cannot come from training: a scale or standard deviation that
/// is not a positive number, a mean that is not finite, or one that maps the pixels 0..=255
/// to non-finite values or all to the same value (`x = (byte * scale - mean) / std`).
fn check_normalization(n: &Normalization) -> Result<(), String> {
    let Normalization { scale, mean, std } = *n;
    let shown = format!("normalization (scale {scale}, mean {mean}, std {std})");
    if !(scale > 0.0 && scale.is_finite()) {
        return Err(format!("{shown}: the scale must be a positive number"));
    }
    if !(std > 0.0 && std.is_finite()) {
        return Err(format!("{shown}: the standard deviation must be a positive number"));
    }
    if !mean.is_finite() {
        return Err(format!("{shown}: the mean must be a finite number"));
    }
    let (a, b) = (scale / std, -mean / std);
    let (lo, hi) = (b, 255.0 * a + b);
    if !(a.is_finite() && lo.is_finite() && hi.is_finite()) {
        return Err(format!("{shown}: maps pixels to values that overflow f32"));
    }
    if lo == hi {
        return Err(format!("{shown}: maps every pixel to the same value"));
    }
    Ok(())
}

/// Checks the file's tensors against the architecture, from the file's bytes (nothing is
/// allocated for the values): the same names, `F32`, the expected shapes, finite values, and
/// batch-norm running variances of at least 0.
fn check_tensors(tensors: &SafeTensors, arch: &limits::Architecture) -> Result<(), String> {
    let expected: HashSet<&str> = arch.tensors.iter().map(|t| t.name.as_str()).collect();
    let mut extra: Vec<&str> = tensors.names().into_iter().filter(|n| !expected.contains(n)).collect();
    extra.sort_unstable();
    if let Some(name) = extra.first() {
        return Err(format!("tensor `{}` does not belong to the architecture in the file", show(name)));
    }
    for spec in &arch.tensors {
        let name = &spec.name;
        let view = tensors.tensor(name).map_err(|_| format!("tensor `{name}` is missing"))?;
        if view.dtype() != Dtype::F32 {
            return Err(format!("tensor `{name}` is {:?}, expected F32", view.dtype()));
        }
        if view.shape() != spec.shape {
            return Err(format!(
                "tensor `{name}` has shape {:?} but the architecture expects {:?}",
                view.shape(),
                spec.shape
            ));
        }
        let values = view.data().chunks_exact(4).map(f32_le);
        if let Some((i, v)) = values.clone().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(format!("tensor `{name}` holds a non-finite value ({v} at index {i})"));
        }
        if name.ends_with(".running_var") {
            if let Some((i, v)) = values.enumerate().find(|&(_, v)| v < 0.0) {
                return Err(format!(
                    "tensor `{name}` holds a negative batch-norm running variance ({v} at index {i})"
                ));
            }
        }
    }
    Ok(())
}

/// A little-endian f32 from 4 bytes (`chunks_exact(4)` gives exactly 4).
fn f32_le(b: &[u8]) -> f32 {
    f32::from_le_bytes(b.try_into().unwrap_or_default())
}

/// `s` on one line: control characters (a file's strings may hold line breaks) become `?`.
fn one_line(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { '?' } else { c }).collect()
}

/// A string from the file shortened for a message (a hostile file may hold huge or
/// multi-line names).
fn show(s: &str) -> String {
    let clean = one_line(s);
    if clean.chars().count() > 200 {
        format!("{}...", clean.chars().take(200).collect::<String>())
    } else {
        clean
    }
}

/// A metadata value: plain data as a JSON string (safetensors metadata values are strings).
fn json<T: serde::Serialize + ?Sized>(v: &T) -> String {
    serde_json::to_string(v).expect("plain data serialises")
}
