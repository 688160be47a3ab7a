//! Atomic file writes: a reader (or a crash) sees either the old file or the
//! new one, never a mix.
//!
//! The bytes go to a temporary file in the destination's directory (a rename
//! is only atomic within one file system), which is flushed to disk (`fsync`)
//! before it is renamed over the destination; the directory is then synced
//! so that the rename itself survives a power cut. Killing the process at any
//! moment leaves the previous file intact (at worst a stray `.tmp` file).

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Writes `bytes` to `path` atomically (temporary file, fsync, rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let temp = temp_path(path)?;
    let result = write_and_sync(&temp, bytes).and_then(|()| {
        fs::rename(&temp, path)
            .with_context(|| format!("cannot rename {} to {}", temp.display(), path.display()))
    });
    if result.is_err() {
        // Best effort: do not leave a half-written temporary behind.
        let _ = fs::remove_file(&temp);
    }
    result?;
    sync_parent_dir(path);
    Ok(())
}

/// `dir/.name.tmp-PID`: hidden, unique per process, next to the destination.
fn temp_path(path: &Path) -> Result<PathBuf> {
    let name = path
        .file_name()
        .with_context(|| format!("{} is not a file path", path.display()))?;
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(name);
    temp_name.push(format!(".tmp-{}", std::process::id()));
    Ok(path.with_file_name(temp_name))
}

fn write_and_sync(temp: &Path, bytes: &[u8]) -> Result<()> {
    let mut file =
        File::create(temp).with_context(|| format!("cannot create {}", temp.display()))?;
    file.write_all(bytes)
        .with_context(|| format!("cannot write {}", temp.display()))?;
    file.sync_all()
        .with_context(|| format!("cannot sync {} to disk", temp.display()))?;
    Ok(())
}

/// Syncs the directory entry of a completed rename. Not every platform can
/// open a directory, and the data itself is already on disk, so failures are
/// ignored.
fn sync_parent_dir(path: &Path) {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if let Ok(dir) = File::open(parent) {
        let _ = dir.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.bin");
        write_atomic(&path, b"first").unwrap();
        write_atomic(&path, b"second").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("a.bin")]);
    }

    #[test]
    fn a_failed_write_keeps_the_previous_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.bin");
        write_atomic(&path, b"good").unwrap();
        // A directory where the temporary file should go makes the write fail.
        fs::create_dir(temp_path(&path).unwrap()).unwrap();
        let err = write_atomic(&path, b"bad").unwrap_err();
        assert!(format!("{err:#}").contains("cannot create"), "{err:#}");
        assert_eq!(fs::read(&path).unwrap(), b"good");
    }
}
