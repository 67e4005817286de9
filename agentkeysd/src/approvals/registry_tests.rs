//! Tests of [`super`] (registry.rs): every method, its denial paths, the limits, and the
//! pair-code uniqueness the issue asks for.

use std::collections::HashSet;
use std::io;
use std::sync::Mutex;

use super::super::decision::{HOST_SEED_LEN, host_public_key, sign, verify};
use super::super::details::{Pair, Recover, ScopeChange, encode};
use super::super::nonce::NONCE_LEN;
use super::*;
use crate::vault::{SecretMemoryPolicy, Vault};

const T0: u64 = 1_800_000_000;
const ALICE: u32 = 1000;
const BOB: u32 = 1001;

fn child_pubkey() -> [u8; 32] {
    ed25519_dalek::SigningKey::from_bytes(&[3; 32])
        .verifying_key()
        .to_bytes()
}

fn pair(owner: Option<u32>) -> Details {
    Details::Pair(Pair {
        requested_scope: vec!["github".into()],
        name: Some("ci-bot".into()),
        owner,
    })
}

/// A Pair request opened by `requester` asking for `owner`'s approval, waiting 60 s.
fn new_request(requester: u32, owner: u32) -> NewRequest {
    NewRequest {
        details: pair(None),
        child_pubkey: child_pubkey(),
        owner,
        requester: Requester {
            uid: requester,
            pid: Some(4242),
            exe: Some("/usr/bin/agentkeysctl".into()),
            connection: ":1.42".into(),
        },
        ttl_secs: 60,
    }
}

fn registry() -> Registry {
    Registry::new(Limits::default())
}

/// Opens a request from ALICE for ALICE at `now` and returns its id.
fn open(registry: &mut Registry, now: u64) -> RequestId {
    registry.open(new_request(ALICE, ALICE), now).unwrap().id
}

fn nonce_bytes(first: u8) -> [u8; NONCE_LEN] {
    let mut raw = [0x5a; NONCE_LEN];
    raw[0] = first;
    raw
}

/// A nonce source that hands out these nonces in order, then fails.
fn nonces(list: Vec<[u8; NONCE_LEN]>) -> impl FnMut() -> Result<Nonce, RandomError> {
    let mut list = list.into_iter();
    move || {
        list.next()
            .map(Nonce::from_bytes)
            .ok_or_else(|| RandomError {
                what: "a request nonce",
                source: io::Error::other("test source is empty"),
            })
    }
}

#[test]
fn open_files_a_pending_request_with_codes_derived_from_its_nonce() {
    let mut registry = registry();
    let new = new_request(ALICE, BOB);
    let request = registry.open(new.clone(), T0).unwrap();
    assert_eq!(request.lifecycle.state(), State::Pending);
    assert_eq!(request.lifecycle.created_at(), T0);
    assert_eq!(request.lifecycle.expires_at(), T0 + 60);
    assert_eq!(request.details, new.details);
    assert_eq!(request.details_cbor, encode(&new.details));
    assert_eq!(request.request_type(), RequestType::Pair);
    assert_eq!(request.pair_code, PairCode::from_nonce(&request.nonce));
    assert_eq!(request.otp, otp(&request.nonce, &request.details_cbor));
    assert_eq!((request.owner, request.approver), (BOB, None));
    assert_eq!(request.requester, new.requester);
    assert!(request.decision_fields().is_none(), "not approved yet");
    let id = request.id;
    assert_eq!(registry.get(&id).map(|r| r.id), Some(id));
    assert_eq!(registry.len(), 1);
    assert!(!registry.is_empty());
    assert!(registry.get(&RequestId::from_bytes([0; 16])).is_none());
}

#[test]
fn open_takes_the_ttl_it_is_given() {
    let mut registry = registry();
    let mut new = new_request(ALICE, ALICE);
    new.ttl_secs = 2;
    let request = registry.open(new, T0).unwrap();
    assert_eq!(request.lifecycle.expires_at(), T0 + 2);
}

#[test]
fn open_refuses_invalid_details_a_bad_child_key_and_a_mismatched_owner() {
    let mut registry = registry();
    let mut bad_details = new_request(ALICE, ALICE);
    bad_details.details = Details::Pair(Pair {
        requested_scope: vec!["Not A Name".into()],
        name: None,
        owner: None,
    });
    assert!(matches!(
        registry.open(bad_details, T0),
        Err(RegistryError::InvalidDetails(
            DetailsError::InvalidScopeName { .. }
        ))
    ));
    let mut bad_key = new_request(ALICE, ALICE);
    let mut identity = [0u8; 32];
    identity[0] = 1;
    bad_key.child_pubkey = identity;
    assert!(matches!(
        registry.open(bad_key, T0),
        Err(RegistryError::BadChildKey)
    ));
    // The details ask for Bob; the request must not be filed under Alice.
    let mut mismatch = new_request(ALICE, ALICE);
    mismatch.details = pair(Some(BOB));
    assert!(matches!(
        registry.open(mismatch, T0),
        Err(RegistryError::OwnerMismatch {
            named: BOB,
            given: ALICE
        })
    ));
    let mut recover = new_request(ALICE, ALICE);
    recover.details = Details::Recover(Recover {
        agent_identity: "ci-bot".into(),
        new_pubkey: child_pubkey(),
        owner: Some(BOB),
    });
    assert!(matches!(
        registry.open(recover.clone(), T0),
        Err(RegistryError::OwnerMismatch { .. })
    ));
    assert!(registry.is_empty());
    recover.owner = BOB;
    assert!(registry.open(recover, T0).is_ok());
}

#[test]
fn a_requester_gets_at_most_its_limit_of_live_requests() {
    let mut registry = registry();
    let ids: Vec<RequestId> = (0..MAX_LIVE_PER_REQUESTER)
        .map(|_| open(&mut registry, T0))
        .collect();
    let err = registry.open(new_request(ALICE, ALICE), T0).unwrap_err();
    assert!(matches!(
        err,
        RegistryError::TooMany {
            which: LiveLimit::Requester(ALICE),
            limit: 16
        }
    ));
    assert_eq!(
        err.to_string(),
        "too many auth requests waiting from uid 1000 (the limit is 16); \
         wait until one is decided or expires"
    );
    // Another requester is not affected, even asking for the same owner.
    assert!(registry.open(new_request(BOB, ALICE), T0).is_ok());
    // A denied request frees its slot; an approved one holds it until it is collected.
    registry.deny(&ids[0], T0 + 1).unwrap();
    open(&mut registry, T0 + 1);
    registry.approve(&ids[1], ALICE, T0 + 1).unwrap();
    assert!(registry.open(new_request(ALICE, ALICE), T0 + 1).is_err());
    registry.consume(&ids[1], T0 + 2).unwrap();
    open(&mut registry, T0 + 2);
    // A request whose time is up stays live until its expiry is recorded.
    assert!(registry.open(new_request(ALICE, ALICE), T0 + 60).is_err());
    assert_eq!(registry.expire_due(T0 + 60).len(), 14 + 1);
    assert!(registry.open(new_request(ALICE, ALICE), T0 + 60).is_ok());
}

#[test]
fn the_daemon_holds_at_most_the_total_limit_of_live_requests() {
    let mut registry = Registry::new(Limits {
        max_live_per_requester: 10,
        max_live_total: 3,
        keep_terminal_secs: 300,
    });
    for uid in [1, 2, 3] {
        registry.open(new_request(uid, uid), T0).unwrap();
    }
    assert!(matches!(
        registry.open(new_request(4, 4), T0),
        Err(RegistryError::TooMany {
            which: LiveLimit::Total,
            limit: 3
        })
    ));
}

#[test]
fn the_registry_never_holds_more_than_twice_the_total_limit() {
    let mut registry = Registry::new(Limits {
        max_live_per_requester: 100,
        max_live_total: 2,
        keep_terminal_secs: 10_000,
    });
    let mut opened = Vec::new();
    for step in 0..10u64 {
        let id = open(&mut registry, T0 + step);
        registry.deny(&id, T0 + step).unwrap();
        opened.push(id);
        assert!(registry.len() <= 4, "step {step}: {}", registry.len());
    }
    // The requests that ended first were forgotten first; the last four are remembered.
    let kept: Vec<bool> = opened.iter().map(|id| registry.get(id).is_some()).collect();
    assert_eq!(
        kept,
        [
            false, false, false, false, false, false, true, true, true, true
        ]
    );
    // Live requests are never forgotten to make room: with both slots live, opening fails.
    let live = [open(&mut registry, T0 + 20), open(&mut registry, T0 + 20)];
    assert!(registry.open(new_request(ALICE, ALICE), T0 + 20).is_err());
    assert!(live.iter().all(|id| registry.get(id).is_some()));
}

#[test]
fn by_code_finds_only_a_pending_in_time_request_of_that_owner() {
    let mut registry = registry();
    let request = registry.open(new_request(BOB, ALICE), T0).unwrap();
    let (id, code) = (request.id, request.pair_code);
    assert_eq!(
        registry.by_code(&code, ALICE, T0 + 59).map(|r| r.id),
        Some(id)
    );
    // Typed in another case or with other separators it is the same code.
    let typed: PairCode = code
        .to_string()
        .to_lowercase()
        .replace('-', " ")
        .parse()
        .unwrap();
    assert_eq!(registry.by_code(&typed, ALICE, T0).map(|r| r.id), Some(id));
    // Another owner, an unknown code, a due request: all simply None.
    assert!(registry.by_code(&code, BOB, T0).is_none());
    assert!(registry.by_code(&code, 0, T0).is_none(), "root uses ids");
    let unknown = PairCode::from_nonce(&Nonce::from_bytes(nonce_bytes(1)));
    assert!(registry.by_code(&unknown, ALICE, T0).is_none());
    assert!(registry.by_code(&code, ALICE, T0 + 60).is_none());
    registry.expire_due(T0 + 61);
    assert!(registry.by_code(&code, ALICE, T0 + 61).is_none());
    // Decided requests are not found either.
    let approved = registry.open(new_request(BOB, ALICE), T0).unwrap();
    let (approved_id, approved_code) = (approved.id, approved.pair_code);
    registry.approve(&approved_id, ALICE, T0 + 1).unwrap();
    assert!(registry.by_code(&approved_code, ALICE, T0 + 1).is_none());
    let denied = registry.open(new_request(BOB, ALICE), T0).unwrap();
    let (denied_id, denied_code) = (denied.id, denied.pair_code);
    registry.deny(&denied_id, T0 + 1).unwrap();
    assert!(registry.by_code(&denied_code, ALICE, T0 + 1).is_none());
}

#[test]
fn approve_records_the_approver_once_and_only_in_time() {
    let mut registry = registry();
    let id = open(&mut registry, T0);
    let approved = registry.approve(&id, ALICE, T0 + 10).unwrap();
    assert_eq!(approved.lifecycle.state(), State::Approved);
    assert_eq!(approved.lifecycle.decided_at(), Some(T0 + 10));
    assert_eq!(approved.approver, Some(ALICE));
    let twice = registry.approve(&id, BOB, T0 + 11).unwrap_err();
    assert_eq!(
        twice,
        TransitionError::State(StateError::AlreadyDecided(State::Approved))
    );
    assert_eq!(
        registry.get(&id).unwrap().approver,
        Some(ALICE),
        "unchanged"
    );
    assert_eq!(
        registry.deny(&id, T0 + 11).err(),
        Some(TransitionError::State(StateError::AlreadyDecided(
            State::Approved
        )))
    );

    let late = open(&mut registry, T0);
    assert_eq!(
        registry.approve(&late, ALICE, T0 + 60).unwrap_err(),
        TransitionError::State(StateError::Expired)
    );
    let request = registry.get(&late).unwrap();
    assert_eq!(
        (request.lifecycle.state(), request.approver),
        (State::Pending, None)
    );
    assert_eq!(
        registry.expire_due(T0 + 60),
        [late],
        "expire_due still announces it"
    );
    assert_eq!(
        registry.approve(&late, ALICE, T0 + 61).err(),
        Some(TransitionError::State(StateError::Expired))
    );
    assert_eq!(
        registry
            .approve(&RequestId::from_bytes([9; 16]), ALICE, T0)
            .err(),
        Some(TransitionError::NotFound)
    );
}

#[test]
fn deny_is_final() {
    let mut registry = registry();
    let id = open(&mut registry, T0);
    let denied = registry.deny(&id, T0 + 5).unwrap();
    assert_eq!(denied.lifecycle.state(), State::Denied);
    assert_eq!(denied.approver, None);
    assert_eq!(
        registry.approve(&id, ALICE, T0 + 6).err(),
        Some(TransitionError::State(StateError::AlreadyDecided(
            State::Denied
        )))
    );
    assert_eq!(
        registry.consume(&id, T0 + 6).err(),
        Some(TransitionError::State(StateError::NotApproved(
            State::Denied
        )))
    );
    assert_eq!(
        registry.deny(&RequestId::from_bytes([9; 16]), T0).err(),
        Some(TransitionError::NotFound)
    );
    let late = open(&mut registry, T0);
    assert_eq!(
        registry.deny(&late, T0 + 60).err(),
        Some(TransitionError::State(StateError::Expired))
    );
}

#[test]
fn an_approval_is_consumed_once_even_after_the_ttl() {
    let mut registry = registry();
    let id = open(&mut registry, T0);
    assert_eq!(
        registry.consume(&id, T0 + 1).err(),
        Some(TransitionError::State(StateError::NotApproved(
            State::Pending
        )))
    );
    registry.approve(&id, ALICE, T0 + 59).unwrap();
    let consumed = registry.consume(&id, T0 + 65).unwrap();
    assert_eq!(consumed.lifecycle.state(), State::Consumed);
    assert_eq!(consumed.lifecycle.consumed_at(), Some(T0 + 65));
    assert_eq!(consumed.approver, Some(ALICE));
    assert_eq!(
        registry.consume(&id, T0 + 66).err(),
        Some(TransitionError::State(StateError::AlreadyConsumed))
    );
    assert_eq!(
        registry.consume(&RequestId::from_bytes([9; 16]), T0).err(),
        Some(TransitionError::NotFound)
    );
}

#[test]
fn expire_due_records_each_expiry_once_oldest_first() {
    let mut registry = registry();
    let second = open(&mut registry, T0 + 1);
    let first = open(&mut registry, T0);
    let long = registry
        .open(
            NewRequest {
                ttl_secs: 500,
                ..new_request(ALICE, ALICE)
            },
            T0,
        )
        .unwrap()
        .id;
    let approved = open(&mut registry, T0);
    registry.approve(&approved, ALICE, T0 + 1).unwrap();
    assert_eq!(registry.expire_due(T0 + 59), []);
    assert_eq!(registry.expire_due(T0 + 61), [first, second]);
    for id in [first, second] {
        let l = registry.get(&id).unwrap().lifecycle;
        assert_eq!((l.state(), l.decided_at()), (State::Expired, Some(T0 + 61)));
    }
    assert_eq!(registry.expire_due(T0 + 62), [], "recorded once");
    assert_eq!(
        registry.get(&long).unwrap().lifecycle.state(),
        State::Pending
    );
    assert_eq!(
        registry.get(&approved).unwrap().lifecycle.state(),
        State::Approved
    );
}

#[test]
fn gc_forgets_terminal_requests_after_the_keep_time_and_frees_their_codes() {
    let mut registry = registry();
    let keep = KEEP_TERMINAL_SECS;
    let mut draw = nonces(vec![nonce_bytes(1), nonce_bytes(2), nonce_bytes(3)]);
    let denied = registry
        .open_with(new_request(ALICE, ALICE), T0, &mut draw)
        .unwrap()
        .id;
    let approved = registry
        .open_with(new_request(ALICE, ALICE), T0, &mut draw)
        .unwrap()
        .id;
    let consumed = registry
        .open_with(new_request(ALICE, ALICE), T0, &mut draw)
        .unwrap()
        .id;
    let pending = open(&mut registry, T0);
    registry.deny(&denied, T0 + 10).unwrap();
    registry.approve(&approved, ALICE, T0 + 10).unwrap();
    registry.approve(&consumed, ALICE, T0 + 10).unwrap();
    registry.consume(&consumed, T0 + 20).unwrap();

    assert_eq!(registry.gc(T0 + 10 + keep - 1), 0);
    assert_eq!(registry.gc(T0 + 10 + keep), 1);
    assert!(registry.get(&denied).is_none());
    assert_eq!(registry.gc(T0 + 20 + keep), 1);
    assert!(registry.get(&consumed).is_none());
    // An approval nobody collects goes at expiry (T0 + 60) plus the keep time.
    assert_eq!(registry.gc(T0 + 60 + keep - 1), 0);
    assert_eq!(registry.gc(T0 + 60 + keep), 1);
    assert!(registry.get(&approved).is_none());
    // gc never touches a pending request, even long past due (expire_due's job).
    assert_eq!(registry.gc(T0 + 100 * keep), 0);
    assert!(registry.get(&pending).is_some());
    registry.expire_due(T0 + 100 * keep);
    assert_eq!(registry.gc(T0 + 101 * keep), 1);
    assert!(registry.is_empty());

    // The forgotten requests' codes are free again: their nonces are taken at first draw.
    let mut again = nonces(vec![nonce_bytes(1)]);
    let reopened = registry
        .open_with(new_request(ALICE, ALICE), T0 + 101 * keep, &mut again)
        .unwrap();
    assert_eq!(reopened.nonce.expose_secret(), &nonce_bytes(1));
}

#[test]
fn pending_for_lists_an_owners_decidable_requests_oldest_first() {
    let mut registry = registry();
    let later = registry.open(new_request(BOB, ALICE), T0 + 5).unwrap().id;
    let earlier = registry.open(new_request(BOB, ALICE), T0).unwrap().id;
    let bobs = registry.open(new_request(ALICE, BOB), T0 + 1).unwrap().id;
    let denied = registry.open(new_request(BOB, ALICE), T0).unwrap().id;
    registry.deny(&denied, T0 + 1).unwrap();
    let ids = |list: Vec<&Request>| list.iter().map(|r| r.id).collect::<Vec<_>>();
    assert_eq!(
        ids(registry.pending_for(Some(ALICE), T0 + 10)),
        [earlier, later]
    );
    assert_eq!(ids(registry.pending_for(Some(BOB), T0 + 10)), [bobs]);
    assert_eq!(ids(registry.pending_for(Some(4242), T0 + 10)), []);
    assert_eq!(
        ids(registry.pending_for(None, T0 + 10)),
        [earlier, bobs, later]
    );
    // Due requests are gone from the list before expire_due records them.
    assert_eq!(ids(registry.pending_for(None, T0 + 61)), [later]);
}

#[test]
fn a_pair_code_clash_draws_a_fresh_nonce() {
    let mut registry = registry();
    let taken = registry
        .open_with(
            new_request(ALICE, ALICE),
            T0,
            &mut nonces(vec![nonce_bytes(1)]),
        )
        .unwrap()
        .pair_code;
    // The next open draws the same nonce first (so the same code), then another.
    let mut draws = 0;
    let mut source = nonces(vec![nonce_bytes(1), nonce_bytes(1), nonce_bytes(2)]);
    let mut counting = || {
        draws += 1;
        source()
    };
    let second = registry
        .open_with(new_request(BOB, BOB), T0, &mut counting)
        .unwrap();
    assert_eq!(second.nonce.expose_secret(), &nonce_bytes(2));
    assert_ne!(second.pair_code, taken);
    assert_eq!(draws, 3);
    assert_eq!(registry.len(), 2);
}

#[test]
fn a_terminal_request_keeps_its_code_until_it_is_forgotten() {
    let mut registry = registry();
    let old = registry
        .open_with(
            new_request(ALICE, ALICE),
            T0,
            &mut nonces(vec![nonce_bytes(1)]),
        )
        .unwrap()
        .id;
    registry.deny(&old, T0 + 1).unwrap();
    let new = registry
        .open_with(
            new_request(ALICE, ALICE),
            T0 + 2,
            &mut nonces(vec![nonce_bytes(1), nonce_bytes(2)]),
        )
        .unwrap();
    assert_eq!(new.nonce.expose_secret(), &nonce_bytes(2));
}

#[test]
fn open_gives_up_after_a_bounded_number_of_clashes_and_files_nothing() {
    let mut registry = registry();
    registry
        .open_with(
            new_request(ALICE, ALICE),
            T0,
            &mut nonces(vec![nonce_bytes(1)]),
        )
        .unwrap();
    let mut draws = 0;
    let mut always_the_same = || -> Result<Nonce, RandomError> {
        draws += 1;
        Ok(Nonce::from_bytes(nonce_bytes(1)))
    };
    let err = registry
        .open_with(new_request(ALICE, ALICE), T0, &mut always_the_same)
        .unwrap_err();
    assert!(matches!(
        err,
        RegistryError::Exhausted {
            what: "pair code",
            attempts: MAX_DRAWS
        }
    ));
    assert_eq!(draws, MAX_DRAWS);
    assert_eq!(registry.len(), 1);
    // The failed open took no live slot.
    for _ in 1..MAX_LIVE_PER_REQUESTER {
        open(&mut registry, T0);
    }
}

#[test]
fn a_failing_random_source_fails_the_open() {
    let mut registry = registry();
    let err = registry
        .open_with(new_request(ALICE, ALICE), T0, &mut nonces(vec![]))
        .unwrap_err();
    assert!(matches!(err, RegistryError::Random(_)));
    assert!(
        std::error::Error::source(&err).is_some(),
        "the cause is kept"
    );
    assert!(registry.is_empty());
}

#[test]
fn the_signed_approval_of_a_registered_request_verifies() {
    let vault = Vault::new(SecretMemoryPolicy::Prefer).unwrap();
    let mut key = vault.alloc(HOST_SEED_LEN).unwrap();
    key.expose_secret_mut().fill(5);
    let public = host_public_key(&key).unwrap();
    let mut registry = registry();
    let a = open(&mut registry, T0);
    let b = open(&mut registry, T0);
    let approved = registry.approve(&a, ALICE, T0 + 1).unwrap();
    let fields = approved.decision_fields().unwrap();
    assert_eq!(fields.approver_uid, ALICE);
    assert_eq!(fields.created_at, T0);
    let signature = sign(&key, &fields).unwrap();
    assert_eq!(verify(&public, &fields, &signature), Ok(()));
    // The same details, owner and child key, but another request.
    let approved_b = registry.approve(&b, ALICE, T0 + 1).unwrap();
    assert!(verify(&public, &approved_b.decision_fields().unwrap(), &signature).is_err());
}

#[test]
fn debug_output_shows_no_nonce_bytes() {
    let mut registry = registry();
    let id = registry
        .open_with(
            new_request(ALICE, ALICE),
            T0,
            &mut nonces(vec![[0xab; NONCE_LEN]]),
        )
        .unwrap()
        .id;
    let request = registry.get(&id).unwrap();
    let text = format!("{request:?} {registry:?}");
    assert!(text.contains("Nonce(<secret>)"), "{text}");
    assert!(!text.contains("171, 171"), "{text}");
}

#[test]
fn requests_of_other_types_keep_their_own_ttl_and_owner() {
    let mut registry = registry();
    let new = NewRequest {
        details: Details::ScopeChange(ScopeChange {
            agent_id: "agt_x".into(),
            new_scope: vec![],
        }),
        ttl_secs: 300,
        ..new_request(ALICE, BOB)
    };
    let request = registry.open(new, T0).unwrap();
    assert_eq!(request.request_type(), RequestType::ScopeChange);
    assert_eq!(request.lifecycle.expires_at(), T0 + 300);
    assert_eq!(request.owner, BOB);
}

/// The property: "100,000 concurrent opens → no duplicate nonce or pair code".
/// Four threads share one registry, as the daemon's tasks do; every open draws from the
/// OS CSPRNG. Ids and nonces could only repeat through a broken random source; pair codes
/// (40 bits) would repeat with probability about 0.45 % if the registry did not re-draw.
#[test]
fn a_hundred_thousand_concurrent_opens_never_repeat_a_nonce_pair_code_or_id() {
    const THREADS: usize = 4;
    const PER_THREAD: usize = 25_000;
    let registry = Mutex::new(Registry::new(Limits {
        max_live_per_requester: PER_THREAD,
        max_live_total: THREADS * PER_THREAD,
        keep_terminal_secs: KEEP_TERMINAL_SECS,
    }));
    let opened: Vec<Vec<(RequestId, [u8; NONCE_LEN], PairCode)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let registry = &registry;
                s.spawn(move || {
                    let uid = 2000 + t as u32;
                    (0..PER_THREAD)
                        .map(|_| {
                            let mut registry = registry.lock().unwrap();
                            let r = registry.open(new_request(uid, uid), T0).unwrap();
                            (r.id, *r.nonce.expose_secret(), r.pair_code)
                        })
                        .collect()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let all: Vec<_> = opened.into_iter().flatten().collect();
    assert_eq!(all.len(), THREADS * PER_THREAD);
    let ids: HashSet<_> = all.iter().map(|(id, _, _)| *id).collect();
    let nonces: HashSet<_> = all.iter().map(|(_, nonce, _)| *nonce).collect();
    let codes: HashSet<_> = all.iter().map(|(_, _, code)| *code).collect();
    assert_eq!(ids.len(), all.len(), "repeated id");
    assert_eq!(nonces.len(), all.len(), "repeated nonce");
    assert_eq!(codes.len(), all.len(), "repeated pair code");
    let registry = registry.into_inner().unwrap();
    assert_eq!(registry.len(), all.len());
    for (id, _, code) in all.iter().step_by(997) {
        let owner = registry.get(id).unwrap().owner;
        assert_eq!(registry.by_code(code, owner, T0).map(|r| r.id), Some(*id));
    }
}
