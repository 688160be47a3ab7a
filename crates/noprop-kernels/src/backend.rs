//! Choosing between this crate's CPU kernels and candle's reference ops.
//!
//! The choice is process-wide: set it with [`set_kernel_backend`], or with the
//! environment variable `NOPROP_KERNELS=fast|candle` read on first use. It
//! exists so that speed and accuracy can be compared against candle's own ops
//! (benchmarks, one-epoch accuracy checks); normal use never changes it.

use std::str::FromStr;
use std::sync::atomic::{AtomicU8, Ordering};

use candle_core::{bail, Error, Result};

/// Which implementation the public ops use on CPU f32 tensors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelBackend {
    /// This crate's custom ops (the default).
    Fast,
    /// candle's reference ops (`conv2d`, `max_pool2d`, ...).
    Candle,
}

impl FromStr for KernelBackend {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "fast" => Ok(Self::Fast),
            "candle" => Ok(Self::Candle),
            other => bail!("unknown kernel backend {other:?}: expected \"fast\" or \"candle\""),
        }
    }
}

/// Environment variable read on first use when no backend was set.
pub const KERNEL_BACKEND_ENV: &str = "NOPROP_KERNELS";

const UNSET: u8 = 0;
const FAST: u8 = 1;
const CANDLE: u8 = 2;
static BACKEND: AtomicU8 = AtomicU8::new(UNSET);

/// Sets the backend for the whole process.
pub fn set_kernel_backend(backend: KernelBackend) {
    let code = match backend {
        KernelBackend::Fast => FAST,
        KernelBackend::Candle => CANDLE,
    };
    BACKEND.store(code, Ordering::Relaxed);
}

/// The backend in use: the one set, else `$NOPROP_KERNELS`, else `Fast`.
/// Fails if `$NOPROP_KERNELS` holds an unknown name.
pub fn kernel_backend() -> Result<KernelBackend> {
    match BACKEND.load(Ordering::Relaxed) {
        FAST => Ok(KernelBackend::Fast),
        CANDLE => Ok(KernelBackend::Candle),
        _ => {
            let backend = match std::env::var(KERNEL_BACKEND_ENV) {
                Ok(name) => name
                    .parse()
                    .map_err(|e| Error::Msg(format!("${KERNEL_BACKEND_ENV}: {e}")))?,
                Err(_) => KernelBackend::Fast,
            };
            set_kernel_backend(backend);
            Ok(backend)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_rejects_others() {
        assert_eq!(
            "fast".parse::<KernelBackend>().unwrap(),
            KernelBackend::Fast
        );
        assert_eq!(
            " Candle ".parse::<KernelBackend>().unwrap(),
            KernelBackend::Candle
        );
        let err = "cudnn".parse::<KernelBackend>().unwrap_err().to_string();
        assert!(err.contains("cudnn"), "{err}");
    }
}
