//! Running external programs (pip, cc, cargo, nvcc) with errors that say
//! which command failed and how, and finding programs on PATH.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// A command as a shell-like line, for logs and errors.
pub fn describe(command: &Command) -> String {
    let mut line = command.get_program().to_string_lossy().into_owned();
    for arg in command.get_args() {
        line.push(' ');
        line.push_str(&arg.to_string_lossy());
    }
    line
}

/// Runs `command` with inherited stdio; errors unless it exits with 0.
/// Returns how long it ran.
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

/// `nice -n 19 <program>` where `nice` exists, so heavy builds yield the
/// shared CPUs; plain `<program>` otherwise.
pub fn niced(program: impl Into<std::ffi::OsString>) -> Command {
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
pub fn cargo_program() -> std::ffi::OsString {
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
    }

    #[test]
    fn output_returns_stdout() {
        assert_eq!(
            output(Command::new("sh").args(["-c", "echo hi"])).unwrap(),
            "hi\n"
        );
    }

    #[test]
    fn which_finds_sh_but_not_nonsense() {
        assert!(which("sh").is_some());
        assert!(which("no-such-program-noprop-xtask").is_none());
    }
}
