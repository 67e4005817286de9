//! `agentkeysctl mcp` driven by an MCP client nobody here wrote: the Python `mcp` SDK from
//! PyPI, which starts it as a stdio server the way Claude Code or Cursor would. The
//! interpreter comes from `AGENTKEYS_TEST_PYTHON` (a venv with `pip install mcp`;
//! `scripts/test` creates it); without it the test skips (a failure in strict mode).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::PathBuf;
use std::process::Command;

use agentkeys_tests::bin;
use agentkeys_tests::mcp::{McpFixture, my_uid};
use serde_json::{Value, json};

const KEY: &str = "sk-or-v1-python-sdk-0123456789";

fn python() -> Option<PathBuf> {
    let p = PathBuf::from(std::env::var_os("AGENTKEYS_TEST_PYTHON")?);
    let ok = Command::new(&p)
        .args(["-c", "import mcp"])
        .status()
        .is_ok_and(|s| s.success());
    ok.then_some(p)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_mcp_sdk_reads_a_credential_through_agentkeysctl_mcp() {
    let Some(python) = python() else {
        agentkeys_tests::skip(
            "AGENTKEYS_TEST_PYTHON is not a Python with the `mcp` package (python3 -m venv DIR && DIR/bin/pip install mcp)",
        );
        return;
    };
    let fx = McpFixture::new(&[("openrouter", KEY)]);
    let agent = fx.pair("py", &["openrouter"], my_uid()).await;
    let served = fx.serve(agent);
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/mcp_sdk_client.py");
    let socket = served.socket.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .arg(bin("agentkeysctl"))
            .arg("openrouter")
            .env("AGENTKEYS_MCP_SOCKET", socket)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the SDK client failed: {stderr}");
    let seen: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(seen["server"], "agentkeysd");
    assert!(
        ["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"]
            .contains(&seen["protocol_version"].as_str().unwrap()),
        "{seen}"
    );
    assert_eq!(
        seen["tools"],
        json!(["get_credential", "list_credentials", "request_credential"])
    );
    assert_eq!(
        seen["listed"]["credentials"][0]["env"],
        "OPENROUTER_API_KEY"
    );
    assert_eq!(seen["value"], KEY);
    assert_eq!(seen["value_is_error"], false);
    assert_eq!(seen["refused_is_error"], true);
    assert!(!seen["refused_text"].as_str().unwrap().contains(KEY));
}

#[test]
fn agentkeysctl_mcp_outside_a_run_says_so_and_exits_6() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(bin("agentkeysctl"))
        .arg("mcp")
        .env("AGENTKEYS_MCP_SOCKET", tmp.path().join("absent.sock"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(6));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot reach the agent's MCP socket"), "{err}");
    assert!(err.contains("agentkeysctl run"), "{err}");
}
