//! Running external programs (cargo, noprop, pip, cc, nvcc) with their
//! command line in the log and errors that say which command failed and
//! how, and finding programs on PATH.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

/// A command as a shell-like line, for logs, errors and `--dry-run`:
/// arguments a shell would split or expand are single-quoted.
pub fn describe(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|arg| {
            let arg = arg.to_string_lossy();
            let plain = !arg.is_empty()
                && arg
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
            if plain {
                arg.into_owned()
            } else {
                shell_quote(&arg)
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Single-quotes `text` for POSIX sh.
pub fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

/// Runs `command` with inherited stdio, its line printed first; errors
/// unless it exits with 0. Returns how long it ran.
pub fn run(command: &mut Command) -> Result<Duration> {
    let line = describe(command);
    eprintln!("xtask: running {line}");
    let start = Instant::now();
    let status = command
        .status()
        .with_context(|| format!("could not start `{line}`"))?;
    if !status.success() {
        bail!("`{line}` failed ({status})");
    }
    Ok(start.elapsed())
}

/// Runs `command` with its stdout written to `path` (stderr to the
/// terminal), its line printed first; errors unless it exits with 0. The
/// output goes to a temporary file renamed to `path` on success, so `path`
/// never holds a failed or partial run's output.
pub fn run_to_file(command: &mut Command, path: &Path) -> Result<()> {
    let line = describe(command);
    eprintln!("xtask: running {line} > {}", path.display());
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let file = std::fs::File::create(&partial)
        .with_context(|| format!("creating {}", partial.display()))?;
    let outcome = match command
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(Stdio::inherit())
        .status()
    {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => Err(anyhow!("`{line}` failed ({status})")),
        Err(e) => Err(anyhow::Error::new(e).context(format!("could not start `{line}`"))),
    };
    if let Err(e) = outcome {
        let _ = std::fs::remove_file(&partial);
        return Err(e);
    }
    std::fs::rename(&partial, path).with_context(|| format!("writing {}", path.display()))
}

/// Runs `command` and returns its stdout; errors (with its stderr) unless it
/// exits with 0.
pub fn output(command: &mut Command) -> Result<String> {
    let line = describe(command);
    let output = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("could not start `{line}`"))?;
    if !output.status.success() {
        bail!(
            "`{line}` failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The first executable file called `name` on PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| {
            candidate
                .metadata()
                .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        })
}

/// Writes `text` to `path` through a temporary file and a rename, so
/// `path` never holds a partial file.
pub fn write_atomically(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("partial");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
}

/// `nice -n 19 <program>` where `nice` exists, so heavy builds yield the
/// shared CPUs; plain `<program>` otherwise.
pub fn niced(program: impl Into<OsString>) -> Command {
    let program = program.into();
    if which("nice").is_some() {
        let mut command = Command::new("nice");
        command.arg("-n").arg("19").arg(program);
        command
    } else {
        Command::new(program)
    }
}

/// The cargo that runs this xtask (`$CARGO`), else `cargo` from PATH.
pub fn cargo_program() -> OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failing_command_is_named_in_the_error() {
        let err = output(Command::new("sh").args(["-c", "echo oops >&2; exit 3"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("sh -c"), "{err}");
        assert!(err.contains("oops"), "{err}");
        let err = run(Command::new("sh").args(["-c", "exit 4"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("`sh -c 'exit 4'` failed"), "{err}");
        let err = run(&mut Command::new("no-such-program-noprop-xtask"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("could not start"), "{err}");
    }

    #[test]
    fn output_returns_stdout() {
        assert_eq!(
            output(Command::new("sh").args(["-c", "echo hi"])).unwrap(),
            "hi\n"
        );
    }

    #[test]
    fn stdout_goes_to_the_file_only_on_success() {
        let dir = std::env::temp_dir().join(format!("xtask-process-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("out.json");
        run_to_file(Command::new("sh").args(["-c", "echo '{}'"]), &file).unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "{}\n");
        let err = run_to_file(Command::new("sh").args(["-c", "echo half; exit 2"]), &file)
            .unwrap_err()
            .to_string();
        assert!(err.contains("failed"), "{err}");
        // The earlier output is kept, and no partial file is left.
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "{}\n");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn describe_quotes_what_a_shell_would_split() {
        let mut command = Command::new("/bin/noprop");
        command.args([
            "compare",
            "--note",
            "cargo xtask train-all",
            "",
            "it's",
            "a=b,c",
        ]);
        assert_eq!(
            describe(&command),
            "/bin/noprop compare --note 'cargo xtask train-all' '' 'it'\\''s' a=b,c"
        );
    }

    #[test]
    fn shell_quote_survives_single_quotes() {
        assert_eq!(shell_quote("a'b"), "'a'\\''b'");
    }

    #[test]
    fn which_finds_sh_but_not_nonsense() {
        assert!(which("sh").is_some());
        assert!(which("no-such-program-noprop-xtask").is_none());
    }
}
