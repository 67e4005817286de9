//! Step 3, the init's half: the new root, a fresh tmpfs. Its sources (the policy's binds,
//! the MCP socket, the bridge, device nodes) are detached mounts the runner cloned before
//! the fork ([`super::mounts`]), attached here (`move_mount`), the run's `/etc` snapshot
//! first ([`super::etc_cache`]); without a snapshot, the policy's small files are copied
//! into the root from the host's tree, which this mount namespace shows until
//! `pivot_root`, and the accounts written. The workspace comes last, idmapped by the
//! runner before the fork as well. Then `pivot_root`, the old root detached, and the new
//! root itself made read-only.

use std::collections::HashSet;
use std::ffi::CString;
use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::unistd::{Gid, Uid, chown, pivot_root};

use super::mounts::{self, COPY_MAX, Kind, Source, Sources};
use crate::plan::StepError;
use crate::policy::fs::{Bind, FsPolicy};
use crate::spec::{SECRETS_DIR_INSIDE, Spec, WORKSPACE_INSIDE};
use crate::steps::rlimits::read_secret;
use crate::sys;

/// Where the new root is mounted before `pivot_root`. Any directory works (the mount
/// namespace is private and every source is a detached mount already).
const NEW_ROOT: &str = "/tmp";

/// Builds the new root and enters it: the sources the runner cloned before the fork
/// (the `/etc` snapshot first, when there is one; otherwise the accounts and the small
/// files are written here), then the (idmapped) workspace.
pub fn build(spec: &Spec, policy: &FsPolicy, sources: Sources) -> Result<(), StepError> {
    // No mount event of ours may leak back to the host, nor the host's into the sandbox.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| StepError::new("make / private (MS_REC|MS_PRIVATE)", e))?;
    // No size of its own: /tmp and /dev/shm are directories of this file system (what the
    // agent writes there is charged to its memory cgroup, as it would be on tmpfs mounts of
    // their own, which cost a superblock each to make and to tear down).
    tmpfs(
        NEW_ROOT,
        "mode=0755",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
    )?;
    let root = Path::new(NEW_ROOT);
    let proc_dir = mkdir(root, "/proc")?;
    mount(
        Some("proc"),
        &proc_dir,
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(|e| StepError::new("mount a new proc", e))?;
    // The private /tmp before the binds, so a configured read-only path under /tmp is
    // mounted on top of it rather than hidden beneath it.
    writable(root, "/tmp")?;
    build_dev(root)?;
    let mut dirs = MadeDirs::default();
    let copies = match sources.etc {
        // The run's /etc snapshot (the first source) holds the accounts and the small files.
        Some(covered) => covered,
        None => {
            write_accounts(root, spec)?;
            copy_small_files(root, &policy.binds, &mut dirs)?
        }
    };
    check_every_bind(&policy.binds, &copies, &sources.list)?;
    for s in &sources.list {
        attach(root, s, &mut dirs)?;
    }
    for l in &policy.symlinks {
        std::os::unix::fs::symlink(&l.target, root.join(rel(&l.path)))
            .map_err(|e| StepError::new(format!("symlink {} -> {}", l.path, l.target), e))?;
    }
    if let Some(fd) = sources.workspace {
        let ws = Source {
            fd,
            inside: WORKSPACE_INSIDE.into(),
            kind: Kind::Dir,
        };
        attach(root, &ws, &mut dirs)?;
    }
    write_secret_files(root, spec)?;
    enter(root)
}

/// Parent directories [`attach`] made or found already, so each is asked for once.
#[derive(Debug, Default)]
struct MadeDirs(std::collections::HashSet<PathBuf>);

impl MadeDirs {
    fn ensure(&mut self, dir: &Path) -> Result<(), StepError> {
        if self.0.contains(dir) {
            return Ok(());
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(|e| StepError::new(format!("mkdir {}", dir.display()), e))?;
        self.0.insert(dir.to_owned());
        Ok(())
    }
}

/// Copies the policy's binds that are small regular files ([`mounts::copied`]); returns
/// which. A bind that is not (a directory, a large file) or is not there is the runner's.
fn copy_small_files(
    root: &Path,
    binds: &[Bind],
    dirs: &mut MadeDirs,
) -> Result<Vec<PathBuf>, StepError> {
    let mut copies = Vec::new();
    for b in binds {
        let Some(file) = small_file(Path::new(&b.path)) else {
            continue;
        };
        let target = root.join(rel(&b.path));
        if let Some(parent) = target.parent() {
            dirs.ensure(parent)?;
        }
        copy(&file, &b.path, &target)?;
        copies.push(PathBuf::from(&b.path));
    }
    Ok(copies)
}

/// `path` opened when [`mounts::copied`] says it is copied (decided on a `stat`, so the
/// policy's directories are not opened at all; [`copy`] checks the opened file again).
fn small_file(path: &Path) -> Option<std::fs::File> {
    let meta = std::fs::metadata(path).ok()?;
    if !mounts::copied(&meta) {
        return None;
    }
    open_to_copy(path).ok()
}

/// A host file opened read-only to be copied: without blocking (a FIFO cannot stall the
/// start) and without taking a terminal.
pub(super) fn open_to_copy(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
}

/// Every bind of the policy was copied here or cloned by the runner, not both: the two
/// decide apart, and a path that changed between (a file replaced by a directory) would
/// otherwise be missing from the new root without a word. An optional bind may be missing.
fn check_every_bind(
    binds: &[Bind],
    copies: &[PathBuf],
    sources: &[Source],
) -> Result<(), StepError> {
    // Sets rather than a scan of both lists per bind: a `Path` comparison walks components,
    // and this is on the init's lane. A `Path` hashes as it compares (by components).
    let copies: HashSet<&Path> = copies.iter().map(PathBuf::as_path).collect();
    let cloned: HashSet<&Path> = sources.iter().map(|s| s.inside.as_path()).collect();
    for b in binds {
        let path = Path::new(&b.path);
        let (copied, cloned) = (copies.contains(path), cloned.contains(path));
        if copied == cloned && (copied || !b.optional) {
            return Err(StepError::refused(
                format!("{} changed while the sandbox was built", b.path),
                std::io::ErrorKind::InvalidData,
            ));
        }
    }
    Ok(())
}

/// Creates the mount point (a directory or an empty file, and their parents) and attaches.
fn attach(root: &Path, s: &Source, dirs: &mut MadeDirs) -> Result<(), StepError> {
    let target = root.join(rel(&s.inside.to_string_lossy()));
    if let Some(parent) = target.parent() {
        dirs.ensure(parent)?;
    }
    mount_point(&target, s.kind)
        .map_err(|e| StepError::new(format!("create {}", target.display()), e))?;
    sys::move_mount(s.fd.as_fd(), &cstr(&target)?)
        .map_err(|e| StepError::new(format!("attach {}", s.inside.display()), e))
}

/// A directory (0755) or an empty file (0444) to mount a source of `kind` on; one that is
/// there already will do.
pub(super) fn mount_point(target: &Path, kind: Kind) -> std::io::Result<()> {
    let made = match kind {
        Kind::Dir => std::fs::DirBuilder::new().mode(0o755).create(target),
        Kind::File => std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o444)
            .open(target)
            .map(drop),
    };
    match made {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        other => other,
    }
}

/// A small file's bytes (at most [`COPY_MAX`]; a file that grew past it since it was
/// opened fails the run) in a new file with its permission bits, set-id bits dropped.
/// Copied in the kernel (`sendfile` from the page cache, no buffer of ours).
pub(super) fn copy(from: &std::fs::File, name: &str, target: &Path) -> Result<(), StepError> {
    let fail = |e: std::io::Error| StepError::new(format!("copy {name}"), e);
    let st = nix::sys::stat::fstat(from.as_fd()).map_err(|e| fail(e.into()))?;
    // What was opened is what `small_file` saw: a regular file (not a directory or a FIFO
    // that replaced it since).
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(StepError::refused(
            format!("{name} changed while the sandbox was built"),
            std::io::ErrorKind::InvalidData,
        ));
    }
    let to = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(st.st_mode & 0o777)
        .open(target)
        .map_err(fail)?;
    // Up to one byte more than the bound, to see a file that grew.
    let mut offset: libc::off_t = 0;
    let mut left = COPY_MAX + 1;
    while left > 0 {
        let want = usize::try_from(left).unwrap_or(usize::MAX);
        match nix::sys::sendfile::sendfile(to.as_fd(), from.as_fd(), Some(&mut offset), want) {
            Ok(0) => return Ok(()),
            Ok(n) => left = left.saturating_sub(n as u64),
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(fail(e.into())),
        }
    }
    Err(fail(std::io::Error::new(
        std::io::ErrorKind::FileTooLarge,
        format!("it grew past {COPY_MAX} bytes while the sandbox was built"),
    )))
}

/// `/dev` (its device nodes are the policy's sources, attached later): a private devpts,
/// `/dev/shm` and the fd links.
fn build_dev(root: &Path) -> Result<(), StepError> {
    let dev = mkdir(root, "/dev")?;
    let pts = mkdir(root, "/dev/pts")?;
    mount(
        Some("devpts"),
        &pts,
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    )
    .map_err(|e| StepError::new("mount a new devpts", e))?;
    writable(root, "/dev/shm")?;
    for (name, target) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        std::os::unix::fs::symlink(target, dev.join(name))
            .map_err(|e| StepError::new(format!("symlink /dev/{name}"), e))?;
    }
    Ok(())
}

/// `/etc/passwd` and `/etc/group` of the sandbox: the agent and nobody, nothing of the
/// host's accounts.
pub(super) fn accounts(spec: &Spec) -> [(&'static str, String); 2] {
    let ids = &spec.ids;
    let passwd = format!(
        "agent:x:{}:{}:AgentKeys agent:{WORKSPACE_INSIDE}:/bin/sh\n\
         nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
        ids.inside_uid, ids.inside_gid
    );
    let group = format!("agent:x:{}:\nnogroup:x:65534:\n", ids.inside_gid);
    [("passwd", passwd), ("group", group)]
}

/// [`accounts`] in the new root.
fn write_accounts(root: &Path, spec: &Spec) -> Result<(), StepError> {
    let etc = mkdir(root, "/etc")?;
    for (name, text) in accounts(spec) {
        std::fs::write(etc.join(name), text)
            .map_err(|e| StepError::new(format!("write /etc/{name}"), e))?;
    }
    Ok(())
}

/// Secret files: 0400, owned by the agent, in a 0500 directory of the agent's.
fn write_secret_files(root: &Path, spec: &Spec) -> Result<(), StepError> {
    if spec.secret_files.is_empty() {
        return Ok(());
    }
    let dir = root.join(rel(SECRETS_DIR_INSIDE));
    if let Some(parent) = dir.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)
            .map_err(|e| StepError::new(format!("mkdir {}", parent.display()), e))?;
    }
    // 0700 while the files are written (the runner has no CAP_DAC_OVERRIDE), 0500 after.
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|e| StepError::new(format!("mkdir {SECRETS_DIR_INSIDE}"), e))?;
    let (uid, gid) = (
        Uid::from_raw(spec.ids.agent_uid),
        Gid::from_raw(spec.ids.agent_gid),
    );
    for s in &spec.secret_files {
        let value = read_secret(s)?;
        let path = dir.join(&s.name);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o400)
            .open(&path)
            .map_err(|e| StepError::new(format!("create the secret file {:?}", s.name), e))?;
        f.write_all(&value)
            .map_err(|e| StepError::new(format!("write the secret file {:?}", s.name), e))?;
        nix::unistd::fchown(&f, Some(uid), Some(gid))
            .map_err(|e| StepError::new(format!("chown the secret file {:?}", s.name), e))?;
        f.set_permissions(std::fs::Permissions::from_mode(0o400))
            .map_err(|e| StepError::new(format!("chmod the secret file {:?}", s.name), e))?;
    }
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o500))
        .map_err(|e| StepError::new(format!("chmod {SECRETS_DIR_INSIDE}"), e))?;
    chown(&dir, Some(uid), Some(gid))
        .map_err(|e| StepError::new(format!("chown {SECRETS_DIR_INSIDE}"), e))
}

/// `pivot_root` into the new root, detach the old one, make `/` read-only (and with it
/// `/dev`, a directory of the same tmpfs; its devpts and shm stay writable).
fn enter(root: &Path) -> Result<(), StepError> {
    nix::unistd::chdir(root).map_err(|e| StepError::new("chdir to the new root", e))?;
    // pivot_root(".", "."): the old root is stacked on top of the new one and then lazily
    // unmounted, so no directory for it is needed.
    pivot_root(".", ".").map_err(|e| StepError::new("pivot_root", e))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| StepError::new("detach the old root", e))?;
    nix::unistd::chdir("/").map_err(|e| StepError::new("chdir /", e))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REMOUNT
            | MsFlags::MS_BIND
            | MsFlags::MS_RDONLY
            | MsFlags::MS_NOSUID
            | MsFlags::MS_NODEV,
        None::<&str>,
    )
    .map_err(|e| StepError::new("make / read-only", e))
}

/// A sticky, world-writable directory of the root's tmpfs (`/tmp`, `/dev/shm`), bound onto
/// itself: a mount of its own, which stays writable when the root is made read-only.
fn writable(root: &Path, inside: &str) -> Result<(), StepError> {
    let dir = mkdir(root, inside)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777))
        .map_err(|e| StepError::new(format!("chmod {inside}"), e))?;
    mount(
        Some(&dir),
        &dir,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| StepError::new(format!("bind {inside} onto itself"), e))
}

fn tmpfs(at: impl AsRef<Path>, data: &str, flags: MsFlags) -> Result<(), StepError> {
    let at = at.as_ref();
    mount(Some("tmpfs"), at, Some("tmpfs"), flags, Some(data))
        .map_err(|e| StepError::new(format!("mount a tmpfs on {}", at.display()), e))
}

fn mkdir(root: &Path, inside: &str) -> Result<PathBuf, StepError> {
    let p = root.join(rel(inside));
    match std::fs::DirBuilder::new().mode(0o755).create(&p) {
        Ok(()) => Ok(p),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(p),
        Err(e) => Err(StepError::new(format!("mkdir {inside}"), e)),
    }
}

/// `/a/b` → `a/b`, to join under the new root.
fn rel(inside: &str) -> &str {
    inside.trim_start_matches('/')
}

pub(super) fn cstr(p: &Path) -> Result<CString, StepError> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|e| StepError::new(format!("path {}", p.display()), std::io::Error::other(e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binds() -> Vec<Bind> {
        let text = "[[bind]]\npath = \"/etc/hosts\"\nwhy = \"abc\"\n\
                    [[bind]]\npath = \"/usr\"\nwhy = \"abc\"\n\
                    [[bind]]\npath = \"/etc/gitconfig\"\noptional = true\nwhy = \"abc\"\n\
                    [[symlink]]\npath = \"/bin\"\ntarget = \"usr/bin\"\nwhy = \"abc\"\n\
                    [[device]]\nname = \"null\"\nwhy = \"abc\"\n";
        FsPolicy::parse(text).unwrap().binds
    }

    fn cloned(inside: &str) -> Source {
        Source {
            fd: std::fs::File::open("/dev/null").unwrap().into(),
            inside: inside.into(),
            kind: Kind::Dir,
        }
    }

    #[test]
    fn every_bind_must_be_copied_or_cloned_once() {
        let binds = binds();
        let copies = vec![PathBuf::from("/etc/hosts")];
        // Each once; the optional one absent from both, the devices' sources beside them.
        check_every_bind(&binds, &copies, &[cloned("/usr"), cloned("/dev/null")]).unwrap();
        // Missing from both.
        let err = check_every_bind(&binds, &copies, &[]).unwrap_err();
        assert!(err.what.contains("/usr changed"), "{}", err.what);
        // Both: a path that was a small file for one side and not for the other.
        let both = [cloned("/usr"), cloned("/etc/hosts")];
        let err = check_every_bind(&binds, &copies, &both).unwrap_err();
        assert!(err.what.contains("/etc/hosts changed"), "{}", err.what);
        // An optional bind copied, or cloned, is as good as a required one.
        let copies = vec![PathBuf::from("/etc/hosts"), PathBuf::from("/etc/gitconfig")];
        check_every_bind(&binds, &copies, &[cloned("/usr")]).unwrap();
        let err = check_every_bind(&binds, &copies, &[cloned("/usr"), cloned("/etc/gitconfig")])
            .unwrap_err();
        assert!(err.what.contains("/etc/gitconfig changed"), "{}", err.what);
    }
}
