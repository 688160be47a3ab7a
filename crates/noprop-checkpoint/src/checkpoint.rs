//! [`Checkpoint`]: a model's named tensors, and optionally its training
//! state, with their [`CheckpointMeta`], to and from safetensors bytes.
//!
//! Reading never panics: a truncated or foreign file, a tensor of an
//! unsupported dtype, a non-finite value, a checkpoint of another variant
//! or with other shapes each give an error naming the problem (and, through
//! [`Checkpoint::load`], the file). The header is written in a canonical
//! order, so the same checkpoint always gives the same bytes.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::safetensors::Load;
use candle_core::{DType, Device, Tensor};
use noprop_core::rng::RNG_STATE_WORDS;
use noprop_core::{SeededRng, Variant};
use safetensors::tensor::{Dtype, SafeTensors, View};

use crate::atomic::write_atomic;
use crate::meta::{
    CheckpointKind, CheckpointMeta, FORMAT_NAME, OPTIMIZER_PREFIX, RNG_TENSOR, TRAINER_PREFIX,
};

/// The first non-finite value of a stored tensor, with its flat index,
/// read from the file's little-endian bytes before the tensor is put on a
/// device (`None` for integer dtypes or when every value is finite). The
/// 16-bit floats are non-finite when their exponent bits are all set.
fn first_non_finite(dtype: Dtype, data: &[u8]) -> Option<(usize, f64)> {
    let half = |exponent: u16, mantissa: u16| {
        data.chunks_exact(2).enumerate().find_map(|(i, b)| {
            let bits = u16::from_le_bytes([b[0], b[1]]);
            (bits & exponent == exponent).then(|| {
                let value = match (bits & mantissa != 0, bits & 0x8000 != 0) {
                    (true, _) => f64::NAN,
                    (false, true) => f64::NEG_INFINITY,
                    (false, false) => f64::INFINITY,
                };
                (i, value)
            })
        })
    };
    match dtype {
        Dtype::F32 => data.chunks_exact(4).enumerate().find_map(|(i, b)| {
            let v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            (!v.is_finite()).then_some((i, f64::from(v)))
        }),
        Dtype::F64 => data.chunks_exact(8).enumerate().find_map(|(i, b)| {
            let v = f64::from_le_bytes(b.try_into().expect("chunks of 8 bytes"));
            (!v.is_finite()).then_some((i, v))
        }),
        Dtype::F16 => half(0x7c00, 0x03ff),
        Dtype::BF16 => half(0x7f80, 0x007f),
        _ => None,
    }
}

/// Whether `name` is one of the model's variables (not optimizer or
/// trainer state).
fn is_model_tensor(name: &str) -> bool {
    !name.starts_with(OPTIMIZER_PREFIX) && !name.starts_with(TRAINER_PREFIX)
}

/// A checkpoint in memory: metadata and named tensors (sorted by name).
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// The metadata.
    pub meta: CheckpointMeta,
    /// Every tensor of the file, by name.
    pub tensors: BTreeMap<String, Tensor>,
}

impl Checkpoint {
    /// Captures `model`. With `trainer_rng`, a training checkpoint (model,
    /// optimizer state and the generator); without, weights only.
    pub fn capture(
        model: &dyn Variant,
        mut meta: CheckpointMeta,
        trainer_rng: Option<&SeededRng>,
    ) -> Result<Self> {
        let mut tensors = BTreeMap::new();
        for (name, value) in model.params().named_tensors() {
            if !is_model_tensor(&name) {
                bail!("model variable `{name}` uses a prefix reserved for training state");
            }
            tensors.insert(name, value);
        }
        meta.kind = CheckpointKind::Weights;
        if let Some(rng) = trainer_rng {
            meta.kind = CheckpointKind::Training;
            for (name, value) in model.optimizer_state()? {
                if !name.starts_with(OPTIMIZER_PREFIX) {
                    bail!("optimizer state `{name}` does not start with `{OPTIMIZER_PREFIX}`");
                }
                if tensors.insert(name.clone(), value).is_some() {
                    bail!("optimizer state `{name}` is listed twice");
                }
            }
            let words = rng.state_words();
            let n = words.len();
            tensors.insert(
                RNG_TENSOR.to_string(),
                Tensor::from_vec(words, n, &Device::Cpu)?,
            );
            if meta.trainer_state_json.is_none() {
                bail!("a training checkpoint needs the trainer state");
            }
        } else {
            meta.trainer_state_json = None;
        }
        Ok(Self { meta, tensors })
    }

    /// The same model without training state (what `noprop export` writes).
    pub fn weights_only(&self) -> Self {
        let mut meta = self.meta.clone();
        meta.kind = CheckpointKind::Weights;
        meta.trainer_state_json = None;
        let tensors = self.model_tensors().into_iter().collect();
        Self { meta, tensors }
    }

    /// The model's variables (everything but `optim.*` and `trainer.*`).
    pub fn model_tensors(&self) -> HashMap<String, Tensor> {
        self.tensors
            .iter()
            .filter(|(n, _)| is_model_tensor(n))
            .map(|(n, t)| (n.clone(), t.clone()))
            .collect()
    }

    /// The optimizer state (`optim.*`).
    pub fn optimizer_tensors(&self) -> HashMap<String, Tensor> {
        self.tensors
            .iter()
            .filter(|(n, _)| n.starts_with(OPTIMIZER_PREFIX))
            .map(|(n, t)| (n.clone(), t.clone()))
            .collect()
    }

    /// The trainer's generator, restored exactly.
    pub fn trainer_rng(&self) -> Result<SeededRng> {
        let tensor = self.tensors.get(RNG_TENSOR).with_context(|| {
            format!("tensor `{RNG_TENSOR}` is missing (not a training checkpoint?)")
        })?;
        if tensor.dtype() != DType::U32 || tensor.dims() != [RNG_STATE_WORDS] {
            bail!(
                "tensor `{RNG_TENSOR}` must be u32 [{RNG_STATE_WORDS}], found {:?} {:?}",
                tensor.dtype(),
                tensor.dims()
            );
        }
        let words = tensor.to_vec1::<u32>()?;
        SeededRng::from_state_words(&words)
            .with_context(|| format!("tensor `{RNG_TENSOR}` is not a generator state"))
    }

    /// Loads the model's variables (and, for a training checkpoint, the
    /// optimizer state) into `model`, refusing another variant or other
    /// shapes.
    pub fn restore_into(&self, model: &mut dyn Variant) -> Result<()> {
        let name = model.name();
        if self.meta.variant != name {
            bail!(
                "the checkpoint holds a `{}` model, not `{name}`",
                self.meta.variant
            );
        }
        model
            .params()
            .load(&self.model_tensors())
            .context("the checkpoint's tensors do not fit the model")?;
        if self.meta.kind == CheckpointKind::Training {
            model
                .load_optimizer_state(&self.optimizer_tensors())
                .context("the checkpoint's optimizer state does not fit the model")?;
        }
        Ok(())
    }

    /// The number of model values (elements of every tensor that is not
    /// optimizer or trainer state): the size of the model the file holds,
    /// which bounds the model built to load it.
    pub fn num_model_values(&self) -> usize {
        self.tensors
            .iter()
            .filter(|(name, _)| is_model_tensor(name))
            .map(|(_, t)| t.elem_count())
            .sum()
    }

    /// Every tensor as its values' bit patterns (u32 as they are, floats
    /// through f32), sorted by name: two checkpoints hold bitwise-identical
    /// tensors exactly when these are equal.
    pub fn bit_patterns(&self) -> Result<BTreeMap<String, Vec<u32>>> {
        self.tensors
            .iter()
            .map(|(name, t)| {
                let flat = t.flatten_all()?;
                let bits = match t.dtype() {
                    DType::U32 => flat.to_vec1::<u32>()?,
                    _ => flat
                        .to_dtype(DType::F32)?
                        .to_vec1::<f32>()?
                        .iter()
                        .map(|x| x.to_bits())
                        .collect(),
                };
                Ok((name.clone(), bits))
            })
            .collect()
    }

    /// The file's bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let raw: Vec<(String, RawTensor)> = self
            .tensors
            .iter()
            .map(|(n, t)| {
                Ok((
                    n.clone(),
                    RawTensor::from_tensor(t).with_context(|| format!("tensor `{n}`"))?,
                ))
            })
            .collect::<Result<_>>()?;
        let views = raw.iter().map(|(n, r)| (n.as_str(), r));
        let bytes = safetensors::serialize(views, Some(self.meta.to_map()))
            .context("cannot serialise the checkpoint")?;
        canonical_header(bytes)
    }

    /// Writes the checkpoint to `path` atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let bytes = self.to_bytes()?;
        write_atomic(path, &bytes)
            .with_context(|| format!("cannot write checkpoint {}", path.display()))
    }

    /// Reads a checkpoint, tensors on `device`.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let bytes = std::fs::read(path)
            .with_context(|| format!("cannot read checkpoint {}", path.display()))?;
        Self::from_bytes(&bytes, device)
            .with_context(|| format!("cannot load checkpoint {}", path.display()))
    }

    /// Reads only the metadata of a checkpoint file.
    pub fn read_meta(path: &Path) -> Result<CheckpointMeta> {
        let bytes = std::fs::read(path)
            .with_context(|| format!("cannot read checkpoint {}", path.display()))?;
        meta_from_bytes(&bytes)
            .with_context(|| format!("cannot load checkpoint {}", path.display()))
    }

    /// Parses a checkpoint's bytes.
    pub fn from_bytes(bytes: &[u8], device: &Device) -> Result<Self> {
        let meta = meta_from_bytes(bytes)?;
        let file = SafeTensors::deserialize(bytes).map_err(not_safetensors)?;
        let mut tensors = BTreeMap::new();
        for (name, view) in file.tensors() {
            if !matches!(
                view.dtype(),
                Dtype::F32
                    | Dtype::F64
                    | Dtype::F16
                    | Dtype::BF16
                    | Dtype::U32
                    | Dtype::U8
                    | Dtype::I64
            ) {
                bail!("tensor `{name}` has unsupported dtype {}", view.dtype());
            }
            // Training stops on a non-finite loss, so a finite checkpoint is
            // the only kind it writes; anything else is damaged.
            if let Some((index, value)) = first_non_finite(view.dtype(), view.data()) {
                bail!(
                    "tensor `{name}` holds {value} at flat index {index}: a checkpoint's values must be finite (the file is damaged)"
                );
            }
            let tensor = view
                .load(device)
                .with_context(|| format!("cannot read tensor `{name}`"))?;
            tensors.insert(name, tensor);
        }
        Ok(Self { meta, tensors })
    }
}

fn meta_from_bytes(bytes: &[u8]) -> Result<CheckpointMeta> {
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(not_safetensors)?;
    let map = header
        .metadata()
        .as_ref()
        .filter(|m| m.get("format").map(String::as_str) == Some(FORMAT_NAME));
    let Some(map) = map else {
        bail!("this safetensors file is not a noprop checkpoint (no `format = {FORMAT_NAME}` metadata)");
    };
    CheckpointMeta::from_map(map)
}

/// Rewrites the header of a serialised file with its keys sorted, so the
/// same checkpoint always gives the same bytes (the metadata map is a
/// `HashMap`, whose order changes from run to run). The data offsets are
/// relative to the end of the header, so the data is kept as it is.
fn canonical_header(bytes: Vec<u8>) -> Result<Vec<u8>> {
    let header_len = u64::from_le_bytes(bytes[..8].try_into()?) as usize;
    let header: BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(&bytes[8..8 + header_len])?;
    let sorted: BTreeMap<String, serde_json::Value> = header
        .into_iter()
        .map(|(k, v)| {
            let v = match (k.as_str(), v) {
                ("__metadata__", serde_json::Value::Object(map)) => {
                    serde_json::to_value(map.into_iter().collect::<BTreeMap<_, _>>())?
                }
                (_, v) => v,
            };
            Ok((k, v))
        })
        .collect::<Result<_>>()?;
    let mut text = serde_json::to_vec(&sorted)?;
    // safetensors pads the header with spaces to a multiple of 8 bytes.
    text.resize(text.len().div_ceil(8) * 8, b' ');
    let mut out = Vec::with_capacity(8 + text.len() + bytes.len() - 8 - header_len);
    out.extend_from_slice(&(text.len() as u64).to_le_bytes());
    out.extend_from_slice(&text);
    out.extend_from_slice(&bytes[8 + header_len..]);
    Ok(out)
}

fn not_safetensors(e: safetensors::SafeTensorError) -> anyhow::Error {
    anyhow::anyhow!("not a valid safetensors file (truncated or corrupt?): {e}")
}

/// A tensor's bytes on the host, as safetensors wants them. candle's own
/// `View for &Tensor` would serve, but it copies a device tensor to the
/// host inside `View::data`, which cannot fail and so unwraps: a device
/// error while saving would panic. Copying first, here, makes it an error
/// that names the tensor.
struct RawTensor {
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl RawTensor {
    fn from_tensor(t: &Tensor) -> Result<Self> {
        let flat = t.to_device(&Device::Cpu)?.flatten_all()?;
        fn le<T: Copy, const N: usize>(v: Vec<T>, f: fn(T) -> [u8; N]) -> Vec<u8> {
            v.into_iter().flat_map(f).collect()
        }
        let (dtype, bytes) = match t.dtype() {
            DType::F32 => (Dtype::F32, le(flat.to_vec1::<f32>()?, f32::to_le_bytes)),
            DType::F64 => (Dtype::F64, le(flat.to_vec1::<f64>()?, f64::to_le_bytes)),
            DType::U32 => (Dtype::U32, le(flat.to_vec1::<u32>()?, u32::to_le_bytes)),
            DType::U8 => (Dtype::U8, flat.to_vec1::<u8>()?),
            DType::I64 => (Dtype::I64, le(flat.to_vec1::<i64>()?, i64::to_le_bytes)),
            other => bail!("dtype {other:?} cannot be saved"),
        };
        Ok(Self {
            dtype,
            shape: t.dims().to_vec(),
            bytes,
        })
    }
}

impl View for &RawTensor {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use noprop_core::testing::{blob_spec, fuzz_mutants, Below, LinearSoftmax, TEST_VARIANT};
    use noprop_core::ModelSpec;

    fn meta() -> CheckpointMeta {
        CheckpointMeta {
            kind: CheckpointKind::Training,
            variant: TEST_VARIANT.into(),
            config_json: "{}".into(),
            variant_config_json: "{}".into(),
            crate_version: "0.1.0".into(),
            epoch: 1,
            step: 3,
            dataset: "mnist".into(),
            spec: blob_spec(),
            normalize_mean: vec![0.5],
            normalize_std: vec![0.25],
            trainer_state_json: Some("{}".into()),
            class_names: Some(vec!["a".into(), "b".into(), "c".into()]),
        }
    }

    /// A model trained for a few steps, so weights and momentum are non-trivial.
    fn trained() -> (LinearSoftmax, SeededRng) {
        let mut model = LinearSoftmax::new(blob_spec(), 1, &Device::Cpu).unwrap();
        let mut rng = SeededRng::new(3);
        let images = rng.normal((32, 1, 4, 4), &Device::Cpu).unwrap();
        let labels: Vec<u32> = (0..32).map(|i| i % 3).collect();
        let labels = Tensor::new(labels.as_slice(), &Device::Cpu).unwrap();
        for _ in 0..3 {
            model.train_step(&images, &labels, &mut rng).unwrap();
        }
        (model, rng)
    }

    fn flat(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    }

    #[test]
    fn a_training_checkpoint_round_trips_exactly() {
        let (model, rng) = trained();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.safetensors");
        Checkpoint::capture(&model, meta(), Some(&rng))
            .unwrap()
            .save(&path)
            .unwrap();

        let loaded = Checkpoint::load(&path, &Device::Cpu).unwrap();
        assert_eq!(loaded.meta, meta());
        let names: Vec<&str> = loaded.tensors.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "head.bias",
                "head.weight",
                "optim.steps",
                "optim.velocity.head.bias",
                "optim.velocity.head.weight",
                "trainer.rng"
            ]
        );
        // Restoring into a differently seeded model reproduces weights,
        // optimizer state and generator bit for bit.
        let mut other = LinearSoftmax::new(blob_spec(), 99, &Device::Cpu).unwrap();
        assert_ne!(
            flat(&other.params().get("head.weight").unwrap()),
            flat(&model.params().get("head.weight").unwrap())
        );
        loaded.restore_into(&mut other).unwrap();
        for name in ["head.weight", "head.bias"] {
            assert_eq!(
                flat(&other.params().get(name).unwrap()),
                flat(&model.params().get(name).unwrap())
            );
        }
        let state = |m: &LinearSoftmax| -> Vec<(String, Vec<f32>)> {
            m.optimizer_state()
                .unwrap()
                .into_iter()
                .filter(|(n, _)| n != "optim.steps")
                .map(|(n, t)| (n, flat(&t)))
                .collect()
        };
        assert_eq!(state(&other), state(&model));
        let mut restored_rng = loaded.trainer_rng().unwrap();
        assert_eq!(restored_rng.normal_vec(5), rng.clone().normal_vec(5));
    }

    #[test]
    fn weights_only_drops_the_training_state() {
        let (model, rng) = trained();
        let full = Checkpoint::capture(&model, meta(), Some(&rng)).unwrap();
        let weights = full.weights_only();
        assert_eq!(weights.meta.kind, CheckpointKind::Weights);
        assert_eq!(weights.meta.trainer_state_json, None);
        let names: Vec<&str> = weights.tensors.keys().map(String::as_str).collect();
        assert_eq!(names, ["head.bias", "head.weight"]);
        let back = Checkpoint::from_bytes(&weights.to_bytes().unwrap(), &Device::Cpu).unwrap();
        assert_eq!(back.meta, weights.meta);
        let mut other = LinearSoftmax::new(blob_spec(), 99, &Device::Cpu).unwrap();
        back.restore_into(&mut other).unwrap();
        assert_eq!(
            flat(&other.params().get("head.weight").unwrap()),
            flat(&model.params().get("head.weight").unwrap())
        );
        assert!(back.trainer_rng().is_err());
        // Capturing without a generator gives the same weights-only file,
        // byte for byte (the header is written in a canonical order).
        let direct = Checkpoint::capture(&model, meta(), None).unwrap();
        assert_eq!(direct.to_bytes().unwrap(), weights.to_bytes().unwrap());
    }

    #[test]
    fn foreign_or_damaged_files_are_clear_errors() {
        let (model, rng) = trained();
        let bytes = Checkpoint::capture(&model, meta(), Some(&rng))
            .unwrap()
            .to_bytes()
            .unwrap();
        let err = |bytes: &[u8]| {
            format!(
                "{:#}",
                Checkpoint::from_bytes(bytes, &Device::Cpu).unwrap_err()
            )
        };

        assert!(err(&bytes[..bytes.len() - 7]).contains("not a valid safetensors file"));
        assert!(err(&bytes[..5]).contains("not a valid safetensors file"));
        assert!(err(b"hello, this is a text file").contains("not a valid safetensors file"));
        // A valid safetensors file without our metadata.
        let plain = Tensor::zeros(3, candle_core::DType::F32, &Device::Cpu).unwrap();
        let foreign = safetensors::serialize([("x", &plain)], None).unwrap();
        assert!(err(&foreign).contains("not a noprop checkpoint"));
        // A future format version.
        let mut future = meta().to_map();
        future.insert("format_version".into(), "2".into());
        let file = safetensors::serialize([("x", &plain)], Some(future)).unwrap();
        assert!(err(&file).contains("format version 2"));
        // A missing metadata key is named.
        let mut partial = meta().to_map();
        partial.remove("step");
        let file = safetensors::serialize([("x", &plain)], Some(partial)).unwrap();
        assert!(err(&file).contains("`step`"));

        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.safetensors");
        let e = format!(
            "{:#}",
            Checkpoint::load(&missing, &Device::Cpu).unwrap_err()
        );
        assert!(e.contains("nope.safetensors"), "{e}");
    }

    /// Checked against values encoded independently (the IEEE bit patterns
    /// written out by hand).
    #[test]
    fn non_finite_values_are_found_in_every_float_encoding() {
        let bytes =
            |words: &[u16]| -> Vec<u8> { words.iter().flat_map(|w| w.to_le_bytes()).collect() };
        // f16: 1.0 = 0x3c00, +inf = 0x7c00, -inf = 0xfc00, NaN = 0x7e00;
        // the largest finite 65504 = 0x7bff.
        assert_eq!(
            first_non_finite(Dtype::F16, &bytes(&[0x3c00, 0x7bff])),
            None
        );
        assert_eq!(
            first_non_finite(Dtype::F16, &bytes(&[0x3c00, 0xfc00])),
            Some((1, f64::NEG_INFINITY))
        );
        let (i, v) = first_non_finite(Dtype::F16, &bytes(&[0x7e00])).unwrap();
        assert!(i == 0 && v.is_nan());
        // bf16: 1.0 = 0x3f80, +inf = 0x7f80, NaN = 0x7fc0; 0x7f7f is finite.
        assert_eq!(
            first_non_finite(Dtype::BF16, &bytes(&[0x3f80, 0x7f7f])),
            None
        );
        assert_eq!(
            first_non_finite(Dtype::BF16, &bytes(&[0x3f80, 0x3f80, 0x7f80])),
            Some((2, f64::INFINITY))
        );
        let (i, v) = first_non_finite(Dtype::BF16, &bytes(&[0x7fc0])).unwrap();
        assert!(i == 0 && v.is_nan());
        let f32s: Vec<u8> = [1.0f32, -2.5, f32::INFINITY]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        assert_eq!(
            first_non_finite(Dtype::F32, &f32s),
            Some((2, f64::INFINITY))
        );
        let f64s: Vec<u8> = [f64::MAX, f64::NAN]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        assert!(first_non_finite(Dtype::F64, &f64s).is_some_and(|(i, v)| i == 1 && v.is_nan()));
        // Integers have no non-finite values.
        assert_eq!(first_non_finite(Dtype::U8, &[0xff; 4]), None);
    }

    /// Mutated checkpoints (bytes flipped in the header or the data,
    /// header bytes replaced, truncated, extended) load or fail with an
    /// error; never a panic. Both outcomes must occur.
    #[test]
    fn mutated_checkpoints_load_or_fail_cleanly() {
        let (model, rng) = trained();
        let valid = Checkpoint::capture(&model, meta(), Some(&rng))
            .unwrap()
            .to_bytes()
            .unwrap();
        let header_len = 8 + u64::from_le_bytes(valid[..8].try_into().unwrap()) as usize;
        let mutate = |bytes: &mut Vec<u8>, rng: &mut Below| {
            let header_len = header_len.min(bytes.len());
            match rng.below(5) {
                // Most of a checkpoint is tensor data; aim at the header too.
                0 => {
                    let i = rng.below(header_len);
                    bytes[i] ^= 1 << rng.below(8);
                }
                1 => {
                    let i = rng.below(bytes.len());
                    bytes[i] ^= 1 << rng.below(8);
                }
                2 => {
                    let i = rng.below(header_len);
                    let json = b"{}[]\":,0123456789e-";
                    bytes[i] = json[rng.below(json.len())];
                }
                3 => bytes.truncate(rng.below(bytes.len() + 1)),
                _ => bytes.extend(std::iter::repeat_n(0xff, 1 + rng.below(16))),
            }
        };
        let report = fuzz_mutants(17, 1500, &valid, mutate, |bytes| {
            Checkpoint::from_bytes(bytes, &Device::Cpu)
        });
        eprintln!("checkpoints: {report}");
    }

    #[test]
    fn another_variant_or_other_shapes_are_refused() {
        let (model, rng) = trained();
        let checkpoint = Checkpoint::capture(&model, meta(), Some(&rng)).unwrap();
        let mut other = LinearSoftmax::new(blob_spec(), 0, &Device::Cpu)
            .unwrap()
            .with_name("other-variant");
        let e = format!("{:#}", checkpoint.restore_into(&mut other).unwrap_err());
        assert!(
            e.contains("`linear-softmax` model, not `other-variant`"),
            "{e}"
        );

        let four_classes = ModelSpec {
            num_classes: 4,
            ..blob_spec()
        };
        let mut wider = LinearSoftmax::new(four_classes, 0, &Device::Cpu).unwrap();
        let e = format!("{:#}", checkpoint.restore_into(&mut wider).unwrap_err());
        assert!(e.contains("do not fit") && e.contains("head."), "{e}");
    }
}
