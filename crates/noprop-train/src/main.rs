//! The `noprop` binary; everything lives in the library (see `cli`).

fn main() -> std::process::ExitCode {
    noprop_train::cli::main()
}
