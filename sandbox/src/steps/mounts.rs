//! Step 3, the runner's half: every read-only source of the new root cloned as a detached
//! mount (`open_tree`) and made read-only/nosuid/nodev with `mount_setattr`, and the
//! workspace cloned and idmapped, all before the runner forks the init, which inherits them
//! and attaches them ([`super::filesystem`]) without waiting for the runner. The policy's
//! small regular files are not among them: they come from the run's `/etc` snapshot
//! ([`super::etc_cache`]) or the init copies them ([`copied`]). The host's tree is the
//! runner's own (it never changes mount namespace), so each source is cloned from exactly
//! what the host shows, and the idmap's maps are written through the host's `/proc`.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use super::filesystem::cstr;
use crate::plan::StepError;
use crate::policy::fs::FsPolicy;
use crate::spec::{BRIDGE_INSIDE, MCP_SOCKET_INSIDE, Spec};
use crate::sys;

const RDONLY: u64 = libc::MOUNT_ATTR_RDONLY;
const NOSUID: u64 = libc::MOUNT_ATTR_NOSUID;
const NODEV: u64 = libc::MOUNT_ATTR_NODEV;
const IDMAP: u64 = libc::MOUNT_ATTR_IDMAP;
/// What every read-only source of the new root is made.
pub(super) const READ_ONLY: u64 = RDONLY | NOSUID | NODEV;

/// Largest file of the policy's binds that is copied rather than mounted. The copies sit on
/// the init's path while the runner clones the mounts; the two larger files of the shipped
/// policy (`/etc/ld.so.cache`, `/etc/mime.types`, 35 and 74 KiB here) are left to the
/// runner as mounts.
pub const COPY_MAX: u64 = 16 * 1024;

/// Whether a bind of the policy is a small regular file (`/etc/hosts`, `/etc/resolv.conf`,
/// …), which the init copies into the new root rather than the runner cloning a mount of
/// it: a copy costs a fraction of a mount, on both sides, and sees as much of later
/// changes on the host as a bind of a file does (none once the file is replaced, which is
/// how files in `/etc` are updated). `meta` follows symlinks. Both sides decide with this;
/// the init checks that every bind arrived one way or the other.
pub fn copied(meta: &std::fs::Metadata) -> bool {
    meta.is_file() && meta.len() <= COPY_MAX
}

/// A source waiting for its place in the new root.
#[derive(Debug)]
pub struct Source {
    /// The detached mount.
    pub fd: OwnedFd,
    pub inside: PathBuf,
    pub kind: Kind,
}

/// How a source takes its place in the new root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A detached mount of a directory.
    Dir,
    /// A detached mount of anything else (a file, a device node, a socket).
    File,
}

/// The workspace cloned and idmapped (`tree`, which the init attaches), and the process
/// holding the namespace its idmapping came from, when one was made for it.
#[derive(Debug)]
pub struct Workspace {
    pub tree: OwnedFd,
    pub holder: Option<IdmapHolder>,
}

/// The runner's child holding the user namespace made for the workspace's idmapping.
/// Dropping it kills and reaps the child, which waits for it to be scheduled: the runner
/// does that after the fork, off the init's path (the mount keeps its own reference to the
/// namespace, so nothing needs the child once the mount is idmapped).
#[derive(Debug)]
pub struct IdmapHolder {
    _child: sys::UsernsHolder,
}

impl IdmapHolder {
    /// In the init after the fork: the child is the runner's, and its pid means nothing in
    /// the init's pid namespace; it is let go without a signal or a wait.
    pub fn disown(self) {
        std::mem::forget(self);
    }
}

/// Clones the workspace and idmaps it, when the spec has one. `owner_idmap`: the agent's
/// own user namespace when it maps the owner's ids to the agent's
/// (`identity::Mapped::owner_idmap`); otherwise a namespace is made for the idmapping.
pub fn workspace(
    spec: &Spec,
    owner_idmap: Option<BorrowedFd<'_>>,
) -> Result<Option<Workspace>, StepError> {
    let Some(ws) = &spec.workspace else {
        return Ok(None);
    };
    let tree = clone_workspace(ws)?;
    let holder = match owner_idmap {
        Some(userns) => {
            idmap(&tree, ws, userns)?;
            None
        }
        None => Some(IdmapHolder {
            _child: idmap_workspace(&tree, ws, spec)?,
        }),
    };
    Ok(Some(Workspace { tree, holder }))
}

/// The new root's read-only sources and the workspace, cloned by the runner before it
/// forks the init (which inherits them).
#[derive(Debug)]
pub struct Sources {
    pub list: Vec<Source>,
    /// The first source is the run's `/etc` snapshot, holding these binds of the policy
    /// ([`super::etc_cache`]); `None`: the init copies them.
    pub etc: Option<Vec<PathBuf>>,
    /// The workspace, idmapped ([`workspace`]), when the spec has one.
    pub workspace: Option<OwnedFd>,
}

/// A bind of the policy that is a small regular file ([`copied`]), as the runner found it.
pub type SmallFile = (PathBuf, std::fs::Metadata);

/// Clones every read-only source but the policy's small files, which it returns beside
/// them (the run's `/etc` snapshot holds them, or the init copies them).
pub fn clone_sources(
    spec: &Spec,
    policy: &FsPolicy,
) -> Result<(Vec<Source>, Vec<SmallFile>), StepError> {
    let ro = READ_ONLY;
    let mut out = Vec::new();
    let mut small = Vec::new();
    for b in &policy.binds {
        let path = Path::new(&b.path);
        match std::fs::metadata(path) {
            Ok(meta) if copied(&meta) => small.push((path.to_owned(), meta)),
            Err(_) if b.optional && std::fs::symlink_metadata(path).is_err() => continue,
            // Anything else is cloned; a path that is not there fails with its name.
            _ => out.push(source(path, path, true, ro)?),
        }
    }
    for d in &policy.devices {
        let host = Path::new("/dev").join(&d.name);
        // Device nodes keep their own flags: nodev here would make them useless.
        out.push(source(&host, &host, false, RDONLY | NOSUID)?);
    }
    if let Some(sock) = &spec.mcp_socket {
        out.push(source(sock, Path::new(MCP_SOCKET_INSIDE), false, ro)?);
    }
    if let Some(bridge) = &spec.bridge {
        out.push(source(bridge, Path::new(BRIDGE_INSIDE), false, ro)?);
    }
    for p in &spec.ro_paths {
        out.push(source(p, p, true, ro)?);
    }
    Ok((out, small))
}

pub(super) fn source(
    host: &Path,
    inside: &Path,
    recursive: bool,
    attrs: u64,
) -> Result<Source, StepError> {
    let tree = clone_tree(host, recursive, attrs)?;
    let dir = nix::sys::stat::fstat(tree.as_fd())
        .map(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR)
        .map_err(|e| StepError::new(format!("stat {}", host.display()), e))?;
    Ok(Source {
        fd: tree,
        inside: inside.to_owned(),
        kind: if dir { Kind::Dir } else { Kind::File },
    })
}

/// The workspace. The daemon passes it as `/proc/self/fd/N`: an `O_PATH` descriptor it
/// opened and checked (owned by the run's owner). The path it resolves to is cloned, and
/// the clone must be the very directory the descriptor pins (same device and inode): a
/// path swapped since the check fails here.
fn clone_workspace(ws: &Path) -> Result<OwnedFd, StepError> {
    if !ws.starts_with("/proc/self/fd") {
        return clone_tree(ws, false, 0);
    }
    let path = std::fs::read_link(ws)
        .map_err(|e| StepError::new(format!("resolve the workspace {}", ws.display()), e))?;
    let tree = clone_tree(&path, false, 0)?;
    let pinned = nix::sys::stat::stat(ws)
        .map_err(|e| StepError::new(format!("stat the workspace {}", path.display()), e))?;
    let cloned = nix::sys::stat::fstat(tree.as_fd())
        .map_err(|e| StepError::new(format!("stat the workspace {}", path.display()), e))?;
    if (pinned.st_dev, pinned.st_ino) != (cloned.st_dev, cloned.st_ino) {
        return Err(StepError::new(
            format!("bind the workspace {}", path.display()),
            std::io::Error::other("it is no longer the directory that was checked"),
        ));
    }
    Ok(tree)
}

fn clone_tree(host: &Path, recursive: bool, attrs: u64) -> Result<OwnedFd, StepError> {
    let c = cstr(host)?;
    let tree = sys::open_tree_clone(&c, recursive)
        .map_err(|e| StepError::new(format!("clone the mount of {}", host.display()), e))?;
    if attrs != 0 {
        sys::mount_setattr(tree.as_fd(), attrs, 0, None, recursive)
            .map_err(|e| StepError::new(format!("make {} read-only", host.display()), e))?;
    }
    Ok(tree)
}

/// The workspace through an idmapped mount, with a user namespace made for it that maps
/// the owner's ids to the agent's: on disk the owner's ids, to the agent its own, so what
/// the agent creates belongs to the owner.
fn idmap_workspace(
    tree: &OwnedFd,
    host: &Path,
    spec: &Spec,
) -> Result<sys::UsernsHolder, StepError> {
    let holder = sys::spawn_userns_holder()
        .map_err(|e| StepError::new("create the workspace's idmapping namespace", e))?;
    let pid = holder.pid;
    let result = (|| {
        let ids = &spec.ids;
        // The runner is in the host's pid namespace: the holder's pid is a host pid.
        let dir = Path::new("/proc").join(pid.to_string());
        let w = |file: &str, v: String| {
            std::fs::write(dir.join(file), &v)
                .map_err(|e| StepError::new(format!("write {v:?} to the idmapping's {file}"), e))
        };
        w(
            "uid_map",
            format!("{} {} 1\n", ids.owner_uid, ids.agent_uid),
        )?;
        w(
            "gid_map",
            format!("{} {} 1\n", ids.owner_gid, ids.agent_gid),
        )?;
        let userns = std::fs::File::open(dir.join("ns/user"))
            .map_err(|e| StepError::new("open the idmapping namespace", e))?;
        idmap(tree, host, userns.as_fd())
    })();
    result.map(|()| holder)
}

/// Idmaps the cloned workspace with `userns` (which maps the owner's ids to the agent's). A
/// file system that cannot idmap fails the run with its name (no fallback: a plain bind
/// would hand the agent files it cannot write, or create files owned by the agent's uid in
/// the owner's tree).
fn idmap(tree: &OwnedFd, host: &Path, userns: BorrowedFd<'_>) -> Result<(), StepError> {
    sys::mount_setattr(tree.as_fd(), IDMAP | NOSUID | NODEV, 0, Some(userns), false).map_err(|e| {
        let fs = fs_type(host);
        StepError::new(
            format!(
                "idmap the workspace {} (file system {fs}): this file system cannot \
                         be idmapped; put the workspace on ext4, xfs, btrfs or tmpfs",
                host.display()
            ),
            e,
        )
    })
}

/// A name for the file system type of `path` (for the idmap error).
fn fs_type(path: &Path) -> String {
    match nix::sys::statfs::statfs(path) {
        Ok(st) => format!("{:?}", st.filesystem_type()),
        Err(e) => format!("unknown ({e})"),
    }
}
