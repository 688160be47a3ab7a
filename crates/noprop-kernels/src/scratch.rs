//! Per-thread scratch memory for the kernels' temporary matrices.
//!
//! The patch matrices are megabytes and are needed several times per layer
//! per step; a fresh allocation each time costs page faults (the allocator
//! hands big blocks back to the OS). Each thread keeps one growing buffer
//! instead. Its contents are stale between uses: callers overwrite what they
//! read.

use std::cell::RefCell;

thread_local! {
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with `N` disjoint scratch slices of the given lengths.
pub(crate) fn with_scratch<const N: usize, R>(
    lens: [usize; N],
    f: impl FnOnce([&mut [f32]; N]) -> R,
) -> R {
    let total: usize = lens.iter().sum();
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            if buf.len() < total {
                buf.resize(total, 0.0);
            }
            f(split(&mut buf[..total], lens))
        }
        // Re-entered on this thread (not expected): use a private buffer.
        Err(_) => f(split(&mut vec![0.0; total], lens)),
    })
}

/// Cuts `buf` into consecutive slices of the given lengths.
fn split<const N: usize>(buf: &mut [f32], lens: [usize; N]) -> [&mut [f32]; N] {
    let mut rest = buf;
    std::array::from_fn(|i| {
        let (head, tail) = std::mem::take(&mut rest).split_at_mut(lens[i]);
        rest = tail;
        head
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_are_disjoint_and_sized() {
        with_scratch([3, 0, 5], |[a, b, c]| {
            assert_eq!((a.len(), b.len(), c.len()), (3, 0, 5));
            a.fill(1.0);
            c.fill(2.0);
            assert!(a.iter().all(|&v| v == 1.0));
        });
        // A nested call gets its own memory.
        with_scratch([4], |[outer]| {
            outer.fill(7.0);
            with_scratch([4], |[inner]| inner.fill(0.0));
            assert!(outer.iter().all(|&v| v == 7.0));
        });
    }
}
