//! `sandbox/data/sandbox-fs.toml`: what the new root shows of the host — read-only binds,
//! the merged-/usr symlinks and the device nodes of the minimal `/dev`.

use serde::Deserialize;

use super::{PolicyError, check_abs, check_why};

const FILE: &str = "sandbox-fs.toml";
const SHIPPED: &str = include_str!(concat!(env!("OUT_DIR"), "/sandbox-fs.json"));

/// Paths the runner builds itself; the policy may not bind over them.
const RESERVED: [&str; 6] = ["/proc", "/dev", "/tmp", "/workspace", "/run", "/etc/passwd"];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    bind: Vec<Bind>,
    symlink: Vec<Symlink>,
    device: Vec<Device>,
}

/// A host path bound read-only at the same path.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bind {
    pub path: String,
    #[serde(default)]
    pub optional: bool,
    why: String,
}

/// A symlink created in the new root.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Symlink {
    pub path: String,
    pub target: String,
    why: String,
}

/// A host device node bound into `/dev`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Device {
    pub name: String,
    why: String,
}

/// The whole policy.
#[derive(Debug, Clone)]
pub struct FsPolicy {
    pub binds: Vec<Bind>,
    pub symlinks: Vec<Symlink>,
    pub devices: Vec<Device>,
}

impl FsPolicy {
    /// The shipped policy.
    pub fn shipped() -> Result<Self, PolicyError> {
        Self::check(super::decode(FILE, SHIPPED, true)?)
    }

    /// Parses and checks a policy as written (TOML).
    pub fn parse(text: &str) -> Result<Self, PolicyError> {
        Self::check(super::decode(FILE, text, false)?)
    }

    fn check(f: File) -> Result<Self, PolicyError> {
        let bad = |rule: &str, problem: &str| PolicyError::Rule {
            file: FILE,
            rule: rule.to_owned(),
            problem: problem.to_owned(),
        };
        let mut seen: Vec<&str> = Vec::new();
        for b in &f.bind {
            check_why(FILE, &b.path, &b.why)?;
            check_abs(FILE, &b.path)?;
            let reserved = RESERVED
                .iter()
                .any(|r| b.path == *r || b.path.starts_with(&format!("{r}/")));
            if reserved {
                return Err(bad(&b.path, "the runner builds this path itself"));
            }
            if !(b.path == "/usr" || b.path.starts_with("/usr/") || b.path.starts_with("/etc/")) {
                return Err(bad(
                    &b.path,
                    "only /usr and entries under /etc may be bound",
                ));
            }
            if seen.contains(&b.path.as_str()) {
                return Err(bad(&b.path, "listed twice"));
            }
            seen.push(&b.path);
        }
        for s in &f.symlink {
            check_why(FILE, &s.path, &s.why)?;
            check_abs(FILE, &s.path)?;
            if s.path.matches('/').count() != 1
                || s.target.starts_with('/')
                || s.target.contains("..")
            {
                return Err(bad(
                    &s.path,
                    "symlinks live at the top of the root and point to a relative path inside it",
                ));
            }
            if seen.contains(&s.path.as_str()) {
                return Err(bad(&s.path, "listed twice"));
            }
            seen.push(&s.path);
        }
        let mut devs: Vec<&str> = Vec::new();
        for d in &f.device {
            check_why(FILE, &d.name, &d.why)?;
            let plain = !d.name.is_empty()
                && d.name
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'_');
            if !plain || devs.contains(&d.name.as_str()) {
                return Err(bad(&d.name, "device names are plain and listed once"));
            }
            devs.push(&d.name);
        }
        Ok(FsPolicy {
            binds: f.bind,
            symlinks: f.symlink,
            devices: f.device,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_policy_loads() {
        let p = FsPolicy::shipped().unwrap();
        assert!(p.binds.iter().any(|b| b.path == "/usr" && !b.optional));
        assert!(
            !p.binds
                .iter()
                .any(|b| b.path == "/etc/passwd" || b.path == "/etc/shadow")
        );
        assert!(p.symlinks.iter().any(|s| s.path == "/lib64"));
        assert!(p.devices.iter().any(|d| d.name == "null"));
    }

    #[test]
    fn bad_entries_are_refused() {
        let tail = "[[symlink]]\npath = \"/bin\"\ntarget = \"usr/bin\"\nwhy = \"abc\"\n\
                    [[device]]\nname = \"null\"\nwhy = \"abc\"\n";
        for (bind, want) in [
            ("path = \"/etc/passwd\"\nwhy = \"abc\"", "builds this path"),
            ("path = \"/home\"\nwhy = \"abc\"", "only /usr"),
            ("path = \"/etc/../root\"\nwhy = \"abc\"", "absolute"),
            ("path = \"/etc/ssl\"\nwhy = \"\"", "why"),
        ] {
            let err = FsPolicy::parse(&format!("[[bind]]\n{bind}\n{tail}"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{err} should mention {want}");
        }
    }
}
