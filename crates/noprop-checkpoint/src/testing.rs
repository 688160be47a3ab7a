//! Checks every variant crate runs on its own `from_checkpoint` and `save`
//! (feature `testing`; test support, not API).

use std::path::Path;

use anyhow::Result;
use candle_core::Device;
use noprop_core::{BuildVariant, ModelInit, ModelSpec, SeededRng};

use crate::ModelCard;

/// A variant's `save` and `from_checkpoint`.
pub struct Files<M> {
    /// `model.save(path, card)`.
    pub save: fn(&M, &Path, &ModelCard) -> Result<()>,
    /// `M::from_checkpoint(path, device)`.
    pub load: fn(&Path, &Device) -> Result<M>,
}

/// Saved and loaded back: the same variables, bit for bit, and the
/// same predictions from the same generator.
pub fn a_saved_model_loads_back_exactly<M: BuildVariant>(files: Files<M>) {
    let device = Device::Cpu;
    let spec = ModelSpec {
        in_channels: 1,
        image_size: 16,
        num_classes: 3,
    };
    let init = ModelInit::Train {
        seed: 5,
        prototypes: None,
    };
    let model = M::build(M::Config::default(), spec, init, &device).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    let card = ModelCard::new("mnist", vec![0.5], vec![0.25]).with_progress(2, 7);
    (files.save)(&model, &path, &card).unwrap();
    assert_eq!(ModelCard::read(&path).unwrap(), card);

    let loaded = (files.load)(&path, &device).unwrap();
    assert_eq!(loaded.spec(), spec);
    let values = |m: &M| -> Vec<(String, Vec<u32>)> {
        m.params()
            .named_tensors()
            .into_iter()
            .map(|(name, t)| {
                let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                (name, v.iter().map(|x| x.to_bits()).collect())
            })
            .collect()
    };
    assert_eq!(values(&loaded), values(&model));
    assert_eq!(loaded.config_json().unwrap(), model.config_json().unwrap());

    let images = SeededRng::new(1).normal((4, 1, 16, 16), &device).unwrap();
    let options = noprop_core::InferenceOptions {
        steps: Some(4),
        ..Default::default()
    };
    let predict = |m: &M| -> Vec<Vec<f32>> {
        m.predict_runs(&images, &options, 1, &mut SeededRng::new(2))
            .unwrap()[0]
            .to_vec2()
            .unwrap()
    };
    assert_eq!(predict(&loaded), predict(&model));
}

/// A card whose normalisation does not fit the model is refused and
/// nothing is written; a missing file is an error naming it.
pub fn a_card_that_does_not_fit_the_model_is_not_saved<M: BuildVariant>(files: Files<M>) {
    let device = Device::Cpu;
    let model = M::build(
        M::Config::default(),
        ModelSpec::mnist(),
        ModelInit::ForLoading,
        &device,
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    // Three channels' normalisation for a one-channel model.
    let card = ModelCard::new("mnist", vec![0.5; 3], vec![0.25; 3]);
    let e = format!("{:#}", (files.save)(&model, &path, &card).unwrap_err());
    assert!(
        e.contains("normalize_mean") && e.contains("model.safetensors"),
        "{e}"
    );
    assert!(!path.exists());
    let Err(e) = (files.load)(&path, &device) else {
        panic!("a missing file loaded");
    };
    let e = format!("{e:#}");
    assert!(e.contains("model.safetensors"), "{e}");
}
