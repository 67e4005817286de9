//! The host master key: where it comes from, how it is read and created, what is derived
//! from it, and the key check that proves it belongs to the database.
//!
//! Sources, in order: the systemd credential `agentkeys.master` (`LoadCredentialEncrypted=`),
//! then `state_dir/master.key`. A new `master.key` is created only for a database that has
//! never sealed anything; otherwise a missing key is an error, because a new key would
//! silently orphan every stored secret. The key is read with read(2) straight into secret
//! memory and never passes through the heap.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use data_encoding::HEXLOWER_PERMISSIVE;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroize;

use super::error::{StoreError, random_fill};
use super::files::{fsync_dir, key_file_problem, our_uid};
use super::seal::{self, KEY_LEN, NONCE_LEN};
use crate::vault::{SecretBuf, Vault};

/// File name of the systemd credential (in `$CREDENTIALS_DIRECTORY`).
pub const CREDENTIAL_FILE: &str = "agentkeys.master";
/// File name of the key in the state directory.
pub const STATE_KEY_FILE: &str = "master.key";

const HEX_LEN: usize = 2 * KEY_LEN;
const LABEL_CREDENTIAL_KEY: &[u8] = b"AgentKeys-v1 credential key";
const LABEL_AUDIT_KEY: &[u8] = b"AgentKeys-v1 audit key";
const LABEL_HOST_KEY: &[u8] = b"AgentKeys-v1 host signing key";
const LABEL_LOGIN_WRAP_KEY: &[u8] = b"AgentKeys-v1 login wrap key";
const KEY_CHECK_PLAINTEXT: &[u8] = b"AgentKeys-v1 key check plaintext";
const KEY_CHECK_AAD: &[u8] = b"AgentKeys-v1 key check";

/// Where the master key in use came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// The systemd credential `agentkeys.master`.
    SystemdCredential(PathBuf),
    /// An existing `state_dir/master.key`.
    StateFile(PathBuf),
    /// `state_dir/master.key`, created by this start.
    Created(PathBuf),
}

impl KeySource {
    /// The file the key was read from or written to.
    pub fn path(&self) -> &Path {
        match self {
            KeySource::SystemdCredential(p) | KeySource::StateFile(p) | KeySource::Created(p) => p,
        }
    }
}

/// The keys derived from the master key. The master key itself is dropped after derivation.
#[derive(Debug)]
pub(crate) struct Keys {
    /// Seals credential values and the key check.
    pub credential: SecretBuf,
    /// Authenticates the audit chain's head.
    pub audit: SecretBuf,
    /// The Ed25519 seed of the host key that signs approval decisions. Derived rather
    /// than stored: it lives exactly as long as the master key, and children that kept its
    /// public half keep trusting the daemon across restarts.
    pub host: SecretBuf,
    /// Mixed into every login key's key-encryption key (see `login.rs`), so that a stolen
    /// database alone allows no offline guessing of login passwords.
    pub login_wrap: SecretBuf,
}

impl Keys {
    pub(crate) fn derive(vault: &Vault, master: &SecretBuf) -> Result<Keys, StoreError> {
        Ok(Keys {
            credential: derive(vault, master, LABEL_CREDENTIAL_KEY)?,
            audit: derive(vault, master, LABEL_AUDIT_KEY)?,
            host: derive(vault, master, LABEL_HOST_KEY)?,
            login_wrap: derive(vault, master, LABEL_LOGIN_WRAP_KEY)?,
        })
    }
}

/// HMAC-SHA256(master, label) into secret memory.
fn derive(vault: &Vault, master: &SecretBuf, label: &[u8]) -> Result<SecretBuf, StoreError> {
    // HMAC pads the key into a block on the stack: scrub it with the frame.
    crate::vault::scrubbed(|| derive_inner(vault, master, label))
}

fn derive_inner(vault: &Vault, master: &SecretBuf, label: &[u8]) -> Result<SecretBuf, StoreError> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(master.expose_secret()).map_err(|_| {
        StoreError::Crypto {
            step: "HMAC key setup",
        }
    })?;
    mac.update(label);
    let mut out = mac.finalize().into_bytes();
    let key = seal::secret_copy(vault, &out);
    out.as_mut_slice().zeroize();
    key
}

/// The files to look at, in order (for lookups and for the "missing" message).
pub(crate) fn candidates(state_dir: &Path, credentials_dir: Option<&Path>) -> Vec<PathBuf> {
    let mut out = Vec::with_capacity(2);
    if let Some(dir) = credentials_dir {
        out.push(dir.join(CREDENTIAL_FILE));
    }
    out.push(state_dir.join(STATE_KEY_FILE));
    out
}

/// Find and read the master key; create one only when `may_create` (a database that has
/// never sealed anything).
pub(crate) fn obtain(
    vault: &Vault,
    state_dir: &Path,
    credentials_dir: Option<&Path>,
    may_create: bool,
    db_path: &Path,
) -> Result<(SecretBuf, KeySource), StoreError> {
    if let Some(dir) = credentials_dir {
        let path = dir.join(CREDENTIAL_FILE);
        if exists(&path)? {
            let key = load(vault, &path)?;
            return Ok((key, KeySource::SystemdCredential(path)));
        }
    }
    let path = state_dir.join(STATE_KEY_FILE);
    if exists(&path)? {
        let key = load(vault, &path)?;
        return Ok((key, KeySource::StateFile(path)));
    }
    if !may_create {
        let looked = candidates(state_dir, credentials_dir)
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        return Err(StoreError::MasterKeyMissing {
            db: db_path.to_owned(),
            looked,
        });
    }
    let key = create(vault, state_dir)?;
    Ok((key, KeySource::Created(path)))
}

/// Whether something (even a dangling symlink) is at `path`.
fn exists(path: &Path) -> Result<bool, StoreError> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(StoreError::MasterKeyRead {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Read a key file: 32 raw bytes, or 64 hex characters with an optional trailing newline.
pub(crate) fn load(vault: &Vault, path: &Path) -> Result<SecretBuf, StoreError> {
    let invalid = |reason: String| StoreError::MasterKeyInvalid {
        path: path.to_owned(),
        reason,
    };
    let read_err = |source| StoreError::MasterKeyRead {
        path: path.to_owned(),
        source,
    };
    // O_NOFOLLOW: a symlink is refused, not followed; O_NONBLOCK: a FIFO cannot hang us
    // before the regular-file check below.
    let mut file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(invalid("it is a symbolic link".to_owned()));
        }
        Err(e) => return Err(read_err(e)),
    };
    let md = file.metadata().map_err(read_err)?;
    if let Some(reason) = key_file_problem(md.is_file(), md.uid(), md.mode(), our_uid()) {
        return Err(invalid(reason));
    }
    // One spare byte beyond the longest valid form detects a file that is too long.
    let mut raw = vault.alloc(HEX_LEN + 2)?;
    let n = read_full(&mut file, raw.expose_secret_mut()).map_err(read_err)?;
    let bytes = raw.expose_secret();
    let hex_len = match (n, bytes.get(HEX_LEN)) {
        (KEY_LEN, _) => None,
        (HEX_LEN, _) => Some(HEX_LEN),
        (65, Some(b'\n')) => Some(HEX_LEN),
        _ => {
            return Err(invalid(format!(
                "it is {n} bytes long; expected 32 raw bytes or 64 hex characters"
            )));
        }
    };
    let Some(hex_len) = hex_len else {
        // 32 bytes that are all hex digits are half of a hex key cut short, not random
        // bytes (the odds of that are 1 in 10^34): refuse rather than use 128 bits.
        if bytes
            .get(..KEY_LEN)
            .is_some_and(|b| b.iter().all(u8::is_ascii_hexdigit))
        {
            return Err(invalid(
                "it is 32 hexadecimal characters: a 64-character hex key cut in half?".to_owned(),
            ));
        }
        raw.truncate(KEY_LEN);
        return Ok(raw);
    };
    let mut key = vault.alloc(KEY_LEN)?;
    let decoded = match (
        bytes.get(..hex_len),
        key.expose_secret_mut().get_mut(..KEY_LEN),
    ) {
        (Some(src), Some(dst)) => HEXLOWER_PERMISSIVE.decode_mut(src, dst).is_ok(),
        _ => false,
    };
    if !decoded {
        return Err(invalid(
            "it is 64 bytes long but not hexadecimal".to_owned(),
        ));
    }
    Ok(key)
}

/// read(2) until `buf` is full or end of file.
fn read_full(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while let Some(rest) = buf.get_mut(filled..) {
        if rest.is_empty() {
            break;
        }
        match file.read(rest) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Removes temp files of a key creation that was interrupted (between writing the temp
/// file and unlinking it): each holds a key. Best effort; returns how many went.
pub(crate) fn remove_stale_temp_keys(state_dir: &Path) -> usize {
    let prefix = format!(".{STATE_KEY_FILE}.");
    let Ok(entries) = fs::read_dir(state_dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(&prefix)
            && name.ends_with(".tmp")
            && fs::remove_file(entry.path()).is_ok()
        {
            tracing::warn!(path = %entry.path().display(), "removed a key file left by an interrupted start");
            removed += 1;
        }
    }
    removed
}

/// Create `state_dir/master.key` with 32 fresh random bytes, atomically and never replacing
/// an existing key: write a private temp file, fsync it, link it into place (link fails
/// rather than replace), unlink the temp name, fsync the directory.
fn create(vault: &Vault, state_dir: &Path) -> Result<SecretBuf, StoreError> {
    let final_path = state_dir.join(STATE_KEY_FILE);
    let create_err = |source| StoreError::CreateMasterKey {
        path: final_path.clone(),
        source,
    };
    let mut key = vault.alloc(KEY_LEN)?;
    random_fill(key.expose_secret_mut(), "the master key")?;
    let mut tag = [0u8; 8];
    random_fill(&mut tag, "a temporary file name")?;
    let tmp = state_dir.join(format!(
        ".{STATE_KEY_FILE}.{}.tmp",
        data_encoding::HEXLOWER.encode(&tag)
    ));
    let written =
        write_new_file(&tmp, key.expose_secret()).and_then(|()| fs::hard_link(&tmp, &final_path));
    // Best effort: on success the key lives on under its final name.
    let _ = fs::remove_file(&tmp);
    written.map_err(create_err)?;
    fsync_dir(state_dir).map_err(create_err)?;
    tracing::info!(path = %final_path.display(), "created a new master key");
    Ok(key)
}

/// Write `bytes` to a new 0600 file (never an existing one) and fsync it.
fn write_new_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// The `key_check` meta value: nonce ‖ AES-256-GCM(credential key, fixed text).
pub(crate) fn key_check_blob(vault: &Vault, keys: &Keys) -> Result<Vec<u8>, StoreError> {
    let sealed = seal::seal(vault, &keys.credential, KEY_CHECK_PLAINTEXT, KEY_CHECK_AAD)?;
    let mut blob = Vec::with_capacity(NONCE_LEN + sealed.sealed.len());
    blob.extend_from_slice(&sealed.nonce);
    blob.extend_from_slice(&sealed.sealed);
    Ok(blob)
}

/// Whether `keys` open the stored key check.
pub(crate) fn key_check_matches(
    vault: &Vault,
    keys: &Keys,
    blob: &[u8],
) -> Result<bool, StoreError> {
    let Some((nonce, sealed)) = blob.split_at_checked(NONCE_LEN) else {
        return Ok(false);
    };
    Ok(
        match seal::open(vault, &keys.credential, nonce, sealed, KEY_CHECK_AAD)? {
            Ok(plain) => plain.expose_secret() == KEY_CHECK_PLAINTEXT,
            Err(_) => false,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vault::SecretMemoryPolicy;
    use std::os::unix::fs::PermissionsExt;

    fn vault() -> Vault {
        Vault::new(SecretMemoryPolicy::Prefer).unwrap()
    }

    fn write_key(path: &Path, bytes: &[u8], mode: u32) {
        fs::write(path, bytes).unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn raw_and_hex_key_files_give_the_same_key() {
        let tmp = tempfile::tempdir().unwrap();
        let v = vault();
        let raw: Vec<u8> = (0u8..32).collect();
        let hex = format!("{}\n", data_encoding::HEXLOWER.encode(&raw));
        write_key(&tmp.path().join("raw"), &raw, 0o600);
        write_key(&tmp.path().join("hex"), hex.as_bytes(), 0o400);
        write_key(
            &tmp.path().join("hexnonl"),
            hex.trim_end().as_bytes(),
            0o600,
        );
        for name in ["raw", "hex", "hexnonl"] {
            let key = load(&v, &tmp.path().join(name)).unwrap();
            assert_eq!(key.expose_secret(), &raw[..], "{name}");
        }
    }

    #[test]
    fn key_file_of_wrong_length_or_mode_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let v = vault();
        let cases: [(&str, &[u8], u32); 5] = [
            ("short", &[1u8; 31], 0o600),
            ("long", &[1u8; 33], 0o600),
            ("nothex", &[b'g'; 64], 0o600),
            ("halfhex", &[b'a'; 32], 0o600),
            ("open", &[1u8; 32], 0o644),
        ];
        for (name, bytes, mode) in cases {
            let path = tmp.path().join(name);
            write_key(&path, bytes, mode);
            let err = load(&v, &path).unwrap_err();
            assert!(
                matches!(err, StoreError::MasterKeyInvalid { .. }),
                "{name}: {err:?}"
            );
        }
    }

    #[test]
    fn key_files_left_by_an_interrupted_creation_are_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let stale = tmp
            .path()
            .join(format!(".{STATE_KEY_FILE}.0011223344556677.tmp"));
        write_key(&stale, &[3u8; 32], 0o600);
        let other = tmp.path().join("agentkeys.db");
        write_key(&other, b"x", 0o600);
        assert_eq!(remove_stale_temp_keys(tmp.path()), 1);
        assert!(!stale.exists());
        assert!(other.exists());
    }

    #[test]
    fn symlinked_key_file_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let real = tmp.path().join("real");
        write_key(&real, &[3u8; 32], 0o600);
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let err = load(&vault(), &link).unwrap_err();
        assert!(
            matches!(err, StoreError::MasterKeyInvalid { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn created_master_key_is_0600_32_bytes_and_never_replaced() {
        let tmp = tempfile::tempdir().unwrap();
        let v = vault();
        let key = create(&v, tmp.path()).unwrap();
        let path = tmp.path().join(STATE_KEY_FILE);
        let md = fs::metadata(&path).unwrap();
        assert_eq!(md.mode() & 0o777, 0o600);
        assert_eq!(md.len(), 32);
        assert_eq!(
            load(&v, &path).unwrap().expose_secret(),
            key.expose_secret()
        );
        assert!(matches!(
            create(&v, tmp.path()),
            Err(StoreError::CreateMasterKey { .. })
        ));
        assert_eq!(
            load(&v, &path).unwrap().expose_secret(),
            key.expose_secret()
        );
        // No temp file is left behind.
        assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 1);
    }

    #[test]
    fn systemd_credential_wins_over_state_file() {
        let tmp = tempfile::tempdir().unwrap();
        let creds = tmp.path().join("creds");
        fs::create_dir(&creds).unwrap();
        write_key(&creds.join(CREDENTIAL_FILE), &[1u8; 32], 0o400);
        write_key(&tmp.path().join(STATE_KEY_FILE), &[2u8; 32], 0o600);
        let db = tmp.path().join("db");
        let (key, src) = obtain(&vault(), tmp.path(), Some(&creds), false, &db).unwrap();
        assert_eq!(key.expose_secret(), &[1u8; 32]);
        assert_eq!(
            src,
            KeySource::SystemdCredential(creds.join(CREDENTIAL_FILE))
        );
    }

    #[test]
    fn derived_keys_differ_from_each_other_and_the_master() {
        let v = vault();
        let mut master = v.alloc(KEY_LEN).unwrap();
        master.expose_secret_mut().fill(9);
        let keys = Keys::derive(&v, &master).unwrap();
        assert_ne!(keys.credential.expose_secret(), keys.audit.expose_secret());
        assert_ne!(keys.credential.expose_secret(), master.expose_secret());
        assert_eq!(keys.credential.len(), KEY_LEN);
    }

    #[test]
    fn key_check_tells_keys_apart() {
        let v = vault();
        let mut a = v.alloc(KEY_LEN).unwrap();
        a.expose_secret_mut().fill(1);
        let mut b = v.alloc(KEY_LEN).unwrap();
        b.expose_secret_mut().fill(2);
        let (ka, kb) = (Keys::derive(&v, &a).unwrap(), Keys::derive(&v, &b).unwrap());
        let blob = key_check_blob(&v, &ka).unwrap();
        assert!(key_check_matches(&v, &ka, &blob).unwrap());
        assert!(!key_check_matches(&v, &kb, &blob).unwrap());
        assert!(!key_check_matches(&v, &ka, &blob[..5]).unwrap());
    }
}
