//! `agentkeysd::daemon::pam::authenticate` against the real libpam, configured through
//! `libpam-wrapper` + `pam_matrix` ([`agentkeys_tests::pam::PamWrapper`]).
//!
//! The wrapper must be `LD_PRELOAD`ed, which only a new process can get, so each test
//! re-executes this test binary running only [`child_runs_authenticate`], with the
//! wrapper's environment and a marker variable; the child calls `authenticate` and prints
//! one JSON line, which the parent checks. Without the marker the child test returns at
//! once (and passes), so running the whole binary, or that test alone, is harmless; it is
//! an ordinary test rather than `#[ignore]`d so that no `--include-ignored` is needed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

use agentkeys_tests::pam::{PamWrapper, SERVICE};
use agentkeys_tests::{count, skip, unique_secret};
use agentkeysd::daemon::pam::{PamError, PasswordProblem, authenticate};
use agentkeysd::vault::{SecretMemoryPolicy, Vault};

/// Set (to anything) only in the re-executed child.
const MARKER: &str = "AGENTKEYS_PAM_CHILD";
/// What the child authenticates: user name, and the password hex-encoded (it may hold
/// NUL or a newline, which no environment variable could carry).
const USER_VAR: &str = "AGENTKEYS_PAM_USER";
const PASSWORD_VAR: &str = "AGENTKEYS_PAM_PASSWORD_HEX";
const RESULT_PREFIX: &str = "PAM-RESULT ";

/// The child half: does nothing unless a parent test set [`MARKER`].
#[test]
fn child_runs_authenticate() {
    if std::env::var_os(MARKER).is_none() {
        return;
    }
    let user = std::env::var(USER_VAR).unwrap();
    let hex = std::env::var(PASSWORD_VAR).unwrap();
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    let vault = Vault::new(SecretMemoryPolicy::Prefer).unwrap();
    let mut password = vault.alloc(bytes.len().max(1)).unwrap();
    password.truncate(bytes.len());
    password.expose_secret_mut().copy_from_slice(&bytes);

    let result = authenticate(SERVICE, &user, &password);
    let line = match &result {
        Ok(()) => serde_json::json!({ "ok": true }),
        Err(e) => serde_json::json!({
            "ok": false,
            "variant": variant(e),
            "wrong_credentials": e.is_wrong_credentials(),
            "display": e.to_string(),
            "debug": format!("{e:?}"),
        }),
    };
    println!("{RESULT_PREFIX}{line}");
}

fn variant(e: &PamError) -> &'static str {
    match e {
        PamError::BadPassword(PasswordProblem::Empty) => "BadPassword(Empty)",
        PamError::BadPassword(PasswordProblem::ContainsNul) => "BadPassword(ContainsNul)",
        PamError::BadName { .. } => "BadName",
        PamError::Start { .. } => "Start",
        PamError::AuthFailed { .. } => "AuthFailed",
        PamError::Account { .. } => "Account",
        PamError::System { .. } => "System",
    }
}

/// The parent half: runs the child with `pam`'s environment; returns its result line.
/// Also checks that the password is nowhere in the child's output.
fn run_child(pam: &PamWrapper, user: &str, password: &[u8]) -> serde_json::Value {
    let hex: String = password.iter().map(|b| format!("{b:02x}")).collect();
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "child_runs_authenticate", "--nocapture"])
        .env(MARKER, "1")
        .env(USER_VAR, user)
        .env(PASSWORD_VAR, hex);
    for (k, v) in pam.env() {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "child failed: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    let trimmed = password.strip_suffix(b"\n").unwrap_or(password);
    if trimmed.len() >= 4 {
        for stream in [&out.stdout, &out.stderr] {
            assert_eq!(
                count(stream, trimmed),
                0,
                "password leaked:\n{stdout}\n{stderr}"
            );
        }
    }
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix(RESULT_PREFIX))
        .unwrap_or_else(|| panic!("no result line\nstdout:\n{stdout}\nstderr:\n{stderr}"));
    serde_json::from_str(line).unwrap()
}

fn assert_refused(result: &serde_json::Value, variant: &str, wrong_credentials: bool) {
    assert_eq!(result["ok"], false, "{result}");
    assert_eq!(result["variant"], variant, "{result}");
    assert_eq!(result["wrong_credentials"], wrong_credentials, "{result}");
}

#[test]
fn right_password_is_accepted() {
    let pw = unique_secret("pam");
    let Some(pam) = PamWrapper::new_or_skip(&[("alice", &pw)]) else {
        return;
    };
    let result = run_child(&pam, "alice", pw.as_bytes());
    assert_eq!(result["ok"], true, "{result}");
}

#[test]
fn password_with_one_trailing_newline_is_accepted() {
    let pw = unique_secret("pam");
    let Some(pam) = PamWrapper::new_or_skip(&[("alice", &pw)]) else {
        return;
    };
    let result = run_child(&pam, "alice", format!("{pw}\n").as_bytes());
    assert_eq!(result["ok"], true, "{result}");
    // Only one newline is the line's end; a second is part of the password.
    let result = run_child(&pam, "alice", format!("{pw}\n\n").as_bytes());
    assert_refused(&result, "AuthFailed", true);
}

#[test]
fn wrong_password_is_refused_as_wrong_credentials() {
    let pw = unique_secret("pam");
    let Some(pam) = PamWrapper::new_or_skip(&[("alice", &pw)]) else {
        return;
    };
    let wrong = unique_secret("wrong");
    let result = run_child(&pam, "alice", wrong.as_bytes());
    assert_refused(&result, "AuthFailed", true);
    assert!(
        result["display"].as_str().unwrap().contains("PAM_AUTH_ERR"),
        "{result}"
    );
    // A prefix of the right password is wrong too.
    let result = run_child(&pam, "alice", &pw.as_bytes()[..pw.len() - 1]);
    assert_refused(&result, "AuthFailed", true);
}

#[test]
fn unknown_user_is_refused_as_wrong_credentials() {
    let pw = unique_secret("pam");
    let Some(pam) = PamWrapper::new_or_skip(&[("alice", &pw)]) else {
        return;
    };
    let result = run_child(&pam, "mallory", pw.as_bytes());
    assert_refused(&result, "AuthFailed", true);
}

/// If the NUL reached PAM, C would see only "sec", which is the stored password.
#[test]
fn password_with_nul_is_refused_without_asking_pam() {
    let Some(pam) = PamWrapper::new_or_skip(&[("alice", "sec")]) else {
        return;
    };
    let result = run_child(&pam, "alice", b"sec\0ret");
    assert_refused(&result, "BadPassword(ContainsNul)", true);
}

#[test]
fn empty_password_is_refused() {
    let Some(pam) = PamWrapper::new_or_skip(&[("alice", "pw")]) else {
        return;
    };
    for empty in [&b""[..], b"\n"] {
        let result = run_child(&pam, "alice", empty);
        assert_refused(&result, "BadPassword(Empty)", true);
    }
}

#[test]
fn right_password_for_a_refused_account_is_an_account_error() {
    let pw = unique_secret("pam");
    let Some(pam) = PamWrapper::new_or_skip(&[]) else {
        return;
    };
    // pam_matrix's account check: the user's entry is for another service.
    pam.add_entry("alice", &pw, "sshd");
    let result = run_child(&pam, "alice", pw.as_bytes());
    assert_refused(&result, "Account", false);
    assert!(
        result["display"]
            .as_str()
            .unwrap()
            .contains("PAM_PERM_DENIED"),
        "{result}"
    );
}

/// `verbose` makes pam_matrix send info/error text with a NULL reply pointer (pamtester
/// crashes on it); the conversation must accept that and still authenticate.
#[test]
fn info_and_error_messages_from_modules_are_tolerated() {
    if let Err(reason) = PamWrapper::available() {
        skip(&reason);
        return;
    }
    let pw = unique_secret("pam");
    let verbose = PamWrapper::with_options(&[("alice", &pw)], "verbose");
    assert_eq!(run_child(&verbose, "alice", pw.as_bytes())["ok"], true);
    let result = run_child(&verbose, "alice", b"not-the-password");
    assert_refused(&result, "AuthFailed", true);
}

/// PAM failing (a backend missing, no configuration at all) must not count against the
/// person: the daemon reports it instead of "wrong password".
#[test]
fn a_broken_pam_setup_is_a_system_error_not_wrong_credentials() {
    let pw = unique_secret("pam");
    let Some(pam) = PamWrapper::new_or_skip(&[("alice", &pw)]) else {
        return;
    };
    // pam_matrix without its password file: PAM_AUTHINFO_UNAVAIL.
    std::fs::remove_file(pam.passdb()).unwrap();
    let result = run_child(&pam, "alice", pw.as_bytes());
    assert_refused(&result, "System", false);
    assert!(
        result["display"]
            .as_str()
            .unwrap()
            .contains("pam_authenticate"),
        "{result}"
    );
    // No service file and no `other`: pam_start itself fails.
    for name in [SERVICE, "other"] {
        std::fs::remove_file(pam.service_dir().join(name)).unwrap();
    }
    let result = run_child(&pam, "alice", pw.as_bytes());
    assert_refused(&result, "Start", false);
}
