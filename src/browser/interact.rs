//! What a scan does to a page besides watching: press the consent banner's button
//! (`--consent accept|reject`) and type canary values into forms (the form probe).
//!
//! The probe has no side effects anywhere. It runs in a copy of the page in a throwaway browser
//! context (`sandbox.rs`), so nothing the page writes while it is typed into reaches the jar or
//! storage the scan's other pages share. While it runs, every request of the page, its iframes
//! and its workers is paused and judged by the guard (`guard.rs`) — anything carrying a typed
//! value, in its URL, body, headers or cookies, is recorded and failed, whoever it is addressed
//! to, and so are navigations and submissions to the site. WebSockets bypass request
//! interception, so they are taken offline for the probe; when a socket was already open,
//! frames the page queued on it would be sent the moment the tab went back online or closed, so
//! that tab stays offline for WebSockets for good and the browser is killed, never closed, at
//! the end.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::capture::PageState;
use super::tab::{GuardMode, Tab, Visit, VisitTiming};
use crate::model::{Canary, Phase, SettleReason};
use crate::rules::consent::ConsentMode;

/// What to do on each page besides recording.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub consent: ConsentMode,
    /// (CMP name, selector) to try in order.
    pub consent_buttons: Vec<(String, String)>,
    /// Case-insensitive regex for a generic banner button's whole text.
    pub consent_generic: String,
    /// Set once any page pressed the button: consent lives in the shared cookie jar.
    pub consent_given: Arc<AtomicBool>,
    /// Values to type into forms; `None` turns the probe off.
    pub canaries: Option<Vec<Canary>>,
    /// Most steps of a multi-step flow (quiz, intake) the probe walks; 0 walks none.
    pub funnel_steps: usize,
    /// The registrable domain being scanned (its submissions are held back).
    pub site: String,
    /// Capture a PNG of each page as the visit leaves it (`--screenshots`).
    pub screenshots: bool,
}

const CLICK_CONSENT: &str = r#"(args) => {
  const roots = [document];
  const walk = (root) => { for (const el of root.querySelectorAll('*')) { if (el.shadowRoot) { roots.push(el.shadowRoot); walk(el.shadowRoot); } } };
  walk(document);
  const visible = (el) => { const r = el.getBoundingClientRect(); const cs = getComputedStyle(el);
    return r.width > 0 && r.height > 0 && cs.visibility !== 'hidden' && cs.display !== 'none'; };
  for (const [cmp, sel] of args.buttons) {
    for (const root of roots) {
      let el = null;
      try { el = root.querySelector(sel); } catch (e) { continue; }
      if (el && visible(el)) { el.click(); return cmp + ' (' + sel + ')'; }
    }
  }
  const re = new RegExp(args.generic, 'i');
  for (const root of roots) {
    for (const el of root.querySelectorAll('button, a, [role=button], input[type=button]')) {
      const t = (el.innerText || el.value || '').trim().replace(/\s+/g, ' ');
      if (t.length > 0 && t.length < 48 && re.test(t) && !el.closest('form') && visible(el)) {
        el.click(); return 'generic button "' + t + '"';
      }
    }
  }
  return null;
}"#;

/// Finds fields to type into: in the first 3 forms (`scope: "forms"`), or every visible empty
/// field of the page (`"visible"`, a funnel step).
const MARK_FIELDS: &str = r#"(a) => {
  const fields = [];
  const marked = [];
  const visible = (el) => { const r = el.getBoundingClientRect(); const cs = getComputedStyle(el);
    return r.width > 0 && r.height > 0 && cs.visibility !== 'hidden' && cs.display !== 'none'; };
  const groups = a.scope === 'forms' ? Array.from(document.forms).slice(0, 3) : [document];
  groups.forEach((f, fi) => {
    for (const el of f.querySelectorAll('input, textarea')) {
      if (fields.length >= 20) break;
      if (a.scope !== 'forms' && (el.value || !visible(el))) continue;
      const type = (el.type || 'text').toLowerCase();
      if (['hidden','submit','button','checkbox','radio','file','image','reset','password','range','color'].includes(type)) continue;
      if (el.disabled || el.readOnly) continue;
      const hint = [type, el.name, el.id, el.autocomplete, el.placeholder, el.getAttribute('aria-label')].join(' ').toLowerCase();
      let kind = null;
      if (type === 'email' || /e-?mail/.test(hint)) kind = 'email';
      else if (type === 'tel' || /phone|mobile|\btel\b/.test(hint)) kind = 'phone';
      else if (type === 'date' || /birth|\bdob\b|bday/.test(hint)) kind = 'dob';
      else if (/first|given|fname/.test(hint)) kind = 'first_name';
      else if (/last|family|surname|lname/.test(hint)) kind = 'last_name';
      else if (/name/.test(hint)) kind = 'name';
      else if (el.tagName === 'TEXTAREA' || ['text', 'search'].includes(type)) kind = 'text';
      if (!kind) continue;
      // Remembered in this isolated world, never marked in the page's DOM.
      marked.push(el);
      fields.push({idx: fields.length, kind, type, form: fi});
    }
  });
  globalThis.probeFields = (a.scope === 'forms' ? [] : (globalThis.probeFields || [])).concat(marked);
  const base = globalThis.probeFields.length - marked.length;
  return fields.map((f) => ({...f, idx: f.idx + base}));
}"#;

/// Acts on field `idx` found by MARK_FIELDS (in the same isolated world).
const FIELD: &str = r#"(a) => {
  const el = (globalThis.probeFields || [])[a.idx];
  if (!el || !el.isConnected) return false;
  if (a.op === 'focus') { el.focus(); return document.activeElement === el; }
  if (a.op === 'blur') { el.blur(); return true; }
  if (a.op === 'date') {
    el.value = a.value;
    el.dispatchEvent(new Event('input', {bubbles: true}));
    el.dispatchEvent(new Event('change', {bubbles: true}));
    return true;
  }
  return false;
}"#;

const SUBMIT: &str = r#"() => {
  let n = 0;
  const probed = new Set((globalThis.probeFields || []).map((el) => el.form));
  for (const f of Array.from(document.forms).slice(0, 3)) {
    if (!probed.has(f)) continue;
    n++;
    // Submit in this tab only: a new window's request would escape the interception.
    f.removeAttribute('target');
    for (const b of f.querySelectorAll('[formtarget]')) b.removeAttribute('formtarget');
    // Listeners (and pixels) see the submit; the site's own request is held back by the scanner.
    try { f.requestSubmit ? f.requestSubmit() : f.submit(); }
    catch (e) { f.dispatchEvent(new Event('submit', {bubbles: true, cancelable: true})); }
  }
  return n;
}"#;

impl Tab {
    /// Consent click, then the form probe, each followed by a settle. Returns the worst reason
    /// a settle ended for.
    pub(super) async fn interact(
        &mut self,
        st: &mut PageState,
        visit: &mut Visit,
        timing: VisitTiming,
        plan: &Plan,
    ) -> SettleReason {
        let mut reason = SettleReason::Quiet;
        if matches!(plan.consent, ConsentMode::Accept | ConsentMode::Reject)
            && let Some(action) = self.press_consent(plan).await
        {
            tracing::debug!(%action, mode = plan.consent.as_str(), "pressed the consent button");
            st.phase = Phase::Consent;
            plan.consent_given.store(true, Ordering::SeqCst);
            visit.page.consent_action = Some(format!("{}: {action}", plan.consent.as_str()));
            reason = reason.max(self.settle(st, timing).await);
        }
        let funnel = plan.funnel_steps > 0 && super::funnel::looks_like_one(&visit.page.text);
        if let (Some(canaries), true) = (&plan.canaries, visit.page.forms > 0 || funnel) {
            let (typed, r) = self.probe_aside(st, visit, plan, canaries, timing).await;
            visit.page.probed_fields = typed;
            reason = reason.max(r);
        }
        reason
    }

    /// Calls `function(arg)` in an isolated world of the main frame.
    pub(super) async fn eval_isolated(&self, function: &str, arg: Value) -> Option<Value> {
        let tree = self
            .conn
            .call("Page.getFrameTree", json!({}), Some(&self.session))
            .await
            .ok()?;
        let frame = tree["frameTree"]["frame"]["id"].as_str()?.to_string();
        self.eval_in_frame(&frame, &format!("({function})({arg})"))
            .await
    }

    pub(super) async fn press_consent(&self, plan: &Plan) -> Option<String> {
        let arg = json!({"buttons": plan.consent_buttons, "generic": plan.consent_generic});
        self.eval_isolated(CLICK_CONSENT, arg)
            .await?
            .as_str()
            .map(str::to_string)
    }

    /// The probe phase, with every request judged by the guard: walks a multi-step flow if the
    /// page has one, then types canaries into its forms and submits them. Returns the number of
    /// fields typed into and the worst reason a settle ended for.
    pub(super) async fn probe(
        &mut self,
        st: &mut PageState,
        plan: &Plan,
        canaries: &[Canary],
        timing: VisitTiming,
    ) -> (usize, SettleReason) {
        let sockets_were_open = !st.open_sockets.is_empty();
        let Some(enabled) = self.start_guard(st, GuardMode::Probe).await else {
            st.probe_skipped = Some("its WebSockets could not be taken offline");
            return (0, SettleReason::Quiet);
        };
        if !enabled {
            st.probe_skipped = Some("request interception could not be turned on");
        }
        let mut typed = 0;
        let mut reason = SettleReason::Quiet;
        // The probed page's own record, in case a submission let through lands elsewhere.
        let before = (st.main_url.clone(), st.main_status, st.main_mime.clone());
        if enabled {
            st.phase = Phase::Probe;
            if plan.funnel_steps > 0 {
                let (n, r) = self
                    .walk_funnel(st, canaries, timing, plan.funnel_steps)
                    .await;
                typed += n;
                reason = reason.max(r);
            }
            st.step = None;
            let n = self.type_canaries(canaries, "forms").await;
            typed += n;
            if n > 0 {
                self.eval_isolated(SUBMIT, json!(null)).await;
                reason = reason.max(self.settle(st, timing).await);
            }
            // Let the held-back requests' events arrive before interception ends.
            let until = Instant::now() + Duration::from_millis(100);
            self.pump(st, until).await;
        }
        if st.landing.is_some() {
            // `--submit-forms`: the confirmation page is a page of its own.
            let mut dom = Visit::default();
            self.collect_dom(st, &mut dom).await;
            if let Some(l) = st.landing.as_mut() {
                l.status = st.main_status;
                l.dom = Some(dom);
            }
            (st.main_url, st.main_status, st.main_mime) = before;
        }
        // Interception stays on until the page is left: a timer of the page may still send
        // what was typed. The tab leaves through about:blank right after this.
        // Frames queued on a socket that was open during the probe are released by *any* change
        // of the offline rule (measured: narrowing it to that socket's host released them), so
        // the rule of this tab never changes again, and the browser is killed, never closed, at
        // the end. This tab is the probe's copy of the page (`sandbox.rs`): the scan parks it;
        // the tab that visited the page goes on with its sockets untouched.
        if sockets_were_open || !st.open_sockets.is_empty() {
            self.sockets_offline = true;
            self.ctx.quarantined.store(true, Ordering::SeqCst);
        }
        (typed, reason)
    }

    /// Turns the guard on: WebSockets offline first (they bypass Fetch), then every request
    /// paused and judged by `mode`. `None` when sockets could not be taken offline (nothing may
    /// be typed then); `Some(false)` when interception could not be turned on.
    pub(super) async fn start_guard(
        &mut self,
        st: &mut PageState,
        mode: GuardMode,
    ) -> Option<bool> {
        if !self.sockets_offline && !self.socket_rules(true).await {
            tracing::debug!("WebSockets could not be taken offline; nothing is typed");
            return None;
        }
        st.sockets_offline = true;
        self.guard_mode.store(mode as u8, Ordering::SeqCst);
        self.ctx.probe_started(self.probe_context()).await;
        st.guard = Some(self.ctx.guard.clone());
        st.journey = mode == GuardMode::Journey;
        let enabled = self
            .conn
            .call(
                "Fetch.enable",
                json!({"patterns": [{"urlPattern": "*", "requestStage": "Request"}]}),
                Some(&self.session),
            )
            .await
            .is_ok();
        Some(enabled)
    }

    /// Types canaries into the fields MARK_FIELDS finds in `scope` ("forms" or "visible"), with
    /// real keyboard input so input, change and blur listeners see it. Returns how many.
    pub(super) async fn type_canaries(&mut self, canaries: &[Canary], scope: &str) -> usize {
        let session = self.session.clone();
        let s = Some(session.as_str());
        let fields = self
            .eval_isolated(MARK_FIELDS, json!({"scope": scope}))
            .await
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default();
        let mut typed = 0;
        for f in &fields {
            let kind = f["kind"].as_str().unwrap_or("text");
            let idx = f["idx"].as_u64().unwrap_or(0);
            let Some(value) = canaries
                .iter()
                .find(|c| c.kind == kind)
                .or_else(|| canaries.iter().find(|c| c.kind == "text"))
                .map(|c| c.value.clone())
            else {
                continue;
            };
            let field = |op: &str| json!({"idx": idx, "op": op, "value": "1984-07-19"});
            if f["type"].as_str() == Some("date") {
                self.eval_isolated(FIELD, field("date")).await;
            } else {
                if self.eval_isolated(FIELD, field("focus")).await != Some(json!(true)) {
                    continue;
                }
                if self
                    .conn
                    .call("Input.insertText", json!({"text": value}), s)
                    .await
                    .is_err()
                {
                    continue;
                }
                self.eval_isolated(FIELD, field("blur")).await;
            }
            typed += 1;
        }
        typed
    }

    /// Takes every WebSocket of this tab offline (`true`) or back online.
    pub(super) async fn socket_rules(&self, offline: bool) -> bool {
        let patterns: Vec<&str> = if offline {
            vec!["ws://*", "wss://*"]
        } else {
            Vec::new()
        };
        let rules: Vec<serde_json::Value> = patterns
            .iter()
            .map(|p| {
                json!({"urlPattern": p, "offline": true, "latency": 0,
                       "downloadThroughput": -1, "uploadThroughput": -1})
            })
            .collect();
        self.conn
            .call(
                "Network.emulateNetworkConditionsByRule",
                json!({"matchedNetworkConditions": rules}),
                Some(&self.session),
            )
            .await
            .is_ok()
    }
}
