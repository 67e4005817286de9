//! Everything written to stdout: tables for people, JSON for scripts (`--json`), UTC times,
//! and the raw bytes of `read`.
//!
//! Every write returns its error (never `println!`, which panics on a closed pipe); the
//! error becomes a [`CliError`], where a broken pipe is a clean, silent exit.

use std::io::{self, BufWriter, Stdout, Write};
use std::os::fd::AsFd;

use agentkeysd::api::dict::Dict;
use serde_json::{Map, Value};
use zbus::Variant;

use crate::errors::CliError;

/// Buffered stdout for human and JSON output.
#[derive(Debug)]
pub struct Out {
    w: BufWriter<Stdout>,
    /// `--json`: read commands print JSON instead of tables.
    pub json: bool,
}

impl Out {
    pub fn new(json: bool) -> Self {
        Out {
            w: BufWriter::new(io::stdout()),
            json,
        }
    }

    /// One line of text.
    pub fn line(&mut self, text: impl AsRef<str>) -> Result<(), CliError> {
        let text = text.as_ref();
        self.w
            .write_all(text.as_bytes())
            .and_then(|()| self.w.write_all(b"\n"))
            .map_err(CliError::stdout)
    }

    /// Raw bytes, as they are (for generated completions and man pages).
    pub fn bytes(&mut self, bytes: &[u8]) -> Result<(), CliError> {
        self.w.write_all(bytes).map_err(CliError::stdout)
    }

    /// `key  value` lines (see [`key_values`]).
    pub fn key_values(&mut self, rows: &[(&str, String)]) -> Result<(), CliError> {
        self.bytes(key_values(rows).as_bytes())
    }

    pub fn table(&mut self, table: &Table) -> Result<(), CliError> {
        let text = table.render();
        self.bytes(text.as_bytes())
    }

    /// A JSON document, pretty-printed, with a final newline.
    pub fn json(&mut self, value: &Value) -> Result<(), CliError> {
        serde_json::to_writer_pretty(&mut self.w, value)
            .map_err(io::Error::from)
            .and_then(|()| self.w.write_all(b"\n"))
            .map_err(CliError::stdout)
    }

    /// Writes `secret` straight to fd 1, bypassing every user-space buffer, so no copy of
    /// it lingers in a buffer that is never wiped.
    pub fn secret(&mut self, secret: &[u8]) -> Result<(), CliError> {
        self.flush()?;
        let stdout = io::stdout();
        let fd = stdout.as_fd();
        let mut rest = secret;
        while !rest.is_empty() {
            match nix::unistd::write(fd, rest) {
                Ok(0) => return Err(CliError::stdout(io::ErrorKind::WriteZero.into())),
                Ok(n) => rest = rest.get(n..).unwrap_or_default(),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(CliError::stdout(io::Error::from(e))),
            }
        }
        Ok(())
    }

    pub fn flush(&mut self) -> Result<(), CliError> {
        self.w.flush().map_err(CliError::stdout)
    }
}

/// A line on stderr for the person at the terminal (stdout is for the result); a closed
/// stderr is no reason to stop.
pub fn hint(text: &str) {
    let _ = writeln!(io::stderr().lock(), "{text}");
}

/// Is stdout a terminal? (`read` adds a newline only then.)
pub fn stdout_is_tty() -> bool {
    nix::unistd::isatty(io::stdout().as_fd()).unwrap_or(false)
}

/// A table with a header row; columns are padded to the widest cell, the last is not.
#[derive(Debug, Default)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Self {
        Table {
            header: header.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows
            .push(cells.into_iter().map(|c| sanitize(&c)).collect());
    }

    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                let w = cell.chars().count();
                match widths.get_mut(i) {
                    Some(slot) => *slot = (*slot).max(w),
                    None => widths.push(w),
                }
            }
        }
        let mut out = String::new();
        for row in std::iter::once(&self.header).chain(&self.rows) {
            let last = row.len().saturating_sub(1);
            for (i, cell) in row.iter().enumerate() {
                out.push_str(cell);
                if i < last {
                    let pad = widths
                        .get(i)
                        .copied()
                        .unwrap_or(0)
                        .saturating_sub(cell.chars().count());
                    out.extend(std::iter::repeat_n(' ', pad + 2));
                }
            }
            out.push('\n');
        }
        out
    }
}

/// `key  value` lines, keys padded to the widest; values are sanitized.
pub fn key_values(rows: &[(&str, String)]) -> String {
    let width = rows
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for (k, v) in rows {
        let line = format!("{k:width$}  {}", sanitize(v));
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Text from the daemon shown on a terminal: control characters (escape sequences,
/// newlines) are replaced so a crafted string cannot rewrite the screen or the table.
pub fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect()
}

/// `2026-11-21 10:42:07 UTC`: the daemon's own rendering, so both read alike.
pub fn format_utc(secs: i64) -> String {
    agentkeysd::store::utc(secs)
}

/// [`format_utc`] of an optional time, or `-`.
pub fn format_opt_utc(secs: Option<i64>) -> String {
    secs.map_or_else(|| "-".to_owned(), format_utc)
}

/// `uid 1000 (alice)`, or `uid 1234` when the uid has no local user.
pub fn describe_uid(uid: u32) -> String {
    match user_name(uid) {
        Some(name) => format!("uid {uid} ({name})"),
        None => format!("uid {uid}"),
    }
}

/// The local user name of `uid`, if it has one.
pub fn user_name(uid: u32) -> Option<String> {
    nix::unistd::User::from_uid(uid.into())
        .ok()
        .flatten()
        .map(|u| u.name)
}

/// A string field of a record, or `-` when absent, empty or of another type.
pub fn text(d: &Dict, key: &str) -> String {
    agentkeysd::api::dict::get_str(d, key)
        .ok()
        .flatten()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "-".to_owned())
}

/// A comma-separated list, or `-` when empty.
pub fn join_or_dash(items: &[String]) -> String {
    if items.is_empty() {
        "-".to_owned()
    } else {
        items.join(", ")
    }
}

/// An `a{sv}` record as a JSON object (keys sorted).
pub fn dict_to_json(dict: &Dict) -> Value {
    let mut keys: Vec<&String> = dict.keys().collect();
    keys.sort();
    let mut map = Map::new();
    for k in keys {
        if let Some(v) = dict.get(k) {
            map.insert(k.clone(), variant_to_json(v));
        }
    }
    Value::Object(map)
}

/// A list of records as a JSON array.
pub fn dicts_to_json(dicts: &[Dict]) -> Value {
    Value::Array(dicts.iter().map(dict_to_json).collect())
}

/// A D-Bus value as JSON: numbers, strings, booleans, arrays and string-keyed dicts map
/// directly; anything else becomes its D-Bus text form.
pub fn variant_to_json(v: &Variant<'_>) -> Value {
    match v {
        Variant::U8(n) => Value::from(*n),
        Variant::Bool(b) => Value::Bool(*b),
        Variant::I16(n) => Value::from(*n),
        Variant::U16(n) => Value::from(*n),
        Variant::I32(n) => Value::from(*n),
        Variant::U32(n) => Value::from(*n),
        Variant::I64(n) => Value::from(*n),
        Variant::U64(n) => Value::from(*n),
        Variant::F64(n) => Value::from(*n),
        Variant::Str(s) => Value::String(s.to_string()),
        Variant::ObjectPath(p) => Value::String(p.to_string()),
        Variant::Variant(inner) => variant_to_json(inner),
        Variant::Array(a) => Value::Array(a.iter().map(variant_to_json).collect()),
        Variant::Dict(d) => {
            let mut map = Map::new();
            for (k, v) in d.iter() {
                let key = match k {
                    Variant::Str(s) => s.to_string(),
                    other => other.to_string(),
                };
                map.insert(key, variant_to_json(v));
            }
            Value::Object(map)
        }
        other => Value::String(other.to_string()),
    }
}

/// A D-Bus value in one line for a person: strings bare, arrays comma-separated.
pub fn variant_to_text(v: &Variant<'_>) -> String {
    match v {
        Variant::Str(s) => sanitize(s.as_str()),
        Variant::Array(a) => a.iter().map(variant_to_text).collect::<Vec<_>>().join(","),
        Variant::Variant(inner) => variant_to_text(inner),
        Variant::Bool(b) => b.to_string(),
        Variant::U8(n) => n.to_string(),
        Variant::I16(n) => n.to_string(),
        Variant::U16(n) => n.to_string(),
        Variant::I32(n) => n.to_string(),
        Variant::U32(n) => n.to_string(),
        Variant::I64(n) => n.to_string(),
        Variant::U64(n) => n.to_string(),
        Variant::F64(n) => n.to_string(),
        other => sanitize(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use agentkeysd::api::dict::DictBuilder;

    use super::*;

    #[test]
    fn utc_formatting_of_known_epochs() {
        assert_eq!(format_utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_utc(1_700_000_000), "2023-11-14 22:13:20 UTC");
        assert_eq!(format_utc(1_795_257_727), "2026-11-21 10:42:07 UTC");
        assert_eq!(format_utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(format_utc(-1), "1969-12-31 23:59:59 UTC");
        assert_eq!(format_utc(253_402_300_799), "9999-12-31 23:59:59 UTC");
        assert_eq!(format_opt_utc(None), "-");
    }

    #[test]
    fn tables_pad_every_column_but_the_last() {
        let mut t = Table::new(&["NAME", "ENV"]);
        t.row(vec!["github".into(), "GITHUB_TOKEN".into()]);
        t.row(vec!["x".into(), "-".into()]);
        assert_eq!(t.render(), "NAME    ENV\ngithub  GITHUB_TOKEN\nx       -\n");
    }

    #[test]
    fn key_values_align_values() {
        let text = key_values(&[
            ("uid", "1000".into()),
            ("user", "alice".into()),
            ("", "x".into()),
        ]);
        assert_eq!(text, "uid   1000\nuser  alice\n      x\n");
    }

    #[test]
    fn table_cells_cannot_carry_escape_sequences() {
        let mut t = Table::new(&["A"]);
        t.row(vec!["a\x1b[2Jb\nc".into()]);
        assert!(!t.render().contains('\x1b'));
        assert_eq!(t.render().lines().count(), 2);
    }

    #[test]
    fn values_read_plainly_for_people() {
        assert_eq!(variant_to_text(&Variant::from(65_536u32)), "65536");
        assert_eq!(variant_to_text(&Variant::from(false)), "false");
        assert_eq!(variant_to_text(&Variant::from("x\x1b")), "x\u{fffd}");
    }

    #[test]
    fn records_become_sorted_json_objects() {
        let d = DictBuilder::new()
            .str("name", "github")
            .u32("version", 2)
            .i64("created", 5)
            .bool("single_use", false)
            .strs("scope", &["a".into(), "b".into()])
            .build();
        assert_eq!(
            serde_json::to_string(&dict_to_json(&d)).unwrap(),
            r#"{"created":5,"name":"github","scope":["a","b"],"single_use":false,"version":2}"#
        );
    }
}
