//! MCP `get_credential` (issue 4's targets: round trip p50 ≤ 0.5 ms with the audit row
//! durable before the secret is sent; ≥ 20,000 audited reads/s with 64 concurrent agents).
//!
//! In-process: the daemon's real state (store in a temp dir, secret memory, audit flusher)
//! and `agentkeysd::mcp::serve` on one real unix socket per agent; each agent's client is a
//! connection that has done `initialize` and then sends `tools/call get_credential` lines
//! one at a time, checking each answer carries the value. Every read is audited and its
//! row committed and fsynced before the value is written (the server does that; nothing
//! here relaxes it). Clients and server share the machine, as agents and daemon do.
//!
//! 1. latency: one agent, sequential reads: p50/p90/p99.
//! 2. throughput: 64 agents, each on its own socket, one read in flight each, for a few
//!    seconds: audited reads per second, and how many fsyncs carried them.
//!
//! Under `cargo test --benches` (no `--bench`) it runs a few reads as a smoke test.
//! `AGENTKEYS_BENCH_MCP_SECS` sets the throughput run's length (default 5).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use agentkeys_tests::mcp::{McpFixture, ServedAgent, my_uid};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

const KEY: &str = "sk-ant-bench-0123456789abcdef0123456789";
const AGENTS: usize = 64;
const TARGET_P50_MS: f64 = 0.5;
const TARGET_RATE: f64 = 20_000.0;

struct Agent {
    rd: BufReader<OwnedReadHalf>,
    wr: OwnedWriteHalf,
    line: String,
    id: u64,
}

impl Agent {
    async fn connect(socket: &Path) -> Agent {
        let (rd, wr) = UnixStream::connect(socket).await.unwrap().into_split();
        let mut a = Agent {
            rd: BufReader::new(rd),
            wr,
            line: String::new(),
            id: 0,
        };
        a.send(r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"bench","version":"1"}}}"#).await;
        a.recv().await;
        a.send(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#)
            .await;
        a
    }

    async fn send(&mut self, line: &str) {
        self.wr.write_all(line.as_bytes()).await.unwrap();
        self.wr.write_all(b"\n").await.unwrap();
    }

    async fn recv(&mut self) {
        self.line.clear();
        let n = self.rd.read_line(&mut self.line).await.unwrap();
        assert!(n > 0, "server closed");
    }

    /// One audited read; panics unless the answer carries the value.
    async fn read(&mut self) {
        self.id += 1;
        let req = format!(
            r#"{{"jsonrpc":"2.0","id":{},"method":"tools/call","params":{{"name":"get_credential","arguments":{{"service":"anthropic"}}}}}}"#,
            self.id
        );
        self.send(&req).await;
        self.recv().await;
        assert!(self.line.contains(KEY), "not served: {}", self.line);
    }
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

async fn setup(n: usize) -> (McpFixture, Vec<ServedAgent>) {
    let fx = McpFixture::new(&[("anthropic", KEY)]);
    let mut served = Vec::new();
    for i in 0..n {
        let agent = fx
            .pair(&format!("agent-{i}"), &["anthropic"], my_uid())
            .await;
        served.push(fx.serve(agent));
    }
    (fx, served)
}

async fn latency(reads: usize) {
    let (fx, served) = setup(1).await;
    let mut a = Agent::connect(&served[0].socket).await;
    for _ in 0..reads.min(200) {
        a.read().await; // warm
    }
    let mut samples = Vec::with_capacity(reads);
    for _ in 0..reads {
        let t = Instant::now();
        a.read().await;
        samples.push(t.elapsed());
    }
    samples.sort();
    let p50 = pct(&samples, 0.5);
    println!(
        "mcp get_credential round trip (audit row fsynced before the reply), {} reads: p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, max {:.3} ms (target p50 ≤ {TARGET_P50_MS} ms: {})",
        reads,
        p50,
        pct(&samples, 0.9),
        pct(&samples, 0.99),
        samples.last().unwrap().as_secs_f64() * 1000.0,
        if p50 <= TARGET_P50_MS {
            "met"
        } else {
            "MISSED"
        }
    );
    drop(fx);
}

async fn throughput(secs: f64) {
    let (fx, served) = setup(AGENTS).await;
    let mut agents = Vec::new();
    for s in &served {
        agents.push(Agent::connect(&s.socket).await);
    }
    let rows_before = audit_rows(&fx).await;
    let fsyncs_before = fx.shared.audit_fsyncs();
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for mut a in agents {
        let (stop, done) = (stop.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                a.read().await;
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = start.elapsed().as_secs_f64();
    let reads = done.load(Ordering::Relaxed);
    let rate = reads as f64 / elapsed;
    let rows = audit_rows(&fx).await - rows_before;
    let fsyncs = fx.shared.audit_fsyncs() - fsyncs_before;
    println!(
        "mcp get_credential, {AGENTS} agents on their own sockets, {elapsed:.1} s: {reads} reads, {rate:.0} audited reads/s, {rows} audit rows written, {fsyncs} fsyncs ({:.0}/s, {:.1} reads each) (target ≥ {TARGET_RATE}: {})",
        fsyncs as f64 / elapsed,
        reads as f64 / fsyncs.max(1) as f64,
        if rate >= TARGET_RATE { "met" } else { "MISSED" }
    );
    assert!(rows >= reads, "every read has its row");
}

async fn audit_rows(fx: &McpFixture) -> u64 {
    fx.shared
        .with_store(|s| Ok(s.stats()?.audit_rows))
        .await
        .unwrap()
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        if full {
            latency(5000).await;
            let secs = std::env::var("AGENTKEYS_BENCH_MCP_SECS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(5.0);
            throughput(secs).await;
        } else {
            latency(20).await;
            throughput(0.2).await;
        }
    });
}
