//! Seeded randomness.
//!
//! candle's CPU random number generator cannot be seeded, so every random
//! number in noprop-rs (initial weights, noise, dropout masks, time samples,
//! shuffles) is drawn here, on the host, from a ChaCha8 stream, then copied
//! to the tensor's device. The draw does not depend on the thread count, so
//! the same seed gives bitwise-identical results on CPU.
//!
//! The whole state (seed, stream, word position) fits in 12 `u32` words, so a
//! checkpoint can store it and a resumed run continues the same stream.
//!
//! A generator can stand for rows of a larger minibatch
//! ([`SeededRng::set_row_shard`], data-parallel training): a per-example
//! draw, a tensor whose first dimension is the shard's rows, then gives
//! exactly those rows of what one process would draw for the whole batch,
//! and leaves the stream where that process would.

use candle_core::{Device, Result, Shape, Tensor};

use crate::distributed::RowShard;
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

/// A seeded, resumable random number generator.
#[derive(Debug, Clone)]
pub struct SeededRng {
    inner: ChaCha8Rng,
    /// The rows of a larger minibatch this generator draws for (not part of
    /// the saved state: the trainer sets it around each step).
    shard: Option<RowShard>,
}

/// Number of `u32` words in [`SeededRng::state_words`].
pub const RNG_STATE_WORDS: usize = 8 + 2 + 4;

impl SeededRng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            inner: ChaCha8Rng::seed_from_u64(seed),
            shard: None,
        }
    }

    /// An independent generator derived from this one's seed and `stream`,
    /// at word position 0. Deriving does not advance `self`, so adding a new
    /// consumer does not shift the numbers other consumers see.
    pub fn fork(&self, stream: u64) -> Self {
        let mut inner = ChaCha8Rng::from_seed(self.inner.get_seed());
        inner.set_stream(stream);
        Self { inner, shard: None }
    }

    /// The full state as `u32` words: 8 seed words, 2 stream words, 4 words of
    /// the 128-bit word position (little-endian).
    pub fn state_words(&self) -> Vec<u32> {
        let seed = self.inner.get_seed();
        let mut words: Vec<u32> = seed
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let stream = self.inner.get_stream();
        words.push(stream as u32);
        words.push((stream >> 32) as u32);
        let pos = self.inner.get_word_pos();
        for i in 0..4 {
            words.push((pos >> (32 * i)) as u32);
        }
        words
    }

    /// Restores a generator from [`SeededRng::state_words`].
    pub fn from_state_words(words: &[u32]) -> Option<Self> {
        if words.len() != RNG_STATE_WORDS {
            return None;
        }
        let mut seed = [0u8; 32];
        for (i, w) in words[..8].iter().enumerate() {
            seed[4 * i..4 * i + 4].copy_from_slice(&w.to_le_bytes());
        }
        let mut inner = ChaCha8Rng::from_seed(seed);
        inner.set_stream(words[8] as u64 | ((words[9] as u64) << 32));
        let mut pos: u128 = 0;
        for i in 0..4 {
            pos |= (words[10 + i] as u128) << (32 * i);
        }
        inner.set_word_pos(pos);
        Some(Self { inner, shard: None })
    }

    /// Makes this generator draw for `shard`'s rows of a minibatch (see
    /// the module doc); `None` restores whole draws. A draw is per-example
    /// when its tensor's first dimension is `shard.len` (every per-example
    /// draw of a training step is batch-major) or, on the host, through
    /// [`SeededRng::uniform_f64_rows`].
    pub fn set_row_shard(&mut self, shard: Option<RowShard>) {
        self.shard = shard.filter(|s| s.len < s.rows);
    }

    /// The shard set by [`SeededRng::set_row_shard`] (`None`: whole draws,
    /// or a shard that is the whole batch).
    pub fn row_shard(&self) -> Option<RowShard> {
        self.shard
    }

    /// For a draw of `shape`: the shard and the values per row, when the
    /// draw is per-example.
    fn shard_for(&self, shape: &Shape) -> Option<(RowShard, usize)> {
        let shard = self.shard?;
        match shape.dims().first() {
            Some(&rows) if rows == shard.len && rows > 0 => {
                Some((shard, shape.elem_count() / rows))
            }
            _ => None,
        }
    }

    /// Advances the stream by `words` 32-bit words (what drawing a dropout
    /// mask of that many elements takes), without drawing them.
    pub fn skip_words(&mut self, words: u64) {
        let pos = self.inner.get_word_pos();
        self.inner.set_word_pos(pos + u128::from(words));
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.inner.next_u64()
    }

    /// Uniform in `[0, 1)`.
    pub fn uniform_f32(&mut self) -> f32 {
        self.inner.random::<f32>()
    }

    /// Uniform in `[0, 1)` with 53 random bits (host-side sampling in f64).
    pub fn uniform_f64(&mut self) -> f64 {
        (self.inner.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Standard normal.
    pub fn normal_f32(&mut self) -> f32 {
        self.inner.sample(StandardNormal)
    }

    /// `n` standard normal draws.
    pub fn normal_vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.normal_f32()).collect()
    }

    /// `n` uniform draws in `[lo, hi)`.
    pub fn uniform_vec(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n)
            .map(|_| lo + (hi - lo) * self.uniform_f32())
            .collect()
    }

    /// `n` uniform draws in `[0, 1)` of 53 bits, one per example of a
    /// batch of `n` (sharded like the tensor draws: with a shard of `n`
    /// rows, the shard's rows of the whole batch's draws).
    pub fn uniform_f64_rows(&mut self, n: usize) -> Vec<f64> {
        match self.shard {
            Some(s) if s.len == n && n > 0 => {
                let all: Vec<f64> = (0..s.rows).map(|_| self.uniform_f64()).collect();
                all[s.start..s.start + s.len].to_vec()
            }
            _ => (0..n).map(|_| self.uniform_f64()).collect(),
        }
    }

    /// An f32 tensor of standard normal draws.
    pub fn normal<S: Into<Shape>>(&mut self, shape: S, device: &Device) -> Result<Tensor> {
        let shape = shape.into();
        let data = match self.shard_for(&shape) {
            // Normal draws take a variable number of words: draw them all.
            Some((s, per_row)) => {
                let all = self.normal_vec(s.rows * per_row);
                all[s.start * per_row..(s.start + s.len) * per_row].to_vec()
            }
            None => self.normal_vec(shape.elem_count()),
        };
        Tensor::from_vec(data, shape, device)
    }

    /// An f32 tensor of uniform draws in `[lo, hi)`.
    pub fn uniform<S: Into<Shape>>(
        &mut self,
        lo: f32,
        hi: f32,
        shape: S,
        device: &Device,
    ) -> Result<Tensor> {
        let shape = shape.into();
        let data = match self.shard_for(&shape) {
            Some((s, per_row)) => {
                let all = self.uniform_vec(s.rows * per_row, lo, hi);
                all[s.start * per_row..(s.start + s.len) * per_row].to_vec()
            }
            None => self.uniform_vec(shape.elem_count(), lo, hi),
        };
        Tensor::from_vec(data, shape, device)
    }

    /// An inverted-dropout mask: each element is `1 / (1 - p)` with
    /// probability `1 - p`, else 0. Multiply activations by it in training.
    pub fn dropout_mask<S: Into<Shape>>(
        &mut self,
        p: f32,
        shape: S,
        device: &Device,
    ) -> Result<Tensor> {
        let shape = shape.into();
        let scale = 1.0 / (1.0 - p);
        // 24 random bits of one 32-bit word per element: exact enough for any
        // p, cheap to draw. The words are drawn in bulk (the same words as one
        // `next_u32` per element, a test checks it).
        let threshold = (p as f64 * (1u64 << 24) as f64) as u32;
        let mut words = vec![0u32; shape.elem_count()];
        match self.shard_for(&shape) {
            // One word per element: the other rows' words are skipped.
            Some((s, per_row)) => {
                self.skip_words((s.start * per_row) as u64);
                self.inner.fill(&mut words[..]);
                self.skip_words(((s.rows - s.start - s.len) * per_row) as u64);
            }
            None => self.inner.fill(&mut words[..]),
        }
        // A plain loop into a second buffer: it vectorises, where collecting
        // in place into the words' buffer did not (perf on the CT/FM
        // training step: 0.8% vs 4.0% of the samples).
        let mut data = vec![0.0f32; words.len()];
        for (d, &w) in data.iter_mut().zip(&words) {
            *d = if (w >> 8) < threshold { 0.0 } else { scale };
        }
        Tensor::from_vec(data, shape, device)
    }

    /// A uniformly random permutation of `0..n` (Fisher-Yates).
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut p: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            let j = self.inner.random_range(0..=i);
            p.swap(i, j);
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_numbers_and_state_round_trips() {
        let mut a = SeededRng::new(7);
        let mut b = SeededRng::new(7);
        assert_eq!(a.normal_vec(100), b.normal_vec(100));
        let words = a.state_words();
        let mut c = SeededRng::from_state_words(&words).unwrap();
        assert_eq!(a.normal_vec(33), c.normal_vec(33));
        assert_ne!(
            SeededRng::new(8).normal_vec(4),
            SeededRng::new(7).normal_vec(4)
        );
    }

    #[test]
    fn forks_are_independent_of_parent_position() {
        let a = SeededRng::new(1);
        let mut b = SeededRng::new(1);
        b.normal_vec(10);
        assert_eq!(a.fork(3).normal_vec(5), b.fork(3).normal_vec(5));
        assert_ne!(a.fork(3).normal_vec(5), a.fork(4).normal_vec(5));
    }

    #[test]
    fn permutation_is_a_permutation() {
        let mut r = SeededRng::new(0);
        let mut p = r.permutation(1000);
        p.sort_unstable();
        assert_eq!(p, (0..1000).collect::<Vec<_>>());
    }

    #[test]
    fn dropout_mask_draws_one_word_per_element_in_order() {
        // The bulk draw must equal one next_u32 per element (what the masks of
        // earlier versions, and so their checkpoints' generator states, used),
        // for lengths that are not multiples of ChaCha's block.
        for (len, p) in [(1usize, 0.5f32), (17, 0.1), (1000, 0.2), (4099, 0.9)] {
            let mut bulk = SeededRng::new(3);
            bulk.inner.next_u32();
            let mut single = bulk.clone();
            let mask = bulk.dropout_mask(p, len, &Device::Cpu).unwrap();
            let threshold = (p as f64 * (1u64 << 24) as f64) as u32;
            let expected: Vec<f32> = (0..len)
                .map(|_| {
                    if (single.inner.next_u32() >> 8) < threshold {
                        0.0
                    } else {
                        1.0 / (1.0 - p)
                    }
                })
                .collect();
            assert_eq!(mask.to_vec1::<f32>().unwrap(), expected, "len {len}");
            assert_eq!(bulk.state_words(), single.state_words(), "len {len}");
        }
    }

    #[test]
    fn dropout_mask_rate() {
        let mut r = SeededRng::new(0);
        let m = r.dropout_mask(0.2, 100_000, &Device::Cpu).unwrap();
        let v = m.to_vec1::<f32>().unwrap();
        let zeros = v.iter().filter(|&&x| x == 0.0).count() as f64 / v.len() as f64;
        assert!((zeros - 0.2).abs() < 0.01, "{zeros}");
        assert!(v.iter().all(|&x| x == 0.0 || (x - 1.25).abs() < 1e-6));
    }

    /// A sharded generator draws the shard's rows of what one generator
    /// draws for the whole batch, for every kind of per-example draw, and
    /// ends at the same stream position; draws of other shapes are whole.
    #[test]
    fn a_row_shard_draws_its_rows_of_the_whole_batch() {
        let dev = Device::Cpu;
        let rows_of = |t: &Tensor, start: usize, len: usize| {
            t.narrow(0, start, len)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        for (start, len) in [(0usize, 3usize), (3, 4), (2, 2)] {
            let mut whole = SeededRng::new(11);
            let mut part = SeededRng::new(11);
            part.set_row_shard(Some(RowShard {
                rows: 7,
                start,
                len,
            }));
            let flat = |t: Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert_eq!(
                flat(part.normal((len, 5), &dev).unwrap()),
                rows_of(&whole.normal((7, 5), &dev).unwrap(), start, len)
            );
            assert_eq!(
                flat(part.uniform(0.0, 1.0, len, &dev).unwrap()),
                rows_of(&whole.uniform(0.0, 1.0, 7, &dev).unwrap(), start, len)
            );
            assert_eq!(
                flat(part.dropout_mask(0.3, (len, 2, 3, 3), &dev).unwrap()),
                rows_of(
                    &whole.dropout_mask(0.3, (7, 2, 3, 3), &dev).unwrap(),
                    start,
                    len
                )
            );
            assert_eq!(
                part.uniform_f64_rows(len),
                whole.uniform_f64_rows(7)[start..start + len].to_vec()
            );
            // Not per-example (first dimension not the shard's rows): whole.
            assert_eq!(
                flat(part.normal((9, 2), &dev).unwrap()),
                flat(whole.normal((9, 2), &dev).unwrap())
            );
            assert_eq!(part.state_words(), whole.state_words());
            assert_eq!(part.next_u64(), whole.next_u64());
        }
        // A shard of the whole batch is no shard.
        let mut g = SeededRng::new(1);
        g.set_row_shard(Some(RowShard {
            rows: 4,
            start: 0,
            len: 4,
        }));
        assert_eq!(g.row_shard(), None);
    }

    #[test]
    fn skipping_words_is_drawing_them() {
        let mut a = SeededRng::new(5);
        let mut b = SeededRng::new(5);
        a.skip_words(37);
        let _ = b.dropout_mask(0.5, 37, &Device::Cpu).unwrap();
        assert_eq!(a.next_u64(), b.next_u64());
    }
}
