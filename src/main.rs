//! `fmnist`: see `fmnist --help`, and the README.

fn main() {
    // `fmnist eval ... | head` closes the pipe early; Rust ignores SIGPIPE, so the next print
    // fails and `println!` panics. Leave quietly instead, with the status a shell gives a
    // process killed by SIGPIPE (128 + 13). Other panics keep the default report.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if msg.contains("Broken pipe") {
            std::process::exit(141);
        }
        default_hook(info);
    }));
    std::process::exit(fmnist::cli::main());
}
