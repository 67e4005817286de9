//! Deterministic CBOR (RFC 8949 §4.2.1) for the few item kinds auth-request details use:
//! unsigned and negative integers, byte strings, text strings, arrays and maps with text keys.
//!
//! Hand-written rather than `ciborium` because the canonical form *is* the contract: the
//! bytes are what the OTP is derived from and what the host key signs, so the child and the
//! daemon must agree on them exactly, and the decoder must refuse every other spelling of
//! the same value rather than normalise it.
//!
//! Encoding rules (§4.2.1): every integer and length in its shortest form; definite lengths
//! only; map keys sorted bytewise by their encoded form (for text keys: shorter first, then
//! bytewise). The decoder enforces each rule and also refuses tags, floats and simple
//! values, non-text map keys, invalid UTF-8, nesting deeper than [`MAX_DEPTH`] and trailing
//! bytes. It never panics and never allocates more than the input could describe.

use std::cmp::Ordering;

/// Deepest nesting the decoder follows (details need 3: map → array → text).
pub(crate) const MAX_DEPTH: usize = 8;

const MAJOR_UNSIGNED: u8 = 0;
const MAJOR_NEGATIVE: u8 = 1;
const MAJOR_BYTES: u8 = 2;
const MAJOR_TEXT: u8 = 3;
const MAJOR_ARRAY: u8 = 4;
const MAJOR_MAP: u8 = 5;
const MAJOR_TAG: u8 = 6;
const MAJOR_SIMPLE: u8 = 7;

/// Additional-information values that announce a 1-, 2-, 4- or 8-byte argument.
const INFO_U8: u8 = 24;
const INFO_U16: u8 = 25;
const INFO_U32: u8 = 26;
const INFO_U64: u8 = 27;
/// Indefinite length (or, in major type 7, the "break" stop code).
const INFO_INDEFINITE: u8 = 31;

/// A CBOR data item of the supported kinds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Value {
    /// Major type 0.
    Unsigned(u64),
    /// Major type 1: the value is `-1 - n`.
    Negative(u64),
    /// Major type 2.
    Bytes(Vec<u8>),
    /// Major type 3.
    Text(String),
    /// Major type 4.
    Array(Vec<Value>),
    /// Major type 5 with text keys. The order here does not matter to the encoder, which
    /// sorts; keys must be distinct (the decoder guarantees it, callers building maps by
    /// hand use fixed distinct keys).
    Map(Vec<(String, Value)>),
}

/// Why bytes are not one canonical CBOR item of the supported kinds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CborError {
    /// The input ends inside an item.
    #[error("CBOR input ends inside the item that starts at byte {offset}")]
    Truncated {
        /// Where the incomplete item or argument starts.
        offset: usize,
    },
    /// Bytes follow the one top-level item.
    #[error("CBOR input has trailing bytes after the item, from byte {offset}")]
    TrailingBytes {
        /// Where the trailing bytes start.
        offset: usize,
    },
    /// An integer or length is not in its shortest form.
    #[error("CBOR item at byte {offset} does not use the shortest form of its argument")]
    NonShortest {
        /// The item's initial byte.
        offset: usize,
    },
    /// An indefinite-length item (or a stray "break").
    #[error(
        "CBOR item at byte {offset} has an indefinite length; only definite lengths are canonical"
    )]
    Indefinite {
        /// The item's initial byte.
        offset: usize,
    },
    /// Additional information 28–30, which RFC 8949 reserves.
    #[error("CBOR item at byte {offset} uses a reserved additional-information value")]
    Reserved {
        /// The item's initial byte.
        offset: usize,
    },
    /// A tag, float or simple value.
    #[error("CBOR item at byte {offset} is a {what}, which auth-request details never contain")]
    Unsupported {
        /// The item's initial byte.
        offset: usize,
        /// `"tag"` or `"float or simple value"`.
        what: &'static str,
    },
    /// A text string that is not UTF-8.
    #[error("CBOR text string at byte {offset} is not valid UTF-8")]
    InvalidUtf8 {
        /// The string's initial byte.
        offset: usize,
    },
    /// A map key that is not a text string.
    #[error("CBOR map key at byte {offset} is not a text string")]
    NonTextKey {
        /// The key's initial byte.
        offset: usize,
    },
    /// A map key equal to the one before it.
    #[error("CBOR map key at byte {offset} repeats the previous key")]
    DuplicateKey {
        /// The key's initial byte.
        offset: usize,
    },
    /// A map key that sorts before the one before it.
    #[error(
        "CBOR map key at byte {offset} is out of order (keys must be sorted by their encoded bytes)"
    )]
    KeysOutOfOrder {
        /// The key's initial byte.
        offset: usize,
    },
    /// Nesting deeper than 8 levels.
    #[error("CBOR item at byte {offset} is nested more than {MAX_DEPTH} levels deep")]
    TooDeep {
        /// The item's initial byte.
        offset: usize,
    },
}

/// The canonical encoding of `value`.
pub(crate) fn encode(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    encode_into(value, &mut out);
    out
}

fn encode_into(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Unsigned(n) => head(out, MAJOR_UNSIGNED, *n),
        Value::Negative(n) => head(out, MAJOR_NEGATIVE, *n),
        Value::Bytes(bytes) => {
            head(out, MAJOR_BYTES, bytes.len() as u64);
            out.extend_from_slice(bytes);
        }
        Value::Text(text) => encode_text(text, out),
        Value::Array(items) => {
            head(out, MAJOR_ARRAY, items.len() as u64);
            for item in items {
                encode_into(item, out);
            }
        }
        Value::Map(entries) => {
            // Sort by the encoded key, which is what §4.2.1 orders by.
            let mut encoded: Vec<(Vec<u8>, &Value)> = entries
                .iter()
                .map(|(key, value)| {
                    let mut k = Vec::with_capacity(key.len() + 9);
                    encode_text(key, &mut k);
                    (k, value)
                })
                .collect();
            encoded.sort_by(|a, b| a.0.cmp(&b.0));
            head(out, MAJOR_MAP, encoded.len() as u64);
            for (key, value) in encoded {
                out.extend_from_slice(&key);
                encode_into(value, out);
            }
        }
    }
}

fn encode_text(text: &str, out: &mut Vec<u8>) {
    head(out, MAJOR_TEXT, text.len() as u64);
    out.extend_from_slice(text.as_bytes());
}

/// The initial byte and argument of an item, in the shortest form that holds `arg`.
fn head(out: &mut Vec<u8>, major: u8, arg: u64) {
    let m = major << 5;
    if arg < u64::from(INFO_U8) {
        out.push(m | arg as u8);
    } else if let Ok(a) = u8::try_from(arg) {
        out.extend_from_slice(&[m | INFO_U8, a]);
    } else if let Ok(a) = u16::try_from(arg) {
        out.push(m | INFO_U16);
        out.extend_from_slice(&a.to_be_bytes());
    } else if let Ok(a) = u32::try_from(arg) {
        out.push(m | INFO_U32);
        out.extend_from_slice(&a.to_be_bytes());
    } else {
        out.push(m | INFO_U64);
        out.extend_from_slice(&arg.to_be_bytes());
    }
}

/// Decodes exactly one canonical item that spans all of `input`.
pub(crate) fn decode(input: &[u8]) -> Result<Value, CborError> {
    let mut reader = Reader { input, pos: 0 };
    let value = reader.item(0)?;
    if reader.pos != input.len() {
        return Err(CborError::TrailingBytes { offset: reader.pos });
    }
    Ok(value)
}

struct Reader<'a> {
    input: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn item(&mut self, depth: usize) -> Result<Value, CborError> {
        let offset = self.pos;
        if depth >= MAX_DEPTH {
            return Err(CborError::TooDeep { offset });
        }
        let (major, arg) = self.head()?;
        match major {
            MAJOR_UNSIGNED => Ok(Value::Unsigned(arg)),
            MAJOR_NEGATIVE => Ok(Value::Negative(arg)),
            MAJOR_BYTES => Ok(Value::Bytes(self.take(arg, offset)?.to_vec())),
            MAJOR_TEXT => {
                let bytes = self.take(arg, offset)?;
                let text =
                    std::str::from_utf8(bytes).map_err(|_| CborError::InvalidUtf8 { offset })?;
                Ok(Value::Text(text.to_owned()))
            }
            MAJOR_ARRAY => {
                let n = self.count(arg, 1, offset)?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.item(depth + 1)?);
                }
                Ok(Value::Array(items))
            }
            MAJOR_MAP => self.map(arg, depth, offset),
            // `head` already refused tags and major type 7.
            _ => Err(CborError::Unsupported {
                offset,
                what: "tag",
            }),
        }
    }

    fn map(&mut self, arg: u64, depth: usize, offset: usize) -> Result<Value, CborError> {
        let n = self.count(arg, 2, offset)?;
        let mut entries = Vec::with_capacity(n);
        let mut previous: Option<&'a [u8]> = None;
        for _ in 0..n {
            let key_start = self.pos;
            let Value::Text(key) = self.item(depth + 1)? else {
                return Err(CborError::NonTextKey { offset: key_start });
            };
            let encoded = self.input.get(key_start..self.pos).unwrap_or_default();
            match previous.map(|p| p.cmp(encoded)) {
                Some(Ordering::Equal) => return Err(CborError::DuplicateKey { offset: key_start }),
                Some(Ordering::Greater) => {
                    return Err(CborError::KeysOutOfOrder { offset: key_start });
                }
                Some(Ordering::Less) | None => {}
            }
            previous = Some(encoded);
            let value = self.item(depth + 1)?;
            entries.push((key, value));
        }
        Ok(Value::Map(entries))
    }

    /// Reads an initial byte and its argument, refusing every non-canonical form.
    fn head(&mut self) -> Result<(u8, u64), CborError> {
        let offset = self.pos;
        let initial = self.byte(offset)?;
        let major = initial >> 5;
        let info = initial & 0x1f;
        if major == MAJOR_TAG {
            return Err(CborError::Unsupported {
                offset,
                what: "tag",
            });
        }
        if major == MAJOR_SIMPLE {
            return Err(CborError::Unsupported {
                offset,
                what: "float or simple value",
            });
        }
        let (arg, smallest) = match info {
            0..INFO_U8 => return Ok((major, u64::from(info))),
            INFO_U8 => (u64::from(self.byte(offset)?), u64::from(INFO_U8)),
            INFO_U16 => (u64::from(u16::from_be_bytes(self.array(offset)?)), 0x100),
            INFO_U32 => (u64::from(u32::from_be_bytes(self.array(offset)?)), 0x1_0000),
            INFO_U64 => (u64::from_be_bytes(self.array(offset)?), 0x1_0000_0000),
            INFO_INDEFINITE => return Err(CborError::Indefinite { offset }),
            _ => return Err(CborError::Reserved { offset }),
        };
        if arg < smallest {
            return Err(CborError::NonShortest { offset });
        }
        Ok((major, arg))
    }

    fn byte(&mut self, item: usize) -> Result<u8, CborError> {
        let b = *self
            .input
            .get(self.pos)
            .ok_or(CborError::Truncated { offset: item })?;
        self.pos += 1;
        Ok(b)
    }

    fn array<const N: usize>(&mut self, item: usize) -> Result<[u8; N], CborError> {
        let bytes = self.take(N as u64, item)?;
        <[u8; N]>::try_from(bytes).map_err(|_| CborError::Truncated { offset: item })
    }

    /// The next `len` bytes, or `Truncated` if the input has fewer.
    fn take(&mut self, len: u64, item: usize) -> Result<&'a [u8], CborError> {
        let truncated = CborError::Truncated { offset: item };
        let len = usize::try_from(len).map_err(|_| truncated.clone())?;
        let end = self.pos.checked_add(len).ok_or(truncated.clone())?;
        let bytes = self.input.get(self.pos..end).ok_or(truncated)?;
        self.pos = end;
        Ok(bytes)
    }

    /// An element count that the remaining input could hold at `min_bytes` per element,
    /// so a forged count cannot make us allocate more than the input's size.
    fn count(&self, arg: u64, min_bytes: u64, item: usize) -> Result<usize, CborError> {
        let remaining = self.input.len().saturating_sub(self.pos) as u64;
        if arg.saturating_mul(min_bytes) > remaining {
            return Err(CborError::Truncated { offset: item });
        }
        usize::try_from(arg).map_err(|_| CborError::Truncated { offset: item })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        data_encoding::HEXLOWER.decode(s.as_bytes()).unwrap()
    }

    fn text(s: &str) -> Value {
        Value::Text(s.to_owned())
    }

    /// Examples from RFC 8949 Appendix A that fall in the supported kinds.
    fn rfc_examples() -> Vec<(Value, &'static str)> {
        vec![
            (Value::Unsigned(0), "00"),
            (Value::Unsigned(23), "17"),
            (Value::Unsigned(24), "1818"),
            (Value::Unsigned(100), "1864"),
            (Value::Unsigned(1000), "1903e8"),
            (Value::Unsigned(1_000_000), "1a000f4240"),
            (Value::Unsigned(1_000_000_000_000), "1b000000e8d4a51000"),
            (Value::Unsigned(u64::MAX), "1bffffffffffffffff"),
            (Value::Negative(0), "20"),
            (Value::Negative(9), "29"),
            (Value::Negative(99), "3863"),
            (Value::Negative(999), "3903e7"),
            (Value::Bytes(vec![]), "40"),
            (Value::Bytes(vec![1, 2, 3, 4]), "4401020304"),
            (text(""), "60"),
            (text("a"), "6161"),
            (text("IETF"), "6449455446"),
            (text("\u{00fc}"), "62c3bc"),
            (text("\u{6c34}"), "63e6b0b4"),
            (Value::Array(vec![]), "80"),
            (
                Value::Array(vec![
                    Value::Unsigned(1),
                    Value::Array(vec![Value::Unsigned(2), Value::Unsigned(3)]),
                    Value::Array(vec![Value::Unsigned(4), Value::Unsigned(5)]),
                ]),
                "8301820203820405",
            ),
            (
                Value::Array((1..=25).map(Value::Unsigned).collect()),
                "98190102030405060708090a0b0c0d0e0f101112131415161718181819",
            ),
            (Value::Map(vec![]), "a0"),
            (
                Value::Map(vec![
                    ("a".into(), Value::Unsigned(1)),
                    (
                        "b".into(),
                        Value::Array(vec![Value::Unsigned(2), Value::Unsigned(3)]),
                    ),
                ]),
                "a26161016162820203",
            ),
            (
                Value::Map(vec![
                    ("a".into(), text("A")),
                    ("b".into(), text("B")),
                    ("c".into(), text("C")),
                    ("d".into(), text("D")),
                    ("e".into(), text("E")),
                ]),
                "a56161614161626142616361436164614461656145",
            ),
        ]
    }

    #[test]
    fn encodes_and_decodes_the_rfc_appendix_a_examples() {
        for (value, want) in rfc_examples() {
            assert_eq!(encode(&value), hex(want), "{value:?}");
            assert_eq!(decode(&hex(want)).unwrap(), value, "{want}");
        }
    }

    #[test]
    fn lengths_switch_to_longer_heads_exactly_at_the_boundaries() {
        for (len, head_len) in [
            (23usize, 1usize),
            (24, 2),
            (255, 2),
            (256, 3),
            (65_535, 3),
            (65_536, 5),
        ] {
            let bytes = encode(&Value::Bytes(vec![7; len]));
            assert_eq!(bytes.len(), len + head_len, "length {len}");
            assert_eq!(decode(&bytes).unwrap(), Value::Bytes(vec![7; len]));
        }
        for n in [
            0xffff_ffffu64,
            0x1_0000_0000,
            u64::from(u32::MAX) + 1,
            u64::MAX - 1,
        ] {
            assert_eq!(
                decode(&encode(&Value::Unsigned(n))).unwrap(),
                Value::Unsigned(n)
            );
        }
    }

    #[test]
    fn map_keys_are_sorted_by_encoded_form_so_shorter_keys_come_first() {
        let value = Value::Map(vec![
            ("bb".into(), Value::Unsigned(1)),
            ("a".into(), Value::Unsigned(2)),
            ("c".into(), Value::Unsigned(3)),
            ("".into(), Value::Unsigned(4)),
        ]);
        // "" < "a" < "c" < "bb": length first, then bytes.
        assert_eq!(encode(&value), hex("a4600461610261630362626201"));
        // A key of 24 bytes gets a two-byte head (0x78 0x18) and sorts after every shorter
        // one, as its encoded form says.
        let long = "k".repeat(24);
        let bytes = encode(&Value::Map(vec![
            (long.clone(), Value::Unsigned(0)),
            ("z".repeat(23), Value::Unsigned(1)),
        ]));
        assert_eq!(bytes.get(1), Some(&0x77));
        assert!(decode(&bytes).is_ok());
    }

    #[test]
    fn non_shortest_arguments_are_refused() {
        for bad in [
            "1817",               // 23 in one extra byte
            "190017",             // 23 in two
            "1900ff",             // 255 in two
            "1a0000ffff",         // 65535 in four
            "1b00000000ffffffff", // u32::MAX in eight
            "3800",               // -1 in one extra byte
            "5801ff",             // 1-byte string with a 1-byte length
            "780161",             // "a" with a 1-byte length
            "980100",             // [0] with a 1-byte count
            "b8016161 00",        // {"a": 0} with a 1-byte count
        ] {
            let bytes = hex(&bad.replace(' ', ""));
            assert_eq!(
                decode(&bytes),
                Err(CborError::NonShortest { offset: 0 }),
                "{bad}"
            );
        }
    }

    #[test]
    fn indefinite_lengths_and_breaks_are_refused() {
        for bad in ["5f4101ff", "7f6161ff", "9f00ff", "bf616100ff", "ff"] {
            let err = decode(&hex(bad)).unwrap_err();
            assert!(
                matches!(
                    err,
                    CborError::Indefinite { offset: 0 } | CborError::Unsupported { offset: 0, .. }
                ),
                "{bad}: {err:?}"
            );
        }
        assert_eq!(
            decode(&hex("9f00ff")),
            Err(CborError::Indefinite { offset: 0 })
        );
    }

    #[test]
    fn tags_floats_simple_values_and_reserved_heads_are_refused() {
        for (bad, what) in [
            ("c11a514b67b0", "tag"),
            ("f4", "float or simple value"),
            ("f6", "float or simple value"),
            ("f93c00", "float or simple value"),
            ("fb3ff199999999999a", "float or simple value"),
        ] {
            assert_eq!(
                decode(&hex(bad)),
                Err(CborError::Unsupported { offset: 0, what }),
                "{bad}"
            );
        }
        for bad in ["1c", "3d", "5e", "7c", "9d", "be"] {
            assert_eq!(
                decode(&hex(bad)),
                Err(CborError::Reserved { offset: 0 }),
                "{bad}"
            );
        }
    }

    #[test]
    fn maps_need_sorted_distinct_text_keys() {
        assert_eq!(
            decode(&hex("a2616201616102")),
            Err(CborError::KeysOutOfOrder { offset: 4 })
        );
        // {"aa": 1, "b": 2}: the longer key first is out of order.
        assert_eq!(
            decode(&hex("a262616101616202")),
            Err(CborError::KeysOutOfOrder { offset: 5 })
        );
        assert_eq!(
            decode(&hex("a2616101616102")),
            Err(CborError::DuplicateKey { offset: 4 })
        );
        assert_eq!(
            decode(&hex("a10102")),
            Err(CborError::NonTextKey { offset: 1 })
        );
        assert_eq!(
            decode(&hex("a1410102")),
            Err(CborError::NonTextKey { offset: 1 })
        );
    }

    #[test]
    fn invalid_utf8_trailing_bytes_and_truncation_are_refused() {
        assert_eq!(
            decode(&hex("62c328")),
            Err(CborError::InvalidUtf8 { offset: 0 })
        );
        assert_eq!(
            decode(&hex("0000")),
            Err(CborError::TrailingBytes { offset: 1 })
        );
        assert_eq!(decode(&[]), Err(CborError::Truncated { offset: 0 }));
        assert_eq!(
            decode(&hex("6461")),
            Err(CborError::Truncated { offset: 0 })
        );
        assert_eq!(
            decode(&hex("1a0000")),
            Err(CborError::Truncated { offset: 0 })
        );
    }

    #[test]
    fn huge_claimed_lengths_fail_without_allocating() {
        for bad in [
            "5bffffffffffffffff",
            "7bffffffffffffffff",
            "9bffffffffffffffff",
            "bbffffffffffffffff",
            "9a7fffffff",
            "ba7fffffff",
        ] {
            assert_eq!(
                decode(&hex(bad)),
                Err(CborError::Truncated { offset: 0 }),
                "{bad}"
            );
        }
    }

    #[test]
    fn nesting_is_bounded() {
        let ok = [vec![0x81u8; MAX_DEPTH - 1], vec![0x00]].concat();
        assert!(decode(&ok).is_ok());
        let deep = [vec![0x81u8; MAX_DEPTH], vec![0x00]].concat();
        assert_eq!(decode(&deep), Err(CborError::TooDeep { offset: MAX_DEPTH }));
        // A long chain is refused at the limit, not by exhausting the stack.
        assert!(decode(&vec![0x81u8; 100_000]).is_err());
    }
}
