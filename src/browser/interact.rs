//! What a scan does to a page besides watching: press the consent banner's button
//! (`--consent accept|reject`) and type canary values into forms (the form probe), holding back
//! the site's own submission so no fake appointment ever reaches the clinic.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use super::capture::PageState;
use super::tab::{Tab, Visit, VisitTiming};
use crate::model::Canary;
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
    /// The registrable domain being scanned (its submissions are held back).
    pub site: String,
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

const MARK_FIELDS: &str = r#"() => {
  const fields = [];
  Array.from(document.forms).slice(0, 3).forEach((f, fi) => {
    for (const el of f.querySelectorAll('input, textarea')) {
      if (fields.length >= 20) break;
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
      el.setAttribute('data-pixelwatch-probe', String(fields.length));
      fields.push({idx: fields.length, kind, type, form: fi});
    }
  });
  return fields;
}"#;

const SUBMIT: &str = r#"() => {
  let n = 0;
  for (const f of Array.from(document.forms).slice(0, 3)) {
    if (!f.querySelector('[data-pixelwatch-probe]')) continue;
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
    /// Consent click, then the form probe, each followed by a settle.
    pub(super) async fn interact(
        &mut self,
        st: &mut PageState,
        visit: &mut Visit,
        timing: VisitTiming,
        plan: &Plan,
    ) {
        if plan.consent != ConsentMode::None
            && let Some(action) = self.press_consent(plan).await
        {
            tracing::debug!(%action, mode = plan.consent.as_str(), "pressed the consent button");
            st.phase = "consent".into();
            plan.consent_given.store(true, Ordering::SeqCst);
            visit.page.consent_action = Some(format!("{}: {action}", plan.consent.as_str()));
            self.settle(st, timing).await;
        }
        if let (Some(canaries), true) = (&plan.canaries, visit.page.forms > 0) {
            visit.page.probed_fields = self.probe(st, canaries, plan, timing).await;
        }
    }

    /// Calls `function(arg)` in an isolated world of the main frame.
    async fn eval_isolated(&self, function: &str, arg: Value) -> Option<Value> {
        let tree = self
            .conn
            .call("Page.getFrameTree", json!({}), Some(&self.session))
            .await
            .ok()?;
        let frame = tree["frameTree"]["frame"]["id"].as_str()?.to_string();
        self.eval_in_frame(&frame, &format!("({function})({arg})"))
            .await
    }

    async fn press_consent(&self, plan: &Plan) -> Option<String> {
        let arg = json!({"buttons": plan.consent_buttons, "generic": plan.consent_generic});
        self.eval_isolated(CLICK_CONSENT, arg)
            .await?
            .as_str()
            .map(str::to_string)
    }

    /// Types canaries into the page's forms and submits them with the site's own submission
    /// held back. Returns the number of fields typed into.
    async fn probe(
        &mut self,
        st: &mut PageState,
        canaries: &[Canary],
        plan: &Plan,
        timing: VisitTiming,
    ) -> usize {
        let hold = self.hold_back.clone();
        let set_hold = |v: Option<String>| {
            *hold.lock().unwrap_or_else(|e| e.into_inner()) = v;
        };
        set_hold(Some(plan.site.clone()));
        st.hold_back_site = Some(plan.site.clone());
        let session = self.session.clone();
        let s = Some(session.as_str());
        let enabled = self
            .conn
            .call(
                "Fetch.enable",
                json!({"patterns": [{"urlPattern": "*", "requestStage": "Request"}]}),
                s,
            )
            .await
            .is_ok();
        let mut typed = 0;
        if enabled {
            st.phase = "probe".into();
            let fields = self
                .eval_isolated(MARK_FIELDS, json!(null))
                .await
                .and_then(|v| v.as_array().cloned())
                .unwrap_or_default();
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
                let sel = format!("[data-pixelwatch-probe=\"{idx}\"]");
                if f["type"].as_str() == Some("date") {
                    let js = format!(
                        "() => {{ const el = document.querySelector('{sel}'); el.value = '1984-07-19'; \
                         el.dispatchEvent(new Event('input', {{bubbles: true}})); \
                         el.dispatchEvent(new Event('change', {{bubbles: true}})); return true; }}"
                    );
                    self.eval_isolated(&js, json!(null)).await;
                } else {
                    let focus = format!(
                        "() => {{ const el = document.querySelector('{sel}'); el.focus(); return document.activeElement === el; }}"
                    );
                    if self.eval_isolated(&focus, json!(null)).await != Some(json!(true)) {
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
                    let blur =
                        format!("() => {{ document.querySelector('{sel}').blur(); return true; }}");
                    self.eval_isolated(&blur, json!(null)).await;
                }
                typed += 1;
            }
            if typed > 0 {
                self.eval_isolated(SUBMIT, json!(null)).await;
                self.settle(st, timing).await;
            }
            // Let the held-back submission's events arrive before interception ends.
            let until = std::time::Instant::now() + Duration::from_millis(100);
            self.pump(st, until).await;
            let _ = self.conn.call("Fetch.disable", json!({}), s).await;
        }
        set_hold(None);
        st.hold_back_site = None;
        typed
    }
}
