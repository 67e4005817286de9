//! [`BounceBuffer`]: a one-call copy of a secret on its way out.
//!
//! Writing straight from secretmem into a memfd works today, but kernel paths that pin user
//! pages (GUP: `vmsplice`, `O_DIRECT`) fail on secretmem, and a heap or stack copy would
//! linger unlocked and dumpable. So outgoing bytes pass through locked, non-dumpable pages
//! that are zeroized, unlocked and unmapped when the call ends.

use zeroize::Zeroize;

use super::VaultError;
use super::arena::page_size;
use super::sys::Mapping;

/// Page-rounded anonymous memory: `mlock`ed, `MADV_DONTDUMP`, `MADV_WIPEONFORK`.
/// Drop zeroizes, then `munlock`s and `munmap`s.
pub(super) struct BounceBuffer {
    map: Mapping,
    len: usize,
}

impl BounceBuffer {
    /// A zero-filled buffer of exactly `len` (> 0) bytes.
    pub(super) fn new(len: usize) -> Result<BounceBuffer, VaultError> {
        if len == 0 {
            return Err(VaultError::Empty);
        }
        let page = page_size();
        let map_len = len.div_ceil(page).saturating_mul(page);
        Ok(BounceBuffer {
            map: Mapping::locked_anon(map_len)?,
            len,
        })
    }

    pub(super) fn as_mut_slice(&mut self) -> &mut [u8] {
        let len = self.len;
        self.map.as_mut_slice().get_mut(..len).unwrap_or_default()
    }
}

impl Drop for BounceBuffer {
    fn drop(&mut self) {
        self.map.as_mut_slice().zeroize();
        // `map` drops next: munlock, munmap.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounce_buffer_has_exact_length_and_starts_zeroed() {
        let mut b = BounceBuffer::new(5000).unwrap();
        assert_eq!(b.as_mut_slice().len(), 5000);
        assert!(b.as_mut_slice().iter().all(|&x| x == 0));
        b.as_mut_slice().fill(1);
        assert!(matches!(BounceBuffer::new(0), Err(VaultError::Empty)));
    }
}
