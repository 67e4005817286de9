//! The vault's only `unsafe`: the raw calls (`memfd_secret`, `mmap`, `mlock`, `madvise`,
//! `munmap`) and the one abstraction built on them — a [`Region`] that hands out disjoint
//! byte slots ([`SlotMem`]) of a mapping.
//!
//! Soundness rests on three facts, all local to this file plus the granule bookkeeping in
//! `arena.rs`:
//! - a [`Mapping`] owns its pages from `mmap` until its `Drop` calls `munmap`;
//! - a [`SlotMem`] keeps its [`Region`] (and so the mapping) alive through an `Arc`;
//! - [`Granules`] hands each granule to at most one slot at a time (used under the region
//!   mutex, freed only by that slot's `Drop`), and this file re-checks every range against
//!   the mapping's length before making a slice of it.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::{Arc, Mutex};

use zeroize::Zeroize;

use super::VaultError;
use super::arena::{GRANULE, Granules, lock};

/// Return values that signal failure with `-1` (or `MAP_FAILED`) and set `errno`.
trait Failed: Copy {
    fn failed(self) -> bool;
}

impl Failed for libc::c_int {
    fn failed(self) -> bool {
        self == -1
    }
}

impl Failed for libc::c_long {
    fn failed(self) -> bool {
        self == -1
    }
}

impl Failed for *mut libc::c_void {
    fn failed(self) -> bool {
        self == libc::MAP_FAILED
    }
}

/// The one place a C-style failure value becomes an `io::Error` (from `errno`).
fn cvt<T: Failed>(ret: T) -> io::Result<T> {
    if ret.failed() {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// `memfd_secret(O_CLOEXEC)`: a new secretmem fd.
pub(super) fn memfd_secret() -> io::Result<OwnedFd> {
    // SAFETY: memfd_secret(2) takes one integer flags argument and no pointers; a bad
    // value or a missing syscall yields -1/errno (ENOSYS, EINVAL), which cvt turns into Err.
    let ret = cvt(unsafe { libc::syscall(libc::SYS_memfd_secret, libc::O_CLOEXEC) })?;
    let raw = RawFd::try_from(ret).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
    // SAFETY: on success the kernel returns a newly opened descriptor that nothing else in
    // this process knows, so giving its ownership to one OwnedFd is sound.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// An owned `mmap`ed range, unmapped (and unlocked) on drop.
pub(super) struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
    locked: bool,
}

// SAFETY: Mapping owns its pages exclusively (no other Rust value points into them except
// through Region/SlotMem, which uphold their own rules); nothing about it is tied to the
// thread that created it, and munmap may be called from any thread.
unsafe impl Send for Mapping {}
// SAFETY: through `&Mapping` only the address and length can be read; the bytes are
// reachable only through `&mut Mapping` (as_mut_slice) or through disjoint SlotMems.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// `mmap(NULL, len, PROT_READ|PROT_WRITE, flags, fd, 0)`.
    fn map(len: usize, flags: libc::c_int, fd: Option<RawFd>) -> io::Result<Mapping> {
        if len == 0 {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        // SAFETY: with a NULL hint and no MAP_FIXED the kernel picks an unused range, so no
        // existing memory is replaced; `fd` is either -1 with MAP_ANONYMOUS or a descriptor
        // the caller holds open for the duration of this call. Failure is MAP_FAILED -> Err.
        let ret = cvt(unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                fd.unwrap_or(-1),
                0,
            )
        })?;
        let ptr = NonNull::new(ret.cast::<u8>())
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidData))?;
        Ok(Mapping {
            ptr,
            len,
            locked: false,
        })
    }

    /// A secretmem region: `memfd_secret`, `ftruncate`, `mmap(MAP_SHARED)`, close the fd
    /// (the mapping keeps the file). Secretmem pages are unevictable by construction, so no
    /// `mlock`; `MADV_DONTDUMP` is applied where the kernel accepts it.
    pub(super) fn secretmem(len: usize) -> Result<Mapping, VaultError> {
        let fd = memfd_secret().map_err(VaultError::SecretMemCreate)?;
        let size = libc::off_t::try_from(len).map_err(|_| VaultError::Resize {
            len,
            source: io::Error::from(io::ErrorKind::InvalidInput),
        })?;
        nix::unistd::ftruncate(fd.as_fd(), size).map_err(|e| VaultError::Resize {
            len,
            source: e.into(),
        })?;
        let map = Mapping::map(len, libc::MAP_SHARED, Some(fd.as_raw_fd()))
            .map_err(|source| VaultError::Map { len, source })?;
        drop(fd);
        match map.advise(libc::MADV_DONTDUMP) {
            Err(e) if e.raw_os_error() != Some(libc::EINVAL) => Err(VaultError::Advise {
                len,
                advice: "MADV_DONTDUMP",
                source: e,
            }),
            _ => Ok(map),
        }
    }

    /// The fallback: anonymous private pages, `mlock`ed (failure is an error, never
    /// silently unlocked memory), `MADV_DONTDUMP` and `MADV_WIPEONFORK`.
    pub(super) fn locked_anon(len: usize) -> Result<Mapping, VaultError> {
        let mut map = Mapping::map(len, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, None)
            .map_err(|source| VaultError::Map { len, source })?;
        map.lock()
            .map_err(|source| VaultError::Lock { len, source })?;
        for (advice, name) in [
            (libc::MADV_DONTDUMP, "MADV_DONTDUMP"),
            (libc::MADV_WIPEONFORK, "MADV_WIPEONFORK"),
        ] {
            map.advise(advice).map_err(|source| VaultError::Advise {
                len,
                advice: name,
                source,
            })?;
        }
        Ok(map)
    }

    fn lock(&mut self) -> io::Result<()> {
        // SAFETY: mlock only changes residency of [ptr, ptr+len), a range this Mapping owns
        // (from mmap); it reads/writes no memory on our behalf.
        cvt(unsafe { libc::mlock(self.ptr.as_ptr().cast(), self.len) })?;
        self.locked = true;
        Ok(())
    }

    fn advise(&self, advice: libc::c_int) -> io::Result<()> {
        // SAFETY: [ptr, ptr+len) is this Mapping's own page-aligned range from mmap; the
        // advices used here (DONTDUMP, WIPEONFORK) change flags, never current contents.
        cvt(unsafe { libc::madvise(self.ptr.as_ptr().cast(), self.len, advice) })?;
        Ok(())
    }

    /// Length in bytes.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Start address (for tests and diagnostics; never dereferenced through this value).
    #[cfg(test)]
    pub(super) fn addr(&self) -> usize {
        self.ptr.as_ptr() as usize
    }

    /// All of the mapping's bytes.
    pub(super) fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: ptr is non-null and valid for reads and writes of len bytes (one mmap
        // allocation, len <= isize::MAX because mmap succeeded); mapped pages are always
        // initialized (zero-filled by the kernel); `&mut self` guarantees no other reference
        // to these bytes for the returned lifetime; the pages stay mapped until Drop.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        if self.locked {
            // SAFETY: same range as the successful mlock; munlock touches no memory.
            let ret = cvt(unsafe { libc::munlock(self.ptr.as_ptr().cast(), self.len) });
            if let Err(e) = ret {
                tracing::warn!(error = %e, len = self.len, "munlock of secret memory failed");
            }
        }
        // SAFETY: [ptr, ptr+len) came from mmap and is unmapped exactly once, here; no
        // reference into it outlives the Mapping (slices borrow it, SlotMems hold an Arc to
        // the owning Region).
        let ret = cvt(unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) });
        if let Err(e) = ret {
            tracing::warn!(error = %e, len = self.len, "munmap of secret memory failed");
        }
    }
}

/// A mapping plus the record of which granules are handed out.
pub(super) struct Region {
    map: Mapping,
    granules: Mutex<Granules>,
}

impl Region {
    /// Takes over `map`; its length must be a multiple of [`GRANULE`] (a tail is unused).
    pub(super) fn new(map: Mapping) -> Region {
        let granules = Mutex::new(Granules::new(map.len() / GRANULE));
        Region { map, granules }
    }

    /// A slot of at least `len` bytes (rounded up to granules), or None if no run of free
    /// granules is long enough. The slot's bytes are whatever the last owner left: zero,
    /// since released slots are zeroized and fresh pages are zero.
    pub(super) fn alloc(self: &Arc<Self>, len: usize) -> Option<SlotMem> {
        let count = len.div_ceil(GRANULE);
        let mut granules = lock(&self.granules);
        let first = granules.alloc(count)?;
        let offset = first.checked_mul(GRANULE);
        let cap = count.checked_mul(GRANULE);
        let end = offset.zip(cap).and_then(|(o, c)| o.checked_add(c));
        match (offset, cap, end) {
            // Re-check the bookkeeping's answer: slices below rely on this bound.
            (Some(offset), Some(cap), Some(end)) if cap > 0 && end <= self.map.len() => {
                drop(granules);
                Some(SlotMem {
                    region: Arc::clone(self),
                    offset,
                    cap,
                })
            }
            _ => {
                granules.free(first, count);
                None
            }
        }
    }

    /// Live slots in this region.
    pub(super) fn slots_in_use(&self) -> usize {
        lock(&self.granules).slots()
    }

    /// Bytes mapped.
    pub(super) fn mapped_len(&self) -> usize {
        self.map.len()
    }

    /// Start address of the mapping (tests read `/proc/self/smaps` for it).
    #[cfg(test)]
    pub(super) fn addr(&self) -> usize {
        self.map.addr()
    }

    /// Copy of bytes `[offset, offset+len)` if they are entirely free granules, so tests can
    /// see that released slots were zeroized. None if any granule is in use or out of range.
    #[cfg(test)]
    pub(super) fn read_free(&self, offset: usize, len: usize) -> Option<Vec<u8>> {
        let granules = lock(&self.granules);
        if !offset.is_multiple_of(GRANULE) || offset.checked_add(len)? > self.map.len() {
            return None;
        }
        if !granules.is_free(offset / GRANULE, len.div_ceil(GRANULE)) {
            return None;
        }
        let ptr = self.map.ptr.as_ptr().wrapping_add(offset);
        // SAFETY: [offset, offset+len) is inside the mapping (checked above) and made of
        // free granules; while we hold the granule lock no SlotMem can be created over them,
        // so no `&mut` to these bytes exists during this shared borrow.
        let bytes = unsafe { std::slice::from_raw_parts(ptr, len) };
        Some(bytes.to_vec())
    }
}

/// `cap` bytes at `offset` in a region, exclusively ours until drop, which zeroizes them
/// and returns the granules.
pub(super) struct SlotMem {
    region: Arc<Region>,
    offset: usize,
    cap: usize,
}

impl SlotMem {
    /// The slot's bytes (granule-rounded capacity).
    pub(super) fn as_slice(&self) -> &[u8] {
        let ptr = self.region.map.ptr.as_ptr().wrapping_add(self.offset);
        // SAFETY: offset + cap <= mapping length (checked in Region::alloc) so the range is
        // inside one live mmap allocation (the Arc<Region> keeps it mapped) and initialized;
        // the granules are ours alone (Granules never hands them to another slot before our
        // Drop), and `&self` means no `&mut` from this SlotMem is live.
        unsafe { std::slice::from_raw_parts(ptr, self.cap) }
    }

    /// The slot's bytes, writable.
    pub(super) fn as_mut_slice(&mut self) -> &mut [u8] {
        let ptr = self.region.map.ptr.as_ptr().wrapping_add(self.offset);
        // SAFETY: as in as_slice (in bounds, mapped, initialized, granules exclusively ours);
        // `&mut self` rules out any other reference from this SlotMem for the lifetime.
        unsafe { std::slice::from_raw_parts_mut(ptr, self.cap) }
    }

    /// The region this slot lives in.
    pub(super) fn region(&self) -> &Arc<Region> {
        &self.region
    }

    /// Address of the first byte (tests probe it through `/proc/self/mem`).
    #[cfg(test)]
    pub(super) fn addr(&self) -> usize {
        self.region.map.addr() + self.offset
    }

    /// Offset in the region (tests peek at the freed range).
    #[cfg(test)]
    pub(super) fn offset(&self) -> usize {
        self.offset
    }
}

impl Drop for SlotMem {
    fn drop(&mut self) {
        // Zeroize before the granules become free: afterwards another slot may own them.
        self.as_mut_slice().zeroize();
        lock(&self.region.granules).free(self.offset / GRANULE, self.cap / GRANULE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cvt_maps_minus_one_to_errno() {
        // SAFETY: close(-1) names no open descriptor, touches no memory, fails with EBADF.
        let ret = cvt(unsafe { libc::close(-1) });
        assert_eq!(ret.unwrap_err().raw_os_error(), Some(libc::EBADF));
        assert_eq!(cvt(0 as libc::c_int).unwrap(), 0);
    }

    #[test]
    fn memfd_secret_fd_cannot_be_read() {
        let fd = memfd_secret().unwrap();
        nix::unistd::ftruncate(fd.as_fd(), 4096).unwrap();
        let mut buf = [0u8; 16];
        assert!(nix::sys::uio::pread(fd.as_fd(), &mut buf, 0).is_err());
    }

    #[test]
    fn locked_anon_mapping_is_writable_and_sized() {
        let mut map = Mapping::locked_anon(8192).unwrap();
        assert_eq!(map.len(), 8192);
        assert!(map.as_mut_slice().iter().all(|&b| b == 0));
        map.as_mut_slice().fill(7);
        assert!(map.as_mut_slice().iter().all(|&b| b == 7));
    }

    #[test]
    fn slots_of_one_region_do_not_overlap_and_return_their_granules() {
        let region = Arc::new(Region::new(Mapping::locked_anon(4096).unwrap()));
        let mut a = region.alloc(100).unwrap();
        let mut b = region.alloc(64).unwrap();
        assert_eq!((a.as_slice().len(), b.as_slice().len()), (128, 64));
        a.as_mut_slice().fill(1);
        b.as_mut_slice().fill(2);
        assert!(a.as_slice().iter().all(|&x| x == 1));
        assert!(b.as_slice().iter().all(|&x| x == 2));
        assert_eq!(region.slots_in_use(), 2);
        assert!(region.alloc(4096).is_none());
        drop(a);
        drop(b);
        assert_eq!(region.slots_in_use(), 0);
        assert!(region.alloc(4096).is_some());
    }
}
