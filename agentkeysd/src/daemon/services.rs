//! The service table (`data/services.toml`): credential name → default environment
//! variable. Loaded and validated at start; a bad table is a build-time bug that a unit
//! test catches, and a start-up error rather than a panic if it ever slipped through.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::api::names::{valid_env_var, valid_name};

const TABLE: &str = include_str!("../../data/services.toml");

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    services: BTreeMap<String, Service>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Service {
    env: String,
}

#[derive(Debug, Clone)]
pub struct ServiceTable {
    env: BTreeMap<String, String>,
}

impl ServiceTable {
    /// Loads the built-in table.
    pub fn builtin() -> Result<Self, String> {
        let file: File = toml::from_str(TABLE).map_err(|e| format!("data/services.toml: {e}"))?;
        let mut env = BTreeMap::new();
        for (name, svc) in file.services {
            if !valid_name(&name) || !valid_env_var(&svc.env) {
                return Err(format!("data/services.toml: bad entry '{name}'"));
            }
            env.insert(name, svc.env);
        }
        Ok(Self { env })
    }

    /// The default environment variable for a credential called `name`.
    pub fn default_env(&self, name: &str) -> String {
        if let Some(v) = self.env.get(name) {
            return v.clone();
        }
        let mut var: String = name
            .chars()
            .map(|c| match c {
                '-' | '.' => '_',
                c => c.to_ascii_uppercase(),
            })
            .collect();
        if var.starts_with(|c: char| c.is_ascii_digit()) {
            var.insert(0, '_');
        }
        var.push_str("_API_KEY");
        var
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_table_is_valid_and_has_the_documented_services() {
        let t = ServiceTable::builtin().unwrap();
        assert_eq!(t.default_env("anthropic"), "ANTHROPIC_API_KEY");
        assert_eq!(t.default_env("openai"), "OPENAI_API_KEY");
        assert_eq!(t.default_env("openrouter"), "OPENROUTER_API_KEY");
        assert_eq!(t.default_env("github"), "GITHUB_TOKEN");
        assert_eq!(t.default_env("brave-search"), "BRAVE_SEARCH_API_KEY");
    }

    #[test]
    fn unknown_services_get_a_valid_derived_variable() {
        let t = ServiceTable::builtin().unwrap();
        assert_eq!(t.default_env("my-svc.v2"), "MY_SVC_V2_API_KEY");
        assert_eq!(t.default_env("1password"), "_1PASSWORD_API_KEY");
        for n in ["a", "x-y", "0.9_z"] {
            assert!(valid_env_var(&t.default_env(n)), "{n}");
        }
    }
}
