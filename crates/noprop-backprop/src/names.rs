//! The names of the baseline's variables and optimizer state: they are the
//! tensor names of its checkpoints, so they never change.
//!
//! | variables | names |
//! |---|---|
//! | block t (1-based) | `block.{t}.` + the [`noprop_block::DtBlock`] names, e.g. `block.3.image.conv1.weight`, `block.3.latent.bn1.running_mean` (BatchNorm statistics are buffers: saved, never optimised) |
//! | mixing weights | `mix.weight` `[T]`: entry t-1 is w_t, a_t = tanh(w_t) |
//! | head (linear d -> m) | `head.weight` [m, d], `head.bias` `[m]` |
//! | learned W | `embedding.weight` [m, d] (absent for one-hot) |
//! | optimizer state | `optim.` + parameter name + `.step` / `.exp_avg` / `.exp_avg_sq` |
//!
//! The block and head names are NoProp-DT's, so a tool that reads DT
//! checkpoints by block finds the same tensors here.

/// Prefix of the head's variables.
pub const HEAD_PREFIX: &str = "head";

/// Prefix of the mixing weights' variable.
pub const MIX_PREFIX: &str = "mix";

/// The full name of the mixing weights, `[T]`.
pub const MIX_WEIGHT: &str = "mix.weight";

/// Prefix of every optimizer-state tensor.
pub const OPTIM_PREFIX: &str = "optim.";

/// The `VarBuilder` prefix of block t: `block.{t}` (t 1-based).
pub fn block_prefix(t: usize) -> String {
    format!("block.{t}")
}

/// Whether `name` is a variable of block t (parameter or BatchNorm buffer).
pub fn is_block_var(name: &str, t: usize) -> bool {
    name.strip_prefix(&block_prefix(t))
        .is_some_and(|rest| rest.starts_with('.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_prefixes_do_not_overlap() {
        assert!(is_block_var("block.1.image.fc.weight", 1));
        assert!(!is_block_var("block.10.image.fc.weight", 1));
        assert!(is_block_var("block.10.image.fc.weight", 10));
        assert!(!is_block_var("block.1", 1));
        assert!(!is_block_var(MIX_WEIGHT, 1));
        assert_eq!(MIX_WEIGHT, format!("{MIX_PREFIX}.weight"));
    }
}
