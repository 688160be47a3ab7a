//! NoProp-FM on real MNIST: learning, reproducibility, exact resume.

use std::collections::HashMap;

use anyhow::Result;
use candle_core::{Device, Tensor};
use noprop_core::inference::{self, InferenceSettings};
use noprop_core::variant::ModelSpec;
use noprop_core::{EmbeddingKind, InferenceOptions, SeededRng, Variant};
use noprop_data::{Dataset, DatasetConfig, DatasetKind};
use noprop_fm::{FmConfig, NoPropFm};

fn mnist(train: usize, test: usize) -> Result<Dataset> {
    let config = DatasetConfig {
        train_limit: Some(train),
        test_limit: Some(test),
        ..DatasetConfig::new(DatasetKind::Mnist)
    };
    Ok(Dataset::load(&config, &Device::Cpu)?)
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

fn weights(model: &NoPropFm) -> Vec<(String, Vec<f32>)> {
    model
        .params()
        .named_tensors()
        .into_iter()
        .map(|(n, t)| (n, flat(&t)))
        .collect()
}

/// Runs `steps` training steps over the first batches (seed 3, epoch 0).
fn train_steps(
    model: &mut NoPropFm,
    data: &Dataset,
    steps: std::ops::Range<usize>,
    rng: &mut SeededRng,
) -> Result<Vec<f64>> {
    let mut losses = Vec::new();
    for (i, batch) in data.train().batches(32, Some((3, 0)))?.enumerate() {
        if i >= steps.end {
            break;
        }
        if i < steps.start {
            continue;
        }
        let (x, y) = batch?;
        losses.push(model.train_step(&x, &y, rng)?.loss);
    }
    Ok(losses)
}

#[test]
fn learns_mnist_far_above_chance() -> Result<()> {
    let data = mnist(2000, 500)?;
    let device = Device::Cpu;
    let mut model = NoPropFm::new(FmConfig::default(), ModelSpec::mnist(), None, 0, &device)?;
    let mut rng = SeededRng::new(1);
    let mut losses = Vec::new();
    for epoch in 0..2 {
        for batch in data.train().batches(64, Some((0, epoch)))? {
            let (x, y) = batch?;
            losses.push(model.train_step(&x, &y, &mut rng)?.loss);
        }
    }
    let head: f64 = losses[..8].iter().sum::<f64>() / 8.0;
    let tail: f64 = losses[losses.len() - 8..].iter().sum::<f64>() / 8.0;
    // The flow target z_1 - z_0 has E||.||^2 = d + 1 = 11 at the start.
    assert!(tail < 0.8 * head, "loss did not decrease: {head} -> {tail}");
    let options = InferenceOptions {
        steps: Some(20),
        ..Default::default()
    };
    let test = data.test();
    let settings = InferenceSettings::new(options);
    let acc =
        inference::evaluate(&model, test.images(), test.labels(), &settings, &mut rng)?.mean();
    // Chance is 10%; 500 test images make 50% impossible by luck.
    assert!(acc > 0.5, "test accuracy {acc}");
    let proba =
        inference::predict_proba(&model, &test.images().narrow(0, 0, 4)?, &settings, &mut rng)?;
    for row in proba.to_vec2::<f32>()? {
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-4);
    }
    Ok(())
}

#[test]
fn same_seed_same_weights_bitwise() -> Result<()> {
    let data = mnist(96, 10)?;
    let run = || -> Result<Vec<(String, Vec<f32>)>> {
        let mut model = NoPropFm::new(
            FmConfig::default(),
            ModelSpec::mnist(),
            None,
            5,
            &Device::Cpu,
        )?;
        let mut rng = SeededRng::new(6);
        train_steps(&mut model, &data, 0..3, &mut rng)?;
        Ok(weights(&model))
    };
    let (a, b) = (run()?, run()?);
    assert_eq!(a, b);
    let fresh = NoPropFm::new(
        FmConfig::default(),
        ModelSpec::mnist(),
        None,
        5,
        &Device::Cpu,
    )?;
    assert_ne!(a, weights(&fresh), "training changed nothing");
    Ok(())
}

#[test]
fn resume_from_saved_state_is_bitwise_identical() -> Result<()> {
    let data = mnist(128, 10)?;
    let config = FmConfig {
        embedding: EmbeddingKind::Learned { dim: 20 },
        ..Default::default()
    };
    let spec = ModelSpec::mnist();
    let dev = Device::Cpu;

    let mut straight = NoPropFm::new(config.clone(), spec, None, 9, &dev)?;
    let mut rng = SeededRng::new(10);
    train_steps(&mut straight, &data, 0..4, &mut rng)?;

    let mut first = NoPropFm::new(config.clone(), spec, None, 9, &dev)?;
    let mut rng = SeededRng::new(10);
    train_steps(&mut first, &data, 0..2, &mut rng)?;
    let params: HashMap<String, Tensor> = first.params().named_tensors().into_iter().collect();
    let optim: HashMap<String, Tensor> = first.optimizer_state()?.into_iter().collect();
    let rng_words = rng.state_words();
    drop(first);

    // A model built with another seed, then loaded, must continue exactly.
    let mut resumed = NoPropFm::new(config, spec, None, 1234, &dev)?;
    resumed.params().load(&params)?;
    resumed.load_optimizer_state(&optim)?;
    let mut rng = SeededRng::from_state_words(&rng_words).expect("12 words");
    train_steps(&mut resumed, &data, 2..4, &mut rng)?;
    assert_eq!(weights(&straight), weights(&resumed));
    assert!(straight.embedding().is_learned());
    Ok(())
}
