//! The names of an FM model's variables and optimizer state: they are the
//! tensor names of its checkpoints, so they never change.
//!
//! | variables | names |
//! |---|---|
//! | the block | `block.` + the [`noprop_block::CtFmBlock`] names, e.g. `block.image.conv1.weight` |
//! | anchor head (learned W only, linear d -> m) | `head.weight` [m, d], `head.bias` `[m]` |
//! | learned W | `embedding.weight` [m, d] (absent for one-hot) |
//! | optimizer state | `optim.` + variable name + `.step` / `.exp_avg` / `.exp_avg_sq` |

/// Prefix of the block's variables.
pub const BLOCK_PREFIX: &str = "block";
/// Prefix of the anchor head's variables.
pub const HEAD_PREFIX: &str = "head";
/// Prefix of every optimizer-state tensor.
pub const OPTIM_PREFIX: &str = "optim.";
