//! Loads a checkpoint (`noprop train`'s `last.safetensors`, an exported
//! file, or one saved with `NoPropFm::save`) and classifies the first test
//! images of its dataset. Inference: the model's own ODE steps (1000 Euler steps by default).
//!
//! `cargo run --release -p noprop-fm --example fm_predict_from_checkpoint -- runs/fm/last.safetensors`

use noprop_data::{Dataset, DatasetConfig};
use noprop_fm::{predict_proba, Device, InferenceSettings, ModelCard, NoPropFm, SeededRng};

fn main() -> anyhow::Result<()> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or("runs/fm/last.safetensors".into());
    let device = Device::Cpu;
    let model = NoPropFm::from_checkpoint(&path, &device)?;
    let card = ModelCard::read(&path)?; // dataset, normalisation, epochs
    let data = DatasetConfig {
        train_limit: Some(1),
        test_limit: Some(16),
        normalization: Some((card.normalize_mean, card.normalize_std)),
        ..DatasetConfig::new(card.dataset.parse()?)
    };
    let dataset = Dataset::load(&data, &device)?;
    let test = dataset.test();
    let settings = InferenceSettings::new(Default::default());
    let probs = predict_proba(&model, test.images(), &settings, &mut SeededRng::new(0))?;
    println!("predicted {:?}", probs.argmax(1)?.to_vec1::<u32>()?);
    println!("labels    {:?}", test.labels().to_vec1::<u32>()?);
    Ok(())
}
