//! Newline-delimited JSON-RPC on one connection, in front of rmcp.
//!
//! The reader owns the read half: it cuts lines with a hard cap ([`MAX_LINE`]), answers what
//! is not a message itself (malformed JSON: -32700; valid JSON that is no JSON-RPC message,
//! or a line over the cap: -32600; both with `id` null, or the request's id when it has
//! one), and hands every valid message to rmcp through a channel ([`ChannelTransport`]).
//! So bad input costs one error line and never the connection or the requests around it.
//! The writer owns the write half and writes the lines both produce, in order.

use std::future::Future;

use rmcp::RoleServer;
use rmcp::service::{RxJsonRpcMessage, TxJsonRpcMessage};
use rmcp::transport::Transport;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use zeroize::Zeroizing;

/// Longest line taken as a message. MCP requests from an agent are small (a tool name and
/// a credential name); this leaves room for large client capabilities and stops a
/// runaway or hostile peer from making the daemon buffer without end.
pub const MAX_LINE: usize = 1 << 20;

/// JSON-RPC 2.0: the line is not JSON.
pub const PARSE_ERROR: i64 = -32700;
/// JSON-RPC 2.0: JSON, but not a request, notification or response we take.
pub const INVALID_REQUEST: i64 = -32600;

/// A serialized line for the writer; wiped after it is written (a tool result may carry a
/// secret).
pub type OutLine = Zeroizing<Vec<u8>>;

/// What the reader cut from the stream.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// A complete line (without its newline) is in the buffer.
    Data,
    /// A line over [`MAX_LINE`] was read to its newline and thrown away.
    TooLong,
    /// The peer closed its side.
    Eof,
}

/// Reads one line into `line` (cleared first), at most [`MAX_LINE`] bytes of it kept.
/// A last line without a newline before EOF counts as a line.
pub async fn read_line<R: AsyncRead + Unpin>(
    rd: &mut BufReader<R>,
    line: &mut Vec<u8>,
) -> std::io::Result<Line> {
    line.clear();
    let mut too_long = false;
    loop {
        let buf = rd.fill_buf().await?;
        if buf.is_empty() {
            return Ok(match (too_long, line.is_empty()) {
                (true, _) => Line::TooLong,
                (false, true) => Line::Eof,
                (false, false) => Line::Data,
            });
        }
        let (chunk, used, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..i], i + 1, true),
            None => (buf, buf.len(), false),
        };
        if !too_long {
            if line.len() + chunk.len() > MAX_LINE {
                too_long = true;
                line.clear();
                line.shrink_to(64 * 1024);
            } else {
                line.extend_from_slice(chunk);
            }
        }
        rd.consume(used);
        if done {
            return Ok(if too_long { Line::TooLong } else { Line::Data });
        }
    }
}

/// What one line means.
#[derive(Debug)]
pub enum Parsed {
    /// Blank: ignored.
    Blank,
    /// A message for rmcp.
    Message(Box<RxJsonRpcMessage<RoleServer>>),
    /// An error line to send back instead.
    Reply(OutLine),
}

/// Parses one line (the reader's hot path: one parse for a valid message).
pub fn parse(line: &[u8]) -> Parsed {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.iter().all(u8::is_ascii_whitespace) {
        return Parsed::Blank;
    }
    match serde_json::from_slice::<RxJsonRpcMessage<RoleServer>>(line) {
        Ok(msg) => Parsed::Message(Box::new(msg)),
        Err(_) => Parsed::Reply(invalid(line)),
    }
}

/// The error line for a line that is no message: why, and the id when there is one.
fn invalid(line: &[u8]) -> OutLine {
    let value: Value = match serde_json::from_slice(line) {
        Ok(v) => v,
        Err(e) => {
            return error_line(
                Value::Null,
                PARSE_ERROR,
                &format!(
                    "parse error: the line is not JSON ({e}); send one JSON-RPC message per line"
                ),
            );
        }
    };
    let id = match value.get("id") {
        Some(id @ (Value::String(_) | Value::Number(_))) => id.clone(),
        _ => Value::Null,
    };
    let why = match &value {
        Value::Array(_) => {
            "JSON-RPC batches are not supported; send one message per line".to_owned()
        }
        Value::Object(o) if o.get("jsonrpc") != Some(&json!("2.0")) => {
            "invalid request: \"jsonrpc\" must be \"2.0\"".to_owned()
        }
        Value::Object(o) => match o.get("method").and_then(Value::as_str) {
            Some(m) => format!(
                "invalid request: the parameters of '{}' do not match the MCP schema",
                m.chars().take(64).collect::<String>()
            ),
            None => "invalid request: not a JSON-RPC request, notification or response".to_owned(),
        },
        _ => "invalid request: a JSON-RPC message is a JSON object".to_owned(),
    };
    error_line(id, INVALID_REQUEST, &why)
}

/// The answer to a line over [`MAX_LINE`].
pub fn too_long() -> OutLine {
    error_line(
        Value::Null,
        INVALID_REQUEST,
        &format!(
            "invalid request: a line longer than {MAX_LINE} bytes was discarded (the limit of one MCP message here)"
        ),
    )
}

/// One JSON-RPC error response, newline-terminated.
pub fn error_line(id: Value, code: i64, message: &str) -> OutLine {
    let v = json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}});
    let mut bytes = serde_json::to_vec(&v).unwrap_or_default();
    bytes.push(b'\n');
    Zeroizing::new(bytes)
}

/// Writes lines to `wr` until the channel closes or the peer goes away. Lines that queued
/// meanwhile go out in one flush.
pub async fn write_lines<W: AsyncWrite + Unpin>(mut wr: W, mut rx: mpsc::Receiver<OutLine>) {
    while let Some(line) = rx.recv().await {
        if wr.write_all(&line).await.is_err() {
            return;
        }
        drop(line);
        while let Ok(more) = rx.try_recv() {
            if wr.write_all(&more).await.is_err() {
                return;
            }
        }
        if wr.flush().await.is_err() {
            return;
        }
    }
    let _ = wr.shutdown().await;
}

/// The transport rmcp serves over: messages in from the reader, lines out to the writer.
#[derive(Debug)]
pub struct ChannelTransport {
    pub rx: mpsc::Receiver<RxJsonRpcMessage<RoleServer>>,
    pub tx: mpsc::Sender<OutLine>,
}

/// The connection's writer is gone (the peer left, or the server closed the socket).
#[derive(Debug, thiserror::Error)]
#[error("the MCP connection is closed")]
pub struct Closed;

impl Transport<RoleServer> for ChannelTransport {
    type Error = Closed;

    fn send(
        &mut self,
        item: TxJsonRpcMessage<RoleServer>,
    ) -> impl Future<Output = Result<(), Closed>> + Send + 'static {
        let tx = self.tx.clone();
        let line = serde_json::to_vec(&item).map(|mut v| {
            v.push(b'\n');
            Zeroizing::new(v)
        });
        drop(item);
        async move {
            match line {
                Ok(line) => tx.send(line).await.map_err(|_| Closed),
                Err(e) => {
                    tracing::error!(error = %e, "cannot serialize an MCP message");
                    Err(Closed)
                }
            }
        }
    }

    fn receive(&mut self) -> impl Future<Output = Option<RxJsonRpcMessage<RoleServer>>> + Send {
        self.rx.recv()
    }

    async fn close(&mut self) -> Result<(), Closed> {
        self.rx.close();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    async fn lines(input: &[u8]) -> Vec<(Line, Vec<u8>)> {
        let mut rd = BufReader::with_capacity(7, input);
        let mut out = Vec::new();
        let mut line = Vec::new();
        loop {
            let l = read_line(&mut rd, &mut line).await.unwrap();
            if l == Line::Eof {
                return out;
            }
            out.push((l, line.clone()));
        }
    }

    #[tokio::test]
    async fn lines_are_cut_at_newlines_and_a_last_unterminated_line_counts() {
        let got = lines(b"ab\n\ncdefghijk\nlast").await;
        let want: Vec<(Line, Vec<u8>)> = vec![
            (Line::Data, b"ab".to_vec()),
            (Line::Data, b"".to_vec()),
            (Line::Data, b"cdefghijk".to_vec()),
            (Line::Data, b"last".to_vec()),
        ];
        assert_eq!(got, want);
    }

    #[tokio::test]
    async fn an_over_long_line_is_discarded_to_its_newline_and_reading_goes_on() {
        let mut input = vec![b'x'; MAX_LINE + 10];
        input.extend_from_slice(b"\n{\"a\":1}\n");
        let got = lines(&input).await;
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].0, Line::TooLong);
        assert_eq!(got[1], (Line::Data, b"{\"a\":1}".to_vec()));
    }

    #[test]
    fn malformed_json_is_a_parse_error_with_a_null_id() {
        let Parsed::Reply(line) = parse(b"{not json") else {
            panic!("expected a reply")
        };
        let v: Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["error"]["code"], PARSE_ERROR);
        assert_eq!(v["id"], Value::Null);
    }

    #[test]
    fn json_that_is_no_message_is_an_invalid_request_keeping_its_id() {
        let Parsed::Reply(line) = parse(br#"{"jsonrpc":"1.0","id":7,"method":"ping"}"#) else {
            panic!("expected a reply")
        };
        let v: Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["error"]["code"], INVALID_REQUEST);
        assert_eq!(v["id"], 7);
    }

    #[test]
    fn a_valid_request_goes_to_rmcp_and_blank_lines_are_ignored() {
        assert!(matches!(
            parse(br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#),
            Parsed::Message(_)
        ));
        assert!(matches!(parse(b"  \r"), Parsed::Blank));
    }
}
