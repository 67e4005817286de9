//! `agentkeysd`: see `agentkeysd --help` and the crate documentation.
fn main() -> std::process::ExitCode {
    agentkeysd::daemon::main()
}
