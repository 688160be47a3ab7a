//! Stable names of the model's variables (checkpoint tensor names) and of
//! its optimizer state.

/// Prefix of the block's variables (`block.image.conv1.weight`, ...).
pub const BLOCK_PREFIX: &str = "block";
/// Prefix of the output head (`head.weight` [m, d], `head.bias` `[m]`).
pub const HEAD_PREFIX: &str = "head";
/// Prefix of the learned schedule (`schedule.gamma_0`, `schedule.gamma_1`,
/// `schedule.net.*`).
pub const SCHEDULE_PREFIX: &str = "schedule";
/// Prefix of every optimizer state tensor (`optim.head.weight.exp_avg`, ...).
pub const OPTIM_PREFIX: &str = "optim.";
