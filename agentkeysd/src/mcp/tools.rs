//! The three tools an agent has (DESIGN §3.2), for the one agent its socket belongs to.
//!
//! Every call goes through the same store checks as a D-Bus read by that agent's session
//! (revoked agent, ended or expired session, scope, grant and its expiry, `confirm`), so a
//! revocation refuses the very next call. A served read's audit row is committed and
//! fsynced before the value leaves (see [`crate::daemon::durable`]).

use std::borrow::Cow;
use std::sync::Arc;

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::tool::ToolCallContext;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    ProtocolVersion, ServerCapabilities, ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler, schemars, tool, tool_handler, tool_router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::names::valid_name;
use crate::daemon::authz::{AuthzError, Caller};
use crate::daemon::durable::DurableRead;
use crate::daemon::errors::DaemonError;
use crate::daemon::iface::approvals::{confirm_release, open_scope_request};
use crate::daemon::pairing::Binding;
use crate::daemon::state::Shared;
use crate::store::{Actor, AgentRead, utc};

use super::McpAgent;
use super::reply::tool_error;

/// `get_credential`'s and `request_credential`'s argument.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct ServiceArg {
    /// The credential's name, e.g. anthropic, openai, github (list_credentials shows them)
    pub service: String,
}

/// `request_credential`'s arguments.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct RequestArg {
    /// The credential's name the agent asks for, e.g. github
    pub service: String,
    /// Why the agent needs it, shown to the owner in the audit trail (one line)
    pub reason: String,
}

/// One connection's server: the agent its socket belongs to and the peer's credentials.
#[derive(Debug, Clone)]
pub struct AgentServer {
    shared: Arc<Shared>,
    agent: Arc<McpAgent>,
    caller: Caller,
    /// Where requests come from, as the approver sees it.
    connection: String,
    tool_router: ToolRouter<AgentServer>,
}

#[tool_router]
impl AgentServer {
    pub fn new(shared: Arc<Shared>, agent: Arc<McpAgent>, caller: Caller) -> AgentServer {
        let connection = format!("mcp:{}", agent.job_id);
        AgentServer {
            shared,
            agent,
            caller,
            connection,
            tool_router: Self::tool_router(),
        }
    }

    #[tool(
        description = "List the credentials (API keys) this agent may read: name, environment variable, grant mode (auto: served on request; confirm: each read waits for the owner's approval; once: a single read) and expiry (Unix seconds). Never returns values."
    )]
    async fn list_credentials(&self) -> Result<CallToolResult, ErrorData> {
        Ok(match self.list().await {
            Ok(r) => r,
            Err(e) => tool_error("mcp.list_credentials", &self.agent.agent_name, "", e),
        })
    }

    #[tool(
        description = "Read a credential (API key) this agent was granted; the result is the secret value itself. Every read is audited. A grant in confirm mode waits (up to a couple of minutes) for the owner to approve the read. Use the value directly; do not print, log or store it."
    )]
    async fn get_credential(
        &self,
        Parameters(ServiceArg { service }): Parameters<ServiceArg>,
    ) -> Result<CallToolResult, ErrorData> {
        Ok(match self.get(&service).await {
            Ok(value) => CallToolResult::success(vec![ContentBlock::text(value)]),
            Err(e) => tool_error("mcp.get_credential", &self.agent.agent_name, &service, e),
        })
    }

    #[tool(
        description = "Ask the owner to let this agent read a credential it may not read yet. Opens a request the owner approves with `agentkeysctl approve CODE`; returns the code and what the owner must run. Call get_credential once they have approved."
    )]
    async fn request_credential(
        &self,
        Parameters(RequestArg { service, reason }): Parameters<RequestArg>,
    ) -> Result<CallToolResult, ErrorData> {
        Ok(match self.request(&service, &reason).await {
            Ok(r) => r,
            Err(e) => tool_error(
                "mcp.request_credential",
                &self.agent.agent_name,
                &service,
                e,
            ),
        })
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for AgentServer {
    /// Arguments are checked here, before the router: missing or mistyped ones are the
    /// JSON-RPC error -32602 (invalid params), not a tool result the model might misread.
    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        check_arguments(&request)?;
        let tcc = ToolCallContext::new(self, request, context);
        self.tool_router.call(tcc).await
    }

    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_protocol_version(ProtocolVersion::LATEST_WITH_INITIALIZE)
            .with_server_info(Implementation::new("agentkeysd", env!("CARGO_PKG_VERSION")))
            .with_instructions(format!(
                "AgentKeys serves the API keys of agent '{}'. list_credentials shows what it may \
                 read, get_credential reads one, request_credential asks the owner for another.",
                self.agent.agent_name
            ))
    }

    fn supported_protocol_versions(&self) -> Cow<'static, [ProtocolVersion]> {
        Cow::Borrowed(ProtocolVersion::known_up_to(
            &ProtocolVersion::LATEST_WITH_INITIALIZE,
        ))
    }
}

/// The arguments of a known tool must deserialize into its argument type.
fn check_arguments(request: &CallToolRequestParams) -> Result<(), ErrorData> {
    let args = Value::Object(request.arguments.clone().unwrap_or_default());
    let checked = match request.name.as_ref() {
        "get_credential" => serde_json::from_value::<ServiceArg>(args).map(drop),
        "request_credential" => serde_json::from_value::<RequestArg>(args).map(drop),
        _ => Ok(()),
    };
    checked.map_err(|e| {
        ErrorData::invalid_params(
            format!("invalid arguments for '{}': {e}", request.name),
            None,
        )
    })
}

impl AgentServer {
    fn actor(&self) -> Actor {
        Actor {
            uid: self.caller.uid,
            pid: self.caller.pid,
        }
    }

    fn binding(&self) -> Binding {
        Binding {
            session: self.agent.session.clone(),
            agent_id: self.agent.agent_id.clone(),
            agent_name: self.agent.agent_name.clone(),
            owner: self.agent.owner,
        }
    }

    async fn list(&self) -> Result<CallToolResult, DaemonError> {
        let _in = self.shared.enter().await?;
        let session = self.agent.session.clone();
        let (agent, creds) = self
            .shared
            .with_store(move |s| Ok(s.agent_credentials(&session)?))
            .await?;
        let list: Vec<_> = creds
            .iter()
            .map(|c| {
                json!({
                    "name": c.name,
                    "env": c.env_var,
                    "mode": c.mode.as_str(),
                    "expires": c.expires_at,
                    "expires_utc": c.expires_at.map(utc),
                })
            })
            .collect();
        let body = json!({"agent": agent.name, "credentials": list});
        Ok(CallToolResult::success(vec![ContentBlock::text(
            body.to_string(),
        )]))
    }

    /// An agent's read, as the D-Bus `Read` of an agent-bound connection does it, in the
    /// next durable batch (its audit row fsynced before the value is returned).
    async fn get(&self, service: &str) -> Result<String, DaemonError> {
        let _in = self.shared.enter().await?;
        if !valid_name(service) {
            return Err(AuthzError::BadName(service.to_owned()).into());
        }
        self.shared.require_audit().await?;
        let mut confirmed = false;
        loop {
            let read = DurableRead {
                actor: self.actor(),
                session: self.agent.session.clone(),
                credential: service.to_owned(),
                confirmed,
            };
            // Served only with its row committed and fsynced: a crash after this point
            // cannot lose the record of a value that left.
            match self.shared.durable_read(read).await? {
                AgentRead::Served(_meta, secret) => {
                    return match std::str::from_utf8(secret.expose_secret()) {
                        Ok(text) => Ok(text.to_owned()),
                        Err(_) => Err(DaemonError::Invalid(format!(
                            "credential '{service}' is not UTF-8 text, and MCP carries text; \
                             take it from the environment or /run/agentkeys/secrets instead"
                        ))),
                    };
                }
                AgentRead::NeedsConfirmation { .. } if confirmed => {
                    return Err(DaemonError::Approval(
                        "a confirmed read asked for confirmation again".into(),
                    ));
                }
                AgentRead::NeedsConfirmation { agent_id, .. } => {
                    if !self.shared.pairing.take_release(&agent_id, service) {
                        self.confirm(service).await?;
                    }
                    confirmed = true;
                }
            }
        }
    }

    /// Asks the owner to confirm one read (a `confirm` grant); a refusal is audited there.
    async fn confirm(&self, service: &str) -> Result<(), DaemonError> {
        let emitter = self.shared.signal_emitter();
        confirm_release(
            &self.shared,
            emitter.as_ref(),
            &self.caller,
            self.connection.clone(),
            &self.binding(),
            service,
        )
        .await
    }

    async fn request(&self, service: &str, reason: &str) -> Result<CallToolResult, DaemonError> {
        let _in = self.shared.enter().await?;
        if !valid_name(service) {
            return Err(AuthzError::BadName(service.to_owned()).into());
        }
        let emitter = self.shared.signal_emitter();
        let opened = open_scope_request(
            &self.shared,
            emitter.as_ref(),
            &self.caller,
            self.connection.clone(),
            &self.binding(),
            service,
            reason,
        )
        .await?;
        let approve = format!("agentkeysctl approve {}", opened.pair_code);
        let expires = i64::try_from(opened.expires).unwrap_or(i64::MAX);
        let text = format!(
            "Asked the owner (uid {owner}) to let agent '{agent}' read '{service}'.\n\
             The owner approves with: {approve}\n\
             (the pair code is {code}; they check that the one-time code {otp} matches what \
             approve shows). The request expires at {at}. Call get_credential again once \
             it is approved.",
            owner = self.agent.owner,
            agent = self.agent.agent_name,
            code = opened.pair_code,
            otp = opened.otp,
            at = utc(expires),
        );
        let data = json!({
            "request_id": opened.id,
            "pair_code": opened.pair_code,
            "otp": opened.otp,
            "expires": opened.expires,
            "approve_command": approve,
        });
        Ok(CallToolResult::success(vec![
            ContentBlock::text(text),
            ContentBlock::text(data.to_string()),
        ]))
    }
}
