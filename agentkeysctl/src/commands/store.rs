//! `agentkeysctl store NAME`: a secret from the terminal (no echo, asked twice) or from
//! stdin, handed to the daemon as a sealed memfd. Never from argv: there is no flag for it.

use std::collections::HashMap;

use agentkeysd::api::ErrorKind;
use agentkeysd::api::dict::get_str;
use agentkeysd::api::names::{MAX_SECRET_LEN, split_owner, valid_env_var, valid_name};
use clap::Args;
use zbus::Variant;

use crate::cli::Global;
use crate::client::Client;
use crate::errors::{CliError, Exit, NAME_RULE, Subject, daemon_error};
use crate::output::Out;
use crate::secret_input::{self, InputError};
use crate::time::{EXPIRES_FORMS, now, parse_expires};

pub const AFTER_HELP: &str = "\
The secret is never taken from the command line, where every user could read it in ps
or /proc. On a terminal you are asked for it twice, without echo; otherwise it is read
from stdin (one trailing newline is removed; at most 64 KiB):
  printf %s \"$KEY\" | agentkeysctl store openai
  agentkeysctl store openai < keyfile
  agentkeysctl store github --expires 90d --replace
  agentkeysctl store github --class login   # readable only while you are logged in";

#[derive(Args, Debug)]
pub struct StoreArgs {
    /// Credential name: 1–64 characters from a-z 0-9 . _ - (e.g. openai, github)
    pub name: String,

    /// Environment variable the secret is injected as [default: from the service table,
    /// e.g. OPENAI_API_KEY for openai]
    #[arg(long, value_name = "VAR")]
    pub env: Option<String>,

    /// When it expires: a duration (30d, 12h, 90m, 2w, 3600s) or a UTC date (2026-12-31,
    /// 2026-12-31T23:59:59Z)
    #[arg(long, value_name = "WHEN")]
    pub expires: Option<String>,

    /// Overwrite an existing credential of this name (its version goes up)
    #[arg(long)]
    pub replace: bool,

    /// Protection class: host (readable whenever agentkeysd runs) or login (readable only
    /// while you are logged in: pam_agentkeys unlocks it with your login password)
    /// [default: host; a replaced credential keeps its class]
    #[arg(long, value_name = "CLASS", value_parser = ["host", "login"])]
    pub class: Option<String>,
}

pub async fn run(g: &Global, args: &StoreArgs, out: &mut Out) -> Result<(), CliError> {
    // Local checks first: a typo should not cost the user typing the secret twice.
    let expires = args.expires.as_deref().map(check_expires).transpose()?;
    let bare = check_name(&args.name)?;
    if let Some(var) = &args.env {
        check_env(var)?;
    }
    let client = Client::connect(g).await?;
    let target = client.qualify(&args.name)?;
    let creds = client.credentials().await?;

    let secret = read_secret(bare)?;
    let fd = secret_input::sealed_memfd(&secret, "the secret")?;
    drop(secret);

    let mut options: HashMap<&str, Variant<'_>> = HashMap::new();
    if let Some(var) = &args.env {
        options.insert("env", Variant::from(var.as_str()));
    }
    if let Some(at) = expires {
        options.insert("expires", Variant::from(at));
    }
    if args.replace {
        options.insert("replace", Variant::from(true));
    }
    if let Some(class) = &args.class {
        options.insert("class", Variant::from(class.as_str()));
    }
    let op = client
        .op(
            format!("store credential '{}'", args.name),
            Subject::Credential(args.name.clone()),
        )
        .fix_for(
            ErrorKind::InvalidArgument,
            format!(
                "if '{}' exists already, overwrite it with: agentkeysctl store {} --replace",
                args.name, args.name
            ),
        );
    creds
        .store(&target, zbus::Fd::from(&fd), options)
        .await
        .map_err(|e| daemon_error(e, &op))?;
    drop(fd);

    match stored_env(&client, bare).await.or_else(|| args.env.clone()) {
        Some(var) => out.line(format!("stored '{}' (env {var})", args.name)),
        None => out.line(format!("stored '{}'", args.name)),
    }
}

pub fn check_expires(when: &str) -> Result<i64, CliError> {
    parse_expires(when, now()).map_err(|why| {
        CliError::usage(format!("--expires '{when}' is not a usable time"))
            .cause(why)
            .fix(format!("use {EXPIRES_FORMS}"))
    })
}

/// The bare name (without a `UID:` prefix), checked as the daemon will.
fn check_name(arg: &str) -> Result<&str, CliError> {
    match split_owner(arg) {
        Some((_, name)) if valid_name(name) => Ok(name),
        _ => Err(CliError::usage(format!("'{arg}' is not a valid credential name"))
            .cause(NAME_RULE)
            .fix("pick a name such as openai, github or brave-search (root: UID:NAME for another owner)")),
    }
}

fn check_env(var: &str) -> Result<(), CliError> {
    if valid_env_var(var) {
        return Ok(());
    }
    Err(CliError::usage(format!(
        "--env '{var}' is not a valid environment variable name"
    ))
    .cause("use A-Z, 0-9 and _, not starting with a digit, at most 128 characters")
    .fix("for example --env OPENAI_API_KEY"))
}

/// The secret, from the terminal when stdin is one, else from stdin.
fn read_secret(name: &str) -> Result<zeroize::Zeroizing<Vec<u8>>, CliError> {
    let from_tty = secret_input::stdin_is_tty();
    let result = if from_tty {
        secret_input::prompt_twice(name)
    } else {
        secret_input::raw_stdin().and_then(secret_input::read_secret)
    };
    result.map_err(|e| input_error(e, name, from_tty))
}

fn input_error(e: InputError, name: &str, from_tty: bool) -> CliError {
    let pipe_fix = format!("pipe it in: printf %s \"$KEY\" | agentkeysctl store {name}");
    match e {
        InputError::Empty => CliError::usage("the secret is empty")
            .cause(if from_tty {
                "nothing was typed at the prompt".to_owned()
            } else {
                "stdin had no bytes (after removing one trailing newline)".to_owned()
            })
            .fix(pipe_fix),
        InputError::TooLarge => CliError::usage(format!(
            "the secret is larger than {} KiB",
            MAX_SECRET_LEN / 1024
        ))
        .cause(format!(
            "agentkeysd keeps secrets of at most {MAX_SECRET_LEN} bytes"
        ))
        .fix("store the key itself, not a file that contains it among other things"),
        InputError::Mismatch => CliError::usage("the two entries differ")
            .cause("the secret typed the second time is not the one typed the first time")
            .fix(format!(
                "run agentkeysctl store {name} again, or pipe the secret in"
            )),
        InputError::Cancelled => CliError::new(Exit::Error, "cancelled; nothing was stored"),
        InputError::Read(err) => CliError::new(Exit::Error, "cannot read the secret from stdin")
            .cause(err.to_string())
            .fix(pipe_fix),
        InputError::Tty(err) => {
            CliError::new(Exit::Error, "cannot read the secret from the terminal")
                .cause(format!("/dev/tty: {err}"))
                .fix(pipe_fix)
        }
    }
}

/// The env var the daemon recorded (it picks a default when `--env` is absent).
async fn stored_env(client: &Client, name: &str) -> Option<String> {
    let creds = client.credentials().await.ok()?;
    let list = match client.list_owner() {
        Some(uid) => creds.list_for(uid).await,
        None => creds.list().await,
    }
    .ok()?;
    list.iter()
        .find(|d| get_str(d, "name").ok().flatten().as_deref() == Some(name))
        .and_then(|d| get_str(d, "env").ok().flatten())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_before_the_secret_is_asked_for() {
        assert_eq!(check_name("github").ok(), Some("github"));
        assert_eq!(check_name("1000:github").ok(), Some("github"));
        for bad in ["", "GitHub", "a b", "alice:github", "-x"] {
            assert_eq!(check_name(bad).unwrap_err().exit(), Exit::Usage, "{bad:?}");
        }
    }

    #[test]
    fn bad_env_and_expiry_are_usage_errors() {
        assert!(check_env("OPENAI_API_KEY").is_ok());
        assert_eq!(check_env("openai").unwrap_err().exit(), Exit::Usage);
        assert_eq!(check_expires("soon").unwrap_err().exit(), Exit::Usage);
        assert_eq!(check_expires("2001-01-01").unwrap_err().exit(), Exit::Usage);
        assert!(check_expires("30d").is_ok());
    }

    #[test]
    fn input_errors_map_to_documented_exits() {
        assert_eq!(
            input_error(InputError::Empty, "x", false).exit(),
            Exit::Usage
        );
        assert_eq!(
            input_error(InputError::TooLarge, "x", false).exit(),
            Exit::Usage
        );
        assert_eq!(
            input_error(InputError::Mismatch, "x", true).exit(),
            Exit::Usage
        );
        assert_eq!(
            input_error(InputError::Cancelled, "x", true).exit(),
            Exit::Error
        );
    }
}
