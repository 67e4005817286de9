//! What the daemon answers during pairing, read strictly: the `Open` reply, the state of
//! an `Await` reply, and the signed decision. [`verify_approval`] is the one place that
//! decides whether an approval is trusted: the host key's signature must cover exactly the
//! request this process opened, or nothing is stored.

use agentkeysd::api::dict::{Dict, get_bytes, get_i64, get_str, get_strs, get_u32, get_u64};
use agentkeysd::api::names::valid_name;
use agentkeysd::approvals::{
    DecisionFields, NONCE_LEN, Nonce, PUBLIC_KEY_LEN, RequestId, RequestType, SIGNATURE_LEN, State,
    verify,
};
use agentkeysd::store::{is_agent_id, is_session_id};

use crate::errors::{CliError, Exit};
use crate::output::describe_uid;

/// What `Open` is called with; reused unchanged when a code expires.
pub(super) struct Opening {
    pub(super) request_type: RequestType,
    pub(super) cbor: Vec<u8>,
    pub(super) pubkey: [u8; PUBLIC_KEY_LEN],
}

/// What `Open` answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Opened {
    pub(super) id: String,
    pub(super) request_id: RequestId,
    pub(super) pair_code: String,
    pub(super) otp: String,
    pub(super) expires: i64,
    pub(super) owner: u32,
    pub(super) host_key: [u8; PUBLIC_KEY_LEN],
}

pub(super) fn parse_opened(d: &Dict) -> Result<Opened, CliError> {
    let bad = |what: &str| {
        CliError::new(
            Exit::Error,
            format!("agentkeysd's answer to Open is unusable: {what}"),
        )
        .fix("agentkeysctl and agentkeysd versions may differ; agentkeysctl status shows the daemon's")
    };
    let id = get_str(d, "id")
        .ok()
        .flatten()
        .ok_or_else(|| bad("no id"))?;
    let request_id = id.parse().map_err(|_| bad("the id is not 32 hex digits"))?;
    let host_key = bytes_of(d, "host_key")
        .and_then(|b| <[u8; PUBLIC_KEY_LEN]>::try_from(b.as_slice()).ok())
        .ok_or_else(|| bad("no 32-byte host_key"))?;
    Ok(Opened {
        id,
        request_id,
        pair_code: get_str(d, "pair_code")
            .ok()
            .flatten()
            .ok_or_else(|| bad("no pair_code"))?,
        otp: get_str(d, "otp")
            .ok()
            .flatten()
            .ok_or_else(|| bad("no otp"))?,
        expires: get_u64(d, "expires")
            .ok()
            .flatten()
            .and_then(|t| i64::try_from(t).ok())
            .ok_or_else(|| bad("no expires"))?,
        owner: get_u32(d, "owner")
            .ok()
            .flatten()
            .ok_or_else(|| bad("no owner"))?,
        host_key,
    })
}

/// An `ay` entry; absent or of another type is `None` (the callers say what is missing).
fn bytes_of(d: &Dict, key: &str) -> Option<Vec<u8>> {
    get_bytes(d, key).ok().flatten()
}

/// Every request state, to read the daemon's spelling of one back.
const STATES: [State; 5] = [
    State::Pending,
    State::Approved,
    State::Denied,
    State::Expired,
    State::Consumed,
];

/// The `state` of an `Await` answer: one of the daemon's [`State`]s, or the text of one
/// this agentkeysctl does not know (empty when there is none).
pub(super) fn outcome(reply: &Dict) -> Result<State, String> {
    let state = get_str(reply, "state").ok().flatten().unwrap_or_default();
    STATES
        .into_iter()
        .find(|s| s.as_str() == state)
        .ok_or(state)
}

/// The approved decision's payload, after its signature verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Decision {
    pub(super) agent_id: String,
    pub(super) session: String,
    pub(super) session_expires: i64,
    pub(super) scope: Vec<String>,
    pub(super) approver: u32,
    /// The agent's name as the daemon recorded it (the one asked for, the one derived from
    /// the pair code, or the recovered agent's); `None` if it sent none usable.
    pub(super) name: Option<String>,
}

/// Step 5: the signature must cover exactly the request we opened.
pub(super) fn verify_approval(
    o: &Opened,
    request: &Opening,
    reply: &Dict,
) -> Result<Decision, CliError> {
    let refuse = |why: String| {
        CliError::new(
            Exit::Error,
            "the decision's signature does not verify: refusing it",
        )
        .cause(why)
        .fix(
            "nothing was stored; check that --bus / AGENTKEYS_BUS names the real agentkeysd \
             (agentkeysctl status), then pair again",
        )
    };
    let signature = bytes_of(reply, "signature")
        .and_then(|b| <[u8; SIGNATURE_LEN]>::try_from(b.as_slice()).ok())
        .ok_or_else(|| refuse("the approval carries no 64-byte signature".into()))?;
    let nonce = bytes_of(reply, "nonce")
        .and_then(|b| <[u8; NONCE_LEN]>::try_from(b.as_slice()).ok())
        .map(Nonce::from_bytes)
        .ok_or_else(|| refuse("the approval carries no 32-byte nonce".into()))?;
    let approver = get_u32(reply, "approver")
        .ok()
        .flatten()
        .ok_or_else(|| refuse("the approval names no approver".into()))?;
    let created = get_u64(reply, "created")
        .ok()
        .flatten()
        .ok_or_else(|| refuse("the approval has no creation time".into()))?;
    let fields = DecisionFields {
        id: o.request_id,
        request_type: request.request_type,
        details_cbor: &request.cbor,
        child_pubkey: &request.pubkey,
        approver_uid: approver,
        created_at: created,
        nonce: &nonce,
    };
    verify(&o.host_key, &fields, &signature).map_err(|e| refuse(e.to_string()))?;
    if approver != o.owner {
        return Err(refuse(format!(
            "it was approved by {}, not by the owner asked ({})",
            describe_uid(approver),
            describe_uid(o.owner)
        )));
    }
    let incomplete = |what: &str| {
        CliError::new(
            Exit::Error,
            format!("agentkeysd approved the request but sent {what}"),
        )
        .fix("agentkeysctl and agentkeysd versions may differ; agentkeysctl status shows the daemon's")
    };
    let agent_id = get_str(reply, "agent_id")
        .ok()
        .flatten()
        .filter(|a| is_agent_id(a))
        .ok_or_else(|| incomplete("no valid agent id"))?;
    let session = get_str(reply, "session")
        .ok()
        .flatten()
        .filter(|s| is_session_id(s))
        .ok_or_else(|| incomplete("no valid session"))?;
    let session_expires = get_i64(reply, "session_expires")
        .ok()
        .flatten()
        .ok_or_else(|| incomplete("no session expiry"))?;
    Ok(Decision {
        agent_id,
        session,
        session_expires,
        scope: get_strs(reply, "scope").ok().flatten().unwrap_or_default(),
        approver,
        // It becomes a name to select the identity by, so only a valid agent name counts.
        name: get_str(reply, "name")
            .ok()
            .flatten()
            .filter(|n| valid_name(n)),
    })
}

#[cfg(test)]
mod tests {
    use agentkeysd::api::dict::{DictBuilder, bytes_variant};
    use agentkeysd::approvals::{Details, Pair, encode, public_key_of, signing_input};
    use ed25519_dalek::{Signer, SigningKey};
    use zbus::OwnedVariant;

    use super::*;

    const HOST_SEED: [u8; 32] = [9; 32];
    const NONCE: [u8; 32] = [3; 32];
    const ID: &str = "00112233445566778899aabbccddeeff";

    fn bytes(b: &[u8]) -> OwnedVariant {
        bytes_variant(b).unwrap()
    }

    fn opened() -> Opened {
        Opened {
            id: ID.into(),
            request_id: ID.parse().unwrap(),
            pair_code: "ABCD-EFGH".into(),
            otp: "012345".into(),
            expires: 1_795_257_727,
            owner: 1000,
            host_key: SigningKey::from_bytes(&HOST_SEED)
                .verifying_key()
                .to_bytes(),
        }
    }

    fn opening() -> Opening {
        let pubkey = public_key_of(&[7; 32]);
        let details = Details::Pair(Pair {
            requested_scope: vec!["github".into()],
            name: Some("ci-bot".into()),
            owner: Some(1000),
        });
        Opening {
            request_type: details.request_type(),
            cbor: encode(&details),
            pubkey,
        }
    }

    /// An approval as agentkeysd sends it, signed by the host key over `approver`.
    fn approval(o: &Opened, req: &Opening, approver: u32) -> Dict {
        let nonce = Nonce::from_bytes(NONCE);
        let fields = DecisionFields {
            id: o.request_id,
            request_type: req.request_type,
            details_cbor: &req.cbor,
            child_pubkey: &req.pubkey,
            approver_uid: approver,
            created_at: 1_795_257_667,
            nonce: &nonce,
        };
        let sig = SigningKey::from_bytes(&HOST_SEED)
            .sign(&signing_input(&fields).unwrap())
            .to_bytes();
        let mut d = DictBuilder::new()
            .str("state", "approved")
            .u32("approver", approver)
            .u64("created", 1_795_257_667)
            .str("agent_id", "agt_0123456789abcdefghjkmnpqrs")
            .str("name", "ci-bot")
            .str("session", "ses_0123456789abcdefghjkmnpqrs")
            .i64("session_expires", 1_795_272_067)
            .strs("scope", &["github".into()])
            .build();
        d.insert("signature".into(), bytes(&sig));
        d.insert("nonce".into(), bytes(&NONCE));
        d
    }

    fn refusal(e: CliError) -> String {
        match e {
            CliError::Report(r) => {
                assert_eq!(r.exit, Exit::Error);
                r.problem
            }
            CliError::BrokenPipe | CliError::Status(_) => panic!("expected a report"),
        }
    }

    #[test]
    fn a_genuine_approval_verifies() {
        let (o, req) = (opened(), opening());
        let d = verify_approval(&o, &req, &approval(&o, &req, 1000)).unwrap();
        assert_eq!(d.agent_id, "agt_0123456789abcdefghjkmnpqrs");
        assert_eq!(d.session, "ses_0123456789abcdefghjkmnpqrs");
        assert_eq!(d.session_expires, 1_795_272_067);
        assert_eq!(d.scope, ["github"]);
        assert_eq!(d.name.as_deref(), Some("ci-bot"));
    }

    #[test]
    fn the_name_comes_from_the_approval_when_it_is_a_valid_name() {
        let (o, req) = (opened(), opening());
        let mut reply = approval(&o, &req, 1000);
        reply.remove("name");
        assert_eq!(verify_approval(&o, &req, &reply).unwrap().name, None);
        reply.insert(
            "name".into(),
            OwnedVariant::from(zbus::Str::from("../evil\x1b")),
        );
        assert_eq!(verify_approval(&o, &req, &reply).unwrap().name, None);
    }

    #[test]
    fn a_tampered_approval_is_refused() {
        let (o, req) = (opened(), opening());
        let want = "the decision's signature does not verify: refusing it";
        // A flipped signature bit.
        let mut d = approval(&o, &req, 1000);
        let mut sig = get_bytes(&d, "signature").unwrap().unwrap();
        sig[0] ^= 1;
        d.insert("signature".into(), bytes(&sig));
        assert_eq!(refusal(verify_approval(&o, &req, &d).unwrap_err()), want);
        // Another approver than the one signed.
        let mut d = approval(&o, &req, 1000);
        d.insert("approver".into(), OwnedVariant::from(0u32));
        assert_eq!(refusal(verify_approval(&o, &req, &d).unwrap_err()), want);
        // Another nonce.
        let mut d = approval(&o, &req, 1000);
        d.insert("nonce".into(), bytes(&[4; 32]));
        assert_eq!(refusal(verify_approval(&o, &req, &d).unwrap_err()), want);
        // Details other than ours.
        let mut other = opening();
        other.cbor = encode(&Details::Pair(Pair {
            requested_scope: vec!["openai".into()],
            name: Some("ci-bot".into()),
            owner: Some(1000),
        }));
        let d = approval(&o, &opening(), 1000);
        assert_eq!(refusal(verify_approval(&o, &other, &d).unwrap_err()), want);
        // Another daemon's key.
        let mut o2 = opened();
        o2.host_key = public_key_of(&[1; 32]);
        assert_eq!(refusal(verify_approval(&o2, &req, &d).unwrap_err()), want);
        // No signature at all.
        let mut d = approval(&o, &req, 1000);
        d.remove("signature");
        assert_eq!(refusal(verify_approval(&o, &req, &d).unwrap_err()), want);
        // Validly signed, but by someone other than the owner asked.
        let d = approval(&o, &req, 1001);
        assert_eq!(refusal(verify_approval(&o, &req, &d).unwrap_err()), want);
    }

    #[test]
    fn an_approval_without_a_usable_session_is_refused() {
        let (o, req) = (opened(), opening());
        let mut d = approval(&o, &req, 1000);
        d.insert(
            "agent_id".into(),
            OwnedVariant::from(zbus::Str::from("../../x")),
        );
        assert!(verify_approval(&o, &req, &d).is_err());
        let mut d = approval(&o, &req, 1000);
        d.remove("session");
        assert!(verify_approval(&o, &req, &d).is_err());
    }

    #[test]
    fn await_states_are_classified() {
        let s = |v: &str| outcome(&DictBuilder::new().str("state", v).build());
        assert_eq!(s("pending"), Ok(State::Pending));
        assert_eq!(s("approved"), Ok(State::Approved));
        assert_eq!(s("denied"), Ok(State::Denied));
        assert_eq!(s("expired"), Ok(State::Expired));
        assert_eq!(s("consumed"), Ok(State::Consumed));
        assert_eq!(s("weird"), Err("weird".into()));
        assert_eq!(outcome(&Dict::new()), Err(String::new()));
    }

    #[test]
    fn the_open_answer_is_read_strictly() {
        let mut d = DictBuilder::new()
            .str("id", ID)
            .str("pair_code", "ABCD-EFGH")
            .str("otp", "012345")
            .u64("created", 1)
            .u64("expires", 61)
            .u32("owner", 1000)
            .build();
        assert!(parse_opened(&d).is_err(), "no host key");
        d.insert("host_key".into(), bytes(&[5; 32]));
        let o = parse_opened(&d).unwrap();
        assert_eq!(o.expires, 61);
        assert_eq!(o.host_key, [5; 32]);
        d.insert("id".into(), OwnedVariant::from(zbus::Str::from("xyz")));
        assert!(parse_opened(&d).is_err());
    }
}
