//! `agentkeysctl whoami`: this process as the daemon sees it (from the bus, not from us).

use agentkeysd::api::dict::{get_str, get_u32};
use clap::Args;

use crate::cli::Global;
use crate::client::Client;
use crate::errors::{CliError, Subject, daemon_error};
use crate::output::{Out, dict_to_json};

#[derive(Args, Debug)]
pub struct WhoamiArgs {}

pub async fn run(g: &Global, _args: &WhoamiArgs, out: &mut Out) -> Result<(), CliError> {
    let client = Client::connect(g).await?;
    let daemon = client.daemon().await?;
    let op = client.op("say who is calling", Subject::Other);
    let me = daemon.who_am_i().await.map_err(|e| daemon_error(e, &op))?;
    if out.json {
        return out.json(&dict_to_json(&me));
    }
    let num = |k: &str| {
        get_u32(&me, k)
            .ok()
            .flatten()
            .map_or_else(|| "-".to_owned(), |n| n.to_string())
    };
    let user = get_str(&me, "user")
        .ok()
        .flatten()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "-".to_owned());
    out.key_values(&[("uid", num("uid")), ("user", user), ("pid", num("pid"))])
}
