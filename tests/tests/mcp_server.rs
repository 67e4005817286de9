//! The per-agent MCP server (`agentkeysd::mcp`) on a real unix socket, over a real store:
//! driven by rmcp's own client, and by raw lines for the inputs no client would send.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::time::Duration;

use agentkeys_tests::mcp::{McpFixture, OWNER, my_uid};
use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::{RoleClient, RunningService};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

const KEY: &str = "sk-ant-test-0123456789abcdef";
const WAIT: Duration = Duration::from_secs(20);

type Client = RunningService<RoleClient, ()>;

async fn client(socket: &Path) -> Client {
    let stream = UnixStream::connect(socket).await.unwrap();
    ().serve(stream).await.unwrap()
}

fn args(v: Value) -> CallToolRequestParams {
    let Value::Object(_) = &v else { panic!() };
    let name = v["name"].as_str().unwrap().to_owned();
    let mut p = CallToolRequestParams::new(name);
    if let Some(Value::Object(a)) = v.get("arguments") {
        p = p.with_arguments(a.clone());
    }
    p
}

fn text(r: &CallToolResult) -> String {
    r.content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect::<Vec<_>>()
        .join("\n")
}

async fn get(c: &Client, service: &str) -> CallToolResult {
    c.call_tool(args(
        json!({"name": "get_credential", "arguments": {"service": service}}),
    ))
    .await
    .unwrap()
}

/// A connection spoken to line by line.
struct Raw {
    rd: BufReader<OwnedReadHalf>,
    wr: OwnedWriteHalf,
}

impl Raw {
    async fn connect(socket: &Path) -> Raw {
        let (rd, wr) = UnixStream::connect(socket).await.unwrap().into_split();
        Raw {
            rd: BufReader::new(rd),
            wr,
        }
    }

    async fn send(&mut self, line: &[u8]) {
        self.wr.write_all(line).await.unwrap();
        self.wr.write_all(b"\n").await.unwrap();
    }

    async fn recv(&mut self) -> Value {
        let mut line = String::new();
        let n = tokio::time::timeout(WAIT, self.rd.read_line(&mut line))
            .await
            .expect("an answer in time")
            .unwrap();
        assert!(n > 0, "the server closed the connection");
        serde_json::from_str(&line).unwrap()
    }

    async fn init(&mut self, version: &str) -> Value {
        let req = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": version, "capabilities": {},
            "clientInfo": {"name": "raw", "version": "1"}}});
        self.send(req.to_string().as_bytes()).await;
        let reply = self.recv().await;
        self.send(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#)
            .await;
        reply
    }

    async fn call(&mut self, id: u64, tool: &str, arguments: Value) -> Value {
        let req = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": tool, "arguments": arguments}});
        self.send(req.to_string().as_bytes()).await;
        self.recv().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rmcp_client_lists_tools_and_credentials_and_reads_the_exact_value() {
    let fx = McpFixture::new(&[("anthropic", KEY), ("github", "ghp_other")]);
    let agent = fx.pair("bot", &["anthropic"], my_uid()).await;
    let served = fx.serve(agent);
    let c = client(&served.socket).await;

    let info = c.peer_info().unwrap();
    assert_eq!(info.protocol_version.as_str(), "2025-11-25");
    let mut tools: Vec<String> = c
        .list_all_tools()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name.into_owned())
        .collect();
    tools.sort();
    assert_eq!(
        tools,
        ["get_credential", "list_credentials", "request_credential"]
    );

    let listed = c
        .call_tool(args(json!({"name": "list_credentials"})))
        .await
        .unwrap();
    assert_ne!(listed.is_error, Some(true));
    let listed: Value = serde_json::from_str(&text(&listed)).unwrap();
    assert_eq!(listed["agent"], "bot");
    assert_eq!(
        listed["credentials"],
        json!([{"name": "anthropic", "env": "ANTHROPIC_API_KEY", "mode": "auto",
                "expires": null, "expires_utc": null}])
    );
    assert!(
        !listed.to_string().contains(KEY),
        "a listing never shows values"
    );

    let read = get(&c, "anthropic").await;
    assert_ne!(read.is_error, Some(true), "{}", text(&read));
    assert_eq!(text(&read), KEY);
    // The row was committed before the value was sent: nothing is left queued, and the
    // chain names the agent's read.
    let (pending, rows) = fx
        .shared
        .with_store(|s| {
            let pending = s.pending_audit();
            Ok((pending, s.audit_list(Some(OWNER), 0, 1000)?))
        })
        .await
        .unwrap();
    assert_eq!(pending, 0);
    assert!(rows.iter().any(|r| r.action == "credential.read"
        && r.subject == "anthropic"
        && r.outcome == "ok"
        && r.detail.contains(&served.agent.agent_id)));
    c.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credential_not_granted_is_refused_with_the_fix() {
    let fx = McpFixture::new(&[("anthropic", KEY), ("github", "ghp_secret_value")]);
    let agent = fx.pair("bot", &["anthropic"], my_uid()).await;
    let served = fx.serve(agent);
    let c = client(&served.socket).await;
    let r = get(&c, "github").await;
    assert_eq!(r.is_error, Some(true));
    let t = text(&r);
    assert!(
        t.starts_with("error: access denied — agent 'bot' may not read 'github'"),
        "{t}"
    );
    assert!(t.contains("fix: call request_credential"), "{t}");
    assert!(!t.contains("ghp_secret_value"));
    // Still serving after a refusal.
    assert_eq!(text(&get(&c, "anthropic").await), KEY);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_agent_is_refused_on_its_very_next_request() {
    let fx = McpFixture::new(&[("anthropic", KEY)]);
    let agent = fx.pair("bot", &["anthropic"], my_uid()).await;
    let served = fx.serve(agent);
    let c = client(&served.socket).await;
    assert_eq!(text(&get(&c, "anthropic").await), KEY);
    fx.revoke("bot").await;
    let r = get(&c, "anthropic").await;
    assert_eq!(r.is_error, Some(true));
    let t = text(&r);
    assert!(t.contains("agent 'bot' was revoked"), "{t}");
    assert!(!t.contains(KEY));
    let listed = c
        .call_tool(args(json!({"name": "list_credentials"})))
        .await
        .unwrap();
    assert_eq!(listed.is_error, Some(true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_json_rpc_errors_and_the_connection_keeps_serving() {
    let fx = McpFixture::new(&[("anthropic", KEY)]);
    let agent = fx.pair("bot", &["anthropic"], my_uid()).await;
    let served = fx.serve(agent);
    let mut raw = Raw::connect(&served.socket).await;
    // Malformed JSON before initialize: answered, and initialize still works after it.
    raw.send(b"{\"jsonrpc\": \"2.0\", \"id\": 1, \"method\": ")
        .await;
    let e = raw.recv().await;
    assert_eq!(e["error"]["code"], -32700, "{e}");
    assert_eq!(e["id"], Value::Null);
    let init = raw.init("2025-06-18").await;
    assert_eq!(init["result"]["protocolVersion"], "2025-06-18");

    raw.send(b"this is not json").await;
    assert_eq!(raw.recv().await["error"]["code"], -32700);

    let unknown = raw.call(2, "no_such_tool", json!({})).await;
    assert_eq!(unknown["id"], 2);
    assert!(unknown["error"]["code"].as_i64().unwrap() < 0, "{unknown}");

    let missing = raw.call(3, "get_credential", json!({})).await;
    assert_eq!(missing["id"], 3);
    assert_eq!(missing["error"]["code"], -32602, "{missing}");

    // 10 MB on one line: discarded to its newline, answered, connection kept.
    let mut huge = br#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"get_credential","arguments":{"service":""#.to_vec();
    huge.extend(std::iter::repeat_n(b'a', 10 * 1024 * 1024));
    huge.extend_from_slice(br#""}}}"#);
    raw.send(&huge).await;
    let big = raw.recv().await;
    assert_eq!(big["error"]["code"], -32600, "{big}");
    assert!(
        big["error"]["message"]
            .as_str()
            .unwrap()
            .contains("discarded")
    );

    // Valid JSON that is no JSON-RPC message.
    raw.send(br#"{"jsonrpc":"2.0","id":5}"#).await;
    let inv = raw.recv().await;
    assert_eq!(inv["error"]["code"], -32600, "{inv}");
    assert_eq!(inv["id"], 5);

    // And a valid request after all of that is served.
    let ok = raw
        .call(6, "get_credential", json!({"service": "anthropic"}))
        .await;
    assert_eq!(ok["id"], 6);
    assert_eq!(ok["result"]["content"][0]["text"], KEY, "{ok}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn older_protocol_versions_are_negotiated_and_newer_ones_fall_back() {
    let fx = McpFixture::new(&[("anthropic", KEY)]);
    let agent = fx.pair("bot", &["anthropic"], my_uid()).await;
    let served = fx.serve(agent);
    for (asked, got) in [
        ("2024-11-05", "2024-11-05"),
        ("2025-03-26", "2025-03-26"),
        ("2025-06-18", "2025-06-18"),
        ("2025-11-25", "2025-11-25"),
        ("2026-07-28", "2025-11-25"),
        ("2099-01-01", "2025-11-25"),
    ] {
        let mut raw = Raw::connect(&served.socket).await;
        let init = raw.init(asked).await;
        assert_eq!(
            init["result"]["protocolVersion"], got,
            "asked {asked}: {init}"
        );
        assert_eq!(init["result"]["serverInfo"]["name"], "agentkeysd");
        let ok = raw
            .call(1, "get_credential", json!({"service": "anthropic"}))
            .await;
        assert_eq!(ok["result"]["content"][0]["text"], KEY, "{asked}: {ok}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_credential_opens_a_scope_change_for_the_owner() {
    let fx = McpFixture::new(&[("anthropic", KEY), ("github", "ghp_x")]);
    let agent = fx.pair("bot", &["anthropic"], my_uid()).await;
    let served = fx.serve(agent.clone());
    let c = client(&served.socket).await;
    let r = c
        .call_tool(args(json!({"name": "request_credential",
            "arguments": {"service": "github", "reason": "open a pull request"}})))
        .await
        .unwrap();
    assert_ne!(r.is_error, Some(true), "{}", text(&r));
    let data: Value = serde_json::from_str(r.content[1].as_text().unwrap().text.as_str()).unwrap();
    let code = data["pair_code"].as_str().unwrap().to_owned();
    assert_eq!(
        data["approve_command"],
        format!("agentkeysctl approve {code}")
    );
    assert!(text(&r).contains(&format!("agentkeysctl approve {code}")));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let pending: Vec<(String, String)> = {
        let reg = fx.shared.pairing.registry();
        reg.pending_for(Some(OWNER), now)
            .into_iter()
            .map(|r| {
                (
                    r.pair_code.to_string(),
                    r.details.request_type().as_str().to_owned(),
                )
            })
            .collect()
    };
    assert_eq!(pending, [(code, "ScopeChange".to_owned())]);
    // Already in scope: told to ask for a grant instead.
    let again = c
        .call_tool(args(json!({"name": "request_credential",
            "arguments": {"service": "anthropic", "reason": "x"}})))
        .await
        .unwrap();
    assert_eq!(again.is_error, Some(true));
    assert!(text(&again).contains("already in the scope"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_of_another_uid_is_refused() {
    if my_uid() != 0 {
        agentkeys_tests::skip("connecting as another uid needs root");
        return;
    }
    let fx = McpFixture::new(&[("anthropic", KEY)]);
    let agent = fx.pair("bot", &["anthropic"], my_uid()).await;
    let served = fx.serve(agent);
    // Let uid 65534 reach the socket at all: the refusal under test is the daemon's.
    std::fs::set_permissions(fx.tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&served.socket, std::fs::Permissions::from_mode(0o777)).unwrap();
    let script = r#"
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.settimeout(20)
try:
    s.sendall(b'{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"x","version":"1"}}}\n')
    got = s.recv(65536)
except (ConnectionResetError, BrokenPipeError):
    got = b""
print("EOF" if got == b"" else "ANSWERED")
"#;
    let sock = served.socket.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(&sock)
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "EOF");
    // The agent's own uid is still served.
    let c = client(&served.socket).await;
    assert_eq!(text(&get(&c, "anthropic").await), KEY);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_drops_every_connection_and_stops_accepting() {
    let fx = McpFixture::new(&[("anthropic", KEY)]);
    let agent = fx.pair("bot", &["anthropic"], my_uid()).await;
    let served = fx.serve(agent);
    let mut a = Raw::connect(&served.socket).await;
    a.init("2025-11-25").await;
    let mut b = UnixStream::connect(&served.socket).await.unwrap(); // not even initialized
    served.handle.close();
    tokio::time::timeout(WAIT, served.handle.closed())
        .await
        .unwrap();
    // A connection is dropped with EOF, or with a reset when it still held bytes the server
    // had not read (`a`'s last notification may be one) or had never been accepted (`b` may
    // still have been in the listener's backlog). Either way nothing more comes.
    let dropped = |r: std::io::Result<usize>| match r {
        Ok(n) => assert_eq!(n, 0, "EOF after close"),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
    };
    let mut buf = [0u8; 64];
    dropped(
        tokio::time::timeout(WAIT, a.rd.read(&mut buf))
            .await
            .unwrap(),
    );
    dropped(tokio::time::timeout(WAIT, b.read(&mut buf)).await.unwrap());
    // No longer accepting: connecting fails (the listener is gone).
    assert!(UnixStream::connect(&served.socket).await.is_err());
}
