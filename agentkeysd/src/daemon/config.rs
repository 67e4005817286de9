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
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonSection {
    /// Start even when a tracer (debugger, strace) is attached. Off by default: a tracer
    /// can read every secret the daemon handles.
    pub allow_tracer: bool,
    /// How long SIGTERM waits for calls in flight before exiting anyway.
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
        write!(f, "level = {:?}", self.log.level)
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

        let bad = write(dir.path(), "d.toml", "not toml [");
        assert!(matches!(load(&bad, true), Err(ConfigError::Parse { .. })));
    }
}
