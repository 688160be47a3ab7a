//! Peak memory of a training run, as the operating system counts it.
//!
//! On the CPU the numbers are resident set sizes (`VmRSS` in Linux's
//! `/proc/self/status`), sampled every 5 ms by [`PeakSampler`], a thread
//! that runs during training: the largest sample of each phase is its peak.
//! (The kernel's own high-water mark, `VmHWM`, cannot be reset between
//! phases, and some kernels lower it again when memory is returned.) A
//! resident size counts everything the process holds in RAM: the dataset's
//! tensors, the model's parameters and optimizer state, the autograd graph
//! and activations of the step, the allocator's caches (the binary keeps
//! freed memory for reuse: see `noprop_kernels::tune_cpu_allocator`), and
//! the binary itself. `baseline` (once the data and model are loaded,
//! before the first step) is recorded beside the peaks, so the growth during
//! training, which is what the variants differ in, can be read off. A peak
//! shorter than the sampling interval can be missed. Elsewhere than Linux
//! the numbers are absent. (On a GPU the paper's figure is the device
//! memory the process allocated; this build does not measure it.)

use serde::{Deserialize, Serialize};

/// Memory figures of one epoch, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryUsage {
    /// Peak resident set size during the epoch's training steps.
    pub train_peak_rss_bytes: Option<u64>,
    /// Peak resident set size during the evaluation after the epoch.
    pub eval_peak_rss_bytes: Option<u64>,
    /// Resident set size before the first training step of this process.
    pub baseline_rss_bytes: Option<u64>,
}

/// A `kB` field of `/proc/self/status`, in bytes.
fn status_field(name: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_status_field(&status, name)
}

fn parse_status_field(status: &str, name: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(name))?;
    let rest = line[name.len()..].trim_start_matches(':').trim();
    let kb: u64 = rest.strip_suffix("kB")?.trim().parse().ok()?;
    Some(kb * 1024)
}

/// The process's current resident set size (Linux), in bytes.
pub fn current_rss_bytes() -> Option<u64> {
    status_field("VmRSS")
}

/// Samples the resident set size on a background thread until dropped.
pub struct PeakSampler {
    peak: std::sync::Arc<std::sync::atomic::AtomicU64>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// How often [`PeakSampler`] reads the resident set size.
pub const SAMPLE_INTERVAL: std::time::Duration = std::time::Duration::from_millis(5);

impl PeakSampler {
    /// Starts sampling (nothing is sampled where `/proc` is absent).
    pub fn start() -> Self {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        use std::sync::Arc;
        let peak = Arc::new(AtomicU64::new(current_rss_bytes().unwrap_or(0)));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = current_rss_bytes().is_some().then(|| {
            let (peak, stop) = (Arc::clone(&peak), Arc::clone(&stop));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Some(rss) = current_rss_bytes() {
                        peak.fetch_max(rss, Ordering::Relaxed);
                    }
                    std::thread::sleep(SAMPLE_INTERVAL);
                }
            })
        });
        Self { peak, stop, thread }
    }

    /// The peak since the start or the previous call, which starts a new
    /// phase (its peak starts at the current size).
    pub fn take_peak(&self) -> Option<u64> {
        use std::sync::atomic::Ordering;
        let now = current_rss_bytes()?;
        let peak = self.peak.swap(now, Ordering::Relaxed).max(now);
        Some(peak)
    }
}

impl Drop for PeakSampler {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_fields_parse_as_kilobytes() {
        let status = "Name:\tnoprop\nVmHWM:\t  123456 kB\nVmRSS:\t   100 kB\n";
        assert_eq!(parse_status_field(status, "VmHWM"), Some(123_456 * 1024));
        assert_eq!(parse_status_field(status, "VmRSS"), Some(100 * 1024));
        assert_eq!(parse_status_field(status, "VmSwap"), None);
        assert_eq!(parse_status_field("VmHWM: lots\n", "VmHWM"), None);
    }

    #[test]
    fn the_sampled_peak_covers_what_each_phase_held() {
        if !cfg!(target_os = "linux") {
            return;
        }
        let sampler = PeakSampler::start();
        let before = sampler.take_peak().unwrap();
        // Hold and touch 64 MiB for a while, then free it: the phase's peak
        // keeps it; the next phase's does not.
        let block = vec![1u8; 64 << 20];
        assert!(block.iter().step_by(4096).all(|&b| b == 1));
        std::thread::sleep(SAMPLE_INTERVAL * 10);
        drop(block);
        let held = sampler.take_peak().unwrap();
        assert!(held >= before + (48 << 20), "{before} -> {held}");
        std::thread::sleep(SAMPLE_INTERVAL * 4);
        let after = sampler.take_peak().unwrap();
        assert!(after < held, "a new phase starts low: {held} -> {after}");
    }
}
