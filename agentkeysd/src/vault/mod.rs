//! Secret memory: where decrypted secrets and keys live while the daemon holds them.
//!
//! A [`Vault`] is a small page-granular arena. Each region is `memfd_secret(2)` memory
//! (removed from the kernel's direct map, so neither other processes — not even root
//! through `/proc/PID/mem` — nor most kernel paths can read it), or, when the kernel has
//! no secretmem and the policy allows it, anonymous memory that is `mlock`ed,
//! `MADV_DONTDUMP` and `MADV_WIPEONFORK`. Slots ([`SecretBuf`]) are carved from regions in
//! 64-byte granules; regions are 16 KiB (larger only when one slot needs more), because
//! every secretmem page costs a page fault of ~20 µs and counts against `RLIMIT_MEMLOCK`.
//!
//! Secrets enter and leave the daemon as sealed memfds ([`read_sealed_memfd`],
//! [`sealed_memfd_from_secret`]); the client side of that exchange is here too
//! ([`sealed_memfd_from_bytes`], [`read_memfd_to_vec`]).
//!
//! Invariants:
//! - Every slot is zero when handed out and is zeroized (volatile writes) when released.
//! - A region stays mapped while any slot in it lives (each slot holds an `Arc` to its
//!   region). The first region lives as long as the vault; at most one other empty region
//!   is kept as a spare, further empty regions are unmapped when their last slot goes.
//!   Everything is unmapped when the last [`Vault`] clone and the last [`SecretBuf`] are gone.
//! - The fallback never runs unlocked: if `mlock` fails (e.g. `RLIMIT_MEMLOCK`), allocation
//!   fails (fail closed).
//! - Secret bytes are never formatted: `SecretBuf`'s `Debug` prints `<secret>`, and no
//!   error here carries secret bytes.
//! - `unsafe` is confined to `sys.rs`.
//!
//! Non-goals:
//! - A secret in flight sits in a memfd's page cache, which is in the kernel direct map;
//!   that is unavoidable when secrets travel as file descriptors. The memfd is sealed and
//!   lives only for one request.
//! - Copies made to send a secret go through a [`bounce`] buffer (mlocked, not dumped,
//!   zeroized, unmapped after the call) rather than the heap or stack, so no long-lived
//!   copy is left behind — and because kernel paths that pin user pages (GUP: `vmsplice`,
//!   `O_DIRECT`) fail on secretmem pages.
//! - Protection against root that can load kernel code, or against reading the daemon's own
//!   address space through a bug in the daemon.

mod arena;
mod bounce;
mod memfd;
mod scrub;
mod secret;
mod sys;

use std::fmt;
use std::io;
use std::sync::Arc;

pub use memfd::{
    MemfdSecret, memfd_secret, memfd_secret_available, probe_memfd_secret, read_memfd_to_vec,
    read_sealed_memfd, sealed_memfd_from_bytes, sealed_memfd_from_secret,
};
pub use scrub::scrubbed;
pub use secret::SecretBuf;

use arena::Arena;

/// Largest secret a client may store (shared with the runner, which reads secrets the same
/// way).
pub use agentkeys_sandbox::sealed::MAX_SECRET_LEN;

/// Largest slot [`Vault::alloc`] hands out: a maximal secret plus room for an AEAD tag and
/// nonce, so ciphertext can be decrypted in place.
pub const MAX_SLOT_LEN: usize = MAX_SECRET_LEN + 64;

/// Which memory may hold secrets (configuration `secret_memory`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SecretMemoryPolicy {
    /// `memfd_secret` if the kernel has it, else the mlock fallback, with a warning.
    #[default]
    Prefer,
    /// `memfd_secret` or nothing: [`Vault::new`] fails and the daemon refuses to start.
    Require,
    /// Never `memfd_secret` (e.g. hosts that hibernate: secretmem blocks hibernation).
    Mlock,
}

/// Which memory a [`Vault`] actually uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretMemoryKind {
    /// `memfd_secret(2)` pages, absent from the kernel direct map.
    MemfdSecret,
    /// Anonymous pages, `mlock`ed, `MADV_DONTDUMP`, `MADV_WIPEONFORK`.
    Mlock,
}

impl SecretMemoryKind {
    /// The name `status` shows: `"memfd_secret"` or `"mlock"`.
    pub fn as_str(self) -> &'static str {
        match self {
            SecretMemoryKind::MemfdSecret => "memfd_secret",
            SecretMemoryKind::Mlock => "mlock",
        }
    }
}

impl fmt::Display for SecretMemoryKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What went wrong while getting secret memory; each variant names the failed step.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// Policy `require`, and `memfd_secret(2)` failed.
    #[error(
        "memfd_secret(2) is not available, and secret_memory = \"require\" \
         (it needs Linux >= 5.14 with CONFIG_SECRETMEM; before 6.5 also the boot parameter \
         secretmem.enable=1; and no seccomp filter denying it); \
         set secret_memory = \"prefer\" to fall back to locked memory"
    )]
    SecretMemUnavailable(#[source] io::Error),
    /// `memfd_secret(2)` failed while growing an arena that already uses it.
    #[error("could not create a memfd_secret region")]
    SecretMemCreate(#[source] io::Error),
    /// `ftruncate` of a new secretmem region failed.
    #[error("could not size a {len}-byte secret memory region")]
    Resize {
        /// Region size in bytes.
        len: usize,
        /// The `ftruncate` error.
        #[source]
        source: io::Error,
    },
    /// `mmap` failed.
    #[error(
        "could not map {len} bytes of secret memory (EAGAIN means RLIMIT_MEMLOCK is used up: \
         raise LimitMEMLOCK= or grant CAP_IPC_LOCK)"
    )]
    Map {
        /// Mapping size in bytes.
        len: usize,
        /// The `mmap` error.
        #[source]
        source: io::Error,
    },
    /// `mlock` failed; the memory is not used unlocked.
    #[error(
        "could not lock {len} bytes of memory into RAM (RLIMIT_MEMLOCK is probably used up: \
         raise LimitMEMLOCK= or grant CAP_IPC_LOCK)"
    )]
    Lock {
        /// Mapping size in bytes.
        len: usize,
        /// The `mlock` error.
        #[source]
        source: io::Error,
    },
    /// `madvise` failed for a protection the fallback relies on.
    #[error("could not apply {advice} to {len} bytes of secret memory")]
    Advise {
        /// Mapping size in bytes.
        len: usize,
        /// The advice, e.g. `MADV_DONTDUMP`.
        advice: &'static str,
        /// The `madvise` error.
        #[source]
        source: io::Error,
    },
    /// The requested slot is larger than [`MAX_SLOT_LEN`].
    #[error("a secret slot of {len} bytes was requested; the limit is {max} bytes")]
    TooLarge {
        /// Requested length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A zero-length slot was requested.
    #[error("a secret slot of 0 bytes was requested")]
    Empty,
    /// A fresh region had no room for the slot it was made for (a bug in the allocator).
    #[error("internal error: a new {region_len}-byte region has no room for {len} bytes")]
    RegionTooSmall {
        /// Requested length.
        len: usize,
        /// Size of the new region.
        region_len: usize,
    },
}

/// What went wrong while moving a secret through a memfd; each variant names the step.
#[derive(Debug, thiserror::Error)]
pub enum MemfdError {
    /// The incoming memfd failed a check, or could not be read.
    #[error(transparent)]
    Sealed(#[from] agentkeys_sandbox::sealed::SealedError),
    /// The memfd holds no bytes.
    #[error("the secret is empty")]
    Empty,
    /// No vault slot for the incoming secret.
    #[error("no secret memory for the incoming secret")]
    Vault(#[source] VaultError),
    /// No bounce buffer for the outgoing secret.
    #[error("no locked bounce buffer for the outgoing secret")]
    Bounce(#[source] VaultError),
    /// `memfd_create` failed.
    #[error("could not create a memfd")]
    Create(#[source] io::Error),
    /// `write` to the new memfd failed.
    #[error("could not write the memfd")]
    Write(#[source] io::Error),
    /// `F_ADD_SEALS` failed.
    #[error("could not seal the memfd")]
    Seal(#[source] io::Error),
}

/// Counters for `status` and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VaultStats {
    /// Mapped regions.
    pub regions: usize,
    /// Bytes mapped across all regions.
    pub mapped_bytes: usize,
    /// Live [`SecretBuf`]s.
    pub slots_in_use: usize,
}

/// Handle to the secret-memory arena. Cheap to clone; all clones share one arena.
#[derive(Clone)]
pub struct Vault {
    arena: Arc<Arena>,
}

impl Vault {
    /// Maps the first region, choosing the memory kind from `policy`.
    ///
    /// With [`SecretMemoryPolicy::Prefer`] a missing `memfd_secret` is logged (once) and the
    /// mlock fallback used; with [`SecretMemoryPolicy::Require`] it is an error.
    pub fn new(policy: SecretMemoryPolicy) -> Result<Vault, VaultError> {
        Ok(Vault {
            arena: Arc::new(Arena::new(policy)?),
        })
    }

    /// The memory this vault uses.
    pub fn kind(&self) -> SecretMemoryKind {
        self.arena.kind()
    }

    /// A zero-filled slot of exactly `len` bytes, `1..=`[`MAX_SLOT_LEN`].
    pub fn alloc(&self, len: usize) -> Result<SecretBuf, VaultError> {
        let mem = self.arena.alloc(len)?;
        Ok(SecretBuf::new(Arc::clone(&self.arena), mem, len))
    }

    /// Regions, mapped bytes and live slots.
    pub fn stats(&self) -> VaultStats {
        self.arena.stats()
    }
}

impl fmt::Debug for Vault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vault")
            .field("kind", &self.kind())
            .field("stats", &self.stats())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_parses_lowercase_names_and_defaults_to_prefer() {
        #[derive(serde::Deserialize)]
        struct Cfg {
            m: SecretMemoryPolicy,
        }
        for (text, want) in [
            ("prefer", SecretMemoryPolicy::Prefer),
            ("require", SecretMemoryPolicy::Require),
            ("mlock", SecretMemoryPolicy::Mlock),
        ] {
            let cfg: Cfg = toml::from_str(&format!("m = \"{text}\"")).unwrap();
            assert_eq!(cfg.m, want);
        }
        assert!(toml::from_str::<Cfg>("m = \"Prefer\"").is_err());
        assert_eq!(SecretMemoryPolicy::default(), SecretMemoryPolicy::Prefer);
    }

    #[test]
    fn vault_and_secrets_can_cross_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Vault>();
        send_sync::<SecretBuf>();
    }

    #[test]
    fn vault_is_usable_from_many_threads() {
        let vault = Vault::new(SecretMemoryPolicy::Prefer).unwrap();
        std::thread::scope(|s| {
            for t in 0..4u8 {
                let vault = vault.clone();
                s.spawn(move || {
                    for i in 0..200usize {
                        let mut buf = vault.alloc(1 + (i * 97) % 3000).unwrap();
                        buf.expose_secret_mut().fill(t);
                        assert!(buf.expose_secret().iter().all(|&b| b == t));
                    }
                });
            }
        });
        let stats = vault.stats();
        assert_eq!(stats.slots_in_use, 0);
        assert!(stats.regions <= 2, "{stats:?}");
    }

    #[test]
    fn kind_names_match_status_output() {
        assert_eq!(SecretMemoryKind::MemfdSecret.as_str(), "memfd_secret");
        assert_eq!(SecretMemoryKind::Mlock.as_str(), "mlock");
    }

    #[test]
    fn vault_debug_shows_kind_and_stats() {
        let vault = Vault::new(SecretMemoryPolicy::Mlock).unwrap();
        let _slot = vault.alloc(10).unwrap();
        let text = format!("{vault:?}");
        assert!(
            text.contains("Mlock") && text.contains("slots_in_use: 1"),
            "{text}"
        );
    }
}
