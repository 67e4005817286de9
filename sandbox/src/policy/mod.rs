//! The runner's reviewed policies (STYLE §4): seccomp rules, landlock rules and what the
//! new root shows of the host. They are TOML files in `sandbox/data/`, compiled into the
//! runner (so a run never depends on files the agent's owner could change) and validated
//! when the runner starts: a rule without a `why`, an unknown name, a relative path or a
//! duplicate is an error, never silently skipped. `build.rs` turns the TOML into JSON, which
//! the runner decodes in microseconds; the checks are the same for both.

pub mod bpf;
pub mod fs;
pub mod landlock;
pub mod seccomp;

/// A policy file failed to load or validate.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("the {file} policy does not fit its schema: {source}")]
    Parse {
        file: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("the {file} policy has a bad rule ({rule}): {problem}")]
    Rule {
        file: &'static str,
        rule: String,
        problem: String,
    },
}

/// All three policies, as the runner uses them.
#[derive(Debug, Clone)]
pub struct Policies {
    pub seccomp: seccomp::SeccompPolicy,
    pub landlock: landlock::LandlockPolicy,
    pub fs: fs::FsPolicy,
}

impl Policies {
    /// The policies shipped in `sandbox/data/`, parsed and checked.
    pub fn shipped() -> Result<Policies, PolicyError> {
        Ok(Policies {
            seccomp: seccomp::SeccompPolicy::shipped()?,
            landlock: landlock::LandlockPolicy::shipped()?,
            fs: fs::FsPolicy::shipped()?,
        })
    }
}

/// Decodes a policy as written (TOML) or as embedded (the JSON `build.rs` made of it).
fn decode<T: serde::de::DeserializeOwned>(
    file: &'static str,
    text: &str,
    embedded: bool,
) -> Result<T, PolicyError> {
    let decoded = if embedded {
        serde_json::from_str(text).map_err(|e| Box::new(e) as Box<_>)
    } else {
        toml::from_str(text).map_err(|e| Box::new(e) as Box<_>)
    };
    decoded.map_err(|source| PolicyError::Parse { file, source })
}

/// `why` must say something.
fn check_why(file: &'static str, rule: &str, why: &str) -> Result<(), PolicyError> {
    if why.trim().len() < 3 {
        return Err(PolicyError::Rule {
            file,
            rule: rule.to_owned(),
            problem: "every rule needs a `why` that says why it is there".to_owned(),
        });
    }
    Ok(())
}

/// An absolute, normalised path: starts with `/`, no `.`/`..`/empty components.
fn check_abs(file: &'static str, path: &str) -> Result<(), PolicyError> {
    let bad = !path.starts_with('/')
        || path.len() < 2
        || path.ends_with('/')
        || path
            .split('/')
            .skip(1)
            .any(|c| c.is_empty() || c == "." || c == ".." || c.contains('\0'));
    if bad {
        return Err(PolicyError::Rule {
            file,
            rule: path.to_owned(),
            problem: "paths must be absolute and normalised (no `.`, `..`, `//`, trailing `/`)"
                .to_owned(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_policies_load() {
        let p = Policies::shipped().unwrap();
        assert!(p.seccomp.rules.len() >= 40);
        assert!(p.landlock.paths.iter().any(|r| r.path == "/workspace"));
        assert!(p.fs.binds.iter().any(|b| b.path == "/usr"));
    }

    #[test]
    fn paths_must_be_absolute_and_normal() {
        for bad in ["usr", "/", "/usr/", "/usr/../etc", "/a//b", "/./a"] {
            assert!(check_abs("t", bad).is_err(), "{bad}");
        }
        check_abs("t", "/etc/ssl").unwrap();
    }
}
