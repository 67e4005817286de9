//! Typed access to `a{sv}` maps, the shape of every option map and record on the bus.
//!
//! Readers are strict: a key of the wrong type is an error, never silently ignored, so a
//! client bug shows up as `InvalidArgument` rather than as a default.

use std::collections::HashMap;

use zbus::{OwnedVariant, Variant};

/// An `a{sv}` as received.
pub type Dict = HashMap<String, OwnedVariant>;

/// Builds an `a{sv}` record.
#[derive(Debug, Default)]
pub struct DictBuilder(Dict);

impl DictBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn str(mut self, key: &str, value: impl Into<String>) -> Self {
        let s: String = value.into();
        self.0
            .insert(key.to_owned(), OwnedVariant::from(zbus::Str::from(s)));
        self
    }

    pub fn u32(mut self, key: &str, value: u32) -> Self {
        self.0.insert(key.to_owned(), OwnedVariant::from(value));
        self
    }

    pub fn i64(mut self, key: &str, value: i64) -> Self {
        self.0.insert(key.to_owned(), OwnedVariant::from(value));
        self
    }

    pub fn u64(mut self, key: &str, value: u64) -> Self {
        self.0.insert(key.to_owned(), OwnedVariant::from(value));
        self
    }

    pub fn bool(mut self, key: &str, value: bool) -> Self {
        self.0.insert(key.to_owned(), OwnedVariant::from(value));
        self
    }

    pub fn opt_i64(self, key: &str, value: Option<i64>) -> Self {
        match value {
            Some(v) => self.i64(key, v),
            None => self,
        }
    }

    pub fn opt_u32(self, key: &str, value: Option<u32>) -> Self {
        match value {
            Some(v) => self.u32(key, v),
            None => self,
        }
    }

    pub fn strs(mut self, key: &str, values: &[String]) -> Self {
        if let Ok(v) = OwnedVariant::try_from(Variant::from(values.to_vec())) {
            self.0.insert(key.to_owned(), v);
        }
        self
    }

    pub fn build(self) -> Dict {
        self.0
    }
}

/// Why a dict could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DictError {
    #[error("option '{key}' must be of type '{expected}'")]
    WrongType { key: String, expected: &'static str },
    #[error("unknown option '{key}' (known: {known})")]
    Unknown { key: String, known: String },
    #[error("too many options ({count}; at most {max})")]
    TooMany { count: usize, max: usize },
    #[error("option '{key}' is too long (at most {max} elements)")]
    TooLong { key: String, max: usize },
    #[error("option '{key}': cannot take the file descriptor ({reason})")]
    Fd { key: String, reason: String },
}

/// Rejects maps with keys outside `known` or more than [`super::names::MAX_OPTIONS`] entries.
pub fn check_keys(dict: &Dict, known: &[&str]) -> Result<(), DictError> {
    let max = super::names::MAX_OPTIONS;
    if dict.len() > max {
        return Err(DictError::TooMany {
            count: dict.len(),
            max,
        });
    }
    for key in dict.keys() {
        if !known.contains(&key.as_str()) {
            return Err(DictError::Unknown {
                key: key.clone(),
                known: known.join(", "),
            });
        }
    }
    Ok(())
}

fn wrong(key: &str, expected: &'static str) -> DictError {
    DictError::WrongType {
        key: key.to_owned(),
        expected,
    }
}

/// Reads `key` as a string, if present.
pub fn get_str(dict: &Dict, key: &str) -> Result<Option<String>, DictError> {
    match dict.get(key).map(|v| &**v) {
        None => Ok(None),
        Some(Variant::Str(s)) => Ok(Some(s.to_string())),
        Some(_) => Err(wrong(key, "s")),
    }
}

/// Reads `key` as a boolean, if present.
pub fn get_bool(dict: &Dict, key: &str) -> Result<Option<bool>, DictError> {
    match dict.get(key).map(|v| &**v) {
        None => Ok(None),
        Some(Variant::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(wrong(key, "b")),
    }
}

/// Reads `key` as a u32, if present.
pub fn get_u32(dict: &Dict, key: &str) -> Result<Option<u32>, DictError> {
    match dict.get(key).map(|v| &**v) {
        None => Ok(None),
        Some(Variant::U32(n)) => Ok(Some(*n)),
        Some(_) => Err(wrong(key, "u")),
    }
}

/// Reads `key` as an i64, if present.
pub fn get_i64(dict: &Dict, key: &str) -> Result<Option<i64>, DictError> {
    match dict.get(key).map(|v| &**v) {
        None => Ok(None),
        Some(Variant::I64(n)) => Ok(Some(*n)),
        Some(_) => Err(wrong(key, "x")),
    }
}

/// Reads `key` as a u64, if present.
pub fn get_u64(dict: &Dict, key: &str) -> Result<Option<u64>, DictError> {
    match dict.get(key).map(|v| &**v) {
        None => Ok(None),
        Some(Variant::U64(n)) => Ok(Some(*n)),
        Some(_) => Err(wrong(key, "t")),
    }
}

/// Reads `key` as a file descriptor (`h`), if present: a duplicate the caller owns.
pub fn get_fd(dict: &Dict, key: &str) -> Result<Option<std::os::fd::OwnedFd>, DictError> {
    use std::os::fd::AsFd;
    match dict.get(key).map(|v| &**v) {
        None => Ok(None),
        Some(Variant::Fd(fd)) => {
            fd.as_fd()
                .try_clone_to_owned()
                .map(Some)
                .map_err(|e| DictError::Fd {
                    key: key.to_owned(),
                    reason: e.to_string(),
                })
        }
        Some(_) => Err(wrong(key, "h")),
    }
}

/// Reads `key` as a byte array (`ay`), if present.
pub fn get_bytes(dict: &Dict, key: &str) -> Result<Option<Vec<u8>>, DictError> {
    let Some(v) = dict.get(key) else {
        return Ok(None);
    };
    let Variant::Array(arr) = &**v else {
        return Err(wrong(key, "ay"));
    };
    arr.iter()
        .map(|item| match item {
            Variant::U8(b) => Ok(*b),
            _ => Err(wrong(key, "ay")),
        })
        .collect::<Result<Vec<u8>, _>>()
        .map(Some)
}

/// Builds the variant of a byte array (`ay`).
pub fn bytes_variant(bytes: &[u8]) -> Option<OwnedVariant> {
    OwnedVariant::try_from(Variant::from(bytes.to_vec())).ok()
}

/// Reads `key` as an array of strings (at most [`super::names::MAX_ARRAY`]), if present.
pub fn get_strs(dict: &Dict, key: &str) -> Result<Option<Vec<String>>, DictError> {
    let Some(v) = dict.get(key) else {
        return Ok(None);
    };
    let Variant::Array(arr) = &**v else {
        return Err(wrong(key, "as"));
    };
    if arr.len() > super::names::MAX_ARRAY {
        return Err(DictError::TooLong {
            key: key.to_owned(),
            max: super::names::MAX_ARRAY,
        });
    }
    let mut out = Vec::with_capacity(arr.len());
    for item in arr.iter() {
        match item {
            Variant::Str(s) => out.push(s.to_string()),
            _ => return Err(wrong(key, "as")),
        }
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_typed_values() {
        let d = DictBuilder::new()
            .str("s", "x")
            .u32("u", 7)
            .i64("x", -3)
            .u64("t", 9)
            .bool("b", true)
            .strs("as", &["a".into(), "b".into()])
            .build();
        assert_eq!(get_str(&d, "s"), Ok(Some("x".into())));
        assert_eq!(get_u32(&d, "u"), Ok(Some(7)));
        assert_eq!(get_i64(&d, "x"), Ok(Some(-3)));
        assert_eq!(get_u64(&d, "t"), Ok(Some(9)));
        assert_eq!(get_bool(&d, "b"), Ok(Some(true)));
        assert_eq!(get_strs(&d, "as"), Ok(Some(vec!["a".into(), "b".into()])));
        assert_eq!(get_str(&d, "missing"), Ok(None));
        let mut d = d;
        d.insert("ay".into(), bytes_variant(&[1, 2, 255]).unwrap());
        assert_eq!(get_bytes(&d, "ay"), Ok(Some(vec![1, 2, 255])));
        assert!(get_bytes(&d, "as").is_err());
    }

    #[test]
    fn wrong_types_and_unknown_keys_are_errors() {
        let d = DictBuilder::new().u32("s", 1).build();
        assert!(matches!(get_str(&d, "s"), Err(DictError::WrongType { .. })));
        assert!(matches!(
            check_keys(&d, &["other"]),
            Err(DictError::Unknown { .. })
        ));
        assert_eq!(check_keys(&d, &["s"]), Ok(()));
        let mut big = DictBuilder::new();
        for i in 0..=crate::api::names::MAX_OPTIONS {
            big = big.u32(&format!("k{i}"), 1);
        }
        assert!(matches!(
            check_keys(&big.build(), &[]),
            Err(DictError::TooMany { .. })
        ));
    }
}
