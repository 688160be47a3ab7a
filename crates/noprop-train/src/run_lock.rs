//! One process per run directory: an exclusive OS file lock on
//! `RUN_DIR/.lock`, taken by `noprop train` (new runs, `--resume`, `--force`)
//! before it reads or writes anything there, and released by the operating
//! system when the process ends, however it ends, so a killed run never
//! leaves a stale lock. The file holds the holder's pid, for the message
//! another process gets.
//!
//! Holding the lock also means no other writer is alive: the temporary files
//! of a writer that died mid-write (`.NAME.tmp-PID`, see [`noprop_checkpoint::atomic`])
//! are removed when the lock is taken.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// The lock file's name in a run directory.
pub const LOCK_FILE: &str = ".lock";

/// The lock of one run directory, held until dropped.
#[derive(Debug)]
pub struct RunLock {
    _file: File,
    path: PathBuf,
}

impl RunLock {
    /// Takes the lock of `dir` (which must exist), or fails naming the
    /// directory and the process holding it.
    pub fn acquire(dir: &Path) -> Result<Self> {
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("cannot open the lock file {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                let holder = match text.trim() {
                    "" => "another noprop process".to_string(),
                    pid => format!("another noprop process (pid {pid})"),
                };
                bail!(
                    "run directory {} is in use by {holder}: wait for it to finish or stop \
                     it, or choose another --out",
                    dir.display()
                );
            }
            Err(TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("cannot lock {}", path.display()));
            }
        }
        file.set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)).map(|_| ()))
            .and_then(|()| writeln!(file, "{}", std::process::id()))
            .with_context(|| format!("cannot write {}", path.display()))?;
        remove_stale_temporaries(dir)?;
        Ok(Self { _file: file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Removes `.NAME.tmp-PID` files: with the lock held, their writers are
/// gone.
fn remove_stale_temporaries(dir: &Path) -> Result<()> {
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') && name.contains(".tmp-") && entry.path().is_file() {
            tracing::info!(file = %entry.path().display(), "removing a dead writer's temporary file");
            std::fs::remove_file(entry.path())
                .with_context(|| format!("cannot remove {}", entry.path().display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let first = RunLock::acquire(dir.path()).unwrap();
        let pid = std::fs::read_to_string(first.path()).unwrap();
        assert_eq!(pid.trim(), std::process::id().to_string());
        let err = RunLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(err.contains("in use") && err.contains(pid.trim()), "{err}");
        drop(first);
        RunLock::acquire(dir.path()).unwrap();
    }

    #[test]
    fn taking_the_lock_removes_dead_writers_temporaries() {
        let dir = tempfile::tempdir().unwrap();
        let stale = dir.path().join(".last.safetensors.tmp-99999");
        std::fs::write(&stale, b"partial").unwrap();
        let kept = dir.path().join("last.safetensors");
        std::fs::write(&kept, b"complete").unwrap();
        let _lock = RunLock::acquire(dir.path()).unwrap();
        assert!(!stale.exists());
        assert!(kept.exists());
    }
}
