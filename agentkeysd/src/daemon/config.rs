//! `agentkeysd.toml`: the main file plus `agentkeysd.toml.d/*.toml` drop-ins.
//!
//! Every file is checked on its own (so an unknown key is reported with the file that has
//! it), then the files are merged table by table in order — main file first, drop-ins in
//! name order, later wins — and the result is validated once more.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::vault::SecretMemoryPolicy;

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub daemon: DaemonSection,
    pub vault: VaultSection,
    pub log: LogSection,
    pub approvals: ApprovalsSection,
    pub runner: super::runner_config::RunnerSection,
}

/// How `Approve` makes sure the owner, not just a process of the owner's uid, said yes.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Authenticate {
    /// Re-authenticate through PAM (service `approvals.pam_service`), cached per login
    /// session for `approvals.auth_cache_s`.
    #[default]
    Pam,
    /// No re-authentication: any process of the owner's uid can approve. For development
    /// only; `status` says so loudly.
    None,
}

impl Authenticate {
    pub fn as_str(self) -> &'static str {
        match self {
            Authenticate::Pam => "pam",
            Authenticate::None => "none",
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ApprovalsSection {
    /// `pam` (default) or `none` (development only).
    pub authenticate: Authenticate,
    /// The PAM service `Approve` authenticates against.
    pub pam_service: String,
    /// How long a successful re-authentication covers further approvals from the same
    /// login session (like sudo's timestamp), seconds; 0 asks every time.
    pub auth_cache_s: u32,
    /// How long Pair and Recover requests wait for a decision, seconds (DESIGN: 60).
    pub short_ttl_s: u32,
    /// How long the other requests wait, seconds (DESIGN: 300).
    pub long_ttl_s: u32,
    /// Hard lifetime of an agent session, seconds (default 4 h).
    pub session_ttl_s: u32,
    /// How long a read under a `confirm` grant waits for the owner's decision, seconds.
    pub confirm_timeout_s: u32,
    /// `Open` calls a uid may make at once (token bucket capacity).
    pub open_burst: u32,
    /// `Open` calls a uid regains per minute.
    pub open_rate_per_minute: u32,
}

impl Default for ApprovalsSection {
    fn default() -> Self {
        Self {
            authenticate: Authenticate::Pam,
            pam_service: "agentkeys".into(),
            auth_cache_s: 300,
            short_ttl_s: 60,
            long_ttl_s: 300,
            session_ttl_s: 4 * 3600,
            confirm_timeout_s: 120,
            open_burst: crate::approvals::OPEN_CAPACITY,
            open_rate_per_minute: crate::approvals::OPEN_REFILL_PER_MINUTE,
        }
    }
}

impl ApprovalsSection {
    /// How long a request of this type waits for a decision: DESIGN's grouping
    /// ([`crate::approvals::ttl`]: Pair and Recover short, the rest long), with the lengths
    /// configured here.
    pub fn ttl_s(&self, request_type: crate::approvals::RequestType) -> u64 {
        if crate::approvals::ttl(request_type) == crate::approvals::SHORT_TTL {
            u64::from(self.short_ttl_s)
        } else {
            u64::from(self.long_ttl_s)
        }
    }

    fn check(&self) -> Result<(), String> {
        let in_range = |v: u32, lo: u32, hi: u32, key: &str| {
            if (lo..=hi).contains(&v) {
                Ok(())
            } else {
                Err(format!("approvals.{key} must be between {lo} and {hi}"))
            }
        };
        in_range(self.auth_cache_s, 0, 3600, "auth_cache_s")?;
        in_range(self.short_ttl_s, 1, 3600, "short_ttl_s")?;
        in_range(self.long_ttl_s, 1, 3600, "long_ttl_s")?;
        in_range(self.session_ttl_s, 1, 30 * 86_400, "session_ttl_s")?;
        in_range(self.confirm_timeout_s, 1, 3600, "confirm_timeout_s")?;
        in_range(self.open_burst, 1, 1_000_000, "open_burst")?;
        in_range(
            self.open_rate_per_minute,
            1,
            1_000_000,
            "open_rate_per_minute",
        )?;
        if self.pam_service.is_empty()
            || !self
                .pam_service
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(
                "approvals.pam_service must be a PAM service name (a-z, 0-9, - _ .)".into(),
            );
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonSection {
    /// Start even when a tracer (debugger, strace) is attached. Off by default: a tracer
    /// can read every secret the daemon handles.
    pub allow_tracer: bool,
    /// How long SIGTERM waits for calls in flight (and warm runners being prepared) before
    /// exiting anyway.
    pub shutdown_timeout_s: u32,
}

impl Default for DaemonSection {
    fn default() -> Self {
        Self {
            allow_tracer: false,
            shutdown_timeout_s: 10,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct VaultSection {
    /// `prefer` (memfd_secret, else mlocked pages), `require` (memfd_secret or refuse to
    /// start), `mlock` (never memfd_secret; e.g. on hosts that hibernate).
    pub secret_memory: SecretMemoryPolicy,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// A tracing filter: `error`, `warn`, `info`, `debug`, or directives such as
    /// `agentkeysd=debug`. `AGENTKEYS_LOG` in the environment overrides it.
    pub level: String,
}

impl Default for LogSection {
    fn default() -> Self {
        Self {
            level: "info".into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: daemon.shutdown_timeout_s must be between 1 and 300")]
    Invalid { path: PathBuf },
    #[error("{path}: {message}")]
    Out { path: PathBuf, message: String },
}

/// The files that make up the configuration, in merge order.
pub fn files(main: &Path, main_required: bool) -> Result<Vec<PathBuf>, ConfigError> {
    let mut out = Vec::new();
    match std::fs::metadata(main) {
        Ok(_) => out.push(main.to_path_buf()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !main_required => {}
        Err(source) => {
            return Err(ConfigError::Read {
                path: main.to_path_buf(),
                source,
            });
        }
    }
    let mut dropin_dir = main.as_os_str().to_owned();
    dropin_dir.push(".d");
    let dropin_dir = PathBuf::from(dropin_dir);
    match std::fs::read_dir(&dropin_dir) {
        Ok(entries) => {
            let mut dropins = Vec::new();
            for entry in entries {
                let entry = entry.map_err(|source| ConfigError::Read {
                    path: dropin_dir.clone(),
                    source,
                })?;
                let path = entry.path();
                if path.extension().is_some_and(|e| e == "toml") {
                    dropins.push(path);
                }
            }
            dropins.sort();
            out.extend(dropins);
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(ConfigError::Read {
                path: dropin_dir,
                source,
            });
        }
    }
    Ok(out)
}

/// Loads and validates the configuration from `main` and its drop-ins.
pub fn load(main: &Path, main_required: bool) -> Result<Config, ConfigError> {
    let mut merged = toml::Table::new();
    let mut last = main.to_path_buf();
    for path in files(main, main_required)? {
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        let table: toml::Table = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.clone(),
            message: e.to_string(),
        })?;
        // Checked alone first so the error names the file that has the bad key.
        Config::deserialize(toml::Value::Table(table.clone())).map_err(|e| ConfigError::Parse {
            path: path.clone(),
            message: e.to_string(),
        })?;
        merge(&mut merged, table);
        last = path;
    }
    let config =
        Config::deserialize(toml::Value::Table(merged)).map_err(|e| ConfigError::Parse {
            path: last.clone(),
            message: e.to_string(),
        })?;
    if !(1..=300).contains(&config.daemon.shutdown_timeout_s) {
        return Err(ConfigError::Invalid { path: last });
    }
    config
        .approvals
        .check()
        .and_then(|()| config.runner.check())
        .map_err(|message| ConfigError::Out {
            path: last.clone(),
            message,
        })?;
    Ok(config)
}

fn merge(into: &mut toml::Table, from: toml::Table) {
    for (key, value) in from {
        match (into.get_mut(&key), value) {
            (Some(toml::Value::Table(a)), toml::Value::Table(b)) => merge(a, b),
            (_, v) => {
                into.insert(key, v);
            }
        }
    }
}

impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let policy = match self.vault.secret_memory {
            SecretMemoryPolicy::Prefer => "prefer",
            SecretMemoryPolicy::Require => "require",
            SecretMemoryPolicy::Mlock => "mlock",
        };
        writeln!(f, "[daemon]")?;
        writeln!(f, "allow_tracer = {}", self.daemon.allow_tracer)?;
        writeln!(f, "shutdown_timeout_s = {}", self.daemon.shutdown_timeout_s)?;
        writeln!(f)?;
        writeln!(f, "[vault]")?;
        writeln!(f, "secret_memory = \"{policy}\"")?;
        writeln!(f)?;
        writeln!(f, "[log]")?;
        writeln!(f, "level = {:?}", self.log.level)?;
        writeln!(f)?;
        let a = &self.approvals;
        writeln!(f, "[approvals]")?;
        writeln!(f, "authenticate = \"{}\"", a.authenticate.as_str())?;
        writeln!(f, "pam_service = {:?}", a.pam_service)?;
        writeln!(f, "auth_cache_s = {}", a.auth_cache_s)?;
        writeln!(f, "short_ttl_s = {}", a.short_ttl_s)?;
        writeln!(f, "long_ttl_s = {}", a.long_ttl_s)?;
        writeln!(f, "session_ttl_s = {}", a.session_ttl_s)?;
        writeln!(f, "confirm_timeout_s = {}", a.confirm_timeout_s)?;
        writeln!(f, "open_burst = {}", a.open_burst)?;
        writeln!(f, "open_rate_per_minute = {}", a.open_rate_per_minute)?;
        writeln!(f)?;
        let r = &self.runner;
        writeln!(f, "[runner]")?;
        writeln!(f, "path = {:?}", r.path.display().to_string())?;
        writeln!(
            f,
            "agentkeysctl = {:?}",
            r.agentkeysctl.display().to_string()
        )?;
        writeln!(f, "uid_range = [{}, {}]", r.uid_range[0], r.uid_range[1])?;
        let ro: Vec<String> = r
            .ro_paths
            .iter()
            .map(|p| format!("{:?}", p.display().to_string()))
            .collect();
        writeln!(f, "ro_paths = [{}]", ro.join(", "))?;
        writeln!(f, "memory_mib = {}", r.memory_mib)?;
        writeln!(f, "pids = {}", r.pids)?;
        writeln!(f, "cpus = {:?}", r.cpus)?;
        let landlock = match r.landlock {
            crate::sandbox::spec::Enforcement::Required => "required",
            crate::sandbox::spec::Enforcement::BestEffort => "best-effort",
        };
        write!(f, "landlock = \"{landlock}\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn missing_default_file_means_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = load(&dir.path().join("agentkeysd.toml"), false).unwrap();
        assert_eq!(cfg, Config::default());
    }

    #[test]
    fn missing_explicit_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = load(&dir.path().join("nope.toml"), true).unwrap_err();
        assert!(err.to_string().contains("nope.toml"), "{err}");
    }

    #[test]
    fn dropins_override_in_name_order() {
        let dir = tempfile::tempdir().unwrap();
        let main = write(
            dir.path(),
            "a.toml",
            "[vault]\nsecret_memory = \"require\"\n",
        );
        std::fs::create_dir(dir.path().join("a.toml.d")).unwrap();
        write(
            &dir.path().join("a.toml.d"),
            "20-x.toml",
            "[log]\nlevel = \"warn\"\n",
        );
        write(
            &dir.path().join("a.toml.d"),
            "10-x.toml",
            "[log]\nlevel = \"debug\"\n",
        );
        write(&dir.path().join("a.toml.d"), "ignored.conf", "garbage");
        let cfg = load(&main, true).unwrap();
        assert_eq!(cfg.vault.secret_memory, SecretMemoryPolicy::Require);
        assert_eq!(cfg.log.level, "warn");
        assert!(!cfg.daemon.allow_tracer);
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let main = write(dir.path(), "a.toml", "");
        std::fs::create_dir(dir.path().join("a.toml.d")).unwrap();
        write(
            &dir.path().join("a.toml.d"),
            "50-bad.toml",
            "[vault]\nsecret_mem = \"x\"\n",
        );
        let err = load(&main, true).unwrap_err().to_string();
        assert!(
            err.contains("50-bad.toml") && err.contains("secret_mem"),
            "{err}"
        );

        let bad = write(
            dir.path(),
            "b.toml",
            "[vault]\nsecret_memory = \"sometimes\"\n",
        );
        let err = load(&bad, true).unwrap_err().to_string();
        assert!(err.contains("b.toml") && err.contains("sometimes"), "{err}");

        let bad = write(dir.path(), "c.toml", "[daemon]\nshutdown_timeout_s = 0\n");
        assert!(matches!(load(&bad, true), Err(ConfigError::Invalid { .. })));

        let bad = write(dir.path(), "e.toml", "[approvals]\nshort_ttl_s = 0\n");
        let err = load(&bad, true).unwrap_err().to_string();
        assert!(err.contains("approvals.short_ttl_s"), "{err}");
        let bad = write(
            dir.path(),
            "f.toml",
            "[approvals]\nauthenticate = \"maybe\"\n",
        );
        assert!(matches!(load(&bad, true), Err(ConfigError::Parse { .. })));
        let ok = write(
            dir.path(),
            "g.toml",
            "[approvals]\nauthenticate = \"none\"\n",
        );
        assert_eq!(
            load(&ok, true).unwrap().approvals.authenticate,
            Authenticate::None
        );

        let bad = write(dir.path(), "d.toml", "not toml [");
        assert!(matches!(load(&bad, true), Err(ConfigError::Parse { .. })));
    }
}
