//! A paired agent's identity on disk: what `pair` stores and `--agent` loads.
//!
//! Location: `$XDG_CONFIG_HOME/agentkeys/agents/<agent_id>.json` (`$HOME/.config` when
//! `XDG_CONFIG_HOME` is unset, empty or relative, as the XDG spec says). Both directories
//! are 0700, the file is 0600, all owned by the user. A file or directory that someone
//! else owns, or that others may read, is refused rather than used (like ssh's keys).
//!
//! Format (JSON, one object; unknown keys are ignored so later versions can add some):
//!
//! ```json
//! {
//!   "version": 1,
//!   "agent_id": "agt_…",
//!   "name": "ci-bot",            // null when the agent has no name we know of
//!   "owner": 1000,
//!   "session": "ses_…",
//!   "session_expires": 1795257727,
//!   "host_key": "<64 hex digits: the daemon's Ed25519 key that signed the approval>",
//!   "seed": "<64 hex digits: the agent's Ed25519 private key seed>",
//!   "created": 1795243327        // when this file was written (unix seconds)
//! }
//! ```
//!
//! Writes are atomic: a temporary file in the same directory, created 0600 with
//! `O_EXCL`, written, fsynced, renamed over the target, then the directory fsynced. A
//! crash leaves either the old file or the new one, never half of one.
//!
//! The seed is a secret (STYLE §6): it lives in `Zeroizing` buffers, the JSON text that
//! carries it is built in and parsed from a `Zeroizing` buffer of fixed capacity (no
//! reallocation leaves a copy behind), and `Debug` prints `<secret>`.

use std::ffi::OsString;
use std::fmt::{self, Write as _};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use agentkeysd::approvals::PUBLIC_KEY_LEN;
use agentkeysd::store::is_agent_id;
use data_encoding::{HEXLOWER, HEXLOWER_PERMISSIVE};
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::errors::{CliError, Exit};

/// Length of an Ed25519 seed.
pub const SEED_LEN: usize = 32;

/// The file format version written.
const FORMAT_VERSION: u32 = 1;

/// Largest identity file read; real ones are well under 1 KiB.
const MAX_FILE_LEN: usize = 16 * 1024;

/// A paired agent, as stored.
pub struct Identity {
    pub agent_id: String,
    pub name: Option<String>,
    pub owner: u32,
    pub session: String,
    pub session_expires: i64,
    pub host_key: [u8; PUBLIC_KEY_LEN],
    pub seed: Zeroizing<[u8; SEED_LEN]>,
    /// When the file was written (unix seconds).
    pub created: i64,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("agent_id", &self.agent_id)
            .field("name", &self.name)
            .field("owner", &self.owner)
            .field("session_expires", &self.session_expires)
            .field("seed", &"<secret>")
            .field("created", &self.created)
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// The name if known, else the id: how messages refer to the agent.
    pub fn label(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.agent_id)
    }
}

/// Why an identity could not be stored or loaded. Never carries secret bytes.
#[derive(Debug)]
pub enum IdentityError {
    /// Neither `XDG_CONFIG_HOME` nor `HOME` gives a usable directory.
    NoConfigDir,
    /// No file for this agent id or name.
    NotFound { selector: String, dir: PathBuf },
    /// Several files carry this name and were written at the same second.
    Ambiguous { selector: String, ids: Vec<String> },
    /// The daemon's agent id is not of the form `agt_…`: never used as a file name.
    BadAgentId(String),
    /// A file or directory someone else owns or others may read.
    Unsafe { path: PathBuf, why: String },
    /// Not a valid identity file.
    Corrupt { path: PathBuf, why: String },
    /// A system call failed.
    Io { path: PathBuf, source: io::Error },
}

impl IdentityError {
    fn io(path: &Path, source: io::Error) -> Self {
        IdentityError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// Problem → cause → fix.
    pub fn into_cli(self) -> CliError {
        match self {
            IdentityError::NoConfigDir => {
                CliError::new(Exit::Error, "cannot find the configuration directory")
                    .cause("neither XDG_CONFIG_HOME nor HOME is set to an absolute path")
                    .fix("set HOME (or XDG_CONFIG_HOME) and retry")
            }
            IdentityError::NotFound { selector, dir } => {
                CliError::new(Exit::NotFound, format!("no paired agent '{selector}' here"))
                    .cause(format!(
                        "{} holds no identity with that agent id or name",
                        dir.display()
                    ))
                    .fix(format!(
                        "pair first: agentkeysctl pair --name {}, and have the owner approve it",
                        suggest_name(&selector)
                    ))
            }
            IdentityError::Ambiguous { selector, ids } => CliError::usage(format!(
                "several paired agents are named '{selector}'"
            ))
            .cause(format!("identity files: {}", ids.join(", ")))
            .fix("name the agent by its id: --agent agt_…"),
            IdentityError::BadAgentId(id) => CliError::new(
                Exit::Error,
                "agentkeysd answered with an agent id that is not of the form agt_…",
            )
            .cause(format!("got '{}'", crate::output::sanitize(&id)))
            .fix("agentkeysctl and agentkeysd versions may differ; agentkeysctl status shows the daemon's"),
            IdentityError::Unsafe { path, why } => CliError::new(
                Exit::Denied,
                format!("refusing to use {}", path.display()),
            )
            .cause(why)
            .fix(format!(
                "it must belong to you and be private: chmod go-rwx {}, or remove it and pair again",
                path.display()
            )),
            IdentityError::Corrupt { path, why } => {
                CliError::new(Exit::Error, format!("{} is not a usable agent identity", path.display()))
                    .cause(why)
                    .fix("pair the agent again: agentkeysctl pair --recover AGENT")
            }
            IdentityError::Io { path, source } => {
                CliError::new(Exit::Error, format!("cannot access {}", path.display()))
                    .cause(source.to_string())
                    .fix("check the directory's permissions and free space")
            }
        }
    }
}

/// A name to put in the "pair first" hint: the selector when it can be a name.
fn suggest_name(selector: &str) -> &str {
    if agentkeysd::api::names::valid_name(selector) {
        selector
    } else {
        "NAME"
    }
}

/// `$XDG_CONFIG_HOME/agentkeys/agents`, or `$HOME/.config/agentkeys/agents`.
pub fn agents_dir() -> Result<PathBuf, IdentityError> {
    agents_dir_from(
        std::env::var_os("XDG_CONFIG_HOME"),
        std::env::var_os("HOME"),
    )
}

/// [`agents_dir`] from given environment values. Relative or empty values are ignored.
pub fn agents_dir_from(
    xdg_config_home: Option<OsString>,
    home: Option<OsString>,
) -> Result<PathBuf, IdentityError> {
    let absolute = |v: Option<OsString>| v.map(PathBuf::from).filter(|p| p.is_absolute());
    let base = match absolute(xdg_config_home) {
        Some(xdg) => xdg,
        None => absolute(home)
            .map(|h| h.join(".config"))
            .ok_or(IdentityError::NoConfigDir)?,
    };
    Ok(base.join("agentkeys").join("agents"))
}

/// Stores `id` as `<dir>/<agent_id>.json`, atomically, replacing an earlier file of the
/// same agent. Creates `dir` and its parent (0700) when missing. Returns the file's path.
pub fn write(dir: &Path, id: &Identity) -> Result<PathBuf, IdentityError> {
    if !is_agent_id(&id.agent_id) {
        return Err(IdentityError::BadAgentId(id.agent_id.clone()));
    }
    ensure_private_dir(dir)?;
    let text = render(id);
    let target = dir.join(format!("{}.json", id.agent_id));
    let (tmp_path, mut tmp) = create_temp(dir, &id.agent_id)?;
    // Everything after the temporary file exists removes it on failure: no debris holding
    // a seed is left behind.
    let result = (|| {
        tmp.write_all(text.as_bytes())
            .map_err(|e| IdentityError::io(&tmp_path, e))?;
        tmp.sync_all()
            .map_err(|e| IdentityError::io(&tmp_path, e))?;
        fs::rename(&tmp_path, &target).map_err(|e| IdentityError::io(&target, e))?;
        // The rename is durable only once the directory entry is.
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| IdentityError::io(dir, e))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp_path);
    }
    result.map(|()| target)
}

/// A fresh `O_EXCL` file `.<agent_id>.json.<random>.tmp` in `dir`, mode 0600.
fn create_temp(dir: &Path, agent_id: &str) -> Result<(PathBuf, File), IdentityError> {
    for _ in 0..8 {
        let mut salt = [0u8; 8];
        getrandom::fill(&mut salt)
            .map_err(|e| IdentityError::io(dir, io::Error::other(e.to_string())))?;
        let path = dir.join(format!(".{agent_id}.json.{}.tmp", HEXLOWER.encode(&salt)));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(f) => {
                // The umask can only take bits away; make the mode exactly 0600.
                f.set_permissions(fs::Permissions::from_mode(0o600))
                    .map_err(|e| IdentityError::io(&path, e))?;
                return Ok((path, f));
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(IdentityError::io(&path, e)),
        }
    }
    Err(IdentityError::io(
        dir,
        io::Error::new(io::ErrorKind::AlreadyExists, "no free temporary file name"),
    ))
}

/// Creates `dir` (and `agentkeys/` above it) 0700, or checks the existing ones.
fn ensure_private_dir(dir: &Path) -> Result<(), IdentityError> {
    let parent = dir.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(parent) = parent.and_then(Path::parent) {
        fs::create_dir_all(parent).map_err(|e| IdentityError::io(parent, e))?;
    }
    for d in parent.into_iter().chain([dir]) {
        match fs::DirBuilder::new().mode(0o700).create(d) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(IdentityError::io(d, e)),
        }
        let meta = fs::symlink_metadata(d).map_err(|e| IdentityError::io(d, e))?;
        if !meta.is_dir() {
            return Err(IdentityError::Unsafe {
                path: d.to_path_buf(),
                why: "it is not a directory".into(),
            });
        }
        check_owner(d, &meta)?;
        if meta.mode() & 0o777 != 0o700 {
            // Ours, so fix it rather than refuse: too open leaks, too closed (a umask
            // such as 0277) would make the next step fail.
            fs::set_permissions(d, fs::Permissions::from_mode(0o700))
                .map_err(|e| IdentityError::io(d, e))?;
        }
    }
    Ok(())
}

fn check_owner(path: &Path, meta: &fs::Metadata) -> Result<(), IdentityError> {
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        return Err(IdentityError::Unsafe {
            path: path.to_path_buf(),
            why: format!("it belongs to uid {}, not to you (uid {me})", meta.uid()),
        });
    }
    Ok(())
}

/// The JSON text of `id`, built in a buffer that is allocated once and wiped on drop.
fn render(id: &Identity) -> Zeroizing<String> {
    let quote = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "null".to_owned());
    let agent_id = quote(&id.agent_id);
    let name = id.name.as_deref().map_or_else(|| "null".to_owned(), quote);
    let session = quote(&id.session);
    let seed = Zeroizing::new(HEXLOWER.encode(id.seed.as_slice()));
    let capacity = 512 + agent_id.len() + name.len() + session.len() + seed.len();
    let mut text = Zeroizing::new(String::with_capacity(capacity));
    // Writing to a String cannot fail; the capacity covers every line below.
    let _ = write!(
        text,
        "{{\n  \"version\": {FORMAT_VERSION},\n  \"agent_id\": {agent_id},\n  \"name\": {name},\n  \
         \"owner\": {},\n  \"session\": {session},\n  \"session_expires\": {},\n  \
         \"host_key\": \"{}\",\n  \"seed\": \"",
        id.owner,
        id.session_expires,
        HEXLOWER.encode(&id.host_key),
    );
    text.push_str(&seed);
    let _ = write!(text, "\",\n  \"created\": {}\n}}\n", id.created);
    debug_assert!(text.len() <= capacity);
    text
}

/// The stored form; `seed` borrows from the (zeroizing) file buffer, so it is never
/// copied into an ordinary `String`.
#[derive(Deserialize)]
struct Stored<'a> {
    version: u32,
    agent_id: String,
    name: Option<String>,
    owner: u32,
    session: String,
    session_expires: i64,
    host_key: String,
    #[serde(borrow)]
    seed: &'a str,
    created: i64,
}

/// Reads the identity in `path`, checking that it is the user's own private file.
pub fn read(path: &Path) -> Result<Identity, IdentityError> {
    let file = File::open(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => IdentityError::NotFound {
            selector: path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
            dir: path.parent().map(Path::to_path_buf).unwrap_or_default(),
        },
        _ => IdentityError::io(path, e),
    })?;
    let meta = file.metadata().map_err(|e| IdentityError::io(path, e))?;
    check_owner(path, &meta)?;
    if meta.mode() & 0o077 != 0 {
        return Err(IdentityError::Unsafe {
            path: path.to_path_buf(),
            why: format!(
                "its mode is {:04o}: others may read the agent's private key",
                meta.mode() & 0o7777
            ),
        });
    }
    let bytes = read_limited(file, path)?;
    parse(&bytes, path)
}

fn read_limited(mut file: File, path: &Path) -> Result<Zeroizing<Vec<u8>>, IdentityError> {
    let mut buf = Zeroizing::new(vec![0u8; MAX_FILE_LEN + 1]);
    let mut len = 0;
    while len < buf.len() {
        match file.read(buf.get_mut(len..).unwrap_or_default()) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(IdentityError::io(path, e)),
        }
    }
    if len > MAX_FILE_LEN {
        return Err(corrupt(path, "it is larger than any identity file"));
    }
    buf.truncate(len);
    Ok(buf)
}

fn corrupt(path: &Path, why: impl Into<String>) -> IdentityError {
    IdentityError::Corrupt {
        path: path.to_path_buf(),
        why: why.into(),
    }
}

fn parse(bytes: &[u8], path: &Path) -> Result<Identity, IdentityError> {
    // serde_json's messages quote no input, so no seed digits can reach the error text.
    let stored: Stored<'_> =
        serde_json::from_slice(bytes).map_err(|e| corrupt(path, format!("invalid JSON: {e}")))?;
    if stored.version != FORMAT_VERSION {
        return Err(corrupt(
            path,
            format!(
                "format version {} (this agentkeysctl reads version {FORMAT_VERSION})",
                stored.version
            ),
        ));
    }
    if !is_agent_id(&stored.agent_id) {
        return Err(corrupt(path, "agent_id is not of the form agt_…"));
    }
    let mut host_key = [0u8; PUBLIC_KEY_LEN];
    decode_hex(&stored.host_key, &mut host_key)
        .map_err(|()| corrupt(path, "host_key is not 64 hex digits"))?;
    let mut seed = Zeroizing::new([0u8; SEED_LEN]);
    decode_hex(stored.seed, seed.as_mut_slice())
        .map_err(|()| corrupt(path, "seed is not 64 hex digits"))?;
    Ok(Identity {
        agent_id: stored.agent_id,
        name: stored.name,
        owner: stored.owner,
        session: stored.session,
        session_expires: stored.session_expires,
        host_key,
        seed,
        created: stored.created,
    })
}

/// Decodes exactly `out.len()` bytes of hex into `out`, allocating nothing.
fn decode_hex(hex: &str, out: &mut [u8]) -> Result<(), ()> {
    if hex.len() != 2 * out.len() {
        return Err(());
    }
    HEXLOWER_PERMISSIVE
        .decode_mut(hex.as_bytes(), out)
        .map(|_| ())
        .map_err(|_| ())
}

/// Finds the identity `selector` names in `dir`: an agent id (`agt_…`) names its file;
/// anything else is matched against the stored names, and when several files carry the
/// name the newest wins (a re-paired agent replaces an older one of the same name).
///
/// While matching names, a file that cannot be read (someone else's, readable by others,
/// damaged) is skipped: it may well be another agent's. Only when no file matches is the
/// first of them (by path) reported, as the agent may be in it.
pub fn find(dir: &Path, selector: &str) -> Result<Identity, IdentityError> {
    let not_found = || IdentityError::NotFound {
        selector: selector.to_owned(),
        dir: dir.to_path_buf(),
    };
    if is_agent_id(selector) {
        return read(&dir.join(format!("{selector}.json"))).map_err(|e| match e {
            IdentityError::NotFound { .. } => not_found(),
            other => other,
        });
    }
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(not_found()),
        Err(e) => return Err(IdentityError::io(dir, e)),
    };
    let mut best: Option<Identity> = None;
    let mut tied: Vec<String> = Vec::new();
    let mut unreadable: Option<(PathBuf, IdentityError)> = None;
    for entry in entries {
        let entry = entry.map_err(|e| IdentityError::io(dir, e))?;
        let file_name = entry.file_name();
        let Some(stem) = file_name.to_str().and_then(|n| n.strip_suffix(".json")) else {
            continue;
        };
        if !is_agent_id(stem) {
            continue;
        }
        let path = entry.path();
        let candidate = match read(&path) {
            Ok(c) => c,
            Err(e) => {
                if unreadable.as_ref().is_none_or(|(first, _)| path < *first) {
                    unreadable = Some((path, e));
                }
                continue;
            }
        };
        if candidate.name.as_deref() != Some(selector) {
            continue;
        }
        match &best {
            Some(b) if b.created > candidate.created => {}
            Some(b) if b.created == candidate.created => tied.push(candidate.agent_id),
            _ => {
                tied.clear();
                best = Some(candidate);
            }
        }
    }
    match best {
        None => Err(unreadable.map_or_else(not_found, |(_, e)| e)),
        Some(b) if tied.is_empty() => Ok(b),
        Some(b) => {
            let mut ids = tied;
            ids.push(b.agent_id);
            ids.sort();
            Err(IdentityError::Ambiguous {
                selector: selector.to_owned(),
                ids,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "agt_0123456789abcdefghjkmnpqrs";
    const ID2: &str = "agt_zzzzzzzzzzzzzzzzzzzzzzzzzz";

    fn identity(agent_id: &str, name: Option<&str>, created: i64) -> Identity {
        Identity {
            agent_id: agent_id.into(),
            name: name.map(Into::into),
            owner: 1000,
            session: "ses_0123456789abcdefghjkmnpqrs".into(),
            session_expires: 1_795_257_727,
            host_key: [0xab; 32],
            seed: Zeroizing::new([0x5e; 32]),
            created,
        }
    }

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().mode() & 0o7777
    }

    #[test]
    fn the_config_dir_follows_xdg_then_home() {
        assert_eq!(
            agents_dir_from(Some("/x".into()), Some("/home/a".into())).unwrap(),
            PathBuf::from("/x/agentkeys/agents")
        );
        assert_eq!(
            agents_dir_from(Some("relative".into()), Some("/home/a".into())).unwrap(),
            PathBuf::from("/home/a/.config/agentkeys/agents")
        );
        assert_eq!(
            agents_dir_from(Some("".into()), Some("/home/a".into())).unwrap(),
            PathBuf::from("/home/a/.config/agentkeys/agents")
        );
        assert!(matches!(
            agents_dir_from(None, Some("".into())),
            Err(IdentityError::NoConfigDir)
        ));
    }

    #[test]
    fn an_identity_round_trips_with_private_modes() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("agentkeys").join("agents");
        let path = write(&dir, &identity(ID, Some("ci-bot"), 5)).unwrap();
        assert_eq!(path, dir.join(format!("{ID}.json")));
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(dir.parent().unwrap()), 0o700);
        assert_eq!(mode(&path), 0o600);
        let back = read(&path).unwrap();
        assert_eq!(back.agent_id, ID);
        assert_eq!(back.name.as_deref(), Some("ci-bot"));
        assert_eq!(back.owner, 1000);
        assert_eq!(back.session, "ses_0123456789abcdefghjkmnpqrs");
        assert_eq!(back.session_expires, 1_795_257_727);
        assert_eq!(back.host_key, [0xab; 32]);
        assert_eq!(*back.seed, [0x5e; 32]);
        assert_eq!(back.created, 5);
        let json: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(json["seed"], "5e".repeat(32));
        assert_eq!(json["host_key"], "ab".repeat(32));
        assert_eq!(json["version"], 1);
    }

    #[test]
    fn writing_replaces_atomically_and_leaves_no_temporary_files() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("agents");
        write(&dir, &identity(ID, Some("old"), 1)).unwrap();
        write(&dir, &identity(ID, Some("new"), 2)).unwrap();
        let names: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, [format!("{ID}.json")]);
        assert_eq!(find(&dir, ID).unwrap().name.as_deref(), Some("new"));
    }

    #[test]
    fn a_failed_write_keeps_the_old_file_and_cleans_up() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("agents");
        let path = write(&dir, &identity(ID, Some("old"), 1)).unwrap();
        // A directory in the way of the rename makes the last step fail.
        let blocked = dir.join(format!("{ID2}.json"));
        fs::create_dir(&blocked).unwrap();
        fs::write(blocked.join("x"), b"x").unwrap();
        assert!(write(&dir, &identity(ID2, Some("x"), 1)).is_err());
        let leftovers = fs::read_dir(&dir)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".tmp")
            })
            .count();
        assert_eq!(leftovers, 0);
        assert_eq!(read(&path).unwrap().name.as_deref(), Some("old"));
    }

    #[test]
    fn loose_directories_are_tightened_and_loose_files_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("agents");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        let path = write(&dir, &identity(ID, None, 1)).unwrap();
        assert_eq!(mode(&dir), 0o700);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = read(&path).unwrap_err();
        assert!(matches!(err, IdentityError::Unsafe { .. }), "{err:?}");
        assert_eq!(err.into_cli().exit(), Exit::Denied);
    }

    #[test]
    fn agents_are_found_by_id_or_by_name_newest_first() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("agents");
        write(&dir, &identity(ID, Some("bot"), 1)).unwrap();
        write(&dir, &identity(ID2, Some("bot"), 2)).unwrap();
        fs::write(dir.join("notes.txt"), b"ignored").unwrap();
        assert_eq!(find(&dir, ID).unwrap().agent_id, ID);
        assert_eq!(find(&dir, "bot").unwrap().agent_id, ID2);
        let missing = find(&dir, "nobody").unwrap_err();
        assert!(matches!(missing, IdentityError::NotFound { .. }));
        let cli = missing.into_cli();
        assert_eq!(cli.exit(), Exit::NotFound);
        let crate::errors::CliError::Report(r) = cli else {
            panic!()
        };
        assert!(r.fix.unwrap().contains("agentkeysctl pair --name nobody"));
        assert!(matches!(
            find(&dir, "agt_00000000000000000000000000"),
            Err(IdentityError::NotFound { .. })
        ));
        assert!(matches!(
            find(&tmp.path().join("none"), "bot"),
            Err(IdentityError::NotFound { .. })
        ));
    }

    #[test]
    fn unreadable_files_are_skipped_by_a_name_search_and_reported_if_nothing_matches() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("agents");
        let loose = write(&dir, &identity(ID, Some("other"), 1)).unwrap();
        fs::set_permissions(&loose, fs::Permissions::from_mode(0o644)).unwrap();
        write(&dir, &identity(ID2, Some("bot"), 1)).unwrap();
        let damaged = dir.join("agt_aaaaaaaaaaaaaaaaaaaaaaaaaa.json");
        fs::write(&damaged, b"{").unwrap();
        fs::set_permissions(&damaged, fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(find(&dir, "bot").unwrap().agent_id, ID2);
        // Nothing matches: what could not be read is the likelier answer than "not here".
        let err = find(&dir, "nobody").unwrap_err();
        assert!(matches!(err, IdentityError::Unsafe { .. }), "{err:?}");
        fs::set_permissions(&loose, fs::Permissions::from_mode(0o600)).unwrap();
        let err = find(&dir, "nobody").unwrap_err();
        assert!(matches!(err, IdentityError::Corrupt { .. }), "{err:?}");
        fs::remove_file(&damaged).unwrap();
        assert!(matches!(
            find(&dir, "nobody"),
            Err(IdentityError::NotFound { .. })
        ));
    }

    #[test]
    fn equal_names_written_at_the_same_time_are_ambiguous() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("agents");
        write(&dir, &identity(ID, Some("bot"), 1)).unwrap();
        write(&dir, &identity(ID2, Some("bot"), 1)).unwrap();
        assert!(matches!(
            find(&dir, "bot"),
            Err(IdentityError::Ambiguous { .. })
        ));
    }

    #[test]
    fn agent_ids_that_could_escape_the_directory_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        for bad in ["../x", "agt_../../etc/passwd", "", "agt_"] {
            assert!(matches!(
                write(tmp.path(), &identity(bad, None, 1)),
                Err(IdentityError::BadAgentId(_))
            ));
        }
    }

    #[test]
    fn damaged_files_are_reported_without_their_contents() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("agents");
        let path = write(&dir, &identity(ID, None, 1)).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        for broken in [
            text.replace(&"5e".repeat(32), &"5e".repeat(31)),
            text.replace("\"version\": 1", "\"version\": 9"),
            text.replace(&"ab".repeat(32), "zz"),
            "{".to_owned(),
        ] {
            fs::write(&path, broken).unwrap();
            let err = read(&path).unwrap_err();
            assert!(matches!(err, IdentityError::Corrupt { .. }), "{err:?}");
            assert!(!format!("{err:?}").contains("5e5e"), "{err:?}");
        }
    }

    #[test]
    fn debug_never_shows_the_seed() {
        let text = format!("{:?}", identity(ID, None, 1));
        assert!(text.contains("<secret>"));
        assert!(!text.contains("94, 94"), "{text}"); // 0x5e = 94
    }
}
