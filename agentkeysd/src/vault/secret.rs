//! [`SecretBuf`]: one secret (or key, or ciphertext being decrypted in place) in a vault slot.
//!
//! Our own type rather than `secrecy::SecretBox`, whose bytes live on the heap: the same
//! discipline (no `Clone`, `Debug` says `<secret>`, bytes only through `expose_secret`), but
//! the bytes live in `memfd_secret` pages.

use std::fmt;
use std::sync::Arc;

use zeroize::Zeroize;

use super::arena::Arena;
use super::sys::SlotMem;

/// Bytes in secret memory. Zeroized and returned to the vault on drop.
///
/// Not `Clone`; `Debug` prints `<secret>`; no `Display` or `Serialize`. The bytes are
/// reachable only through [`expose_secret`](Self::expose_secret) and
/// [`expose_secret_mut`](Self::expose_secret_mut).
pub struct SecretBuf {
    /// Dropped after `Drop::drop` below, which is what zeroizes and frees it.
    mem: SlotMem,
    /// Logical length, `<= mem.as_slice().len()`.
    len: usize,
    arena: Arc<Arena>,
}

impl SecretBuf {
    /// Wraps a zero-filled slot of at least `len` bytes.
    pub(super) fn new(arena: Arc<Arena>, mem: SlotMem, len: usize) -> SecretBuf {
        let len = len.min(mem.as_slice().len());
        SecretBuf { mem, len, arena }
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if the length is 0 (only after `truncate(0)`).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The secret bytes.
    pub fn expose_secret(&self) -> &[u8] {
        self.mem.as_slice().get(..self.len).unwrap_or_default()
    }

    /// The secret bytes, writable.
    pub fn expose_secret_mut(&mut self) -> &mut [u8] {
        self.mem
            .as_mut_slice()
            .get_mut(..self.len)
            .unwrap_or_default()
    }

    /// Shrinks the logical length to `len` (no-op if not shorter), zeroizing the tail;
    /// used after in-place decryption drops the tag.
    pub fn truncate(&mut self, len: usize) {
        if len >= self.len {
            return;
        }
        if let Some(tail) = self.mem.as_mut_slice().get_mut(len..self.len) {
            tail.zeroize();
        }
        self.len = len;
    }

    /// Address of the first byte, for tests that probe the memory from outside.
    #[cfg(test)]
    pub(super) fn addr(&self) -> usize {
        self.mem.addr()
    }

    /// The slot's region and offset, for tests that look at the memory after release.
    #[cfg(test)]
    pub(super) fn region_and_offset(&self) -> (Arc<super::sys::Region>, usize) {
        (Arc::clone(self.mem.region()), self.mem.offset())
    }
}

impl Drop for SecretBuf {
    fn drop(&mut self) {
        self.expose_secret_mut().zeroize();
        self.arena.before_release(self.mem.region());
        // `mem` drops next: it zeroizes the whole slot and returns its granules.
    }
}

impl zeroize::ZeroizeOnDrop for SecretBuf {}

impl fmt::Debug for SecretBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<secret>")
    }
}

#[cfg(test)]
mod tests {
    use std::fs::File;
    use std::os::unix::fs::FileExt;

    use super::super::{MAX_SLOT_LEN, SecretMemoryKind, SecretMemoryPolicy, Vault, VaultError};

    fn vaults() -> Vec<Vault> {
        vec![
            Vault::new(SecretMemoryPolicy::Prefer).unwrap(),
            Vault::new(SecretMemoryPolicy::Mlock).unwrap(),
        ]
    }

    #[test]
    fn written_bytes_read_back() {
        for vault in vaults() {
            let mut buf = vault.alloc(37).unwrap();
            assert_eq!(buf.len(), 37);
            assert!(buf.expose_secret().iter().all(|&b| b == 0));
            buf.expose_secret_mut().copy_from_slice(&[0x5a; 37]);
            assert_eq!(buf.expose_secret(), &[0x5a; 37][..]);
        }
    }

    #[test]
    fn prefer_uses_memfd_secret_on_this_kernel_and_mlock_policy_does_not() {
        let v = Vault::new(SecretMemoryPolicy::Prefer).unwrap();
        assert_eq!(v.kind(), SecretMemoryKind::MemfdSecret);
        let v = Vault::new(SecretMemoryPolicy::Require).unwrap();
        assert_eq!(v.kind(), SecretMemoryKind::MemfdSecret);
        let v = Vault::new(SecretMemoryPolicy::Mlock).unwrap();
        assert_eq!(v.kind(), SecretMemoryKind::Mlock);
    }

    #[test]
    fn many_slots_spread_over_several_regions_and_keep_their_bytes() {
        for vault in vaults() {
            let mut bufs = Vec::new();
            for i in 0..600usize {
                let mut buf = vault.alloc(100 + i % 20).unwrap();
                buf.expose_secret_mut().fill((i % 251) as u8 + 1);
                bufs.push(buf);
            }
            let stats = vault.stats();
            assert!(stats.regions >= 5, "{stats:?}");
            assert_eq!(stats.slots_in_use, 600);
            for (i, buf) in bufs.iter().enumerate() {
                assert_eq!(buf.len(), 100 + i % 20);
                assert!(
                    buf.expose_secret()
                        .iter()
                        .all(|&b| b == (i % 251) as u8 + 1)
                );
            }
            drop(bufs);
            let stats = vault.stats();
            assert_eq!(stats.slots_in_use, 0);
            // The first region plus at most one spare survive.
            assert!(stats.regions <= 2, "{stats:?}");
        }
    }

    #[test]
    fn a_large_slot_gets_its_own_region_which_goes_away_after_use() {
        let vault = Vault::new(SecretMemoryPolicy::Prefer).unwrap();
        let small = vault.alloc(10).unwrap();
        let big = vault.alloc(MAX_SLOT_LEN).unwrap();
        let big2 = vault.alloc(MAX_SLOT_LEN).unwrap();
        assert_eq!(vault.stats().regions, 3);
        drop(big);
        drop(big2);
        assert_eq!(vault.stats().regions, 2, "one spare is kept");
        drop(small);
        assert_eq!(vault.stats().slots_in_use, 0);
    }

    #[test]
    fn released_slot_is_zeroized() {
        for vault in vaults() {
            let mut buf = vault.alloc(200).unwrap();
            buf.expose_secret_mut().fill(0xa5);
            let (region, offset) = buf.region_and_offset();
            assert!(region.read_free(offset, 256).is_none(), "in use");
            drop(buf);
            let after = region.read_free(offset, 256).unwrap();
            assert!(after.iter().all(|&b| b == 0));
        }
    }

    #[test]
    fn truncate_zeroizes_the_tail() {
        let vault = Vault::new(SecretMemoryPolicy::Prefer).unwrap();
        let mut buf = vault.alloc(48).unwrap();
        buf.expose_secret_mut().fill(9);
        buf.truncate(32);
        assert_eq!(buf.len(), 32);
        assert_eq!(buf.expose_secret(), &[9; 32][..]);
        buf.truncate(40);
        assert_eq!(buf.len(), 32, "truncate never grows");
        buf.truncate(0);
        assert!(buf.is_empty());
    }

    #[test]
    fn alloc_rejects_empty_and_oversized() {
        let vault = Vault::new(SecretMemoryPolicy::Prefer).unwrap();
        assert!(matches!(vault.alloc(0), Err(VaultError::Empty)));
        assert!(matches!(
            vault.alloc(MAX_SLOT_LEN + 1),
            Err(VaultError::TooLarge { .. })
        ));
        assert_eq!(vault.alloc(MAX_SLOT_LEN).unwrap().len(), MAX_SLOT_LEN);
    }

    #[test]
    fn debug_prints_placeholder_not_bytes() {
        let vault = Vault::new(SecretMemoryPolicy::Prefer).unwrap();
        let mut buf = vault.alloc(4).unwrap();
        buf.expose_secret_mut().copy_from_slice(b"ABCD");
        let text = format!("{buf:?} {buf:#?}");
        assert_eq!(format!("{buf:?}"), "<secret>");
        assert!(!text.contains("ABCD") && !text.contains("65"), "{text}");
    }

    #[test]
    fn secretmem_slot_cannot_be_read_through_proc_self_mem() {
        let vault = Vault::new(SecretMemoryPolicy::Require).unwrap();
        let mut buf = vault.alloc(32).unwrap();
        buf.expose_secret_mut().fill(1);
        let mem = File::open("/proc/self/mem").unwrap();
        let mut out = [0u8; 32];
        let err = mem.read_at(&mut out, buf.addr() as u64).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    }

    #[test]
    fn mlock_region_is_locked_not_dumped_and_wiped_on_fork() {
        let vault = Vault::new(SecretMemoryPolicy::Mlock).unwrap();
        let mut buf = vault.alloc(32).unwrap();
        buf.expose_secret_mut().fill(3);
        // Positive control for the secretmem test above: this memory *is* readable.
        let mem = File::open("/proc/self/mem").unwrap();
        let mut out = [0u8; 32];
        mem.read_at(&mut out, buf.addr() as u64).unwrap();
        assert_eq!(out, [3; 32]);

        let start = buf.region_and_offset().0.addr();
        let flags = vm_flags_of(start).unwrap();
        for flag in ["lo", "dd", "wf"] {
            assert!(
                flags.split_whitespace().any(|f| f == flag),
                "{flag}: {flags}"
            );
        }
    }

    /// The `VmFlags:` line of the smaps entry whose range starts at `start`.
    fn vm_flags_of(start: usize) -> Option<String> {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut in_entry = false;
        for line in smaps.lines() {
            let head = line.split_whitespace().next().unwrap_or("");
            if let Some((lo, hi)) = head.split_once('-')
                && let (Ok(lo), Ok(hi)) =
                    (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
            {
                in_entry = lo <= start && start < hi;
            } else if in_entry && let Some(flags) = line.strip_prefix("VmFlags:") {
                return Some(flags.to_owned());
            }
        }
        None
    }
}
