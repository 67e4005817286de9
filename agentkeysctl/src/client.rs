//! The connection to agentkeysd and what every daemon command shares: the proxies, the
//! owner a call acts for (`--owner`), the paired agent a connection may act as (`--agent`),
//! and the [`Op`] that turns a refusal into problem → cause → fix.

use agentkeysd::api::bus::BusChoice;
use agentkeysd::api::dict::Dict;
use agentkeysd::api::proxies::{
    AgentsProxy, ApprovalsProxy, AuditProxy, CredentialsProxy, DaemonProxy, JobsProxy,
};
use agentkeysd::api::{ErrorKind, agent};
use zbus::Connection;
use zbus::proxy::CacheProperties;

use crate::cli::Global;
use crate::errors::{
    CliError, Exit, Op, Subject, bus_unreachable_report, daemon_error, unreachable_report,
};
use crate::identity::{self, Identity};
use crate::output::{describe_uid, format_utc, user_name};
use crate::time::now;

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

    /// The owner `--owner` names, or the caller when it names none.
    pub fn of(global: &Global) -> Result<Owner, CliError> {
        match &global.owner {
            Some(arg) => Owner::parse(arg),
            None => Ok(Owner::me()),
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

/// What the daemon says of itself (its object's properties).
#[derive(Debug)]
pub struct DaemonFacts {
    pub version: String,
    pub memory: String,
    pub features: Dict,
}

/// A connected client for one command.
#[derive(Debug)]
pub struct Client {
    pub conn: Connection,
    pub bus: BusChoice,
    pub owner: Owner,
    /// Set when this connection is authenticated as a paired agent (`--agent`).
    pub agent: Option<AgentSession>,
}

/// The paired agent a connection acts as. Holds no key and no session id: those stay in
/// the identity file and are used once, to sign the proof.
#[derive(Debug)]
pub struct AgentSession {
    pub agent_id: String,
    pub name: Option<String>,
    /// What `Authenticate` answered: `agent_id`, `name`, `owner`, `scope`,
    /// `session_expires`.
    pub auth: Dict,
}

impl Client {
    /// Connects to the bus named by `--bus`, for the owner `--owner` names; a failure is
    /// "daemon unreachable" (exit 6).
    pub async fn connect(global: &Global) -> Result<Client, CliError> {
        Client::connect_for(global, Owner::of(global)?).await
    }

    /// [`Client::connect`] for an owner already resolved (with [`Owner::of`]).
    pub async fn connect_for(global: &Global, owner: Owner) -> Result<Client, CliError> {
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
            agent: None,
        })
    }

    /// For the commands an agent may run (`read`, `whoami`): with `--agent`, loads the
    /// agent's identity first (a missing one is exit 4 without touching the bus), then
    /// connects and authenticates this connection as the agent before any other call.
    pub async fn connect_maybe_as_agent(global: &Global) -> Result<Client, CliError> {
        let Some(selector) = &global.agent else {
            return Client::connect(global).await;
        };
        if global.owner.is_some() {
            return Err(
                CliError::usage("--agent and --owner cannot be used together")
                    .cause("a paired agent acts for the owner that approved it, never for another")
                    .fix("drop --owner (or unset AGENTKEYS_AGENT to act as yourself)"),
            );
        }
        let dir = identity::agents_dir().map_err(identity::IdentityError::into_cli)?;
        let id = identity::find(&dir, selector).map_err(identity::IdentityError::into_cli)?;
        check_session_time(&id, now())?;
        let mut client = Client::connect(global).await?;
        client.authenticate(&id).await?;
        Ok(client)
    }

    /// `Authenticate` on this connection: proves, with the agent's key, that this very
    /// connection (its unique bus name) carries the agent's session. (A connection without
    /// a unique name is refused by [`agent::authenticate`] itself.)
    pub async fn authenticate(&mut self, id: &Identity) -> Result<(), CliError> {
        let again = format!(
            "pair again with the same identity: agentkeysctl pair --recover {}, then have the owner approve it",
            id.agent_id
        );
        let op = self
            .op(
                format!("act as agent '{}'", id.label()),
                Subject::Agent(id.label().to_owned()),
            )
            .fix_for(ErrorKind::Expired, again.clone())
            .fix_for(ErrorKind::NotFound, again.clone())
            .fix_for(ErrorKind::Denied, again);
        let auth = agent::authenticate(&self.conn, &id.session, &id.seed)
            .await
            .map_err(|e| daemon_error(e, &op))?;
        self.agent = Some(AgentSession {
            agent_id: id.agent_id.clone(),
            name: id.name.clone(),
            auth,
        });
        Ok(())
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

    /// The daemon object's properties: `Version`, `SecretMemory` and `Features`, read fresh.
    pub async fn daemon_facts(&self, op: &Op) -> Result<DaemonFacts, CliError> {
        let daemon = self.daemon().await?;
        let fail = |e: zbus::Error| daemon_error(e.into(), op);
        Ok(DaemonFacts {
            version: daemon.version().await.map_err(fail)?,
            memory: daemon.secret_memory().await.map_err(fail)?,
            features: daemon.features().await.map_err(fail)?,
        })
    }

    pub async fn credentials(&self) -> Result<CredentialsProxy<'_>, CliError> {
        let b = CredentialsProxy::builder(&self.conn).cache_properties(CacheProperties::No);
        b.build().await.map_err(|e| self.proxy_error(e))
    }

    pub async fn agents(&self) -> Result<AgentsProxy<'_>, CliError> {
        let b = AgentsProxy::builder(&self.conn).cache_properties(CacheProperties::No);
        b.build().await.map_err(|e| self.proxy_error(e))
    }

    pub async fn approvals(&self) -> Result<ApprovalsProxy<'_>, CliError> {
        let b = ApprovalsProxy::builder(&self.conn).cache_properties(CacheProperties::No);
        b.build().await.map_err(|e| self.proxy_error(e))
    }

    pub async fn jobs(&self) -> Result<JobsProxy<'_>, CliError> {
        let b = JobsProxy::builder(&self.conn).cache_properties(CacheProperties::No);
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

/// A session that has ended is refused before the daemon is asked (exit 5).
fn check_session_time(id: &Identity, now: i64) -> Result<(), CliError> {
    if id.session_expires > now {
        return Ok(());
    }
    Err(CliError::new(
        Exit::Expired,
        format!("the session of agent '{}' has ended", id.label()),
    )
    .cause(format!(
        "it ended at {} (sessions last a few hours)",
        format_utc(id.session_expires)
    ))
    .fix(format!(
        "pair again with the same identity: agentkeysctl pair --recover {}, then have the owner approve it",
        id.agent_id
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ended_session_is_exit_5_before_any_call() {
        let id = Identity {
            agent_id: "agt_0123456789abcdefghjkmnpqrs".into(),
            name: Some("bot".into()),
            owner: 0,
            session: "ses_x".into(),
            session_expires: 100,
            host_key: [0; 32],
            seed: zeroize::Zeroizing::new([1; 32]),
            created: 0,
        };
        assert!(check_session_time(&id, 99).is_ok());
        let e = check_session_time(&id, 100).unwrap_err();
        assert_eq!(e.exit(), Exit::Expired);
    }

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
