//! Summary statistics of host values.
//!
//! Plain `std`, no tensors: `xtask` compiles this file into itself (it does
//! not depend on candle), so it must stay self-contained.

/// The median of `values`: the middle one in order, the mean of the two
/// middle ones for an even count, NaN when there are none. The order is
/// [`f64::total_cmp`]'s (a NaN sorts after every number).
pub fn median(values: &[f64]) -> f64 {
    let mut values = values.to_vec();
    let n = values.len();
    if n == 0 {
        return f64::NAN;
    }
    // A selection, not a sort: linear time, for the long lists of distances
    // the class prototypes are chosen from.
    let (lower, &mut upper, _) = values.select_nth_unstable_by(n / 2, f64::total_cmp);
    if n % 2 == 1 {
        return upper;
    }
    let below = lower
        .iter()
        .copied()
        .max_by(f64::total_cmp)
        .expect("an even, non-zero count leaves values below the middle");
    (below + upper) / 2.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_even_empty_and_unsorted_lists() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&[7.0]), 7.0);
        assert_eq!(median(&[2.0, -2.0]), 0.0);
        assert!(median(&[]).is_nan());
        // Unsorted, with repeats: the same as sorting first.
        let values = [5.0, -1.0, 5.0, 0.5, 9.0, 2.0, 2.0, -3.0];
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        assert_eq!(median(&values), (sorted[3] + sorted[4]) / 2.0);
        assert_eq!(median(&values[..7]), 2.0);
    }
}
