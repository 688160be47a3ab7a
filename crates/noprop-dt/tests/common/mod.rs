//! Helpers shared by the integration tests: real MNIST subsets and bitwise
//! snapshots of a model's variables.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};

use candle_core::{Device, Tensor};
use noprop_core::{SeededRng, Variant};
use noprop_data::{Dataset, DatasetConfig, DatasetKind};
use noprop_dt::NoPropDt;

pub const DEV: Device = Device::Cpu;

/// The first `train` / `test` images of the embedded MNIST (normalised).
pub fn mnist(train: usize, test: usize) -> Dataset {
    let config = DatasetConfig {
        train_limit: Some(train),
        test_limit: Some(test),
        ..DatasetConfig::new(DatasetKind::Mnist)
    };
    Dataset::load(&config, &DEV).expect("embedded MNIST loads")
}

/// The first `n` training images and labels.
pub fn batch(data: &Dataset, start: usize, n: usize) -> (Tensor, Tensor) {
    let split = data.train();
    (
        split.images().narrow(0, start, n).unwrap(),
        split.labels().narrow(0, start, n).unwrap(),
    )
}

pub fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// Every variable's values, by name (bitwise comparable).
pub fn snapshot(model: &NoPropDt) -> BTreeMap<String, Vec<f32>> {
    model
        .params()
        .named_tensors()
        .into_iter()
        .map(|(n, t)| (n, values(&t)))
        .collect()
}

/// The optimizer state as host values (step counts as f32), by name.
pub fn optimizer_snapshot(model: &NoPropDt) -> BTreeMap<String, Vec<f32>> {
    model
        .optimizer_state()
        .unwrap()
        .into_iter()
        .map(|(n, t)| {
            let t = t.to_dtype(candle_core::DType::F32).unwrap();
            (n, values(&t))
        })
        .collect()
}

/// `steps` training steps on consecutive batches of `b` images.
pub fn train(model: &mut NoPropDt, data: &Dataset, b: usize, steps: usize, rng: &mut SeededRng) {
    for s in 0..steps {
        let (x, y) = batch(data, s * b, b);
        model.train_step(&x, &y, rng).unwrap();
    }
}

/// The model's tensors as a map (what a checkpoint holds).
pub fn tensor_map(model: &NoPropDt) -> HashMap<String, Tensor> {
    model
        .params()
        .named_tensors()
        .into_iter()
        .map(|(n, t)| (n, t.copy().unwrap()))
        .collect()
}
