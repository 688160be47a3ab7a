//! # noprop-data
//!
//! Datasets for NoProp: the embedded MNIST, MNIST-family IDX files,
//! CIFAR binaries, validation splits and seeded batching. Knows nothing of
//! models or training.
