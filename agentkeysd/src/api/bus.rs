//! Which bus to talk on: `system` (default), `session`, or a D-Bus address.
//! Both binaries take `--bus` / `AGENTKEYS_BUS` and resolve it here.

use std::fmt;
use std::str::FromStr;

/// Environment variable naming the bus, like `--bus`.
pub const BUS_ENV: &str = "AGENTKEYS_BUS";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BusChoice {
    System,
    Session,
    /// A D-Bus address such as `unix:path=/tmp/bus.sock`.
    Address(String),
}

impl FromStr for BusChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "system" => Ok(BusChoice::System),
            "session" => Ok(BusChoice::Session),
            a if a.contains(':') && a.contains('=') => Ok(BusChoice::Address(a.to_owned())),
            other => Err(format!(
                "'{other}' is not a bus: use 'system', 'session' or a D-Bus address such as unix:path=/run/dbus/system_bus_socket"
            )),
        }
    }
}

impl fmt::Display for BusChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BusChoice::System => f.write_str("system"),
            BusChoice::Session => f.write_str("session"),
            BusChoice::Address(a) => f.write_str(a),
        }
    }
}

impl BusChoice {
    /// A connection builder for this bus.
    pub fn builder(&self) -> zbus::connection::Builder<'static> {
        match self {
            BusChoice::System => zbus::connection::Builder::system(),
            BusChoice::Session => zbus::connection::Builder::session(),
            BusChoice::Address(a) => zbus::connection::Builder::address(a.as_str()),
        }
    }

    /// Connect as a client.
    pub async fn connect(&self) -> zbus::Result<zbus::Connection> {
        self.builder().build().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bus_choices() {
        assert_eq!("system".parse(), Ok(BusChoice::System));
        assert_eq!("session".parse(), Ok(BusChoice::Session));
        assert_eq!(
            "unix:path=/tmp/x".parse(),
            Ok(BusChoice::Address("unix:path=/tmp/x".into()))
        );
        assert!("bogus".parse::<BusChoice>().is_err());
    }
}
