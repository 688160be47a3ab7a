//! Wall-clock median and mean process CPU time of a repeated closure.
//!
//! The CPU time (all threads, user + system, from `/proc/self/stat`) is less
//! sensitive than wall time to other processes on a shared machine: it
//! counts the work done (including any spinning), not the waiting.

use std::time::Instant;

use anyhow::Result;
use noprop_core::stats::median;
use serde_json::{json, Value};

/// Timing of `samples` runs: median wall time, mean CPU time, in ms.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub median_ms: f64,
    pub cpu_ms: Option<f64>,
    pub samples: usize,
}

impl Timing {
    pub fn to_json(self) -> Value {
        json!({ "median_ms": self.median_ms, "cpu_ms": self.cpu_ms, "samples": self.samples })
    }
}

extern "C" {
    fn sysconf(name: std::ffi::c_int) -> std::ffi::c_long;
}
/// `_SC_CLK_TCK` on Linux.
const SC_CLK_TCK: std::ffi::c_int = 2;

/// Process CPU time (user + system, all threads) in ms, if readable.
pub fn process_cpu_ms() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the whole line.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf only reads a configuration value.
    let per_s = unsafe { sysconf(SC_CLK_TCK) };
    (per_s > 0).then(|| ticks * 1e3 / per_s as f64)
}

/// Runs `f` `warmup` times, then times `iters` (at least one) runs.
pub fn median_ms(warmup: usize, iters: usize, mut f: impl FnMut() -> Result<()>) -> Result<Timing> {
    for _ in 0..warmup {
        f()?;
    }
    let iters = iters.max(1);
    let mut samples = Vec::with_capacity(iters);
    let cpu_start = process_cpu_ms();
    for _ in 0..iters {
        let start = Instant::now();
        f()?;
        samples.push(start.elapsed().as_secs_f64() * 1e3);
    }
    let cpu_ms = cpu_start
        .zip(process_cpu_ms())
        .map(|(a, b)| (b - a) / iters as f64);
    Ok(Timing {
        median_ms: median(&samples),
        cpu_ms,
        samples: samples.len(),
    })
}
