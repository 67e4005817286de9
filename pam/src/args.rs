//! Module arguments (`socket=PATH`, `timeout=SECONDS`, `debug`), from the line in the PAM
//! service file.

use std::path::PathBuf;
use std::time::Duration;

use crate::client::TIMEOUT;

/// The longest `timeout=` accepted: a login must never wait for long.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the daemon's PAM listener is by default (`<runtime-dir>/pam.sock`).
pub const DEFAULT_SOCKET: &str = "/run/agentkeys/pam.sock";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    /// The daemon's PAM listener.
    pub socket: PathBuf,
    /// The most one request may take, all steps together (default 2 s, 1–10 s).
    pub timeout: Duration,
    /// Log each step at `LOG_DEBUG` (never a password).
    pub debug: bool,
    /// Arguments this module does not know (logged, otherwise ignored).
    pub unknown: Vec<String>,
}

impl Args {
    pub fn parse(args: &[String]) -> Args {
        let mut out = Args {
            socket: PathBuf::from(DEFAULT_SOCKET),
            timeout: TIMEOUT,
            debug: false,
            unknown: Vec::new(),
        };
        for arg in args {
            match arg.split_once('=') {
                Some(("socket", path)) if path.starts_with('/') => out.socket = PathBuf::from(path),
                Some(("timeout", secs)) => match secs.parse::<u64>() {
                    Ok(s) if (1..=MAX_TIMEOUT.as_secs()).contains(&s) => {
                        out.timeout = Duration::from_secs(s)
                    }
                    _ => out.unknown.push(arg.clone()),
                },
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
        assert_eq!(a.timeout, TIMEOUT);
        let a = parse(&["debug", "socket=/tmp/x/pam.sock", "timeout=5"]);
        assert_eq!(a.socket, PathBuf::from("/tmp/x/pam.sock"));
        assert!(a.debug);
        assert_eq!(a.timeout, Duration::from_secs(5));
    }

    #[test]
    fn relative_socket_and_unknown_arguments_are_reported() {
        let a = parse(&[
            "socket=relative.sock",
            "use_first_pass",
            "debug=1",
            "timeout=0",
            "timeout=60",
        ]);
        assert_eq!(a.socket, PathBuf::from(DEFAULT_SOCKET));
        assert_eq!(a.timeout, TIMEOUT);
        assert_eq!(
            a.unknown,
            [
                "socket=relative.sock",
                "use_first_pass",
                "debug=1",
                "timeout=0",
                "timeout=60"
            ]
        );
    }
}
