//! Project tasks. Thin by design: it drives `cargo` and the `noprop` binary.
fn main() {
    eprintln!("xtask: no task yet");
    std::process::exit(2);
}
