//! A password held by the module: one heap buffer, never grown past the capacity it was
//! made with (so no copy is left behind by a reallocation), wiped on drop. `Debug` shows
//! `<secret>`; there is no `Display`, `Clone` or accessor other than [`Secret::expose`].

use std::fmt;

pub struct Secret(Vec<u8>);

impl Secret {
    /// A buffer of `capacity` bytes, empty.
    pub fn with_capacity(capacity: usize) -> Secret {
        Secret(Vec::with_capacity(capacity))
    }

    /// A copy of `bytes`.
    pub fn copy_of(bytes: &[u8]) -> Secret {
        let mut s = Secret::with_capacity(bytes.len());
        s.0.extend_from_slice(bytes);
        s
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The buffer, to append to within its capacity (the caller sized it).
    pub(crate) fn buffer(&mut self) -> &mut Vec<u8> {
        &mut self.0
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        crate::sys::wipe(&mut self.0);
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<secret>")
    }
}

/// A password and the user it was typed for, kept from `auth` to `open_session`: the
/// user may change in between (sudo authenticates the invoking user, then sets `PAM_USER`
/// to the target), and a password must only ever reach the daemon with its own user.
#[derive(Debug)]
pub struct Kept {
    pub user: String,
    pub password: Secret,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_bytes() {
        let s = Secret::copy_of(b"hunter2");
        assert_eq!(format!("{s:?}"), "<secret>");
        assert_eq!(s.expose(), b"hunter2");
    }

    #[test]
    fn wipe_zeroes_every_byte() {
        let mut buf = *b"hunter2";
        crate::sys::wipe(&mut buf);
        assert_eq!(buf, [0u8; 7]);
    }
}
