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
//! the numbers are absent.
//!
//! On a CUDA device the paper's figure is the device memory of the
//! process. [`DeviceMemorySampler`] reads it from the driver through
//! `nvidia-smi --query-compute-apps=pid,used_memory` (the same number as
//! nvidia-smi's process table) every 500 ms: everything the process holds
//! on the device, i.e. the CUDA context (a few hundred MiB), candle's
//! allocations (parameters, optimizer state, activations and graph of the
//! step) and the cuBLAS/cuDNN workspaces. PyTorch's
//! `max_memory_allocated`, which the paper likely quotes, counts the
//! tensors only, so it reads lower by about the context. Without
//! nvidia-smi the figures are absent.

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
    /// Peak device memory of the process during the epoch's training steps
    /// (CUDA runs; see [`DeviceMemorySampler`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_peak_device_bytes: Option<u64>,
    /// Peak device memory during the evaluation after the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_peak_device_bytes: Option<u64>,
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

/// How often [`DeviceMemorySampler`] asks the driver (nvidia-smi takes
/// tens of milliseconds per call).
pub const DEVICE_SAMPLE_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);

/// The `used_memory` (MiB) of process `pid` in the output of `nvidia-smi
/// --query-compute-apps=pid,used_memory --format=csv,noheader,nounits`
/// (one `pid, MiB` line per process and device; a process on several
/// devices is summed), in bytes. None when `pid` is not listed.
pub fn parse_compute_apps(output: &str, pid: u32) -> Option<u64> {
    let mut total = None;
    for line in output.lines() {
        let mut fields = line.split(',').map(str::trim);
        let (Some(p), Some(mib)) = (fields.next(), fields.next()) else {
            continue;
        };
        if p.parse::<u32>().ok() != Some(pid) {
            continue;
        }
        if let Ok(mib) = mib.parse::<u64>() {
            total = Some(total.unwrap_or(0) + mib * (1 << 20));
        }
    }
    total
}

/// One reading of the device memory of `pid` from `program` (nvidia-smi).
fn query_device_memory(program: &std::path::Path, pid: u32) -> Option<u64> {
    let output = std::process::Command::new(program)
        .args([
            "--query-compute-apps=pid,used_memory",
            "--format=csv,noheader,nounits",
        ])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    parse_compute_apps(&String::from_utf8_lossy(&output.stdout), pid)
}

/// Samples this process's device memory through nvidia-smi on a
/// background thread until dropped (see the module doc). Phases work as
/// with [`PeakSampler`]: [`DeviceMemorySampler::take_peak`] returns the
/// largest reading since the previous call.
pub struct DeviceMemorySampler {
    /// The largest reading of the phase; u64::MAX = none yet.
    peak: std::sync::Arc<std::sync::atomic::AtomicU64>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

const NO_READING: u64 = u64::MAX;

impl DeviceMemorySampler {
    /// Starts sampling with `program` (normally `nvidia-smi` from PATH)
    /// every `interval`. Returns None, with nothing started, when the first
    /// query fails (no such program, no driver).
    pub fn start(program: &std::path::Path, interval: std::time::Duration) -> Option<Self> {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        use std::sync::Arc;
        let pid = std::process::id();
        // The process may not hold a context yet: an empty answer is fine,
        // a failing program is not.
        std::process::Command::new(program)
            .arg("--query-compute-apps=pid,used_memory")
            .arg("--format=csv,noheader,nounits")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .ok()
            .filter(|s| s.success())?;
        let peak = Arc::new(AtomicU64::new(NO_READING));
        let stop = Arc::new(AtomicBool::new(false));
        let (peak_in, stop_in) = (Arc::clone(&peak), Arc::clone(&stop));
        let program = program.to_path_buf();
        let thread = std::thread::spawn(move || {
            while !stop_in.load(Ordering::Relaxed) {
                if let Some(bytes) = query_device_memory(&program, pid) {
                    // fetch_max against NO_READING would never move: replace it.
                    let _ = peak_in.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |p| {
                        Some(if p == NO_READING { bytes } else { p.max(bytes) })
                    });
                }
                // Sleep in short slices so that dropping the sampler is quick.
                let mut slept = std::time::Duration::ZERO;
                while slept < interval && !stop_in.load(Ordering::Relaxed) {
                    let slice = (interval - slept).min(std::time::Duration::from_millis(20));
                    std::thread::sleep(slice);
                    slept += slice;
                }
            }
        });
        Some(Self {
            peak,
            stop,
            thread: Some(thread),
        })
    }

    /// Starts sampling with `nvidia-smi` from PATH every
    /// [`DEVICE_SAMPLE_INTERVAL`].
    pub fn start_nvidia_smi() -> Option<Self> {
        Self::start(std::path::Path::new("nvidia-smi"), DEVICE_SAMPLE_INTERVAL)
    }

    /// The largest reading since the start or the previous call (None if
    /// there was none), which starts a new phase.
    pub fn take_peak(&self) -> Option<u64> {
        let peak = self
            .peak
            .swap(NO_READING, std::sync::atomic::Ordering::Relaxed);
        (peak != NO_READING).then_some(peak)
    }
}

impl Drop for DeviceMemorySampler {
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
    fn compute_apps_lines_parse_for_our_pid_only() {
        let out = "4242, 1536\n17, 80\n4242, 512\nnot a line\n4243, 9\n";
        assert_eq!(parse_compute_apps(out, 4242), Some(2048 << 20));
        assert_eq!(parse_compute_apps(out, 17), Some(80 << 20));
        assert_eq!(parse_compute_apps(out, 99), None);
        assert_eq!(parse_compute_apps("", 17), None);
        // "[N/A]" (no permission to read it) is no reading.
        assert_eq!(parse_compute_apps("17, [N/A]\n", 17), None);
    }

    /// A stand-in nvidia-smi (a shell script) that reports this process
    /// with the MiB in a file the test changes between phases.
    #[cfg(unix)]
    #[test]
    fn the_device_sampler_keeps_each_phases_peak() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let value = dir.path().join("mib");
        std::fs::write(&value, "300").unwrap();
        let script = dir.path().join("nvidia-smi");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\necho \"1, 7\"\necho \"{}, $(cat {})\"\n",
                std::process::id(),
                value.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let interval = std::time::Duration::from_millis(20);
        let sampler = DeviceMemorySampler::start(&script, interval).unwrap();
        std::thread::sleep(interval * 10);
        std::fs::write(&value, "900").unwrap();
        std::thread::sleep(interval * 10);
        // Lowered before the phase ends, so that no reading of 900 is still
        // in flight when the next phase starts.
        std::fs::write(&value, "400").unwrap();
        std::thread::sleep(interval * 10);
        assert_eq!(sampler.take_peak(), Some(900 << 20));
        std::thread::sleep(interval * 10);
        assert_eq!(
            sampler.take_peak(),
            Some(400 << 20),
            "a new phase starts afresh"
        );
        drop(sampler);
        // No such program: nothing is sampled.
        assert!(DeviceMemorySampler::start(&dir.path().join("absent"), interval).is_none());
    }

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
