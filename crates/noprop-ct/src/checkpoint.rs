//! [`NoPropCt`] to and from the checkpoint files `noprop train` writes
//! (the format of `noprop-checkpoint`): [`NoPropCt::from_checkpoint`] rebuilds
//! the model from the file's metadata and loads its weights;
//! [`NoPropCt::save`] writes a weights checkpoint that `noprop eval`,
//! `noprop predict` and `noprop export` read.

use std::path::Path;

use candle_core::Device;
use noprop_checkpoint::ModelCard;

use crate::model::NoPropCt;

impl NoPropCt {
    /// Loads the NoProp-CT model of the checkpoint at `path` (a
    /// `best.safetensors` or `last.safetensors` of `noprop train`, an
    /// exported file, or one written by [`NoPropCt::save`]) onto `device`. Its
    /// inputs are normalised as the file's [`ModelCard`] says
    /// ([`ModelCard::read`], [`ModelCard::normalize`]). A file of another
    /// variant, a damaged file, or weights that do not fit are errors
    /// naming the file.
    pub fn from_checkpoint(path: impl AsRef<Path>, device: &Device) -> anyhow::Result<Self> {
        noprop_checkpoint::load_variant(path, device)
    }

    /// Saves the model's weights to `path` (atomically: a failure leaves
    /// any previous file intact), with `card` saying what it was trained on
    /// and how its inputs are normalised.
    pub fn save(&self, path: impl AsRef<Path>, card: &ModelCard) -> anyhow::Result<()> {
        noprop_checkpoint::save_variant(self, path, card)
    }
}

#[cfg(test)]
mod tests {
    use noprop_core::{BuildVariant, ModelInit, ModelSpec, SeededRng, Variant};

    use super::*;
    use crate::config::CtConfig;

    /// Saved and loaded back: the same variables, bit for bit, and the
    /// same predictions from the same generator.
    #[test]
    fn a_saved_model_loads_back_exactly() {
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
        let model = NoPropCt::build(CtConfig::default(), spec, init, &device).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.safetensors");
        let card = ModelCard::new("mnist", vec![0.5], vec![0.25]).with_progress(2, 7);
        model.save(&path, &card).unwrap();
        assert_eq!(ModelCard::read(&path).unwrap(), card);

        let loaded = NoPropCt::from_checkpoint(&path, &device).unwrap();
        assert_eq!(loaded.spec(), spec);
        let values = |m: &NoPropCt| -> Vec<(String, Vec<u32>)> {
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
        let predict = |m: &NoPropCt| -> Vec<Vec<f32>> {
            m.predict_runs(&images, &options, 1, &mut SeededRng::new(2))
                .unwrap()[0]
                .to_vec2()
                .unwrap()
        };
        assert_eq!(predict(&loaded), predict(&model));
    }

    #[test]
    fn a_card_that_does_not_fit_the_model_is_not_saved() {
        let device = Device::Cpu;
        let model = NoPropCt::build(
            CtConfig::default(),
            ModelSpec::mnist(),
            ModelInit::ForLoading,
            &device,
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.safetensors");
        // Three channels' normalisation for a one-channel model.
        let card = ModelCard::new("mnist", vec![0.5; 3], vec![0.25; 3]);
        let e = format!("{:#}", model.save(&path, &card).unwrap_err());
        assert!(
            e.contains("normalize_mean") && e.contains("model.safetensors"),
            "{e}"
        );
        assert!(!path.exists());
        let Err(e) = NoPropCt::from_checkpoint(&path, &device) else {
            panic!("a missing file loaded");
        };
        let e = format!("{e:#}");
        assert!(e.contains("model.safetensors"), "{e}");
    }
}
