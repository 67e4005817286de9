//! Tests of [`super`] (details.rs): canonical bytes, and every way of spelling details
//! non-canonically or invalidly.

use super::*;

fn hex(s: &str) -> Vec<u8> {
    data_encoding::HEXLOWER
        .decode(s.replace(' ', "").as_bytes())
        .unwrap()
}

/// A valid public key: the one of the all-7 seed.
fn pubkey() -> [u8; 32] {
    ed25519_dalek::SigningKey::from_bytes(&[7; 32])
        .verifying_key()
        .to_bytes()
}

fn scope(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| (*s).to_owned()).collect()
}

fn samples() -> Vec<Details> {
    vec![
        Details::Pair(Pair {
            requested_scope: scope(&["anthropic", "github"]),
            name: None,
            owner: None,
        }),
        Details::Pair(Pair {
            requested_scope: vec![],
            name: None,
            owner: None,
        }),
        Details::Recover(Recover {
            agent_identity: "bot@example.org".into(),
            new_pubkey: pubkey(),
            owner: None,
        }),
        Details::ScopeChange(ScopeChange {
            agent_id: "agt_0123456789abcdefghjkmnpqrs".into(),
            new_scope: scope(&["openai"]),
        }),
        Details::HighValueRelease(HighValueRelease {
            agent_id: "agt_0123456789abcdefghjkmnpqrs".into(),
            credential: "github".into(),
            reason: "push the release tag — ünïcødé is fine".into(),
        }),
        Details::HighValueRelease(HighValueRelease {
            agent_id: "a".into(),
            credential: "c".into(),
            reason: String::new(),
        }),
        Details::KeyRotate(KeyRotate {
            agent_id: "agt_x".into(),
            new_pubkey: pubkey(),
        }),
        Details::Pair(Pair {
            requested_scope: scope(&["github"]),
            name: Some("ci-bot".into()),
            owner: Some(1000),
        }),
        Details::Recover(Recover {
            agent_identity: "ci-bot".into(),
            new_pubkey: pubkey(),
            owner: Some(0),
        }),
    ]
}

/// Pair details with the given optional fields.
fn pair_with(name: Option<&str>, owner: Option<u32>) -> Details {
    Details::Pair(Pair {
        requested_scope: scope(&["github"]),
        name: name.map(str::to_owned),
        owner,
    })
}

/// The canonical bytes of a map given as entries, in any order.
fn map(entries: Vec<(&str, Value)>) -> Vec<u8> {
    cbor::encode(&Value::Map(
        entries
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
    ))
}

/// `{"type": "pair", "requested_scope": ["github"]}` in canonical form, in pieces so
/// tests can respell one piece at a time.
const PAIR_MAP: &str = "a2";
const TYPE_KEY: &str = "64 74797065";
const TYPE_PAIR: &str = "64 70616972";
const SCOPE_KEY: &str = "6f 7265717565737465645f73636f7065";
const SCOPE_GITHUB: &str = "81 66 676974687562";

fn pair_github() -> String {
    [PAIR_MAP, TYPE_KEY, TYPE_PAIR, SCOPE_KEY, SCOPE_GITHUB].join(" ")
}

#[test]
fn every_sample_round_trips_through_canonical_bytes() {
    for details in samples() {
        details.validate().unwrap();
        let bytes = encode(&details);
        assert_eq!(decode(&bytes).unwrap(), details);
    }
}

#[test]
fn the_pieces_used_below_are_the_canonical_encoding() {
    let details = Details::Pair(Pair {
        requested_scope: scope(&["github"]),
        name: None,
        owner: None,
    });
    assert_eq!(encode(&details), hex(&pair_github()));
}

#[test]
fn request_type_names_match_the_design_and_the_details() {
    let names: Vec<_> = RequestType::ALL.iter().map(|t| t.as_str()).collect();
    assert_eq!(
        names,
        [
            "Pair",
            "Recover",
            "ScopeChange",
            "HighValueRelease",
            "KeyRotate"
        ]
    );
    for t in RequestType::ALL {
        assert_eq!(t.as_str().parse::<RequestType>(), Ok(t));
        assert_eq!(t.to_string(), t.as_str());
    }
    assert!("pair".parse::<RequestType>().is_err());
    assert!("".parse::<RequestType>().is_err());
    for d in samples() {
        let Value::Map(entries) = cbor::decode(&encode(&d)).unwrap() else {
            panic!("not a map")
        };
        // "type" is the shortest key, so it comes first, except after "name", which is as
        // short and sorts before it.
        let at = usize::from(entries.first().is_some_and(|(k, _)| k == "name"));
        assert_eq!(
            entries.get(at),
            Some(&(
                "type".to_owned(),
                Value::Text(d.request_type().details_type().into())
            )),
            "{d:?}"
        );
    }
}

#[test]
fn keys_out_of_order_are_refused() {
    let swapped = [PAIR_MAP, SCOPE_KEY, SCOPE_GITHUB, TYPE_KEY, TYPE_PAIR].join(" ");
    assert!(matches!(
        decode(&hex(&swapped)),
        Err(DetailsError::Cbor(CborError::KeysOutOfOrder { .. }))
    ));
}

#[test]
fn non_shortest_heads_are_refused() {
    for bad in [
        // map count in one extra byte
        ["b802", TYPE_KEY, TYPE_PAIR, SCOPE_KEY, SCOPE_GITHUB].join(" "),
        // "type" key length in one extra byte
        [
            PAIR_MAP,
            "78 04 74797065",
            TYPE_PAIR,
            SCOPE_KEY,
            SCOPE_GITHUB,
        ]
        .join(" "),
        // "pair" value length in two extra bytes
        [
            PAIR_MAP,
            TYPE_KEY,
            "79 0004 70616972",
            SCOPE_KEY,
            SCOPE_GITHUB,
        ]
        .join(" "),
        // scope array count in one extra byte
        [
            PAIR_MAP,
            TYPE_KEY,
            TYPE_PAIR,
            SCOPE_KEY,
            "98 01 66 676974687562",
        ]
        .join(" "),
    ] {
        assert!(
            matches!(
                decode(&hex(&bad)),
                Err(DetailsError::Cbor(CborError::NonShortest { .. }))
            ),
            "{bad}"
        );
    }
}

#[test]
fn indefinite_lengths_are_refused() {
    for bad in [
        ["bf", TYPE_KEY, TYPE_PAIR, SCOPE_KEY, SCOPE_GITHUB, "ff"].join(" "),
        [
            PAIR_MAP,
            TYPE_KEY,
            TYPE_PAIR,
            SCOPE_KEY,
            "9f 66 676974687562 ff",
        ]
        .join(" "),
        [
            PAIR_MAP,
            TYPE_KEY,
            "7f 62 7061 62 6972 ff",
            SCOPE_KEY,
            SCOPE_GITHUB,
        ]
        .join(" "),
    ] {
        assert!(
            matches!(
                decode(&hex(&bad)),
                Err(DetailsError::Cbor(CborError::Indefinite { .. }))
            ),
            "{bad}"
        );
    }
}

#[test]
fn duplicate_unknown_and_missing_keys_are_refused() {
    let dup = [
        "a3",
        TYPE_KEY,
        TYPE_PAIR,
        TYPE_KEY,
        TYPE_PAIR,
        SCOPE_KEY,
        SCOPE_GITHUB,
    ];
    assert!(matches!(
        decode(&hex(&dup.join(" "))),
        Err(DetailsError::Cbor(CborError::DuplicateKey { .. }))
    ));
    // {"type": "pair", "zzzz": 0, "requested_scope": [...]}: sorted, but "zzzz" is
    // unknown.
    let unknown = [
        "a3",
        TYPE_KEY,
        TYPE_PAIR,
        "64 7a7a7a7a 00",
        SCOPE_KEY,
        SCOPE_GITHUB,
    ];
    assert_eq!(
        decode(&hex(&unknown.join(" "))),
        Err(DetailsError::UnknownKey { key: "zzzz".into() })
    );
    let missing = ["a1", TYPE_KEY, TYPE_PAIR];
    assert_eq!(
        decode(&hex(&missing.join(" "))),
        Err(DetailsError::MissingKey {
            key: "requested_scope"
        })
    );
    let no_type = ["a1", SCOPE_KEY, SCOPE_GITHUB];
    assert_eq!(
        decode(&hex(&no_type.join(" "))),
        Err(DetailsError::MissingKey { key: "type" })
    );
    // A Recover without its key, and a Pair carrying a Recover field.
    let recover_only_identity = Value::Map(vec![
        ("type".into(), Value::Text("recover".into())),
        ("agent_identity".into(), Value::Text("bot".into())),
    ]);
    assert_eq!(
        decode(&cbor::encode(&recover_only_identity)),
        Err(DetailsError::MissingKey { key: "new_pubkey" })
    );
    let pair_with_extra = Value::Map(vec![
        ("type".into(), Value::Text("pair".into())),
        ("requested_scope".into(), Value::Array(vec![])),
        ("agent_identity".into(), Value::Text("bot".into())),
    ]);
    assert_eq!(
        decode(&cbor::encode(&pair_with_extra)),
        Err(DetailsError::UnknownKey {
            key: "agent_identity".into()
        })
    );
}

#[test]
fn trailing_bytes_are_refused() {
    let bad = format!("{} 00", pair_github());
    assert!(matches!(
        decode(&hex(&bad)),
        Err(DetailsError::Cbor(CborError::TrailingBytes { .. }))
    ));
}

#[test]
fn wrong_kinds_and_unknown_types_are_refused() {
    assert_eq!(
        decode(&cbor::encode(&Value::Array(vec![]))),
        Err(DetailsError::NotAMap)
    );
    assert_eq!(
        decode(&map(vec![("type", Value::Bytes(b"pair".to_vec()))])),
        Err(DetailsError::WrongType {
            field: "type",
            expected: "a text string"
        })
    );
    assert_eq!(
        decode(&map(vec![("type", Value::Text("Pair".into()))])),
        Err(DetailsError::UnknownType {
            name: "Pair".into()
        })
    );
    assert_eq!(
        decode(&map(vec![
            ("type", Value::Text("pair".into())),
            ("requested_scope", Value::Text("github".into())),
        ])),
        Err(DetailsError::WrongType {
            field: "requested_scope",
            expected: "an array of text strings"
        })
    );
    assert_eq!(
        decode(&map(vec![
            ("type", Value::Text("pair".into())),
            ("requested_scope", Value::Array(vec![Value::Unsigned(1)])),
        ])),
        Err(DetailsError::WrongType {
            field: "requested_scope",
            expected: "an array of text strings"
        })
    );
    assert_eq!(
        decode(&map(vec![
            ("type", Value::Text("key_rotate".into())),
            ("agent_id", Value::Text("agt_x".into())),
            ("new_pubkey", Value::Text("not bytes".into())),
        ])),
        Err(DetailsError::WrongType {
            field: "new_pubkey",
            expected: "a byte string"
        })
    );
    assert_eq!(
        decode(&map(vec![
            ("type", Value::Text("key_rotate".into())),
            ("agent_id", Value::Text("agt_x".into())),
            ("new_pubkey", Value::Bytes(vec![1; 31])),
        ])),
        Err(DetailsError::WrongKeyLength {
            field: "new_pubkey",
            len: 31
        })
    );
}

#[test]
fn oversized_blobs_scopes_and_strings_are_refused() {
    let big = vec![0u8; MAX_DETAILS_LEN + 1];
    assert_eq!(
        decode(&big),
        Err(DetailsError::TooLarge {
            len: MAX_DETAILS_LEN + 1,
            max: MAX_DETAILS_LEN
        })
    );

    let names = |n: usize| (0..n).map(|i| format!("c{i}")).collect::<Vec<_>>();
    let at_limit = Details::Pair(Pair {
        requested_scope: names(MAX_SCOPE_NAMES),
        name: None,
        owner: None,
    });
    assert_eq!(decode(&encode(&at_limit)).unwrap(), at_limit);
    let over = Details::Pair(Pair {
        requested_scope: names(MAX_SCOPE_NAMES + 1),
        name: None,
        owner: None,
    });
    assert_eq!(
        decode(&encode(&over)),
        Err(DetailsError::ScopeTooLarge {
            field: "requested_scope",
            len: 257,
            max: 256
        })
    );
    assert_eq!(
        decode(&encode(&over)),
        over.validate().map(|()| over.clone())
    );

    // 256 names of 64 characters are each valid, but the blob is over 16 KiB.
    let long_names = Details::ScopeChange(ScopeChange {
        agent_id: "agt_x".into(),
        new_scope: (0..MAX_SCOPE_NAMES).map(|i| format!("{i:0>64}")).collect(),
    });
    assert!(matches!(
        long_names.validate(),
        Err(DetailsError::TooLarge { .. })
    ));
    assert!(matches!(
        decode(&encode(&long_names)),
        Err(DetailsError::TooLarge { .. })
    ));

    for (len, ok) in [(MAX_TEXT_LEN, true), (MAX_TEXT_LEN + 1, false)] {
        let d = Details::HighValueRelease(HighValueRelease {
            agent_id: "agt_x".into(),
            credential: "github".into(),
            reason: "r".repeat(len),
        });
        assert_eq!(decode(&encode(&d)).is_ok(), ok, "reason of {len} bytes");
    }
    // The limit counts bytes, not characters.
    let d = Details::Recover(Recover {
        agent_identity: "é".repeat(MAX_TEXT_LEN / 2 + 1),
        new_pubkey: pubkey(),
        owner: None,
    });
    assert_eq!(
        decode(&encode(&d)),
        Err(DetailsError::TextTooLong {
            field: "agent_identity",
            len: MAX_TEXT_LEN + 2,
            max: MAX_TEXT_LEN
        })
    );
}

#[test]
fn scope_names_must_be_valid_and_distinct() {
    for (names, want) in [
        (
            vec!["github", "GitHub"],
            DetailsError::InvalidScopeName {
                field: "new_scope",
                index: 1,
            },
        ),
        (
            vec![""],
            DetailsError::InvalidScopeName {
                field: "new_scope",
                index: 0,
            },
        ),
        (
            vec!["a", "b", "a"],
            DetailsError::DuplicateScopeName {
                field: "new_scope",
                index: 2,
            },
        ),
    ] {
        let d = Details::ScopeChange(ScopeChange {
            agent_id: "agt_x".into(),
            new_scope: scope(&names),
        });
        assert_eq!(d.validate(), Err(want.clone()));
        assert_eq!(decode(&encode(&d)), Err(want));
    }
}

#[test]
fn text_fields_refuse_control_and_bidi_characters_and_emptiness() {
    for bad in [
        "a\u{1b}[2Jb",
        "line\nbreak",
        "nul\0",
        "\u{202e}txt.exe",
        "\u{2066}x",
    ] {
        let d = Details::HighValueRelease(HighValueRelease {
            agent_id: "agt_x".into(),
            credential: "github".into(),
            reason: bad.into(),
        });
        assert_eq!(
            decode(&encode(&d)),
            Err(DetailsError::ForbiddenCharacter { field: "reason" }),
            "{bad:?}"
        );
    }
    let d = Details::KeyRotate(KeyRotate {
        agent_id: String::new(),
        new_pubkey: pubkey(),
    });
    assert_eq!(
        decode(&encode(&d)),
        Err(DetailsError::EmptyText { field: "agent_id" })
    );
    let d = Details::HighValueRelease(HighValueRelease {
        agent_id: "agt_x".into(),
        credential: "Not A Name".into(),
        reason: String::new(),
    });
    assert_eq!(
        decode(&encode(&d)),
        Err(DetailsError::InvalidName {
            field: "credential"
        })
    );
}

#[test]
fn new_keys_must_be_usable_ed25519_public_keys() {
    // The identity point (small order) and a y-coordinate with no point on the curve.
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let mut not_on_curve = [0u8; 32];
    not_on_curve[0] = 2;
    assert!(!valid_public_key(&identity));
    assert!(!valid_public_key(&not_on_curve));
    assert!(valid_public_key(&pubkey()));
    for key in [identity, not_on_curve] {
        let d = Details::Recover(Recover {
            agent_identity: "bot".into(),
            new_pubkey: key,
            owner: None,
        });
        assert_eq!(
            decode(&encode(&d)),
            Err(DetailsError::BadPublicKey {
                field: "new_pubkey"
            })
        );
    }
}

#[test]
fn errors_quote_untrusted_text_escaped_and_shortened() {
    let evil = format!("\u{1b}]0;pwned\u{7}{}", "x".repeat(500));
    let d = cbor::encode(&Value::Map(vec![("type".into(), Value::Text(evil))]));
    let err = decode(&d).unwrap_err();
    let text = err.to_string();
    assert!(
        !text.contains('\u{1b}') && text.contains("\\u{1b}"),
        "{text}"
    );
    assert!(text.len() < 300, "{text}");
}

/// xorshift64*: deterministic pseudo-random bytes without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

#[test]
fn random_bytes_never_panic_the_decoder() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut accepted = 0;
    for i in 0..50_000 {
        let len = (rng.next() % 96) as usize;
        let mut bytes = rng.bytes(len);
        // Half of the inputs start like a details map, to get past the first byte.
        if i % 2 == 0 && !bytes.is_empty() {
            bytes[0] = 0xa0 | (bytes[0] % 6);
        }
        if decode(&bytes).is_ok() {
            accepted += 1;
        }
    }
    assert_eq!(accepted, 0, "random bytes are not valid details");
}

#[test]
fn every_truncation_and_every_single_byte_change_of_valid_details_is_handled() {
    let mut rng = Rng(42);
    for details in samples() {
        let bytes = encode(&details);
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "{details:?} cut at {cut}");
        }
        for at in 0..bytes.len() {
            for _ in 0..8 {
                let mut changed = bytes.clone();
                changed[at] ^= (rng.next() as u8) | 1;
                // Most changes are refused; any accepted one must be canonical.
                if let Ok(d) = decode(&changed) {
                    assert_eq!(encode(&d), changed);
                }
            }
        }
    }
}

#[test]
fn optional_fields_round_trip_present_or_absent() {
    let recover = |owner| {
        Details::Recover(Recover {
            agent_identity: "bot".into(),
            new_pubkey: pubkey(),
            owner,
        })
    };
    for details in [
        pair_with(None, None),
        pair_with(Some("ci-bot"), None),
        pair_with(None, Some(1000)),
        pair_with(Some("a"), Some(0)),
        pair_with(Some(&"x".repeat(64)), Some(u32::MAX)),
        recover(None),
        recover(Some(0)),
        recover(Some(65_536)),
        recover(Some(u32::MAX)),
    ] {
        details.validate().unwrap();
        let bytes = encode(&details);
        assert_eq!(decode(&bytes).unwrap(), details);
    }
}

#[test]
fn absent_optional_fields_leave_the_bytes_as_they_were() {
    // Without name and owner, Pair details are the bytes they were before those fields
    // existed (the committed vectors check the same for every type).
    assert_eq!(encode(&pair_with(None, None)), hex(&pair_github()));
    let Value::Map(entries) = cbor::decode(&encode(&pair_with(None, None))).unwrap() else {
        panic!("not a map")
    };
    assert_eq!(entries.len(), 2);
}

#[test]
fn optional_fields_take_their_canonical_places() {
    // {"name": "ci-bot", "type": "pair", "owner": 1000, "requested_scope": ["github"]}:
    // name and type both have a 0x64 head and n < t; owner (0x65) sorts before
    // requested_scope (0x6f); 1000 takes a two-byte argument.
    let want = [
        "a4",
        "64 6e616d65 66 63692d626f74",
        TYPE_KEY,
        TYPE_PAIR,
        "65 6f776e6572 19 03e8",
        SCOPE_KEY,
        SCOPE_GITHUB,
    ]
    .join(" ");
    assert_eq!(encode(&pair_with(Some("ci-bot"), Some(1000))), hex(&want));
    // Small owners fit in the head itself; 0 is written, not left out.
    let root = encode(&pair_with(None, Some(0)));
    assert!(
        root.windows(7).any(|w| w == hex("65 6f776e6572 00")),
        "{root:02x?}"
    );
}

#[test]
fn a_non_canonical_owner_is_refused() {
    // owner 5 written with a one-byte argument, and 1000 with a four-byte one.
    for owner in ["18 05", "1a 000003e8", "1b 00000000000003e8"] {
        let bad = [
            "a3",
            TYPE_KEY,
            TYPE_PAIR,
            &format!("65 6f776e6572 {owner}"),
            SCOPE_KEY,
            SCOPE_GITHUB,
        ]
        .join(" ");
        assert!(
            matches!(
                decode(&hex(&bad)),
                Err(DetailsError::Cbor(CborError::NonShortest { .. }))
            ),
            "{owner}"
        );
    }
    // The owner key placed after requested_scope is out of order.
    let late = [
        "a3",
        TYPE_KEY,
        TYPE_PAIR,
        SCOPE_KEY,
        SCOPE_GITHUB,
        "65 6f776e6572 01",
    ]
    .join(" ");
    assert!(matches!(
        decode(&hex(&late)),
        Err(DetailsError::Cbor(CborError::KeysOutOfOrder { .. }))
    ));
}

#[test]
fn an_owner_that_is_not_a_u32_is_refused() {
    let wrong = DetailsError::WrongType {
        field: "owner",
        expected: "a uid (an unsigned integer below 2^32)",
    };
    for owner in [
        Value::Text("1000".into()),
        Value::Negative(0),
        Value::Unsigned(u64::from(u32::MAX) + 1),
        Value::Unsigned(u64::MAX),
        Value::Bytes(vec![0, 0, 3, 232]),
        Value::Array(vec![]),
    ] {
        for kind in ["pair", "recover"] {
            let mut entries = vec![("type", Value::Text(kind.into())), ("owner", owner.clone())];
            if kind == "pair" {
                entries.push(("requested_scope", Value::Array(vec![])));
            } else {
                entries.push(("agent_identity", Value::Text("bot".into())));
                entries.push(("new_pubkey", Value::Bytes(pubkey().to_vec())));
            }
            assert_eq!(
                decode(&map(entries)),
                Err(wrong.clone()),
                "{kind} {owner:?}"
            );
        }
    }
    // null is not "absent": CBOR simple values are refused outright.
    let null = [
        "a3",
        TYPE_KEY,
        TYPE_PAIR,
        "65 6f776e6572 f6",
        SCOPE_KEY,
        SCOPE_GITHUB,
    ]
    .join(" ");
    assert!(matches!(
        decode(&hex(&null)),
        Err(DetailsError::Cbor(CborError::Unsupported { .. }))
    ));
}

#[test]
fn an_invalid_agent_name_is_refused() {
    for bad in [
        "",
        "CI-bot",
        "-bot",
        ".bot",
        "ci bot",
        "bot\n",
        "é",
        &"x".repeat(65),
    ] {
        let d = pair_with(Some(bad), None);
        let want = Err(DetailsError::InvalidName { field: "name" });
        assert_eq!(d.validate(), want, "{bad:?}");
        assert_eq!(decode(&encode(&d)), want.map(|()| d.clone()), "{bad:?}");
    }
    assert_eq!(
        decode(&map(vec![
            ("type", Value::Text("pair".into())),
            ("name", Value::Bytes(b"bot".to_vec())),
            ("requested_scope", Value::Array(vec![])),
        ])),
        Err(DetailsError::WrongType {
            field: "name",
            expected: "a text string"
        })
    );
    // Only Pair has a name, and only Pair and Recover have an owner.
    for (kind, extra, key) in [
        ("recover", ("name", Value::Text("bot".into())), "name"),
        ("key_rotate", ("owner", Value::Unsigned(1)), "owner"),
        ("scope_change", ("owner", Value::Unsigned(1)), "owner"),
    ] {
        let mut entries = vec![("type", Value::Text(kind.into())), extra];
        match kind {
            "recover" => {
                entries.push(("agent_identity", Value::Text("bot".into())));
                entries.push(("new_pubkey", Value::Bytes(pubkey().to_vec())));
            }
            "key_rotate" => {
                entries.push(("agent_id", Value::Text("agt_x".into())));
                entries.push(("new_pubkey", Value::Bytes(pubkey().to_vec())));
            }
            _ => {
                entries.push(("agent_id", Value::Text("agt_x".into())));
                entries.push(("new_scope", Value::Array(vec![])));
            }
        }
        assert_eq!(
            decode(&map(entries)),
            Err(DetailsError::UnknownKey { key: key.into() }),
            "{kind}"
        );
    }
}
