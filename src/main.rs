//! `fmnist`: see `fmnist --help`, and the README.
fn main() {
    std::process::exit(fmnist::cli::main());
}
