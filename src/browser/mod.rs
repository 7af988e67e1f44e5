//! The real browser: find and launch Chromium, speak CDP, capture what each page does.

pub mod capture;
pub mod cdp;
pub mod interact;
pub mod launch;
pub mod tab;

use std::sync::Arc;

use serde_json::json;
use tokio::sync::mpsc;

pub use cdp::{CdpError, Connection};
pub use interact::Plan;
pub use launch::{Browser, LaunchError, LaunchOptions, find_browser};
pub use tab::{Tab, Visit, VisitTiming};

/// Browser-level set-up: deny downloads (a scan records them, never opens them) and close popups
/// as soon as a page opens them.
pub async fn prepare_browser(conn: &Arc<Connection>) -> Result<(), CdpError> {
    conn.call(
        "Browser.setDownloadBehavior",
        json!({"behavior": "deny"}),
        None,
    )
    .await?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    conn.subscribe("", tx);
    conn.call("Target.setDiscoverTargets", json!({"discover": true}), None)
        .await?;
    let c = conn.clone();
    tokio::spawn(async move {
        while let Some(ev) = rx.recv().await {
            if ev.method != "Target.targetCreated" {
                continue;
            }
            let info = &ev.params["targetInfo"];
            let is_popup = info["type"].as_str() == Some("page")
                && info["openerId"].as_str().is_some_and(|o| !o.is_empty());
            if let (true, Some(id)) = (is_popup, info["targetId"].as_str()) {
                tracing::debug!("closing a popup window");
                let _ = c
                    .call("Target.closeTarget", json!({"targetId": id}), None)
                    .await;
            }
        }
    });
    Ok(())
}
