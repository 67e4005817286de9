//! `agentkeysctl mcp`: the agent's MCP server on stdin/stdout, for MCP clients that start
//! a stdio server (Claude Code, Codex, Cursor, …). It bridges bytes to the agent's own
//! MCP socket, which `agentkeysctl run` binds at /run/agentkeys/mcp.sock inside the
//! sandbox (`AGENTKEYS_MCP_SOCKET`); the daemon knows the agent from that socket.
//!
//! Plain byte copies both ways, blocking, on two threads: stdin → socket (then a half
//! close, so the server finishes what it has and closes), socket → stdout (the end of
//! which ends the process: the server closed, or the client stopped reading). Nothing is
//! parsed here; the daemon answers bad input itself.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use clap::Args;

use crate::errors::{CliError, Exit};

/// Where `agentkeysctl run` puts the socket inside the sandbox.
pub const DEFAULT_SOCKET: &str = "/run/agentkeys/mcp.sock";

#[derive(Args, Debug)]
#[command(
    long_about = "Serve this agent's AgentKeys MCP tools on stdin/stdout.\n\n\
Inside `agentkeysctl run`, the daemon gives the agent an MCP socket of its own \
(/run/agentkeys/mcp.sock, named by AGENTKEYS_MCP_SOCKET). This command connects stdin and \
stdout to it, so an MCP client that starts a stdio server uses it unchanged. Tools: \
list_credentials, get_credential {service}, request_credential {service, reason}.",
    after_help = "Claude Code: put this in .mcp.json in the workspace:\n  \
{\"mcpServers\":{\"agentkeys\":{\"command\":\"agentkeysctl\",\"args\":[\"mcp\"]}}}\n\
Other clients (Codex, Cursor, …): a stdio server with command `agentkeysctl` and args [\"mcp\"].\n\
Try it by hand inside a run:\n  \
agentkeysctl run -- agentkeysctl mcp     (then type JSON-RPC lines)\n\
Exit codes: 0 when either side closed, 6 when the socket cannot be reached."
)]
pub struct McpArgs {
    /// The agent's MCP socket
    #[arg(long, env = "AGENTKEYS_MCP_SOCKET", default_value = DEFAULT_SOCKET, value_name = "PATH")]
    pub socket: PathBuf,
}

pub fn run(args: &McpArgs) -> Result<(), CliError> {
    let sock = UnixStream::connect(&args.socket).map_err(|e| unreachable(args, &e))?;
    let to_server = sock.try_clone().map_err(|e| unreachable(args, &e))?;
    // Detached: the process ends when the server side does, whatever stdin is doing.
    std::thread::spawn(move || copy_in(to_server));
    copy_out(sock);
    Ok(())
}

/// stdin → socket; at EOF (or a read error) half-closes, so the server answers what it
/// has and closes its side.
fn copy_in(mut sock: UnixStream) {
    let mut stdin = std::io::stdin().lock();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match stdin.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if sock.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = sock.shutdown(Shutdown::Write);
}

/// socket → stdout, flushed after every read (an MCP client waits for each line).
fn copy_out(mut sock: UnixStream) {
    let mut stdout = std::io::stdout().lock();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match sock.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if stdout.write_all(&buf[..n]).is_err() || stdout.flush().is_err() {
                    return;
                }
            }
        }
    }
}

fn unreachable(args: &McpArgs, e: &std::io::Error) -> CliError {
    CliError::new(
        Exit::Unreachable,
        format!("cannot reach the agent's MCP socket {}", args.socket.display()),
    )
    .cause(format!(
        "{e}; the socket exists only inside `agentkeysctl run`, where the daemon creates it for \
         the running agent and sets AGENTKEYS_MCP_SOCKET"
    ))
    .fix(
        "start the agent with `agentkeysctl run -- CMD` and let its MCP client start \
         `agentkeysctl mcp` inside the run (or point --socket / AGENTKEYS_MCP_SOCKET at the socket)",
    )
}
