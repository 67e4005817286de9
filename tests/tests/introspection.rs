//! The committed introspection XML matches what the daemon serves. Regenerate it with
//! `AGENTKEYS_BLESS=1 cargo nextest run -p agentkeys-tests introspection` after an
//! intentional interface change (and bump the interface version if it breaks clients).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use agentkeys_tests::Daemon;
use agentkeysd::api::names::{BUS_NAME, OBJECT_PATH};

const COMMITTED: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../agentkeysd/dbus/dev.agentkeys.Daemon1.xml"
);

/// Only our interfaces, without the standard ones zbus adds.
fn ours(xml: &str) -> String {
    let mut out = String::new();
    let mut keep = false;
    for line in xml.lines() {
        let t = line.trim_start();
        if t.starts_with("<interface name=\"dev.agentkeys.") {
            keep = true;
        }
        if keep {
            out.push_str(line.trim_end());
            out.push('\n');
        }
        if t.starts_with("</interface>") {
            keep = false;
        }
    }
    out
}

#[tokio::test]
async fn committed_introspection_xml_matches_the_served_interfaces() {
    let d = Daemon::start();
    let conn = d.connect().await;
    let proxy = zbus::fdo::IntrospectableProxy::builder(&conn)
        .destination(BUS_NAME)
        .path(OBJECT_PATH)
        .build()
        .await
        .unwrap();
    let served = ours(&proxy.introspect().await.unwrap());
    assert!(served.contains("dev.agentkeys.Credentials1"));
    let doc = format!(
        "<!DOCTYPE node PUBLIC \"-//freedesktop//DTD D-BUS Object Introspection 1.0//EN\"\n \"http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd\">\n<node name=\"/dev/agentkeys/Daemon1\">\n{served}</node>\n"
    );
    if std::env::var("AGENTKEYS_BLESS").is_ok_and(|v| v == "1") {
        std::fs::create_dir_all(std::path::Path::new(COMMITTED).parent().unwrap()).unwrap();
        std::fs::write(COMMITTED, &doc).unwrap();
    }
    let committed = std::fs::read_to_string(COMMITTED)
        .unwrap_or_else(|e| panic!("{COMMITTED}: {e}; run with AGENTKEYS_BLESS=1 to create it"));
    assert_eq!(
        committed, doc,
        "interfaces changed: review, then re-bless with AGENTKEYS_BLESS=1"
    );
}
