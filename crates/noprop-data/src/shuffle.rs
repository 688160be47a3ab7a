//! Seeded permutations for shuffling and for the validation hold-out.
//!
//! A permutation of `0..len` is a Fisher–Yates shuffle driven by a ChaCha8
//! stream whose 256-bit key is built from `(seed, epoch)` and a domain tag,
//! so the shuffle of epoch `e` does not depend on how many numbers earlier
//! epochs drew, and the validation hold-out (its own domain) never coincides
//! with an epoch's shuffle. Bounded integers are drawn with Lemire's
//! multiply-and-reject method on `next_u64`, written out here rather than
//! taken from `rand`'s range sampling so that the order stays the same across
//! `rand` versions. Everything runs on one host thread: the order does not
//! depend on the thread count or the device.

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Domain tags keeping the different uses of a seed apart.
const DOMAIN_SHUFFLE: u64 = 1;
const DOMAIN_VALIDATION: u64 = 2;
/// Fixed key bytes so that these streams differ from `SeededRng`'s.
const KEY_TAG: [u8; 8] = *b"noprop-d";

fn keyed_rng(domain: u64, seed: u64, index: u64) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&index.to_le_bytes());
    key[16..24].copy_from_slice(&domain.to_le_bytes());
    key[24..].copy_from_slice(&KEY_TAG);
    ChaCha8Rng::from_seed(key)
}

/// A uniform integer in `0..bound` (`bound > 0`), without modulo bias.
fn uniform_below(rng: &mut ChaCha8Rng, bound: u64) -> u64 {
    // 2^64 mod bound: products whose low word falls below it are rejected so
    // every result has the same number of preimages.
    let threshold = bound.wrapping_neg() % bound;
    loop {
        let product = u128::from(rng.next_u64()) * u128::from(bound);
        if (product as u64) >= threshold {
            return (product >> 64) as u64;
        }
    }
}

fn shuffled(len: usize, mut rng: ChaCha8Rng) -> Vec<usize> {
    let mut order: Vec<usize> = (0..len).collect();
    for i in (1..len).rev() {
        let j = uniform_below(&mut rng, i as u64 + 1) as usize;
        order.swap(i, j);
    }
    order
}

/// The order in which epoch `epoch` of a run seeded with `seed` visits
/// `len` items: a permutation of `0..len`, the same for the same arguments.
pub fn permutation(len: usize, seed: u64, epoch: u64) -> Vec<usize> {
    shuffled(len, keyed_rng(DOMAIN_SHUFFLE, seed, epoch))
}

/// The permutation whose first items form the validation hold-out.
pub fn validation_permutation(len: usize, split_seed: u64) -> Vec<usize> {
    shuffled(len, keyed_rng(DOMAIN_VALIDATION, split_seed, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_permutation(order: &[usize]) -> bool {
        let mut seen = vec![false; order.len()];
        order
            .iter()
            .all(|&i| i < seen.len() && !std::mem::replace(&mut seen[i], true))
    }

    #[test]
    fn permutations_are_permutations_and_reproducible() {
        for len in [0, 1, 2, 7, 1000] {
            let order = permutation(len, 42, 3);
            assert!(is_permutation(&order), "len {len}");
            assert_eq!(order, permutation(len, 42, 3));
        }
        let base = permutation(1000, 42, 3);
        assert_ne!(
            base,
            permutation(1000, 42, 4),
            "epoch must change the order"
        );
        assert_ne!(base, permutation(1000, 43, 3), "seed must change the order");
        assert_ne!(base, validation_permutation(1000, 42));
        assert!(is_permutation(&validation_permutation(1000, 42)));
    }

    #[test]
    fn permutation_is_the_same_on_any_thread() {
        let expected = permutation(5000, 7, 11);
        let from_threads: Vec<Vec<usize>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..4)
                .map(|_| scope.spawn(|| permutation(5000, 7, 11)))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for order in from_threads {
            assert_eq!(order, expected);
        }
    }

    #[test]
    fn all_orders_of_three_items_are_equally_likely() {
        // Over 6000 epochs each of the 3! = 6 orders should appear 1000 times;
        // the count is Binomial(6000, 1/6) with sd 28.9, so +-150 is > 5 sd.
        let mut counts = std::collections::HashMap::new();
        for epoch in 0..6000 {
            *counts.entry(permutation(3, 1, epoch)).or_insert(0usize) += 1;
        }
        assert_eq!(counts.len(), 6);
        for (order, count) in counts {
            assert!(
                (850..=1150).contains(&count),
                "{order:?} seen {count} times"
            );
        }
    }

    #[test]
    fn uniform_below_covers_the_range_evenly() {
        // bound 3 does not divide 2^64, so a biased method would skew it;
        // 30,000 draws per value have sd ~149, +-1000 is > 6 sd.
        let mut rng = keyed_rng(DOMAIN_SHUFFLE, 5, 5);
        let mut counts = [0usize; 3];
        for _ in 0..90_000 {
            counts[uniform_below(&mut rng, 3) as usize] += 1;
        }
        for count in counts {
            assert!((29_000..=31_000).contains(&count), "{counts:?}");
        }
    }
}
