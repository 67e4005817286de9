//! The `[runner]` section of `agentkeysd.toml`: where the runner is, which host uids agents
//! run as, and the default limits of a run.

use std::ops::RangeInclusive;
use std::path::PathBuf;

use serde::Deserialize;

use crate::sandbox::spec::{Enforcement, Limits};

/// The first uid of the default range. 1879048192 (0x70000000) starts the block that
/// systemd's UID/GID allocation document leaves unused (after its container range, before
/// its "foreign" range), far above Debian's and Fedora's login users (1000–60000), their
/// system users and the usual `/etc/subuid` allocations (100000 + 65536·n).
pub const DEFAULT_UID_FIRST: u32 = 0x7000_0000;
/// 65536 agents (and owners' anonymous runs).
pub const DEFAULT_UID_LAST: u32 = DEFAULT_UID_FIRST + 0xFFFF;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RunnerSection {
    /// The runner binary. Empty: `agentkeys-runner` beside the daemon's own executable,
    /// else `/usr/libexec/agentkeys/agentkeys-runner`.
    pub path: PathBuf,
    /// `agentkeysctl`, bound into every sandbox as the MCP bridge. Empty: beside the
    /// daemon's executable, else `/usr/bin/agentkeysctl`.
    pub agentkeysctl: PathBuf,
    /// First and last host uid agents run as (`[first, last]`). No user in the system's
    /// user database may have one; uids it knows are skipped.
    pub uid_range: [u32; 2],
    /// Host paths every sandbox also sees, read-only, at the same path (e.g. a tool tree
    /// under /opt). `/usr` and the `/etc` subset are always there.
    pub ro_paths: Vec<PathBuf>,
    /// Default memory limit of a run, MiB.
    pub memory_mib: u64,
    /// Default number of tasks (processes and threads) of a run.
    pub pids: u64,
    /// Default CPU bandwidth of a run, in CPUs (0.01–1024).
    pub cpus: f64,
    /// `required`: a run whose landlock rules the kernel cannot fully enforce fails.
    /// `best-effort`: it runs with what the kernel enforces (status and audit say so).
    pub landlock: Enforcement,
}

impl Default for RunnerSection {
    fn default() -> Self {
        let limits = Limits::default();
        Self {
            path: PathBuf::new(),
            agentkeysctl: PathBuf::new(),
            uid_range: [DEFAULT_UID_FIRST, DEFAULT_UID_LAST],
            ro_paths: Vec::new(),
            memory_mib: limits.memory_bytes >> 20,
            pids: limits.pids,
            cpus: 1.0,
            landlock: Enforcement::Required,
        }
    }
}

impl RunnerSection {
    pub fn uid_range(&self) -> RangeInclusive<u32> {
        self.uid_range[0]..=self.uid_range[1]
    }

    /// The default limits of a run.
    pub fn limits(&self) -> Limits {
        Limits {
            memory_bytes: self.memory_mib << 20,
            pids: self.pids,
            cpu_millis: cpu_millis(self.cpus),
        }
    }

    /// The runner binary to exec.
    pub fn runner_path(&self) -> PathBuf {
        beside_self(&self.path, "agentkeys-runner", "/usr/libexec/agentkeys")
    }

    /// The `agentkeysctl` to bind into sandboxes.
    pub fn agentkeysctl_path(&self) -> PathBuf {
        beside_self(&self.agentkeysctl, "agentkeysctl", "/usr/bin")
    }

    pub(super) fn check(&self) -> Result<(), String> {
        let [first, last] = self.uid_range;
        if first == 0 || first > last || last >= u32::MAX - 1 {
            return Err(
                "runner.uid_range must be [first, last] with 0 < first <= last < 4294967294".into(),
            );
        }
        if first < 65536 {
            return Err(
                "runner.uid_range must start at 65536 or above, away from login and system users"
                    .into(),
            );
        }
        if !(16..=1 << 30).contains(&self.memory_mib) {
            return Err("runner.memory_mib must be between 16 and 1073741824".into());
        }
        if !(8..=1 << 22).contains(&self.pids) {
            return Err("runner.pids must be between 8 and 4194304".into());
        }
        if !(0.01..=1024.0).contains(&self.cpus) {
            return Err("runner.cpus must be between 0.01 and 1024".into());
        }
        for p in &self.ro_paths {
            if !p.is_absolute() || p.as_os_str().as_encoded_bytes().contains(&b'\n') {
                return Err(format!(
                    "runner.ro_paths: {} is not an absolute path",
                    p.display()
                ));
            }
        }
        for (key, p) in [("path", &self.path), ("agentkeysctl", &self.agentkeysctl)] {
            if !p.as_os_str().is_empty() && !p.is_absolute() {
                return Err(format!("runner.{key} must be an absolute path"));
            }
        }
        Ok(())
    }
}

/// Thousandths of a CPU, rounded, at least 1.
pub fn cpu_millis(cpus: f64) -> u64 {
    ((cpus * 1000.0).round() as u64).max(1)
}

fn beside_self(configured: &std::path::Path, name: &str, fallback_dir: &str) -> PathBuf {
    if !configured.as_os_str().is_empty() {
        return configured.to_path_buf();
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join(name)))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(fallback_dir).join(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_match_the_issue() {
        let r = RunnerSection::default();
        r.check().unwrap();
        assert_eq!(r.limits().memory_bytes, 2 << 30);
        assert_eq!(r.limits().pids, 512);
        assert_eq!(r.limits().cpu_millis, 1000);
        assert_eq!(r.uid_range().count(), 65536);
    }

    #[test]
    fn bad_values_are_refused() {
        let bad = |f: fn(&mut RunnerSection)| {
            let mut r = RunnerSection::default();
            f(&mut r);
            r.check().unwrap_err()
        };
        assert!(bad(|r| r.uid_range = [1000, 2000]).contains("65536"));
        assert!(bad(|r| r.uid_range = [70000, 69999]).contains("first <= last"));
        assert!(bad(|r| r.memory_mib = 1).contains("memory_mib"));
        assert!(bad(|r| r.pids = 0).contains("pids"));
        assert!(bad(|r| r.cpus = 0.0).contains("cpus"));
        assert!(bad(|r| r.ro_paths = vec!["opt".into()]).contains("absolute"));
        assert!(bad(|r| r.path = "runner".into()).contains("runner.path"));
    }
}
