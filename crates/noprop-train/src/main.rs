fn main() {
    eprintln!("noprop: the trainer is not built yet");
    std::process::exit(2);
}
