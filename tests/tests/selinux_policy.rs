//! The SELinux module in `selinux/`, built with the reference policy's development Makefile
//! (Debian: selinux-policy-dev) into a temporary directory, and checked as a policy
//! package by taking it apart again with `semodule_unpackage`. It cannot be loaded here
//! (SELinux is not active on this kernel); selinux/README.md says how to on Fedora.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

use agentkeys_tests::{run, skip};

const SOURCES: &[&str] = &[
    "Makefile",
    "agentkeysd.te",
    "agentkeysd.fc",
    "agentkeysd.if",
];
const DEVEL_MAKEFILE: &str = "/usr/share/selinux/devel/Makefile";
/// SEPOL_MODULE_PACKAGE_MAGIC and SEPOL_MODULE magic, little-endian (libsepol).
const PP_MAGIC: [u8; 4] = 0xf97c_ff8f_u32.to_le_bytes();
const MOD_MAGIC: [u8; 4] = 0xf97c_ff8d_u32.to_le_bytes();

fn selinux_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../selinux")
}

fn tools_present() -> bool {
    if !Path::new(DEVEL_MAKEFILE).exists() {
        skip(&format!(
            "{DEVEL_MAKEFILE} missing (Debian package selinux-policy-dev)"
        ));
        return false;
    }
    for (tool, package) in [
        ("make", "make"),
        ("checkmodule", "checkpolicy"),
        ("semodule_package", "semodule-utils"),
        ("semodule_unpackage", "semodule-utils"),
    ] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            skip(&format!("{tool} not found (Debian package {package})"));
            return false;
        }
    }
    true
}

/// Copies the module's sources into a fresh directory, with `te` as agentkeysd.te when
/// given, and runs `make` there.
fn build(te: Option<&str>) -> (tempfile::TempDir, agentkeys_tests::Out) {
    let dir = tempfile::tempdir().unwrap();
    for f in SOURCES {
        std::fs::copy(selinux_dir().join(f), dir.path().join(f)).unwrap();
    }
    if let Some(te) = te {
        std::fs::write(dir.path().join("agentkeysd.te"), te).unwrap();
    }
    let mut cmd = Command::new("make");
    cmd.arg("-C").arg(dir.path());
    let out = run(cmd, None);
    (dir, out)
}

#[test]
fn the_module_builds_into_a_policy_package_that_unpacks_again() {
    if !tools_present() {
        return;
    }
    let (dir, out) = build(None);
    assert_eq!(out.code, 0, "make:\n{}\n{}", out.stdout(), out.stderr);
    let pp = dir.path().join("agentkeysd.pp");
    let bytes = std::fs::read(&pp).unwrap();
    assert!(bytes.len() > 1024, "{} bytes", bytes.len());
    assert_eq!(bytes[..4], PP_MAGIC, "not a policy package");
    eprintln!("agentkeysd.pp: {} bytes", bytes.len());

    // Round trip: the package holds a policy module and the file contexts.
    let module = dir.path().join("out.mod");
    let fc = dir.path().join("out.fc");
    let mut cmd = Command::new("semodule_unpackage");
    cmd.args([&pp, &module, &fc]);
    let out = run(cmd, None);
    assert_eq!(out.code, 0, "semodule_unpackage: {}", out.stderr);
    let m = std::fs::read(&module).unwrap();
    assert_eq!(m[..4], MOD_MAGIC, "not a policy module");
    let has = |hay: &[u8], needle: &str| agentkeys_tests::count(hay, needle.as_bytes()) > 0;
    assert!(has(&m, "SE Linux Module"));
    for t in [
        "agentkeysd",
        "agentkeysd_t",
        "agentkeysd_exec_t",
        "agentkeys_runner_t",
        "agentkeys_runner_exec_t",
        "agentkeys_agent_t",
        "agentkeysd_var_lib_t",
        "agentkeysd_runtime_t",
        "agentkeysd_pam_sock_t",
        "agentkeysd_conf_t",
        "agentkeys_etc_cache_t",
    ] {
        assert!(has(&m, t), "{t} not in the module");
    }
    let fc = std::fs::read_to_string(&fc).unwrap();
    for line in [
        "/usr/sbin/agentkeysd\t--\tsystem_u:object_r:agentkeysd_exec_t:s0",
        "/usr/libexec/agentkeys/agentkeys-runner\t--\tsystem_u:object_r:agentkeys_runner_exec_t:s0",
        "/var/lib/agentkeys(/.*)?\tsystem_u:object_r:agentkeysd_var_lib_t:s0",
        "/run/agentkeys(/.*)?\t\tsystem_u:object_r:agentkeysd_runtime_t:s0",
        "/run/agentkeys/pam\\.sock\t-s\tsystem_u:object_r:agentkeysd_pam_sock_t:s0",
        "/etc/agentkeys(/.*)?\t\tsystem_u:object_r:agentkeysd_conf_t:s0",
        "/run/agentkeys/etc-cache(/.*)?\tsystem_u:object_r:agentkeys_etc_cache_t:s0",
    ] {
        assert!(fc.lines().any(|l| l == line), "{line:?} not in:\n{fc}");
    }
}

#[test]
fn a_module_that_calls_an_unknown_interface_does_not_build() {
    if !tools_present() {
        return;
    }
    // The check above means something only if the build fails on a mistake.
    let te = std::fs::read_to_string(selinux_dir().join("agentkeysd.te")).unwrap()
        + "\nagentkeysd_no_such_interface(agentkeysd_t)\n";
    let (dir, out) = build(Some(&te));
    assert_ne!(out.code, 0, "{}", out.stdout());
    assert!(
        out.stderr.contains("syntax error"),
        "checkmodule should refuse it: {}",
        out.stderr
    );
    assert!(!dir.path().join("agentkeysd.pp").exists());
}
