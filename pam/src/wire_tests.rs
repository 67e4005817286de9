#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;

fn frame(req: &Request<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(encoded_len(req));
    encode_request(req, &mut out).unwrap();
    assert_eq!(out.len(), encoded_len(req));
    out
}

fn all_requests() -> Vec<Request<'static>> {
    vec![
        Request::OpenSession {
            user: "alice",
            password: b"correct horse",
        },
        Request::CloseSession { user: "alice" },
        Request::ChangePassword {
            user: "bob",
            old: b"old",
            new: b"new\0with nul\nand newline",
        },
        Request::ChangePassword {
            user: "root",
            old: b"",
            new: b"x",
        },
    ]
}

#[test]
fn every_request_round_trips() {
    for req in all_requests() {
        let bytes = frame(&req);
        assert_eq!(parse_request(&bytes).unwrap(), req);
        let head: [u8; HEADER_LEN] = bytes[..HEADER_LEN].try_into().unwrap();
        let header = parse_header(&head).unwrap();
        assert_eq!(header.op, req.op());
        assert_eq!(header.body_len, bytes.len() - HEADER_LEN);
    }
}

#[test]
fn open_session_has_the_documented_layout() {
    let bytes = frame(&Request::OpenSession {
        user: "al",
        password: b"pw!",
    });
    assert_eq!(
        bytes,
        [
            b'A', b'K', 1, 1, 0, 0, 0, 9, // header: magic, version, op, body length
            0, 2, b'a', b'l', // user
            0, 3, b'p', b'w', b'!', // password
        ]
    );
}

#[test]
fn every_truncation_is_refused() {
    for req in all_requests() {
        let bytes = frame(&req);
        for cut in 0..bytes.len() {
            assert!(parse_request(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }
}

#[test]
fn trailing_bytes_are_refused() {
    let mut bytes = frame(&Request::CloseSession { user: "alice" });
    bytes.push(0);
    assert_eq!(parse_request(&bytes), Err(WireError::TrailingBytes));
    // A body longer than its fields, with the header agreeing, is refused too.
    let mut bytes = frame(&Request::CloseSession { user: "alice" });
    bytes.extend_from_slice(&[0, 0]);
    bytes[7] += 2;
    assert_eq!(parse_request(&bytes), Err(WireError::TrailingBytes));
}

#[test]
fn bad_headers_are_refused_before_any_body_is_read() {
    let good: [u8; HEADER_LEN] = [b'A', b'K', 1, 1, 0, 0, 0, 9];
    let mut h = good;
    h[0] = b'X';
    assert_eq!(parse_header(&h), Err(WireError::BadMagic));
    let mut h = good;
    h[2] = 2;
    assert_eq!(parse_header(&h), Err(WireError::UnsupportedVersion(2)));
    let mut h = good;
    h[3] = 0;
    assert_eq!(parse_header(&h), Err(WireError::UnknownOp(0)));
    h[3] = 4;
    assert_eq!(parse_header(&h), Err(WireError::UnknownOp(4)));
    // Oversized: the reader learns it from 8 bytes and never allocates the body.
    for len in [MAX_BODY as u32 + 1, u32::MAX] {
        let mut h = good;
        h[4..].copy_from_slice(&len.to_be_bytes());
        assert!(matches!(parse_header(&h), Err(WireError::TooLong { .. })));
    }
    let mut h = good;
    h[4..].copy_from_slice(&(MAX_BODY as u32).to_be_bytes());
    assert_eq!(parse_header(&h).unwrap().body_len, MAX_BODY);
}

#[test]
fn field_limits_are_enforced_on_both_sides() {
    let long_pw = vec![b'p'; MAX_PASSWORD + 1];
    let req = Request::OpenSession {
        user: "alice",
        password: &long_pw,
    };
    let mut out = Vec::new();
    assert!(matches!(
        encode_request(&req, &mut out),
        Err(WireError::FieldTooLong { .. })
    ));
    assert!(out.is_empty(), "a refused frame leaves nothing behind");
    let max_pw = vec![b'p'; MAX_PASSWORD];
    let user = "u".repeat(MAX_USER);
    let req = Request::ChangePassword {
        user: &user,
        old: &max_pw,
        new: &max_pw,
    };
    assert!(encoded_len(&req) - HEADER_LEN <= MAX_BODY);
    assert_eq!(parse_request(&frame(&req)).unwrap(), req);
    let long_user = "u".repeat(MAX_USER + 1);
    assert!(encode_request(&Request::CloseSession { user: &long_user }, &mut Vec::new()).is_err());
}

#[test]
fn empty_and_bad_fields_are_refused() {
    let mut out = Vec::new();
    assert_eq!(
        encode_request(
            &Request::ChangePassword {
                user: "alice",
                old: b"old",
                new: b""
            },
            &mut out
        ),
        Err(WireError::EmptyField("new password"))
    );
    // A session without a password is counted: its frame is valid.
    let req = Request::OpenSession {
        user: "alice",
        password: b"",
    };
    assert_eq!(parse_request(&frame(&req)).unwrap(), req);
    for user in ["", "a/b", "a:b", "a\nb", "a\0b"] {
        assert_eq!(
            encode_request(&Request::CloseSession { user }, &mut Vec::new()),
            Err(WireError::BadUser),
            "{user:?}"
        );
    }
    // Not UTF-8.
    let body = [0, 2, 0xff, 0xfe];
    assert_eq!(parse_body(Op::CloseSession, &body), Err(WireError::BadUser));
    // A field length pointing past the end.
    let body = [0, 9, b'a'];
    assert_eq!(
        parse_body(Op::CloseSession, &body),
        Err(WireError::Truncated)
    );
}

#[test]
fn debug_of_a_request_never_shows_a_password() {
    let req = Request::ChangePassword {
        user: "alice",
        old: b"old-secret-123",
        new: b"new-secret-456",
    };
    let text = format!("{req:?}");
    assert!(text.contains("alice"));
    assert!(!text.contains("secret"), "{text}");
}

/// xorshift64*: deterministic noise without a dependency.
fn noise(seed: &mut u64) -> u64 {
    *seed ^= *seed >> 12;
    *seed ^= *seed << 25;
    *seed ^= *seed >> 27;
    seed.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

#[test]
fn random_and_mutated_frames_never_panic_and_parse_only_to_valid_requests() {
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let seeds: Vec<Vec<u8>> = all_requests().iter().map(frame).collect();
    for round in 0..20_000 {
        let mut bytes = if round % 4 == 0 {
            let len = (noise(&mut seed) % 64) as usize;
            (0..len).map(|_| noise(&mut seed) as u8).collect()
        } else {
            seeds[round % seeds.len()].clone()
        };
        let flips = 1 + noise(&mut seed) % 3;
        for _ in 0..flips {
            if bytes.is_empty() {
                break;
            }
            let at = (noise(&mut seed) as usize) % bytes.len();
            bytes[at] = noise(&mut seed) as u8;
        }
        if let Ok(req) = parse_request(&bytes) {
            // Whatever parses is a request we could have written, byte for byte.
            assert!(valid_user(req.user()));
            assert_eq!(frame(&req), bytes);
        }
        let _ = parse_reply(&bytes);
    }
}

#[test]
fn replies_round_trip_and_are_sanitized() {
    for status in [
        Status::Ok,
        Status::Unlocked,
        Status::Created,
        Status::WrongPassword,
        Status::Refused,
        Status::Malformed,
        Status::Failed,
    ] {
        let bytes = encode_reply(status, "login key unlocked");
        let reply = parse_reply(&bytes).unwrap();
        assert_eq!(reply.status, status);
        assert_eq!(reply.text, "login key unlocked");
    }
    let bytes = encode_reply(Status::Failed, "a\nb\u{e9}");
    assert_eq!(parse_reply(&bytes).unwrap().text, "a?b??");
    let long = "x".repeat(1000);
    let bytes = encode_reply(Status::Ok, &long);
    assert_eq!(bytes.len(), HEADER_LEN + MAX_REPLY_BODY);
    let mut bad = encode_reply(Status::Ok, "ok");
    bad[3] = 99;
    assert_eq!(parse_reply(&bad), Err(WireError::UnknownStatus(99)));
    let mut bad = encode_reply(Status::Ok, "ok");
    bad[HEADER_LEN] = b'\n';
    assert_eq!(parse_reply(&bad), Err(WireError::BadText));
    let mut head = [0u8; HEADER_LEN];
    head.copy_from_slice(&encode_reply(Status::Ok, "")[..HEADER_LEN]);
    head[4..].copy_from_slice(&(MAX_REPLY_BODY as u32 + 1).to_be_bytes());
    assert!(matches!(
        parse_reply_header(&head),
        Err(WireError::TooLong { .. })
    ));
}
