//! Step 3, the runner's: the sandbox's `/etc` from a snapshot, where the spec names a cache
//! (`Spec::etc_cache`; the daemon's is `<runtime dir>/etc-cache`).
//!
//! Without one, the init copies the fs policy's small files (`mounts::copied`) into the new
//! root and writes its `/etc/passwd` and `/etc/group` at every start: about 0.3 ms of the
//! init's time, on the start's critical path. A snapshot is a directory holding those
//! copies, the two account files, and an empty mount point for every other source under
//! `/etc` (the policy's directories and large files, which stay mounts); a run attaches one
//! read-only clone of it at `/etc` instead, first, and the other sources beneath it.
//!
//! A snapshot is named by a digest of its manifest: each copied file's path and identity on
//! the host (device, inode, size, mode, mtime and ctime to the nanosecond), each mount
//! point, the account files' text. The runner stats the host's files at every start, as
//! the copies did; a file changed, replaced or gone gives another name, so a snapshot is
//! never stale, only no longer used. It is built the first time its name is missing, in a
//! directory of this runner's own that is renamed into place (of two runners building the
//! same one, one rename wins, the other's copy is removed), and never changed after.
//!
//! Not snapshotted (the init copies, as without a cache): a file whose ctime is under
//! [`RACY`] old (two writes within one tick of the file system's clock can leave it the
//! same: git's "racy" files); a cache that is not a directory of this user's that no one
//! else may write; a cache that holds [`MAX_SNAPSHOTS`] already (a starting daemon empties
//! its cache when no run goes on: a sandbox that outlived its daemon may have its `/etc`
//! from one); a configuration that binds `/etc` itself (`runner.ro_paths`). A failure here
//! never fails the run: it costs the copies.

use std::hash::{Hash, Hasher};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::filesystem;
use super::mounts::{self, Kind, SmallFile, Source, Sources};
use crate::spec::Spec;

/// The directory a snapshot stands for.
const ETC: &str = "/etc";

/// Most snapshots in a cache (each a few hundred KiB of tmpfs at most); past it, runs copy.
pub const MAX_SNAPSHOTS: usize = 32;

/// A file changed less than this long ago is not snapshotted (see the module's doc).
const RACY: Duration = Duration::from_secs(2);

/// Puts the run's `/etc` snapshot first among `list` (made if missing), and says which of
/// the policy's small files (`small`, as `mounts::clone_sources` found them) it holds; no
/// snapshot (`etc` unset, `list` as it was) when the init is to copy them.
pub fn put_first(spec: &Spec, small: &[SmallFile], mut list: Vec<Source>) -> Sources {
    match snapshot(spec, small, &list) {
        Some((source, covered)) => {
            list.insert(0, source);
            Sources {
                list,
                etc: Some(covered),
                workspace: None,
            }
        }
        None => Sources {
            list,
            etc: None,
            workspace: None,
        },
    }
}

fn snapshot(
    spec: &Spec,
    small: &[SmallFile],
    sources: &[Source],
) -> Option<(Source, Vec<PathBuf>)> {
    let cache = spec.etc_cache.as_deref()?;
    let etc = Path::new(ETC);
    if sources.iter().any(|s| s.inside == etc) || !trusted(cache) {
        return None;
    }
    let manifest = Manifest::of(etc, small, sources, filesystem::accounts(spec));
    let dir = ensure(cache, &manifest, RACY).ok()?;
    let ro = mounts::READ_ONLY;
    let source = mounts::source(&under(&dir, etc), etc, false, ro).ok()?;
    Some((source, manifest.files.into_iter().map(|f| f.path).collect()))
}

/// A directory of this user's that no one else may write (a snapshot from it becomes the
/// agent's `/etc`).
fn trusted(cache: &Path) -> bool {
    std::fs::symlink_metadata(cache).is_ok_and(|m| {
        m.is_dir() && m.uid() == nix::unistd::geteuid().as_raw() && m.mode() & 0o022 == 0
    })
}

/// What a snapshot holds.
#[derive(Debug)]
struct Manifest {
    /// The directory it stands for (`/etc`; a temporary one in tests).
    root: PathBuf,
    files: Vec<FileId>,
    points: Vec<(PathBuf, Kind)>,
    accounts: [(&'static str, String); 2],
}

/// A copied file as the host has it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileId {
    path: PathBuf,
    dev: u64,
    ino: u64,
    size: u64,
    mode: u32,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileId {
    fn of(path: &Path, m: &std::fs::Metadata) -> FileId {
        FileId {
            path: path.to_owned(),
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mode: m.mode(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }

    /// Changed less than `window` before `now` (or in the future).
    fn racy(&self, now: SystemTime, window: Duration) -> bool {
        let (secs, nanos) = self.ctime;
        let changed = u64::try_from(secs)
            .ok()
            .and_then(|s| {
                let nanos = u32::try_from(nanos).ok()?;
                SystemTime::UNIX_EPOCH.checked_add(Duration::new(s, nanos))
            })
            .unwrap_or(SystemTime::UNIX_EPOCH);
        now.duration_since(changed).map_or(true, |age| age < window)
    }
}

impl Manifest {
    /// The small files under `root` (as the runner found them at this start), and a mount
    /// point for every source beneath `root`.
    fn of(
        root: &Path,
        small: &[SmallFile],
        sources: &[Source],
        accounts: [(&'static str, String); 2],
    ) -> Manifest {
        let files = (small.iter())
            .filter(|(path, _)| path.starts_with(root))
            .map(|(path, meta)| FileId::of(path, meta))
            .collect();
        let points = sources
            .iter()
            .filter(|s| s.inside.starts_with(root) && s.inside != root)
            .map(|s| (s.inside.clone(), s.kind))
            .collect();
        Manifest {
            root: root.to_owned(),
            files,
            points,
            accounts,
        }
    }

    /// The snapshot's name: 128 bits of digest of everything it holds.
    fn name(&self) -> String {
        let text = format!(
            "{:?}",
            (&self.root, &self.files, &self.points, &self.accounts)
        );
        let half = |salt: u8| {
            let mut h = std::hash::DefaultHasher::new();
            (salt, &text).hash(&mut h);
            h.finish()
        };
        format!("{:016x}{:016x}", half(1), half(2))
    }
}

/// Where the host path `path` is in the snapshot at `dir`.
fn under(dir: &Path, path: &Path) -> PathBuf {
    dir.join(path.strip_prefix("/").unwrap_or(path))
}

/// The snapshot for `m` in `cache`, built if it is not there.
fn ensure(cache: &Path, m: &Manifest, racy: Duration) -> io::Result<PathBuf> {
    let dir = cache.join(m.name());
    if dir.is_dir() {
        return Ok(dir);
    }
    if std::fs::read_dir(cache)?.count() >= MAX_SNAPSHOTS {
        return Err(io::Error::other("the cache is full"));
    }
    let now = SystemTime::now();
    if m.files.iter().any(|f| f.racy(now, racy)) {
        return Err(io::Error::other("a file changed just now"));
    }
    let tmp = cache.join(format!(".new-{}", std::process::id()));
    // A runner of the same pid that died while building.
    let _ = std::fs::remove_dir_all(&tmp);
    let made = fill(&tmp, m).and_then(|()| std::fs::rename(&tmp, &dir));
    if made.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    match made {
        Ok(()) => Ok(dir),
        // Another runner's rename came first.
        Err(_) if dir.is_dir() => Ok(dir),
        Err(e) => Err(e),
    }
}

/// Writes everything `m` holds under `dir` (new).
fn fill(dir: &Path, m: &Manifest) -> io::Result<()> {
    let mkdirs = |d: &Path| {
        std::fs::DirBuilder::new()
            .mode(0o755)
            .recursive(true)
            .create(d)
    };
    std::fs::DirBuilder::new().mode(0o755).create(dir)?;
    let root = under(dir, &m.root);
    mkdirs(&root)?;
    for f in &m.files {
        let from = filesystem::open_to_copy(&f.path)?;
        // The file opened is the one the manifest names (not one that replaced it since).
        if FileId::of(&f.path, &from.metadata()?) != *f {
            return Err(io::Error::other(format!("{} changed", f.path.display())));
        }
        let target = under(dir, &f.path);
        if let Some(parent) = target.parent() {
            mkdirs(parent)?;
        }
        filesystem::copy(&from, &f.path.to_string_lossy(), &target).map_err(|e| e.source)?;
    }
    for (point, kind) in &m.points {
        let target = under(dir, point);
        if let Some(parent) = target.parent() {
            mkdirs(parent)?;
        }
        filesystem::mount_point(&target, *kind)?;
    }
    for (name, text) in &m.accounts {
        std::fs::write(root.join(name), text)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cache (0700) and a stand-in for `/etc` with two small files, a large one and a
    /// directory, each a bind of the policy (and one that is missing).
    struct Host {
        _tmp: tempfile::TempDir,
        cache: PathBuf,
        etc: PathBuf,
    }

    fn host() -> Host {
        let tmp = tempfile::tempdir().unwrap();
        let cache = tmp.path().join("cache");
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&cache)
            .unwrap();
        let etc = tmp.path().join("etc");
        std::fs::create_dir_all(etc.join("ssl")).unwrap();
        std::fs::write(etc.join("hosts"), "127.0.0.1 localhost\n").unwrap();
        std::fs::write(etc.join("profile"), "PATH=/usr/bin\n").unwrap();
        std::fs::set_permissions(
            etc.join("profile"),
            std::os::unix::fs::PermissionsExt::from_mode(0o4640),
        )
        .unwrap();
        std::fs::write(etc.join("big"), vec![b'x'; mounts::COPY_MAX as usize + 1]).unwrap();
        Host {
            _tmp: tmp,
            cache,
            etc,
        }
    }

    fn source(inside: PathBuf, kind: Kind) -> Source {
        Source {
            fd: std::fs::File::open("/dev/null").unwrap().into(),
            inside,
            kind,
        }
    }

    fn accounts(uid: u32) -> [(&'static str, String); 2] {
        [
            ("passwd", format!("agent:x:{uid}:{uid}::/:/bin/sh\n")),
            ("group", format!("agent:x:{uid}:\n")),
        ]
    }

    impl Host {
        /// What the runner would have cloned: the large file and the directory.
        fn sources(&self) -> Vec<Source> {
            vec![
                source(self.etc.join("big"), Kind::File),
                source(self.etc.join("ssl"), Kind::Dir),
                source("/usr".into(), Kind::Dir),
            ]
        }

        /// The binds that are small files, found as `mounts::clone_sources` finds them.
        fn small(&self) -> Vec<SmallFile> {
            ["hosts", "profile", "big", "ssl", "missing"]
                .map(|name| self.etc.join(name))
                .into_iter()
                .filter_map(|path| {
                    let meta = std::fs::metadata(&path).ok()?;
                    mounts::copied(&meta).then_some((path, meta))
                })
                .collect()
        }

        fn manifest(&self, uid: u32) -> Manifest {
            Manifest::of(&self.etc, &self.small(), &self.sources(), accounts(uid))
        }

        fn snapshots(&self) -> usize {
            std::fs::read_dir(&self.cache).unwrap().count()
        }
    }

    #[test]
    fn a_snapshot_holds_the_small_files_the_accounts_and_the_mount_points() {
        let h = host();
        let m = h.manifest(1000);
        let covered: Vec<PathBuf> = m.files.iter().map(|f| f.path.clone()).collect();
        assert_eq!(covered, [h.etc.join("hosts"), h.etc.join("profile")]);
        let dir = ensure(&h.cache, &m, Duration::ZERO).unwrap();
        let etc = under(&dir, &h.etc);
        let read = |name: &str| std::fs::read_to_string(etc.join(name)).unwrap();
        assert_eq!(read("hosts"), "127.0.0.1 localhost\n");
        assert_eq!(read("passwd"), "agent:x:1000:1000::/:/bin/sh\n");
        assert_eq!(read("group"), "agent:x:1000:\n");
        // Permission bits kept, set-id bits dropped.
        let mode = std::fs::metadata(etc.join("profile")).unwrap().mode();
        assert_eq!(mode & 0o7777, 0o640);
        // Mount points for the sources beneath it, empty; nothing for the others.
        assert!(etc.join("ssl").is_dir());
        assert_eq!(std::fs::metadata(etc.join("big")).unwrap().len(), 0);
        assert!(!etc.join("missing").exists());
        assert!(!under(&dir, Path::new("/usr")).exists());
        // No leftover of the build beside it.
        assert_eq!(h.snapshots(), 1);
    }

    #[test]
    fn an_unchanged_host_reuses_its_snapshot_and_a_change_makes_another() {
        let h = host();
        let first = ensure(&h.cache, &h.manifest(1000), Duration::ZERO).unwrap();
        let ino = std::fs::metadata(&first).unwrap().ino();
        let again = ensure(&h.cache, &h.manifest(1000), Duration::ZERO).unwrap();
        assert_eq!(again, first);
        assert_eq!(std::fs::metadata(&again).unwrap().ino(), ino, "not rebuilt");
        // Rewritten in place, same size (and a new mtime: two writes within one tick of the
        // file system's clock can leave both times as they were, the racy case).
        std::fs::write(h.etc.join("hosts"), "127.0.0.2 localhost\n").unwrap();
        std::fs::File::options()
            .write(true)
            .open(h.etc.join("hosts"))
            .unwrap()
            .set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000))
            .unwrap();
        let changed = h.manifest(1000);
        let second = ensure(&h.cache, &changed, Duration::ZERO).unwrap();
        assert_ne!(second, first);
        let hosts = under(&second, &h.etc.join("hosts"));
        assert_eq!(
            std::fs::read_to_string(hosts).unwrap(),
            "127.0.0.2 localhost\n"
        );
        // Other accounts are another snapshot too.
        assert_ne!(h.manifest(1001).name(), changed.name());
        // A source that appeared beneath it (a new mount point) too.
        let mut more = h.sources();
        more.push(source(h.etc.join("pki"), Kind::Dir));
        let with_pki = Manifest::of(&h.etc, &h.small(), &more, accounts(1000));
        assert_ne!(with_pki.name(), changed.name());
        assert_eq!(h.snapshots(), 2);
    }

    #[test]
    fn a_file_changed_just_now_is_not_snapshotted() {
        let h = host();
        let m = h.manifest(1000);
        let err = ensure(&h.cache, &m, Duration::from_secs(3600)).unwrap_err();
        assert!(err.to_string().contains("just now"), "{err}");
        assert_eq!(h.snapshots(), 0);
    }

    #[test]
    fn a_file_replaced_after_the_manifest_fails_the_build_and_leaves_nothing() {
        let h = host();
        let m = h.manifest(1000);
        std::fs::remove_file(h.etc.join("hosts")).unwrap();
        std::fs::write(h.etc.join("hosts"), "10.0.0.1 evil\n").unwrap();
        let err = ensure(&h.cache, &m, Duration::ZERO).unwrap_err();
        assert!(err.to_string().contains("changed"), "{err}");
        assert_eq!(h.snapshots(), 0);
    }

    #[test]
    fn a_full_cache_makes_no_more_snapshots() {
        let h = host();
        for i in 0..MAX_SNAPSHOTS {
            std::fs::create_dir(h.cache.join(format!("old{i}"))).unwrap();
        }
        let err = ensure(&h.cache, &h.manifest(1000), Duration::ZERO).unwrap_err();
        assert!(err.to_string().contains("full"), "{err}");
    }

    #[test]
    fn only_a_cache_no_one_else_may_write_is_used() {
        let h = host();
        assert!(trusted(&h.cache));
        std::fs::set_permissions(
            &h.cache,
            std::os::unix::fs::PermissionsExt::from_mode(0o770),
        )
        .unwrap();
        assert!(!trusted(&h.cache));
        let link = h.cache.with_file_name("link");
        std::os::unix::fs::symlink(&h.etc, &link).unwrap();
        assert!(!trusted(&link));
        assert!(!trusted(&h.etc.join("hosts")));
    }
}
