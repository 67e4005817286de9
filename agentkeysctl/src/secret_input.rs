//! Where a secret comes from: the terminal without echo, or stdin. Never argv. Also the
//! one-line answers `approve` asks for (`Confirm? [y/N]`, the login password), read the
//! same way: from the terminal when stdin is one, else one line of stdin.
//!
//! Every buffer that holds secret bytes is a [`Zeroizing`] vector allocated once at its
//! final capacity, so it never reallocates (a reallocation would leave an unwiped copy).
//! Lines of stdin are read one byte per read(2), so a second question gets the second
//! line: nothing is read ahead into a buffer the next reader cannot see. What was read is
//! handed to agentkeysd as a sealed memfd ([`sealed_memfd`]), never as message bytes.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use agentkeysd::api::names::MAX_SECRET_LEN;
use nix::sys::termios::{self, LocalFlags, SetArg, SpecialCharacterIndices, Termios};
use zeroize::{Zeroize, Zeroizing};

use crate::errors::{CliError, Exit};

/// How many bytes of stdin are read at most: the limit, plus a trailing `\r\n`, plus one
/// byte to tell "exactly at the limit" from "over it".
const READ_LIMIT: usize = MAX_SECRET_LEN + 3;

/// Why no secret was read. None of these carries secret bytes.
#[derive(Debug)]
pub enum InputError {
    /// Nothing (after removing one trailing newline).
    Empty,
    /// More than [`MAX_SECRET_LEN`] bytes.
    TooLarge,
    /// The two entries on the terminal differ.
    Mismatch,
    /// Ctrl-C, or Ctrl-D on an empty line, at the prompt.
    Cancelled,
    /// Reading stdin failed.
    Read(io::Error),
    /// Opening or configuring the terminal failed.
    Tty(io::Error),
}

/// `bytes` in a new sealed memfd, for agentkeysd; `what` ("the secret", "the password")
/// names them if that fails.
pub fn sealed_memfd(bytes: &[u8], what: &str) -> Result<OwnedFd, CliError> {
    agentkeysd::vault::sealed_memfd_from_bytes(bytes).map_err(|e| {
        CliError::new(Exit::Error, format!("cannot hand {what} to agentkeysd"))
            .cause(format!("creating the sealed memfd failed: {e}"))
            .fix("check the memory limits of this process (ulimit -l, cgroup memory.max)")
    })
}

/// Fd 0 as an unbuffered `File`: std's `Stdin` copies input through a process-wide 8 KiB
/// buffer that is never wiped, so a secret is read with read(2) straight into our own
/// zeroizing buffer instead. The `File` is a duplicate; fd 0 itself stays open.
pub fn raw_stdin() -> Result<std::fs::File, InputError> {
    let fd = io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .map_err(InputError::Read)?;
    Ok(std::fs::File::from(fd))
}

/// Is stdin a terminal (then the secret is prompted for)?
pub fn stdin_is_tty() -> bool {
    nix::unistd::isatty(io::stdin().as_fd()).unwrap_or(false)
}

/// Reads a secret from `r` (stdin): at most [`MAX_SECRET_LEN`] bytes after one trailing
/// `\n` or `\r\n` is removed; empty is an error.
pub fn read_secret(mut r: impl Read) -> Result<Zeroizing<Vec<u8>>, InputError> {
    let mut buf = Zeroizing::new(vec![0u8; READ_LIMIT]);
    let mut len = 0;
    while len < buf.len() {
        let free = buf.get_mut(len..).unwrap_or_default();
        match r.read(free) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(InputError::Read(e)),
        }
    }
    if len == READ_LIMIT {
        return Err(InputError::TooLarge);
    }
    // Shrinking within the allocation moves nothing; Zeroizing wipes the whole capacity.
    buf.truncate(len);
    strip_one_newline(&mut buf);
    check_len(buf)
}

/// Removes one trailing `\n` or `\r\n`.
fn strip_one_newline(buf: &mut Vec<u8>) {
    if buf.last() == Some(&b'\n') {
        buf.pop();
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
    }
}

fn check_len(buf: Zeroizing<Vec<u8>>) -> Result<Zeroizing<Vec<u8>>, InputError> {
    match buf.len() {
        0 => Err(InputError::Empty),
        n if n > MAX_SECRET_LEN => Err(InputError::TooLarge),
        _ => Ok(buf),
    }
}

/// Prompts on `/dev/tty` (not stdout, which may be redirected) twice without echo; the
/// entries must match.
pub fn prompt_twice(name: &str) -> Result<Zeroizing<Vec<u8>>, InputError> {
    let tty = File::options()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .map_err(InputError::Tty)?;
    // Echo goes off before the first prompt is shown and comes back after the last line
    // is read: whatever is typed or pasted the moment a prompt appears, or between the two
    // prompts, is never echoed (the line discipline echoes input when it arrives).
    let (first, second) = {
        let _raw = RawMode::enter(tty.as_fd())?;
        let first = prompt(&tty, &format!("Secret for {name}: "))?;
        let second = prompt(&tty, &format!("Repeat secret for {name}: "))?;
        (first, second)
    };
    if !same(&first, &second) {
        return Err(InputError::Mismatch);
    }
    drop(second);
    check_len(first)
}

/// Asks `question` and reads one line: on the terminal (`/dev/tty`, echoed) when stdin is
/// one, else from stdin with the question on stderr. `None`: end of input, no answer.
pub fn ask_line(question: &str) -> Result<Option<String>, InputError> {
    const MAX_ANSWER: usize = 1024;
    let line = if stdin_is_tty() {
        let tty = File::options()
            .read(true)
            .write(true)
            .open("/dev/tty")
            .map_err(InputError::Tty)?;
        let mut w = &tty;
        w.write_all(question.as_bytes())
            .and_then(|()| w.flush())
            .map_err(InputError::Tty)?;
        read_stdin_line(&tty, MAX_ANSWER)?
    } else {
        let mut err = io::stderr().lock();
        let _ = err
            .write_all(question.as_bytes())
            .and_then(|()| err.flush());
        let line = read_stdin_line(raw_stdin()?, MAX_ANSWER)?;
        // The answer was not echoed by a terminal: end the question's line.
        let _ = err.write_all(b"\n");
        line
    };
    Ok(line.map(|l| String::from_utf8_lossy(&l).into_owned()))
}

/// Asks for a secret once, without echo on the terminal (`prompt` shown there), or reads
/// one line of stdin when stdin is not a terminal. Empty is an error.
pub fn ask_hidden(prompt_text: &str) -> Result<Zeroizing<Vec<u8>>, InputError> {
    if stdin_is_tty() {
        let tty = File::options()
            .read(true)
            .write(true)
            .open("/dev/tty")
            .map_err(InputError::Tty)?;
        let _raw = RawMode::enter(tty.as_fd())?;
        return prompt(&tty, prompt_text);
    }
    match read_stdin_line(raw_stdin()?, MAX_SECRET_LEN)? {
        Some(line) => check_len(line),
        None => Err(InputError::Empty),
    }
}

/// One line from `r`, one byte per read so nothing past the newline is consumed; the
/// `\n` (and a `\r` before it) removed. `None` at end of input before any byte. More
/// than `limit` bytes is [`InputError::TooLarge`].
pub fn read_stdin_line(
    mut r: impl Read,
    limit: usize,
) -> Result<Option<Zeroizing<Vec<u8>>>, InputError> {
    let mut line = Zeroizing::new(Vec::with_capacity(limit));
    let mut byte = [0u8; 1];
    let mut any = false;
    loop {
        match r.read(&mut byte) {
            Ok(0) => break,
            Ok(_) => {
                any = true;
                if byte[0] == b'\n' {
                    break;
                }
                if line.len() >= limit {
                    byte.zeroize();
                    return Err(InputError::TooLarge);
                }
                line.push(byte[0]);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(InputError::Read(e)),
        }
    }
    byte.zeroize();
    if !any {
        return Ok(None);
    }
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(Some(line))
}

/// Compares without stopping at the first difference.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// One prompt, with the terminal already in raw mode without echo (see [`prompt_twice`]):
/// the prompt text, then one line read byte by byte.
fn prompt(tty: &File, text: &str) -> Result<Zeroizing<Vec<u8>>, InputError> {
    let mut w = tty;
    w.write_all(text.as_bytes())
        .and_then(|()| w.flush())
        .map_err(InputError::Tty)?;
    let result = read_line(tty);
    // Echo is off, so the user's Enter was not shown: end the prompt line ourselves.
    let _ = w.write_all(b"\n");
    result
}

fn read_line(mut tty: &File) -> Result<Zeroizing<Vec<u8>>, InputError> {
    let mut line = LineEditor::new();
    let mut byte = [0u8; 1];
    loop {
        let n = match tty.read(&mut byte) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(InputError::Tty(e)),
        };
        let key = if n == 0 { 0x04 } else { byte[0] };
        let action = line.key(key);
        byte.zeroize();
        match action {
            Key::More => {}
            Key::Done => return line.finish(),
            Key::Cancel => return Err(InputError::Cancelled),
        }
    }
}

/// What a key press means for the line being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    More,
    Done,
    Cancel,
}

/// The little line editing a hidden prompt needs: Enter, Backspace, Ctrl-U, Ctrl-C,
/// Ctrl-D. Input beyond the limit is counted, not kept.
#[derive(Debug)]
struct LineEditor {
    buf: Zeroizing<Vec<u8>>,
    overflow: bool,
}

impl LineEditor {
    fn new() -> Self {
        LineEditor {
            buf: Zeroizing::new(Vec::with_capacity(MAX_SECRET_LEN)),
            overflow: false,
        }
    }

    fn key(&mut self, b: u8) -> Key {
        match b {
            b'\r' | b'\n' => Key::Done,
            0x03 => Key::Cancel,
            0x04 if self.buf.is_empty() && !self.overflow => Key::Cancel,
            0x04 => Key::More,
            0x7f | 0x08 => {
                // Remove one whole UTF-8 character: continuation bytes, then its lead byte.
                while self.buf.last().is_some_and(|c| c & 0xc0 == 0x80) {
                    self.buf.pop();
                }
                self.buf.pop();
                Key::More
            }
            0x15 => {
                self.buf.zeroize();
                self.overflow = false;
                Key::More
            }
            _ if self.buf.len() >= MAX_SECRET_LEN => {
                self.overflow = true;
                Key::More
            }
            _ => {
                self.buf.push(b);
                Key::More
            }
        }
    }

    fn finish(self) -> Result<Zeroizing<Vec<u8>>, InputError> {
        if self.overflow {
            return Err(InputError::TooLarge);
        }
        check_len(self.buf)
    }
}

/// The terminal without echo, line editing or signal keys, restored on drop (also when
/// the read fails). Signal keys are handled as bytes so Ctrl-C never leaves echo off.
struct RawMode<'a> {
    fd: BorrowedFd<'a>,
    saved: Termios,
}

impl<'a> RawMode<'a> {
    fn enter(fd: BorrowedFd<'a>) -> Result<Self, InputError> {
        let saved = termios::tcgetattr(fd).map_err(|e| InputError::Tty(e.into()))?;
        let mut raw = saved.clone();
        raw.local_flags
            .remove(LocalFlags::ECHO | LocalFlags::ICANON | LocalFlags::ISIG | LocalFlags::IEXTEN);
        raw.control_chars[SpecialCharacterIndices::VMIN as usize] = 1;
        raw.control_chars[SpecialCharacterIndices::VTIME as usize] = 0;
        termios::tcsetattr(fd, SetArg::TCSANOW, &raw).map_err(|e| InputError::Tty(e.into()))?;
        Ok(RawMode { fd, saved })
    }
}

impl Drop for RawMode<'_> {
    fn drop(&mut self) {
        // Best effort: there is no one to report a failure to restore the terminal to.
        let _ = termios::tcsetattr(self.fd, SetArg::TCSANOW, &self.saved);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(bytes: &[u8]) -> Result<Vec<u8>, InputError> {
        read_secret(bytes).map(|s| s.to_vec())
    }

    #[test]
    fn one_trailing_newline_is_stripped() {
        assert_eq!(read(b"sk-abc\n").unwrap(), b"sk-abc");
        assert_eq!(read(b"sk-abc\r\n").unwrap(), b"sk-abc");
        assert_eq!(read(b"sk-abc").unwrap(), b"sk-abc");
        assert_eq!(read(b"sk-abc\n\n").unwrap(), b"sk-abc\n");
        assert_eq!(read(b"sk-abc\r").unwrap(), b"sk-abc\r");
        assert_eq!(read(b" sk abc ").unwrap(), b" sk abc ");
    }

    #[test]
    fn empty_input_is_an_error() {
        assert!(matches!(read(b""), Err(InputError::Empty)));
        assert!(matches!(read(b"\n"), Err(InputError::Empty)));
        assert!(matches!(read(b"\r\n"), Err(InputError::Empty)));
    }

    #[test]
    fn the_limit_is_exact() {
        let mut at_limit = vec![b'k'; MAX_SECRET_LEN];
        assert_eq!(read(&at_limit).unwrap().len(), MAX_SECRET_LEN);
        at_limit.extend_from_slice(b"\r\n");
        assert_eq!(read(&at_limit).unwrap().len(), MAX_SECRET_LEN);
        assert!(matches!(
            read(&vec![b'k'; MAX_SECRET_LEN + 1]),
            Err(InputError::TooLarge)
        ));
        let mut over = vec![b'k'; MAX_SECRET_LEN + 1];
        over.push(b'\n');
        assert!(matches!(read(&over), Err(InputError::TooLarge)));
        assert!(matches!(
            read(&vec![b'k'; 1 << 20]),
            Err(InputError::TooLarge)
        ));
    }

    #[test]
    fn binary_secrets_pass_unchanged() {
        let bytes: Vec<u8> = (0..=255u8).collect();
        assert_eq!(read(&bytes).unwrap(), bytes);
    }

    #[test]
    fn short_reads_are_joined() {
        struct Trickle(Vec<u8>);
        impl Read for Trickle {
            fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
                match (self.0.first(), out.first_mut()) {
                    (Some(b), Some(o)) => {
                        *o = *b;
                        self.0.remove(0);
                        Ok(1)
                    }
                    _ => Ok(0),
                }
            }
        }
        let got = read_secret(Trickle(b"abc\n".to_vec())).unwrap();
        assert_eq!(got.as_slice(), b"abc");
    }

    #[test]
    fn read_errors_are_reported() {
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("boom"))
            }
        }
        assert!(matches!(read_secret(Broken), Err(InputError::Read(_))));
    }

    fn type_keys(keys: &[u8]) -> (Key, Result<Vec<u8>, InputError>) {
        let mut ed = LineEditor::new();
        let mut last = Key::More;
        for &k in keys {
            last = ed.key(k);
            if last != Key::More {
                break;
            }
        }
        (last, ed.finish().map(|s| s.to_vec()))
    }

    #[test]
    fn the_hidden_prompt_edits_like_a_terminal() {
        assert_eq!(type_keys(b"abc\r").1.unwrap(), b"abc");
        assert_eq!(type_keys(b"abx\x7fc\n").1.unwrap(), b"abc");
        assert_eq!(type_keys("aé\x7fb\n".as_bytes()).1.unwrap(), b"ab");
        assert_eq!(type_keys(b"wrong\x15right\n").1.unwrap(), b"right");
        assert_eq!(type_keys(b"ab\x04c\n").1.unwrap(), b"abc");
        assert_eq!(type_keys(b"ab\x03").0, Key::Cancel);
        assert_eq!(type_keys(b"\x04").0, Key::Cancel);
        assert!(matches!(type_keys(b"\n").1, Err(InputError::Empty)));
    }

    #[test]
    fn the_hidden_prompt_refuses_oversize_input() {
        let mut keys = vec![b'k'; MAX_SECRET_LEN + 5];
        keys.push(b'\n');
        assert!(matches!(type_keys(&keys).1, Err(InputError::TooLarge)));
    }

    #[test]
    fn lines_are_read_one_at_a_time() {
        let mut input: &[u8] = b"y\r\nhunter2\nrest";
        let first = read_stdin_line(&mut input, 64).unwrap().unwrap();
        assert_eq!(first.as_slice(), b"y");
        let second = read_stdin_line(&mut input, 64).unwrap().unwrap();
        assert_eq!(second.as_slice(), b"hunter2");
        assert_eq!(input, b"rest");
        let third = read_stdin_line(&mut input, 64).unwrap().unwrap();
        assert_eq!(third.as_slice(), b"rest");
        assert!(read_stdin_line(&mut input, 64).unwrap().is_none());
        let mut empty_line: &[u8] = b"\n";
        assert_eq!(
            read_stdin_line(&mut empty_line, 64).unwrap().unwrap().len(),
            0
        );
        let mut long: &[u8] = b"abcdef\n";
        assert!(matches!(
            read_stdin_line(&mut long, 3),
            Err(InputError::TooLarge)
        ));
    }

    #[test]
    fn entries_compare_exactly() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"ab"));
    }
}
