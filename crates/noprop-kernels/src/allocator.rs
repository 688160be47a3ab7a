//! Keeping freed tensor memory in the process (glibc malloc tuning).
//!
//! Every candle op allocates its output, and a training step frees and
//! re-allocates megabytes of activations and gradients. With glibc's default
//! settings, blocks above the (adaptive) mmap threshold are returned to the
//! OS on free and page-faulted back in, zeroed, on the next allocation; the
//! heap top is trimmed likewise. Measured on the DT block's training step
//! (batch 128, 2 threads), that kernel work was about a quarter of the step.
//!
//! [`tune_cpu_allocator`] raises the mmap threshold to its maximum (32 MiB,
//! above any activation at MNIST/CIFAR shapes and batch 128), disables
//! trimming and pads heap growth, so freed blocks are reused without page
//! faults. It is process-wide, so it is opt-in: binaries call it once at
//! start-up. The cost is memory: the heap keeps its high-water mark.

/// glibc `mallopt` parameters (malloc.h).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod glibc {
    use std::ffi::c_int;

    pub const M_TRIM_THRESHOLD: c_int = -1;
    pub const M_TOP_PAD: c_int = -2;
    pub const M_MMAP_THRESHOLD: c_int = -3;

    extern "C" {
        pub fn mallopt(param: c_int, value: c_int) -> c_int;
    }
}

/// Largest mmap threshold glibc accepts on 64-bit targets.
pub const MMAP_THRESHOLD_BYTES: i32 = 32 << 20;
/// Extra heap obtained per growth, so growth is rare.
pub const TOP_PAD_BYTES: i32 = 64 << 20;

/// Tunes glibc malloc to keep freed memory for reuse (see the module doc).
/// Returns whether every setting was applied; `false` on other allocators
/// and platforms, where it does nothing.
pub fn tune_cpu_allocator() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes allocator parameters; it is safe to
        // call at any time (glibc takes its own lock).
        unsafe {
            let mmap = glibc::mallopt(glibc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES);
            let trim = glibc::mallopt(glibc::M_TRIM_THRESHOLD, i32::MAX);
            let pad = glibc::mallopt(glibc::M_TOP_PAD, TOP_PAD_BYTES);
            mmap == 1 && trim == 1 && pad == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn glibc_accepts_the_settings_and_allocation_still_works() {
        assert!(tune_cpu_allocator());
        // A block bigger than the default threshold, freed and reallocated.
        for _ in 0..3 {
            let v = vec![1.0f32; 8 << 20];
            assert_eq!(v.iter().sum::<f32>(), (8 << 20) as f32);
        }
    }
}
