//! Model files: safetensors (the format PyTorch, candle and burn share), with everything
//! needed to rebuild the model stored in the header's metadata, so `eval` and `predict`
//! need nothing but the file.
//!
//! Metadata keys: `format` (always `fmnist-model`), `version`, `input_shape`, `layers` (the
//! [`LayerConfig`] list as JSON), `normalization`, `dataset`, `classes`, `preset`.
//! Tensors: every parameter and batch-norm running statistic by name (`"0.conv2d.weight"`),
//! `F32`, little-endian. Dense weights are `[IN, OUT]` as in Keras (PyTorch stores
//! `[OUT, IN]`); convolution weights `[OC, C, KH, KW]` as in PyTorch.

use std::collections::HashMap;
use std::path::Path;

use kernels::Rng;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::files::write_atomic;
use crate::model::{Init, LayerConfig};
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

/// Reads a model file written by [`save`], checking that it is one, that its architecture
/// builds, and that every tensor is there with the shape the architecture expects.
pub fn load(path: &Path) -> Result<SavedModel, ModelFileError> {
    let shown = path.display();
    let bytes = std::fs::read(path)
        .map_err(|e| ModelFileError(format!("{shown}: cannot read the model file: {e}")))?;
    from_bytes(&bytes).map_err(|why| ModelFileError(format!("{shown}: {why}")))
}

/// Parses model-file bytes; the error says what is wrong (without the file name).
pub fn from_bytes(bytes: &[u8]) -> Result<SavedModel, String> {
    let (_, header) =
        SafeTensors::read_metadata(bytes).map_err(|e| format!("not a safetensors model file ({e})"))?;
    let tensors = SafeTensors::deserialize(bytes).map_err(|e| format!("corrupt safetensors file ({e})"))?;
    let meta = header.metadata().clone().unwrap_or_default();
    if meta.get("format").map(String::as_str) != Some(FORMAT) {
        return Err(
            "a safetensors file, but not a model saved by fmnist (no `format: fmnist-model` metadata)".into(),
        );
    }
    if meta.get("version").map(String::as_str) != Some(VERSION) {
        return Err(format!(
            "model file version {:?}, this program reads version {VERSION}",
            meta.get("version")
        ));
    }
    let get = |k: &str| meta.get(k).ok_or_else(|| format!("metadata has no `{k}`"));
    let parse_err = |k: &str, e: serde_json::Error| format!("metadata `{k}` is not valid: {e}");
    let input_shape: Vec<usize> =
        serde_json::from_str(get("input_shape")?).map_err(|e| parse_err("input_shape", e))?;
    let layers: Vec<LayerConfig> =
        serde_json::from_str(get("layers")?).map_err(|e| parse_err("layers", e))?;
    let normalization: Normalization =
        serde_json::from_str(get("normalization")?).map_err(|e| parse_err("normalization", e))?;
    let classes: Vec<String> = serde_json::from_str(get("classes")?).map_err(|e| parse_err("classes", e))?;
    let mut model = Sequential::new(&input_shape, &layers, Init::GlorotUniform, &mut Rng::new(0))
        .map_err(|e| format!("the architecture in the file does not build: {e}"))?;
    if model.output_shape() != [classes.len()] {
        return Err(format!(
            "the model has {:?} outputs but the file names {} classes",
            model.output_shape(),
            classes.len()
        ));
    }
    let expected: Vec<&str> = model.params().iter().map(|p| p.name.as_str()).collect::<Vec<_>>();
    let extra: Vec<String> =
        tensors.names().into_iter().filter(|n| !expected.contains(n)).map(String::from).collect();
    if let Some(name) = extra.first() {
        return Err(format!("tensor `{name}` does not belong to the architecture in the file"));
    }
    for p in model.params_mut().iter_mut() {
        let view = tensors.tensor(&p.name).map_err(|_| format!("tensor `{}` is missing", p.name))?;
        if view.dtype() != Dtype::F32 {
            return Err(format!("tensor `{}` is {:?}, expected F32", p.name, view.dtype()));
        }
        if view.shape() != p.value.shape() {
            return Err(format!(
                "tensor `{}` has shape {:?} but the architecture expects {:?}",
                p.name,
                view.shape(),
                p.value.shape()
            ));
        }
        for (dst, src) in p.value.data_mut().iter_mut().zip(view.data().chunks_exact(4)) {
            *dst = f32::from_le_bytes([src[0], src[1], src[2], src[3]]);
        }
        if p.value.data().iter().any(|v| !v.is_finite()) {
            return Err(format!("tensor `{}` holds NaN or infinite values", p.name));
        }
    }
    Ok(SavedModel {
        model,
        normalization,
        dataset: get("dataset")?.clone(),
        classes,
        preset: meta.get("preset").cloned().unwrap_or_default(),
    })
}

/// A metadata value: plain data as a JSON string (safetensors metadata values are strings).
fn json<T: serde::Serialize + ?Sized>(v: &T) -> String {
    serde_json::to_string(v).expect("plain data serialises")
}
