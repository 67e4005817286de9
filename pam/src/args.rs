//! Module arguments (`socket=PATH`, `debug`), from the line in the PAM service file.

use std::path::PathBuf;

/// Where the daemon's PAM listener is by default (`<runtime-dir>/pam.sock`).
pub const DEFAULT_SOCKET: &str = "/run/agentkeys/pam.sock";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    /// The daemon's PAM listener.
    pub socket: PathBuf,
    /// Log each step at `LOG_DEBUG` (never a password).
    pub debug: bool,
    /// Arguments this module does not know (logged, otherwise ignored).
    pub unknown: Vec<String>,
}

impl Args {
    pub fn parse(args: &[String]) -> Args {
        let mut out = Args {
            socket: PathBuf::from(DEFAULT_SOCKET),
            debug: false,
            unknown: Vec::new(),
        };
        for arg in args {
            match arg.split_once('=') {
                Some(("socket", path)) if path.starts_with('/') => out.socket = PathBuf::from(path),
                None if arg == "debug" => out.debug = true,
                _ => out.unknown.push(arg.clone()),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Args {
        Args::parse(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn defaults_and_known_arguments() {
        let a = parse(&[]);
        assert_eq!(a.socket, PathBuf::from(DEFAULT_SOCKET));
        assert!(!a.debug && a.unknown.is_empty());
        let a = parse(&["debug", "socket=/tmp/x/pam.sock"]);
        assert_eq!(a.socket, PathBuf::from("/tmp/x/pam.sock"));
        assert!(a.debug);
    }

    #[test]
    fn relative_socket_and_unknown_arguments_are_reported() {
        let a = parse(&["socket=relative.sock", "use_first_pass", "debug=1"]);
        assert_eq!(a.socket, PathBuf::from(DEFAULT_SOCKET));
        assert_eq!(
            a.unknown,
            ["socket=relative.sock", "use_first_pass", "debug=1"]
        );
    }
}
