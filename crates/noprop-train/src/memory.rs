//! Peak memory of a training run, as the operating system counts it.
//!
//! On the CPU the number is the process's peak resident set size: the
//! larger of Linux's own high-water mark (`VmHWM` in `/proc/self/status`,
//! which some kernels lower again when memory is returned) and the largest
//! `VmRSS` seen by [`PeakSampler`], a thread that reads it every 5 ms during
//! training. It counts everything the process held in RAM at once: the dataset's tensors, the model's parameters and
//! optimizer state, the autograd graph and activations of the largest step,
//! the allocator's caches, and the binary itself. `baseline` (the resident
//! size once the data and model are loaded, before the first step) is
//! recorded beside it, so the growth during training, which is what the
//! variants differ in, can be read off. Elsewhere than Linux the numbers
//! are absent. (On a GPU the paper's figure is the device memory allocated
//! by the process; this build does not measure it.)

use serde::{Deserialize, Serialize};

/// Memory figures of a run, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryUsage {
    /// Peak resident set size of the process so far.
    pub peak_rss_bytes: Option<u64>,
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

/// The process's peak resident set size (Linux), in bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    status_field("VmHWM")
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

    /// The peak resident set size so far: the larger of the samples' and
    /// the kernel's high-water mark.
    pub fn peak_bytes(&self) -> Option<u64> {
        let sampled = self.peak.load(std::sync::atomic::Ordering::Relaxed);
        let sampled = current_rss_bytes().map_or(sampled, |now| sampled.max(now));
        match (peak_rss_bytes(), sampled) {
            (None, 0) => None,
            (hwm, sampled) => Some(hwm.unwrap_or(0).max(sampled)),
        }
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
    fn the_sampled_peak_covers_what_the_process_held() {
        if !cfg!(target_os = "linux") {
            return;
        }
        let sampler = PeakSampler::start();
        let before = sampler.peak_bytes().unwrap();
        // Hold and touch 64 MiB for a while, then free it: the peak keeps it.
        let block = vec![1u8; 64 << 20];
        assert!(block.iter().step_by(4096).all(|&b| b == 1));
        std::thread::sleep(SAMPLE_INTERVAL * 10);
        drop(block);
        let after = sampler.peak_bytes().unwrap();
        assert!(after >= before + (48 << 20), "{before} -> {after}");
    }
}
