//! Borrowing the f32 data of CPU tensors for the custom ops.
//!
//! The public functions only build the custom ops for contiguous f32 CPU
//! tensors, so these accessors fail (with an error naming the operand) only if
//! that invariant is broken.

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, Layout, Result, Storage, Tensor};

/// The contiguous f32 elements described by `layout` in a CPU storage.
pub(crate) fn cpu_f32<'a>(
    storage: &'a CpuStorage,
    layout: &Layout,
    what: &str,
) -> Result<&'a [f32]> {
    let CpuStorage::F32(data) = storage else {
        bail!(
            "noprop-kernels: {what} must be f32, got {:?}",
            storage.dtype()
        )
    };
    let Some((start, end)) = layout.contiguous_offsets() else {
        bail!("noprop-kernels: {what} must be contiguous")
    };
    Ok(&data[start..end])
}

/// A read guard on a tensor's storage, from which its f32 data can be borrowed.
pub(crate) struct F32Guard<'a> {
    storage: candle_core::StorageRef<'a>,
    layout: &'a Layout,
    what: &'static str,
}

impl<'a> F32Guard<'a> {
    /// Locks `t` for reading; `t` must be a contiguous f32 CPU tensor.
    pub fn new(t: &'a Tensor, what: &'static str) -> Self {
        let (storage, layout) = t.storage_and_layout();
        Self {
            storage,
            layout,
            what,
        }
    }

    pub fn data(&self) -> Result<&[f32]> {
        match &*self.storage {
            Storage::Cpu(cpu) => cpu_f32(cpu, self.layout, self.what),
            _ => bail!("noprop-kernels: {} must be on the CPU", self.what),
        }
    }
}
