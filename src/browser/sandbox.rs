//! The form probe's own browser context: a cookie jar and storage thrown away after the probe.
//!
//! A page can keep what is typed into it without sending it anywhere yet: write it into a
//! cookie, local storage, IndexedDB, a BroadcastChannel. Probed in the tab that visited it, that
//! value sits in the jar and storage every tab of the scan shares, and the next request to the
//! site — from another tab during the probe, or from any tab after it, when nothing is
//! intercepted — carries it (measured before this module: `GET /next` with
//! `Cookie: lead=pw.canary…`), and a later page's tag may read it and send it to a tracker.
//!
//! So the visiting tab never types. When a page has forms to probe, a second tab is opened in
//! a browser context of its own (`Target.createBrowserContext`), given the visitor's cookies and
//! the page origin's local and session storage, sent to the same URL and left to settle, then
//! probed there: its requests from the moment the probe starts are the page's probe record (its
//! own load is a copy of what the visit already recorded). Then the tab is closed and the
//! context disposed of, with whatever the page wrote into it. Inside that context the page can
//! still write a typed value into its own jar: the guard judges the `Cookie` header each paused
//! request shows, and a request let go leaves with exactly the headers judged (`tab.rs`,
//! `pinned_headers`).
//!
//! A WebSocket open when the probe started holds the frames the page queued on it, and closing
//! the tab would release them: a copy on which the page sent any frame while its sockets were
//! offline is handed to the scan to park (`pool.rs`) and ends with the browser, killed; one
//! that sent none is closed. The visiting tab's sockets are never touched.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde_json::{Value, json};

use super::capture::PageState;
use super::cdp::{CdpError, Connection};
use super::interact::Plan;
use super::pool::Context;
use super::tab::{Tab, Visit, VisitTiming};
use crate::model::{Canary, Phase, SettleReason};
use crate::rules::consent::ConsentMode;

/// Entries of local and session storage carried to the probe's context, at most, per kind.
const MAX_STORAGE_ITEMS: usize = 500;

/// Reads the main frame's origin and its local and session storage (isolated world).
const READ_STORAGE: &str = r#"(max) => {
  const grab = (s) => {
    const out = [];
    try { for (let i = 0; i < s.length && out.length < max; i++) { const k = s.key(i); out.push([k, s.getItem(k)]); } }
    catch (e) {}
    return out;
  };
  let local = [], session = [];
  try { local = grab(localStorage); } catch (e) {}
  try { session = grab(sessionStorage); } catch (e) {}
  let worker = false;
  try { worker = !!navigator.serviceWorker.controller; } catch (e) {}
  return {origin: location.origin, local, session, worker};
}"#;

/// Puts `DATA`'s entries into a new document of its origin before the page's scripts run
/// (isolated world; an entry the page already has is left alone).
const RESTORE_STORAGE: &str = r#"(() => {
  const d = DATA;
  if (location.origin !== d.origin) return;
  const put = (s, items) => { for (const [k, v] of items) { try { if (s.getItem(k) === null) s.setItem(k, v); } catch (e) {} } };
  try { put(localStorage, d.local); } catch (e) {}
  try { put(sessionStorage, d.session); } catch (e) {}
})()"#;

/// Asks how the page's service worker registration stands; the answer ("none", "starting",
/// "active") lands in `pwWorker` for the next call, which returns it (isolated world).
const POLL_WORKER: &str = r#"() => {
  try {
    navigator.serviceWorker.getRegistration().then(
      (r) => { globalThis.pwWorker = !r ? 'none' : r.active ? 'active' : 'starting'; },
      () => { globalThis.pwWorker = 'none'; });
  } catch (e) { return 'none'; }
  return globalThis.pwWorker || 'asked';
}"#;

/// How long the probe's copy of a page may wait for its service worker to start.
const WORKER_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

impl Tab {
    /// The form probe for the page this tab visited, run in a throwaway browser context (see
    /// the module's documentation). What it records joins `st` as the page's probe phase.
    /// Returns the number of fields typed into and why the probe's last settle ended.
    pub(super) async fn probe_aside(
        &mut self,
        st: &mut PageState,
        visit: &mut Visit,
        plan: &Plan,
        canaries: &[Canary],
        timing: VisitTiming,
    ) -> (usize, SettleReason) {
        let Some(url) = st.main_url.clone() else {
            return (0, SettleReason::Quiet);
        };
        let storage = self
            .eval_isolated(READ_STORAGE, json!(MAX_STORAGE_ITEMS))
            .await
            .unwrap_or(Value::Null);
        let mut aside = match open_aside(&self.ctx, &storage).await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "no tab for the form probe; this page's forms were not probed");
                st.probe_skipped = Some("no browser context could be opened for it");
                return (0, SettleReason::Quiet);
            }
        };
        let mut pst = aside.fresh_state(st.phase);
        let arrival = aside.arrive(&mut pst, &url, timing).await;
        let mut outcome = (0, SettleReason::Quiet);
        if let Some(e) = arrival.error {
            tracing::warn!(error = %e, "the form probe's copy of the page did not load; its forms were not probed");
            pst.probe_skipped = Some("the copy of the page it types into did not load");
        } else {
            if storage["worker"] == true {
                aside.await_service_worker().await;
            }
            if plan.consent_given.load(Ordering::SeqCst)
                && matches!(plan.consent, ConsentMode::Accept | ConsentMode::Reject)
                && aside.press_consent(plan).await.is_some()
            {
                aside.settle(&mut pst, timing).await;
            }
            let dropped = aside.conn.dropped_events();
            outcome = aside.probe(&mut pst, plan, canaries, timing).await;
            aside.leave(&mut pst).await;
            // A socket open during the probe makes the copy hold its sockets offline for good
            // (`probe`); when the page sent no frame while they were, and no event of the
            // browser was lost meanwhile, nothing is held and the copy can be closed.
            if pst.frames_held == 0 && aside.conn.dropped_events() == dropped {
                aside.sockets_offline = false;
            }
        }
        adopt(st, pst);
        if aside.holds_queued_frames() {
            visit.parked = Some(aside);
        } else {
            aside.close().await;
        }
        outcome
    }

    /// A service worker that controls the visited page (the visitor's earlier pages installed
    /// it) is new in the probe's context: when the copy registered it again, waits (bounded)
    /// until it is active, so a worker that would carry what is typed is there to be caught,
    /// as it is for the visitor. A copy that registered none goes on at once.
    async fn await_service_worker(&self) {
        let until = std::time::Instant::now() + WORKER_WAIT;
        while std::time::Instant::now() < until {
            match self.eval_isolated(POLL_WORKER, json!(null)).await {
                Some(Value::String(s)) if s == "asked" || s == "starting" => {}
                _ => return,
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        tracing::debug!("the page's service worker did not start in the probe's context");
    }
}

/// Opens a tab in a browser context of its own holding the default context's cookies (a
/// scripted journey's: what it types stays there, see `Pool::open_isolated_tab`).
pub(super) async fn open_isolated(ctx: &Arc<Context>) -> Result<Tab, CdpError> {
    open_aside(ctx, &Value::Null).await
}

/// Opens a tab in a new browser context holding the default context's cookies and, for
/// `storage`'s origin, its local and session storage (`READ_STORAGE`'s answer).
async fn open_aside(ctx: &Arc<Context>, storage: &Value) -> Result<Tab, CdpError> {
    let conn = &ctx.conn;
    let created = conn
        .call(
            "Target.createBrowserContext",
            json!({"disposeOnDetach": true}),
            None,
        )
        .await?;
    let id = created["browserContextId"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let tab = match furnish(ctx, &id).await {
        Ok(()) => Tab::open_in(ctx.clone(), Some(id.clone())).await,
        Err(e) => Err(e),
    };
    let tab = match tab {
        Ok(t) => t,
        Err(e) => {
            dispose(conn, &id).await;
            return Err(e);
        }
    };
    let has_items = ["local", "session"]
        .iter()
        .any(|k| storage[k].as_array().is_some_and(|a| !a.is_empty()));
    if has_items {
        let data = json!({
            "origin": storage["origin"],
            "local": storage["local"],
            "session": storage["session"],
        });
        // JSON is a JavaScript literal: the page's keys and values are data here, never code.
        let source = RESTORE_STORAGE.replace("DATA", &data.to_string());
        if let Err(e) = conn
            .call(
                "Page.addScriptToEvaluateOnNewDocument",
                json!({"source": source, "worldName": "pixelwatch-restore"}),
                Some(&tab.session),
            )
            .await
        {
            // The copy still loads, as a visitor without this origin's storage.
            tracing::debug!(error = %e, "the page's storage could not be given to the probe's copy");
        }
    }
    Ok(tab)
}

/// Sets up browser context `id` as the default one is: downloads denied, the visitor's cookies.
async fn furnish(ctx: &Context, id: &str) -> Result<(), CdpError> {
    let conn = &ctx.conn;
    conn.call(
        "Browser.setDownloadBehavior",
        json!({"behavior": "deny", "browserContextId": id}),
        None,
    )
    .await?;
    super::pool::copy_jar(conn, conn, Some(id)).await
}

/// Disposes of browser context `id` and everything the pages in it wrote.
pub(super) async fn dispose(conn: &Connection, id: &str) {
    if let Err(e) = conn
        .call(
            "Target.disposeBrowserContext",
            json!({"browserContextId": id}),
            None,
        )
        .await
    {
        tracing::debug!(error = %e, "the probe's browser context could not be disposed of");
    }
}

/// Moves the probe's record (`aside`'s requests from the moment the probe started, what it
/// held back, where a let-through submission landed) into the visited page's `st`.
fn adopt(st: &mut PageState, mut aside: PageState) {
    let landing = aside.landing.take();
    let (order_at, hops_at) = landing
        .as_ref()
        .map_or((usize::MAX, usize::MAX), |l| (l.order_at, l.hops_at));
    let mut new_order_at = None;
    for (i, key) in aside.order.into_iter().enumerate() {
        if i == order_at {
            new_order_at = Some(st.order.len());
        }
        if let Some(r) = aside.reqs.remove(&key)
            && r.request.phase == Phase::Probe
        {
            st.order.push(key.clone());
            st.reqs.insert(key, r);
        }
    }
    let mut new_hops_at = None;
    for (i, hop) in aside.hops.into_iter().enumerate() {
        if i == hops_at {
            new_hops_at = Some(st.hops.len());
        }
        if hop.phase == Phase::Probe {
            st.hops.push(hop);
        }
    }
    if let Some(mut l) = landing {
        l.order_at = new_order_at.unwrap_or(st.order.len());
        l.hops_at = new_hops_at.unwrap_or(st.hops.len());
        st.landing = Some(l);
    }
    st.blocked.append(&mut aside.blocked);
    st.frames.append(&mut aside.frames);
    st.probe_skipped = st.probe_skipped.or(aside.probe_skipped);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::browser::capture::{Landing, ReqState};
    use crate::model::Request;

    fn req(url: &str, phase: Phase) -> ReqState {
        ReqState {
            request: Request {
                url: url.into(),
                phase,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn state(session: &str, reqs: &[(&str, Phase)]) -> PageState {
        let mut st = PageState::default();
        for (i, (url, phase)) in reqs.iter().enumerate() {
            let key = (session.to_string(), i.to_string());
            st.order.push(key.clone());
            st.reqs.insert(key, req(url, *phase));
        }
        st
    }

    #[test]
    fn only_the_probe_joins_the_page_and_a_landing_keeps_its_place() {
        let mut st = state("visit", &[("/", Phase::Load), ("/tag.js", Phase::Load)]);
        let mut aside = state(
            "aside",
            &[
                ("/", Phase::Load),
                ("/tag.js", Phase::Load),
                ("/track?typed", Phase::Probe),
                ("/thanks", Phase::Probe),
                ("/thanks.js", Phase::Probe),
            ],
        );
        aside.landing = Some(Landing {
            url: "/thanks".into(),
            order_at: 3,
            hops_at: 0,
            ..Default::default()
        });
        aside.blocked.push("POST /contact (a submission)".into());
        aside.probe_skipped = Some("why");
        adopt(&mut st, aside);
        let urls: Vec<&str> = st
            .order
            .iter()
            .map(|k| st.reqs[k].request.url.as_str())
            .collect();
        assert_eq!(
            urls,
            ["/", "/tag.js", "/track?typed", "/thanks", "/thanks.js"]
        );
        let l = st.landing.as_ref().unwrap();
        assert_eq!((l.order_at, l.hops_at), (3, 0));
        assert_eq!(st.blocked, ["POST /contact (a submission)"]);
        assert_eq!(st.probe_skipped, Some("why"));
    }
}
