//! The `noprop` binary; everything lives in the library (see `cli`).

fn main() -> std::process::ExitCode {
    restore_sigpipe();
    noprop_train::cli::main()
}

/// Rust ignores SIGPIPE, so printing into a closed pipe (`noprop info |
/// head`) would panic in `println!`. Like other Unix command-line tools,
/// `noprop` ends quietly instead: the default action.
fn restore_sigpipe() {
    #[cfg(unix)]
    // SAFETY: called first in main, before any thread exists; setting a
    // signal's disposition to its default has no other effect.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
