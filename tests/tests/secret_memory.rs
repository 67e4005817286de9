//! Kernel tier: decrypted secrets really live in memfd_secret pages that even root
//! cannot read, and the configured fallback really is locked, undumpable memory.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use agentkeys_tests::proc_mem::{maps, pread_mem, vm_read};
use agentkeys_tests::{Daemon, DaemonOpts, skip};

#[test]
fn root_cannot_read_the_daemons_secret_memory() {
    if !agentkeysd::vault::memfd_secret_available() {
        skip("this kernel has no memfd_secret (secretmem_enable=0 or CONFIG_SECRETMEM=n)");
        return;
    }
    let d = Daemon::start();
    d.ctl_in(&["store", "openai"], Some(b"sk-proj-secretmem-check-0001"))
        .ok();
    d.ctl(&["read", "openai"]).ok();
    let pid = d.pid();
    let secret_maps: Vec<_> = maps(pid)
        .into_iter()
        .filter(|m| m.path.contains("secretmem"))
        .collect();
    assert!(
        !secret_maps.is_empty(),
        "no secretmem mapping in the daemon"
    );
    for m in &secret_maps {
        let e = pread_mem(pid, m.start, 64).unwrap_err();
        assert_eq!(
            e.raw_os_error(),
            Some(libc::EIO),
            "/proc/PID/mem read of {m:?}"
        );
        let e = vm_read(pid, m.start, 64).unwrap_err();
        assert_eq!(e, nix::errno::Errno::EFAULT, "process_vm_readv of {m:?}");
    }
    // Positive control: the same reader can read the daemon's ordinary memory.
    let heap = maps(pid)
        .into_iter()
        .find(|m| m.path == "[heap]" || m.path == "[stack]")
        .unwrap();
    pread_mem(pid, heap.start, 64).unwrap();
}

#[test]
fn the_mlock_fallback_is_locked_undumpable_and_wiped_on_fork() {
    let d = Daemon::start_with(DaemonOpts {
        config: "[vault]\nsecret_memory = \"mlock\"\n".into(),
        ..Default::default()
    });
    let st = d.ctl(&["--json", "status"]).json();
    assert_eq!(st["secret_memory"], "mlock");
    d.ctl_in(&["store", "openai"], Some(b"sk-proj-fallback-check-0002"))
        .ok();
    assert_eq!(
        d.ctl(&["read", "openai"]).ok(),
        "sk-proj-fallback-check-0002"
    );
    let pid = d.pid();
    assert!(
        !maps(pid).iter().any(|m| m.path.contains("secretmem")),
        "secretmem used despite policy mlock"
    );
    // Find the vault regions by their flags: locked, don't-dump and wipe-on-fork together.
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap();
    let vault_regions = smaps
        .lines()
        .filter_map(|l| l.strip_prefix("VmFlags:"))
        .filter(|f| {
            let f: Vec<&str> = f.split_whitespace().collect();
            f.contains(&"lo") && f.contains(&"dd") && f.contains(&"wf")
        })
        .count();
    assert!(
        vault_regions >= 1,
        "no locked+dontdump+wipeonfork region:\n{smaps}"
    );
}

#[test]
fn policy_require_starts_where_the_kernel_has_secretmem() {
    if !agentkeysd::vault::memfd_secret_available() {
        skip("this kernel has no memfd_secret");
        return;
    }
    let d = Daemon::start_with(DaemonOpts {
        config: "[vault]\nsecret_memory = \"require\"\n".into(),
        ..Default::default()
    });
    let st = d.ctl(&["--json", "status"]).json();
    assert_eq!(st["secret_memory"], "memfd_secret");
}
