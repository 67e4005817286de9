//! The connection to agentkeysd and what every daemon command shares: the proxies, the
//! owner a call acts for (`--owner`), and the [`Op`] that turns a refusal into
//! problem → cause → fix.

use agentkeysd::api::bus::BusChoice;
use agentkeysd::api::proxies::{AgentsProxy, AuditProxy, CredentialsProxy, DaemonProxy};
use zbus::Connection;
use zbus::proxy::CacheProperties;

use crate::cli::Global;
use crate::errors::{CliError, Op, Subject, bus_unreachable_report, unreachable_report};
use crate::output::{describe_uid, user_name};

/// A method call that takes longer than this counts as "daemon not answering" (exit 6).
const METHOD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Whose objects a command addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    /// Set when the user passed `--owner`: the call names that owner explicitly.
    pub explicit: bool,
}

impl Owner {
    /// `--owner USER`: a user name or a numeric uid, resolved locally.
    pub fn parse(arg: &str) -> Result<Owner, CliError> {
        let fix = "pass a user name from /etc/passwd or a numeric uid, e.g. --owner alice or --owner 1000";
        if !arg.is_empty() && arg.bytes().all(|b| b.is_ascii_digit()) {
            let uid = arg
                .parse::<u32>()
                .map_err(|_| CliError::usage(format!("'{arg}' is not a uid")).fix(fix))?;
            return Ok(Owner {
                uid,
                explicit: true,
            });
        }
        match nix::unistd::User::from_name(arg) {
            Ok(Some(u)) => Ok(Owner {
                uid: u.uid.as_raw(),
                explicit: true,
            }),
            Ok(None) => Err(CliError::usage(format!("no local user '{arg}'"))
                .cause("--owner names a user this system does not know")
                .fix(fix)),
            Err(e) => Err(CliError::usage(format!("cannot look up user '{arg}'"))
                .cause(e.desc())
                .fix(fix)),
        }
    }

    /// The caller itself.
    pub fn me() -> Owner {
        Owner {
            uid: nix::unistd::geteuid().as_raw(),
            explicit: false,
        }
    }
}

/// The bus as a phrase: "the system bus", "the bus at unix:path=…".
pub fn describe_bus(bus: &BusChoice) -> String {
    match bus {
        BusChoice::System => "the system bus".to_owned(),
        BusChoice::Session => "the session bus".to_owned(),
        BusChoice::Address(a) => format!("the bus at {a}"),
    }
}

/// A connected client for one command.
#[derive(Debug)]
pub struct Client {
    pub conn: Connection,
    pub bus: BusChoice,
    pub owner: Owner,
}

impl Client {
    /// Connects to the bus named by `--bus`; a failure is "daemon unreachable" (exit 6).
    pub async fn connect(global: &Global) -> Result<Client, CliError> {
        let owner = match &global.owner {
            Some(arg) => Owner::parse(arg)?,
            None => Owner::me(),
        };
        let conn = global
            .bus
            .builder()
            .method_timeout(METHOD_TIMEOUT)
            .build()
            .await
            .map_err(|e| {
                CliError::Report(bus_unreachable_report(
                    &describe_bus(&global.bus),
                    e.to_string(),
                ))
            })?;
        Ok(Client {
            conn,
            bus: global.bus.clone(),
            owner,
        })
    }

    /// `NAME`, or `UID:NAME` when acting for another owner with `--owner`.
    pub fn qualify(&self, name: &str) -> Result<String, CliError> {
        if !self.owner.explicit {
            return Ok(name.to_owned());
        }
        if name.contains(':') {
            return Err(CliError::usage(format!(
                "'{name}' already names an owner, and --owner names one too"
            ))
            .fix("use either --owner USER or the UID:NAME form, not both"));
        }
        Ok(format!("{}:{name}", self.owner.uid))
    }

    /// The owner for `ListFor`-style calls: `Some(uid)` only with `--owner`.
    pub fn list_owner(&self) -> Option<u32> {
        self.owner.explicit.then_some(self.owner.uid)
    }

    /// Describes a failed call to `action` on `subject`.
    pub fn op(&self, action: impl Into<String>, subject: Subject) -> Op {
        let owner_flag = if self.owner.explicit {
            match user_name(self.owner.uid) {
                Some(name) => format!(" --owner {name}"),
                None => format!(" --owner {}", self.owner.uid),
            }
        } else {
            String::new()
        };
        Op::new(
            action,
            subject,
            describe_uid(self.owner.uid),
            owner_flag,
            describe_bus(&self.bus),
        )
    }

    pub async fn daemon(&self) -> Result<DaemonProxy<'_>, CliError> {
        let b = DaemonProxy::builder(&self.conn).cache_properties(CacheProperties::No);
        b.build().await.map_err(|e| self.proxy_error(e))
    }

    pub async fn credentials(&self) -> Result<CredentialsProxy<'_>, CliError> {
        let b = CredentialsProxy::builder(&self.conn).cache_properties(CacheProperties::No);
        b.build().await.map_err(|e| self.proxy_error(e))
    }

    pub async fn agents(&self) -> Result<AgentsProxy<'_>, CliError> {
        let b = AgentsProxy::builder(&self.conn).cache_properties(CacheProperties::No);
        b.build().await.map_err(|e| self.proxy_error(e))
    }

    pub async fn audit(&self) -> Result<AuditProxy<'_>, CliError> {
        let b = AuditProxy::builder(&self.conn).cache_properties(CacheProperties::No);
        b.build().await.map_err(|e| self.proxy_error(e))
    }

    fn proxy_error(&self, e: zbus::Error) -> CliError {
        CliError::Report(unreachable_report(&describe_bus(&self.bus), e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_owners_need_no_passwd_entry() {
        assert_eq!(
            Owner::parse("4242").unwrap(),
            Owner {
                uid: 4242,
                explicit: true
            }
        );
        assert_eq!(Owner::parse("root").unwrap().uid, 0);
    }

    #[test]
    fn buses_read_as_phrases() {
        assert_eq!(describe_bus(&BusChoice::System), "the system bus");
        assert_eq!(
            describe_bus(&BusChoice::Address("unix:path=/x".into())),
            "the bus at unix:path=/x"
        );
    }

    #[test]
    fn unknown_owners_are_usage_errors() {
        let e = Owner::parse("no-such-user-agentkeys").unwrap_err();
        assert_eq!(e.exit().code(), 2);
        assert_eq!(Owner::parse("99999999999").unwrap_err().exit().code(), 2);
    }
}
