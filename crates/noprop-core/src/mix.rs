//! Block outputs as mixtures of class embeddings.
//!
//! Every NoProp block ends in m logits [B, m]; with the class embeddings
//! W [m, d] its output is
//!
//! ```text
//! DT, CT: u_hat = softmax(logits) W   (a convex combination of embeddings)   [B, d]
//! FM:     v_hat = logits W            (a velocity, no softmax)               [B, d]
//! ```

use candle_core::{Result, Tensor, D};

fn check(logits: &Tensor, w: &Tensor) -> Result<()> {
    let ok = logits.rank() == 2 && w.rank() == 2 && logits.dim(1)? == w.dim(0)?;
    if !ok {
        candle_core::bail!(
            "mix: logits must be [B, m] and W [m, d] with the same m, got {:?} and {:?}",
            logits.dims(),
            w.dims()
        );
    }
    Ok(())
}

/// softmax(logits) @ W: [B, m] x [m, d] -> [B, d] (differentiable in both).
pub fn softmax_mix(logits: &Tensor, w: &Tensor) -> Result<Tensor> {
    check(logits, w)?;
    // candle_nn::ops::softmax_last_dim has no backward pass; this one does.
    candle_nn::ops::softmax(logits, D::Minus1)?.matmul(&w.to_dtype(logits.dtype())?)
}

/// logits @ W: [B, m] x [m, d] -> [B, d].
pub fn linear_mix(logits: &Tensor, w: &Tensor) -> Result<Tensor> {
    check(logits, w)?;
    logits.matmul(&w.to_dtype(logits.dtype())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn values_and_gradients() {
        let dev = Device::Cpu;
        let logits = Var::new(&[[0.0f32, 2f32.ln()]], &dev).unwrap(); // softmax = [1/3, 2/3]
        let w = Tensor::new(&[[3.0f32, 0.0], [0.0, 3.0]], &dev).unwrap();
        let u = softmax_mix(logits.as_tensor(), &w)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert!((u[0][0] - 1.0).abs() < 1e-6 && (u[0][1] - 2.0).abs() < 1e-6);
        let v = linear_mix(logits.as_tensor(), &w)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert!((v[0][1] - 3.0 * 2f32.ln()).abs() < 1e-6);
        // d(u_0)/d(logit_0) = 3 p0 (1 - p0) = 3 * 2/9 = 2/3.
        let g = softmax_mix(logits.as_tensor(), &w)
            .unwrap()
            .narrow(1, 0, 1)
            .unwrap();
        let grads = g.sum_all().unwrap().backward().unwrap();
        let gl = grads
            .get(logits.as_tensor())
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert!((gl[0][0] - 2.0 / 3.0).abs() < 1e-6, "{gl:?}");
        let bad = Tensor::zeros((3, 2), candle_core::DType::F32, &dev).unwrap();
        assert!(softmax_mix(logits.as_tensor(), &bad).is_err());
    }
}
