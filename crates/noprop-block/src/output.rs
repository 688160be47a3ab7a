//! What a block's logits mean in embedding space (spec, "Block output").
//!
//! With class embeddings `W [m, d]` and logits `[B, m]`:
//! - DT and CT predict the clean embedding as a convex combination,
//!   `u_hat = softmax(logits) @ W`  `[B, d]`;
//! - FM predicts a velocity, `v_hat = logits @ W`  `[B, d]` (no softmax).

use candle_core::{bail, Result, Tensor};

fn check(logits: &Tensor, embeddings: &Tensor) -> Result<()> {
    match (logits.dims(), embeddings.dims()) {
        ([_, m], [mw, _]) if m == mw => Ok(()),
        (l, w) => {
            bail!("block output: expected logits [B, m] and embeddings [m, d], got {l:?} and {w:?}")
        }
    }
}

/// DT/CT output: `softmax(logits) @ W`, `[B, m] x [m, d] -> [B, d]`.
pub fn denoised_embedding(logits: &Tensor, embeddings: &Tensor) -> Result<Tensor> {
    check(logits, embeddings)?;
    candle_nn::ops::softmax_last_dim(logits)?.matmul(embeddings)
}

/// FM output: `logits @ W`, `[B, m] x [m, d] -> [B, d]`.
pub fn velocity(logits: &Tensor, embeddings: &Tensor) -> Result<Tensor> {
    check(logits, embeddings)?;
    logits.matmul(embeddings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn closed_forms() {
        let dev = Device::Cpu;
        // softmax([0, ln 3]) = [1/4, 3/4]; W = diag(1, 2) -> [1/4, 3/2].
        let logits = Tensor::new(&[[0f32, 3f32.ln()]], &dev).unwrap();
        let w = Tensor::new(&[[1f32, 0.], [0., 2.]], &dev).unwrap();
        let u = denoised_embedding(&logits, &w)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert!((u[0][0] - 0.25).abs() < 1e-6 && (u[0][1] - 1.5).abs() < 1e-6);
        let v = velocity(&logits, &w).unwrap().to_vec2::<f32>().unwrap();
        assert!(v[0][0].abs() < 1e-6 && (v[0][1] - 2.0 * 3f32.ln()).abs() < 1e-6);
        let wrong = Tensor::new(&[[1f32, 0., 0.]], &dev).unwrap();
        assert!(velocity(&logits, &wrong).is_err());
    }
}
