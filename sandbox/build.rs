//! The runner's reviewed policies (`data/*.toml`, STYLE §4) are turned into JSON here, at
//! build time, so `agentkeys-runner` decodes them at every start in microseconds instead of
//! parsing TOML (issue 4 measures spawn-to-exit against bwrap). The TOML stays the one
//! reviewed source; the runner still checks every rule of the JSON it embeds, and a file
//! that is not TOML fails the build here.

use std::error::Error;
use std::path::PathBuf;

const POLICIES: [&str; 3] = ["seccomp", "landlock", "sandbox-fs"];

fn main() -> Result<(), Box<dyn Error>> {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").ok_or("cargo sets OUT_DIR")?);
    for name in POLICIES {
        let src = format!("data/{name}.toml");
        println!("cargo:rerun-if-changed={src}");
        let text = std::fs::read_to_string(&src).map_err(|e| format!("read {src}: {e}"))?;
        let table: toml::Table =
            toml::from_str(&text).map_err(|e| format!("{src} is not valid TOML: {e}"))?;
        std::fs::write(
            out.join(format!("{name}.json")),
            serde_json::to_string(&table)?,
        )?;
    }
    Ok(())
}
