//! The image branch's three convolutions alone (MNIST shapes, batch B):
//!
//! ```text
//! x [B, 1, 28, 28] -> conv 1->32, ReLU, pool -> [B, 32, 13, 13]
//!                  -> conv 32->64, ReLU      -> [B, 64, 11, 11]
//!                  -> conv 64->128, ReLU, pool -> [B, 128, 4, 4]
//! ```
//!
//! forward and backward of `L = Σ y ⊙ r`, without dropout, with three
//! implementations side by side: candle's ops, this project's kernels as
//! separate ops, and with ReLU and pooling fused into the convolutions.

use anyhow::Result;
use candle_core::{Device, Tensor, Var};
use noprop_core::SeededRng;
use noprop_kernels::{fast, reference};

/// Which implementation of the stack.
#[derive(Clone, Copy, Debug)]
pub enum StackOps {
    Candle,
    FastSeparate,
    FastFused,
}

pub struct ConvStack {
    x: Tensor,
    params: Vec<(Var, Var)>,
    upstream: Tensor,
}

impl ConvStack {
    pub fn new(batch: usize, seed: u64) -> Result<Self> {
        let dev = Device::Cpu;
        let mut rng = SeededRng::new(seed);
        let x = rng.normal((batch, 1, 28, 28), &dev)?;
        let mut params = Vec::new();
        for (c_in, c_out) in [(1, 32), (32, 64), (64, 128)] {
            let bound = 1.0 / ((9 * c_in) as f32).sqrt();
            let w = rng.uniform(-bound, bound, (c_out, c_in, 3, 3), &dev)?;
            let b = rng.uniform(-bound, bound, c_out, &dev)?;
            params.push((Var::from_tensor(&w)?, Var::from_tensor(&b)?));
        }
        let upstream = rng.normal((batch, 128, 4, 4), &dev)?;
        Ok(Self {
            x,
            params,
            upstream,
        })
    }

    pub fn forward(&self, ops: StackOps) -> Result<Tensor> {
        let p = &self.params;
        let y = match ops {
            StackOps::Candle => {
                let h =
                    reference::max_pool2x2(&reference::conv2d_relu(&self.x, &p[0].0, &p[0].1)?)?;
                let h = reference::conv2d_relu(&h, &p[1].0, &p[1].1)?;
                reference::max_pool2x2(&reference::conv2d_relu(&h, &p[2].0, &p[2].1)?)?
            }
            StackOps::FastSeparate => {
                let h = fast::max_pool2x2(&fast::conv2d_relu(&self.x, &p[0].0, &p[0].1)?)?;
                let h = fast::conv2d_relu(&h, &p[1].0, &p[1].1)?;
                fast::max_pool2x2(&fast::conv2d_relu(&h, &p[2].0, &p[2].1)?)?
            }
            StackOps::FastFused => {
                let h = fast::conv2d_relu_pool2x2(&self.x, &p[0].0, &p[0].1)?;
                let h = fast::conv2d_relu(&h, &p[1].0, &p[1].1)?;
                fast::conv2d_relu_pool2x2(&h, &p[2].0, &p[2].1)?
            }
        };
        Ok(y)
    }

    /// Forward and backward (gradients computed, then dropped).
    pub fn forward_backward(&self, ops: StackOps) -> Result<()> {
        let y = self.forward(ops)?;
        (y * &self.upstream)?.sum_all()?.backward()?;
        Ok(())
    }
}
