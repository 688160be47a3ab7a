//! Integration tests of noprop-data: the real MNIST, bad input of every
//! kind, CIFAR binaries, validation/limit splitting and batching. One test
//! binary (with modules) so the suite links once.

mod bad_input;
mod batching;
mod cifar;
mod fixtures;
mod mnist;
mod splitting;
