//! `agentkeysctl run [options] -- CMD ARGS…`: runs a command (an AI agent) in agentkeysd's
//! hardened runner, with the agent's granted keys injected, and passes its terminal,
//! signals and exit status through as if it ran here.

mod end;
mod tty;

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;

use agentkeysd::api::dict;
use clap::Args;
use tokio::signal::unix::{SignalKind, signal};
use zbus::Fd;
use zbus::zvariant::Variant;

use crate::cli::Global;
use crate::client::Client;
use crate::errors::{CliError, Exit, Subject, daemon_error};
use crate::output::Out;

pub const AFTER_HELP: &str = "\
The command runs as the agent's own uid in new user, mount, pid, ipc, uts, net and cgroup
namespaces, on a read-only system, with capabilities dropped, landlock and seccomp, under
memory/pids/CPU limits. It sees its workspace at /workspace (files it creates there are
yours), a private /tmp, and /run/agentkeys/mcp.sock (AGENTKEYS_MCP_SOCKET) for asking the
daemon for credentials over MCP (`agentkeysctl mcp` bridges stdio to it).

Keys: every credential granted to the agent in auto mode is in the environment under its
service's variable (anthropic → ANTHROPIC_API_KEY, openai → OPENAI_API_KEY, github →
GITHUB_TOKEN, …); --env NAME=credential picks the variable, --file credential puts it in
/run/agentkeys/secrets/credential instead. Grants in confirm or once mode are never
injected: the agent asks for them over MCP.

Revoking the agent (agentkeysctl agent revoke) or withdrawing one of its grants kills the
run at once.

Examples:
  agentkeysctl run --agent claude --workspace ~/src/app -- claude
  agentkeysctl run --agent ci-bot --env GH_TOKEN=github -- gh pr list
  agentkeysctl run --agent ci-bot --file github --net host --timeout 10m -- ./ci.sh
  agentkeysctl run -- /bin/sh        (no agent: sandboxed, no keys)

Exit status: the command's own; 128+N when signal N ended it; 137 when the run was killed
(revoked, cancelled, timed out); 127 when it could not be executed.";

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Directory the agent works in, read-write at /workspace (must be yours)
    #[arg(long, value_name = "DIR")]
    pub workspace: Option<PathBuf>,

    /// Inject a credential as this environment variable (repeatable)
    #[arg(long = "env", value_name = "NAME=CREDENTIAL")]
    pub env: Vec<String>,

    /// Put a credential in /run/agentkeys/secrets/CREDENTIAL (repeatable)
    #[arg(long = "file", value_name = "CREDENTIAL")]
    pub files: Vec<String>,

    /// Network: none (loopback only, the default) or host (the host's network; recorded)
    #[arg(long, value_name = "MODE", default_value = "none", value_parser = ["none", "host"])]
    pub net: String,

    /// Memory limit, e.g. 512M, 2G (default 2G or the daemon's configuration)
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub memory: Option<u64>,

    /// CPU limit in CPUs, e.g. 0.5, 2 (default 1)
    #[arg(long, value_name = "N", value_parser = parse_cpus)]
    pub cpus: Option<u64>,

    /// Most processes and threads at once (default 512)
    #[arg(long, value_name = "N")]
    pub pids: Option<u64>,

    /// Kill the run after this long, e.g. 90s, 10m, 2h
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<u64>,

    /// The command and its arguments (after --)
    #[arg(required = true, last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// Variables passed into the sandbox when set here (how to draw and speak; never keys).
const PASSED: &[&str] = &["TERM", "COLORTERM", "LANG", "LANGUAGE", "TZ", "NO_COLOR"];

pub async fn run(g: &Global, args: &RunArgs, _out: &mut Out) -> Result<(), CliError> {
    let workspace = match &args.workspace {
        Some(w) => Some(std::fs::canonicalize(w).map_err(|e| {
            CliError::usage(format!("--workspace {}: {e}", w.display()))
                .fix("give an existing directory of yours")
        })?),
        None => None,
    };
    for e in &args.env {
        if !e.contains('=') {
            return Err(
                CliError::usage(format!("--env {e}: expected NAME=CREDENTIAL"))
                    .fix("e.g. --env GH_TOKEN=github"),
            );
        }
    }
    let client = Client::connect(g).await?;
    let jobs = client.jobs().await?;
    // Made only for a failure's report (it looks up the owner's user name).
    let op = || {
        client.op(
            format!("run {}", args.command[0]),
            match &g.agent {
                Some(a) => Subject::Agent(a.clone()),
                None => Subject::Other,
            },
        )
    };
    let (mut end, status) = end::pipe()?;
    let pty = if tty::interactive() {
        Some(tty::open_pty()?)
    } else {
        None
    };
    let stdio: [OwnedFd; 3] = match &pty {
        Some(p) => [dup(&p.slave)?, dup(&p.slave)?, dup(&p.slave)?],
        None => [
            dup(&std::io::stdin())?,
            dup(&std::io::stdout())?,
            dup(&std::io::stderr())?,
        ],
    };
    let mut passed: Vec<String> = PASSED.iter().map(|k| k.to_string()).collect();
    passed.extend(
        std::env::vars_os()
            .filter_map(|(k, _)| k.into_string().ok().filter(|k| k.starts_with("LC_"))),
    );
    let environment: Vec<String> = passed
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| format!("{k}={v}")))
        .collect();
    let mut spec: HashMap<&str, Variant<'_>> = HashMap::new();
    spec.insert("argv", Variant::from(args.command.clone()));
    if let Some(a) = &g.agent {
        spec.insert("agent", Variant::from(a.as_str()));
    }
    if let Some(w) = &workspace {
        spec.insert("workspace", Variant::from(w.display().to_string()));
    }
    spec.insert("environment", Variant::from(environment));
    if !args.env.is_empty() {
        spec.insert("env", Variant::from(args.env.clone()));
    }
    if !args.files.is_empty() {
        spec.insert("files", Variant::from(args.files.clone()));
    }
    spec.insert("net", Variant::from(args.net.as_str()));
    for (key, v) in [
        ("memory", args.memory),
        ("pids", args.pids),
        ("cpu_millis", args.cpus),
        ("timeout", args.timeout),
    ] {
        if let Some(v) = v {
            spec.insert(key, Variant::from(v));
        }
    }
    spec.insert("stdin", Variant::from(Fd::from(&stdio[0])));
    spec.insert("stdout", Variant::from(Fd::from(&stdio[1])));
    spec.insert("stderr", Variant::from(Fd::from(&stdio[2])));
    spec.insert("tty", Variant::from(pty.is_some()));
    spec.insert("status", Variant::from(Fd::from(&status)));
    // Before Run: a signal that arrives while the run starts is forwarded, not fatal.
    let sig = |kind| {
        signal(kind)
            .map_err(|e| CliError::new(Exit::Error, "cannot watch signals").cause(e.to_string()))
    };
    let (mut int, mut term, mut hup, mut quit, mut winch) = (
        sig(SignalKind::interrupt())?,
        sig(SignalKind::terminate())?,
        sig(SignalKind::hangup())?,
        sig(SignalKind::quit())?,
        sig(SignalKind::window_change())?,
    );
    let ran = jobs.run(spec).await;
    // The daemon (and through it the runner) holds the agent's ends and the status pipe's
    // now, or never will.
    drop(stdio);
    drop(status);
    let job = match ran {
        Ok(job) => job,
        Err(e) => {
            // As a shell says it: 127 for a command that cannot be executed.
            let not_executable = e.kind() == agentkeysd::api::ErrorKind::NotFound
                && e.message().starts_with("cannot execute");
            let err = daemon_error(e, &op());
            if not_executable && let CliError::Report(r) = &err {
                eprintln!("{r}");
                return Err(CliError::Status(127));
            }
            return Err(err);
        }
    };
    let (output, raw, master) = match pty {
        Some(p) => {
            drop(p.slave);
            let raw = tty::RawMode::enter()?;
            tty::copy_input(&p.master)?;
            let master = p.master.try_clone().ok();
            (Some(tty::copy_output(p.master)), Some(raw), master)
        }
        None => (None, None, None),
    };
    let mut interrupts = 0;
    let ended = loop {
        tokio::select! {
            ended = end.ended() => break ended,
            _ = int.recv() => {
                interrupts += 1;
                if interrupts == 1 {
                    let _ = jobs.signal(&job, libc::SIGINT).await;
                } else {
                    // A second Ctrl-C: the agent did not stop; end the run.
                    let _ = jobs.cancel(&job).await;
                }
            }
            _ = term.recv() => { let _ = jobs.signal(&job, libc::SIGTERM).await; }
            _ = hup.recv() => { let _ = jobs.signal(&job, libc::SIGHUP).await; }
            _ = quit.recv() => { let _ = jobs.signal(&job, libc::SIGQUIT).await; }
            _ = winch.recv() => {
                if let Some(m) = &master {
                    tty::sync_size(m);
                }
            }
        }
    };
    // A plain exit needs nothing more; how a run was killed or failed is in `Get`, and so
    // is what is known of a run whose status pipe closed without a word.
    let code = match ended {
        end::Ended::Exited(code) => i64::from(code),
        end::Ended::Other | end::Ended::Lost => {
            let info = jobs.get(&job).await.map_err(|e| daemon_error(e, &op()))?;
            explain(&info)
        }
    };
    drop(master);
    if let Some(out) = output {
        // Ends once every holder of the pty's slave is gone, which the run's end ensures.
        let _ = out.join();
    }
    drop(raw);
    if code == 0 {
        return Ok(());
    }
    Err(CliError::Status(
        u8::try_from(code.clamp(1, 255)).unwrap_or(1),
    ))
}

/// Says why a run was killed or failed (on stderr); returns its exit status.
fn explain(info: &agentkeysd::api::dict::Dict) -> i64 {
    let state = dict::get_str(info, "state")
        .ok()
        .flatten()
        .unwrap_or_default();
    let code = dict::get_i64(info, "exit_code").ok().flatten().unwrap_or(1);
    match state.as_str() {
        "killed" => {
            let reason = dict::get_str(info, "reason")
                .ok()
                .flatten()
                .unwrap_or_default();
            eprintln!("agentkeysctl: the run was killed: {reason}");
        }
        "failed" => {
            let step = dict::get_str(info, "step")
                .ok()
                .flatten()
                .unwrap_or_default();
            let error = dict::get_str(info, "error")
                .ok()
                .flatten()
                .unwrap_or_default();
            eprintln!("agentkeysctl: the run failed at step '{step}': {error}");
        }
        _ => {}
    }
    code
}

fn dup(fd: &impl AsFd) -> Result<OwnedFd, CliError> {
    fd.as_fd().try_clone_to_owned().map_err(|e| {
        CliError::new(Exit::Error, "cannot pass the terminal to the run").cause(e.to_string())
    })
}

/// `512M`, `2G`, `1.5GiB`, `1048576` (bytes); powers of 1024.
fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a size (e.g. 512M, 2G)"))?;
    let shift = match unit
        .trim()
        .trim_end_matches("iB")
        .trim_end_matches('B')
        .to_ascii_uppercase()
        .as_str()
    {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => return Err(format!("'{s}': unknown unit (K, M, G, T)")),
    };
    let bytes =
        n * f64::from(1u32 << (shift % 32)) * if shift >= 32 { 4_294_967_296.0 } else { 1.0 };
    if !(1.0..1.8e19).contains(&bytes) {
        return Err(format!("'{s}' is out of range"));
    }
    Ok(bytes as u64)
}

/// CPUs as thousandths: `0.5` → 500, `2` → 2000.
fn parse_cpus(s: &str) -> Result<u64, String> {
    let n: f64 = s
        .parse()
        .map_err(|_| format!("'{s}' is not a number of CPUs (e.g. 0.5, 2)"))?;
    if !(0.01..=1024.0).contains(&n) {
        return Err(format!("'{s}': between 0.01 and 1024 CPUs"));
    }
    Ok((n * 1000.0).round() as u64)
}

/// `90`, `90s`, `10m`, `2h`, `1d` → seconds.
fn parse_duration(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.chars().last() {
        Some('s') => (&t[..t.len() - 1], 1),
        Some('m') => (&t[..t.len() - 1], 60),
        Some('h') => (&t[..t.len() - 1], 3600),
        Some('d') => (&t[..t.len() - 1], 86_400),
        _ => (t, 1),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a duration (e.g. 90s, 10m, 2h)"))?;
    n.checked_mul(mult)
        .filter(|v| *v > 0)
        .ok_or_else(|| format!("'{s}' is out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_cpus_and_durations_parse_like_the_help_says() {
        assert_eq!(parse_size("512M").unwrap(), 512 << 20);
        assert_eq!(parse_size("2G").unwrap(), 2 << 30);
        assert_eq!(parse_size("1.5GiB").unwrap(), 3 << 29);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("2X").is_err() && parse_size("").is_err() && parse_size("-1G").is_err());
        assert_eq!(parse_cpus("0.5").unwrap(), 500);
        assert_eq!(parse_cpus("2").unwrap(), 2000);
        assert!(parse_cpus("0").is_err() && parse_cpus("x").is_err());
        assert_eq!(parse_duration("90").unwrap(), 90);
        assert_eq!(parse_duration("10m").unwrap(), 600);
        assert_eq!(parse_duration("2h").unwrap(), 7200);
        assert!(parse_duration("0s").is_err() && parse_duration("1w").is_err());
    }
}
