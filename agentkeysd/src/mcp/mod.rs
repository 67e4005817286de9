//! Per-agent MCP servers (DESIGN §3.2): one unix socket per running agent, the tools
//! `list_credentials`, `get_credential {service}` and `request_credential {service, reason}`.
//!
//! The daemon knows the agent from the socket a connection arrived on: [`serve`] is given
//! the listener of one agent's socket and that agent's session, and takes only peers whose
//! SO_PEERCRED uid is the agent's uid. Nothing a peer sends can name another agent.
//!
//! Invariants:
//! - Every tool call goes through the store's checks for that session (revocation refuses
//!   the very next call); a served read's audit row is committed and fsynced before the
//!   value is written to the socket.
//! - Bad input (malformed JSON, a line over 1 MiB, an unknown tool, missing arguments) is
//!   answered with a JSON-RPC error and costs neither the connection nor the agent's
//!   other requests ([`framing`]).
//! - [`McpHandle::close`] (revocation, the end of a run) stops accepting and closes every
//!   connection at once: clients see EOF.
//!
//! Non-goals: the HTTP transports of MCP; MCP resources and prompts; the revision that has
//! no `initialize` (2026-07-28): versions 2024-11-05 to 2025-11-25 are served, a client
//! asking for a newer one is answered with 2025-11-25. A secret value passes through
//! rmcp's own `String`s (which are not wiped); the line written to the socket is.

pub mod framing;
mod reply;
mod tools;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rmcp::ServiceExt;
use tokio::io::BufReader;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::daemon::authz::Caller;
use crate::daemon::state::Shared;

use framing::{ChannelTransport, Line, Parsed};
pub use tools::AgentServer;

/// Connections one agent may hold open at once; more are refused (each costs tasks and
/// buffers, and an agent needs one or two).
pub const MAX_CONNECTIONS: usize = 16;

/// Messages a connection's reader may run ahead of rmcp, and lines queued to its writer.
const QUEUE: usize = 64;

/// The agent one socket serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McpAgent {
    /// The run (job) this socket belongs to; shown to approvers as `mcp:<job_id>`.
    pub job_id: String,
    pub agent_id: String,
    pub agent_name: String,
    /// The owner's uid.
    pub owner: u32,
    /// The agent's session id, as Pair/Recover issued it: every call is checked against it.
    pub session: String,
    /// The uid the agent runs as outside its sandbox: the only peer uid accepted.
    pub uid: u32,
}

/// A serving socket. Dropping it closes it as [`McpHandle::close`] does.
#[derive(Debug)]
pub struct McpHandle {
    cancel: CancellationToken,
    tasks: TaskTracker,
}

impl McpHandle {
    /// Stops accepting and closes every connection now (revocation, end of the run).
    pub fn close(&self) {
        self.cancel.cancel();
        self.tasks.close();
    }

    /// Waits until the listener and every connection are gone (after [`McpHandle::close`]).
    pub async fn closed(&self) {
        self.tasks.wait().await;
    }
}

impl Drop for McpHandle {
    fn drop(&mut self) {
        self.close();
    }
}

/// Serves MCP for `agent` on `listener` until the handle is closed. Needs a tokio runtime
/// and, for reads, the audit flusher ([`Shared::spawn_audit_flusher`]).
pub fn serve(shared: Arc<Shared>, agent: McpAgent, listener: UnixListener) -> McpHandle {
    let cancel = CancellationToken::new();
    let tasks = TaskTracker::new();
    let agent = Arc::new(agent);
    let (c, t) = (cancel.clone(), tasks.clone());
    tasks.spawn(async move {
        tokio::select! {
            () = c.cancelled() => {}
            () = accept_loop(shared, agent, listener, c.clone(), t) => {}
        }
    });
    McpHandle { cancel, tasks }
}

async fn accept_loop(
    shared: Arc<Shared>,
    agent: Arc<McpAgent>,
    listener: UnixListener,
    cancel: CancellationToken,
    tasks: TaskTracker,
) {
    let open = Arc::new(AtomicUsize::new(0));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // EMFILE and the like: back off briefly rather than spin.
                tracing::warn!(agent = %agent.agent_id, error = %e, "MCP accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(caller) = admit(&agent, &stream, &open) else {
            continue;
        };
        let (shared, agent, cancel, open) = (
            shared.clone(),
            agent.clone(),
            cancel.child_token(),
            open.clone(),
        );
        tasks.spawn(async move {
            connection(shared, agent, caller, stream, cancel).await;
            open.fetch_sub(1, Ordering::AcqRel);
        });
    }
}

/// The peer's credentials if it may connect: its uid is the agent's, and the agent has
/// fewer than [`MAX_CONNECTIONS`] open. Refusals are logged; the stream is dropped.
fn admit(agent: &McpAgent, stream: &UnixStream, open: &AtomicUsize) -> Option<Caller> {
    let cred = match stream.peer_cred() {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(agent = %agent.agent_id, error = %e, "MCP peer credentials unavailable; connection refused");
            return None;
        }
    };
    let pid = cred.pid().and_then(|p| u32::try_from(p).ok());
    if cred.uid() != agent.uid {
        tracing::warn!(
            agent = %agent.agent_id,
            peer_uid = cred.uid(),
            peer_pid = ?pid,
            expected_uid = agent.uid,
            "MCP connection refused: the peer is not the agent's uid"
        );
        return None;
    }
    if open.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
        open.fetch_sub(1, Ordering::AcqRel);
        tracing::warn!(agent = %agent.agent_id, "MCP connection refused: too many open connections");
        return None;
    }
    Some(Caller {
        uid: cred.uid(),
        pid,
    })
}

/// One connection: reader → rmcp → writer, until the peer leaves or the handle closes.
async fn connection(
    shared: Arc<Shared>,
    agent: Arc<McpAgent>,
    caller: Caller,
    stream: UnixStream,
    cancel: CancellationToken,
) {
    let (rd, wr) = stream.into_split();
    let (out_tx, out_rx) = mpsc::channel(QUEUE);
    let (in_tx, in_rx) = mpsc::channel(QUEUE);
    let writer = framing::write_lines(wr, out_rx);
    let reader = read_messages(rd, in_tx, out_tx.clone());
    let transport = ChannelTransport {
        rx: in_rx,
        tx: out_tx,
    };
    let server = AgentServer::new(shared, agent.clone(), caller);
    let ct = cancel.child_token();
    let service = async move {
        match server.serve_with_ct(transport, ct).await {
            Ok(running) => {
                let _ = running.waiting().await;
            }
            Err(e) => {
                tracing::debug!(agent = %agent.agent_id, error = %e, "MCP session ended before initialize");
            }
        }
    };
    // The writer ends when every sender is gone (reader and service done); the service
    // ends when the reader closes its channel. Cancellation drops all three at once, and
    // with them both halves of the socket.
    tokio::select! {
        () = cancel.cancelled() => {}
        ((), (), ()) = async { tokio::join!(reader, service, writer) } => {}
    }
}

/// Cuts lines, answers bad ones, forwards messages; returns at EOF or a read error.
async fn read_messages(
    rd: tokio::net::unix::OwnedReadHalf,
    to_rmcp: mpsc::Sender<rmcp::service::RxJsonRpcMessage<rmcp::RoleServer>>,
    to_peer: mpsc::Sender<framing::OutLine>,
) {
    let mut rd = BufReader::with_capacity(64 * 1024, rd);
    let mut line = Vec::with_capacity(4096);
    loop {
        let reply = match framing::read_line(&mut rd, &mut line).await {
            Ok(Line::Eof) | Err(_) => return,
            Ok(Line::TooLong) => framing::too_long(),
            Ok(Line::Data) => match framing::parse(&line) {
                Parsed::Blank => continue,
                Parsed::Message(msg) => {
                    if to_rmcp.send(*msg).await.is_err() {
                        return;
                    }
                    continue;
                }
                Parsed::Reply(reply) => reply,
            },
        };
        if to_peer.send(reply).await.is_err() {
            return;
        }
    }
}
