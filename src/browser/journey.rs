//! Running a scripted journey (`scan --journey FILE`) in a tab: each step acts like a visitor
//! (real mouse clicks, real keyboard input), waits for what it started to settle, and stamps
//! the requests it caused with "journey 'NAME' step N: ...". The guard runs in journey mode
//! throughout: navigations and submissions go through (a journey makes them on purpose), but a
//! request that carries a typed canary never leaves. Secrets typed from the environment are
//! replaced by `[secret]` in everything the visit records.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::capture::PageState;
use super::collect::Ending;
use super::cookies;
use super::tab::{GuardMode, Tab, Visit, VisitTiming};
use crate::journey::{Action, Journey, Step, Target};
use crate::model::{Canary, Page, Phase, SettleReason};

/// Finds a journey's target and acts on it, in our isolated world.
const FIND: &str = r#"(a) => {
  const visible = (el) => { const r = el.getBoundingClientRect(); if (r.width <= 0 || r.height <= 0) return false;
    const cs = getComputedStyle(el); return cs.visibility !== 'hidden' && cs.display !== 'none'; };
  const norm = (s) => String(s || '').slice(0, 2000).replace(/\s+/g, ' ').trim().toLowerCase();
  let el = null;
  if (a.selector) {
    try { el = document.querySelector(a.selector); } catch (e) { return {error: 'not a valid CSS selector'}; }
  } else {
    const want = norm(a.text);
    const clickable = 'button, a, [role=button], [role=radio], [role=option], [role=checkbox], [role=tab], label, input[type=submit], input[type=button], summary, option';
    for (const c of document.querySelectorAll(clickable)) {
      if (visible(c) && (norm(c.innerText || c.value) === want || norm(c.getAttribute('aria-label')) === want)) { el = c; break; }
    }
    if (!el) {
      // The smallest visible element whose text holds it.
      let best = null;
      for (const c of document.body ? document.body.querySelectorAll('*') : []) {
        if (!norm(c.innerText).includes(want) || !visible(c)) continue;
        if (!best || best.contains(c)) best = c;
      }
      el = best;
    }
  }
  if (!el) return null;
  if (a.op !== 'exists' && a.op !== 'submit' && a.op !== 'select' && !visible(el)) return null;
  if (a.op === 'exists') return {found: visible(el)};
  if (a.op === 'point') {
    el.scrollIntoView({block: 'center', inline: 'center'});
    const r = el.getBoundingClientRect();
    return {x: r.left + r.width / 2, y: r.top + r.height / 2};
  }
  if (a.op === 'focus') { el.focus(); return {focused: document.activeElement === el}; }
  if (a.op === 'blur') { el.blur(); return {done: true}; }
  if (a.op === 'select') {
    if (el.tagName !== 'SELECT') return {error: 'not a <select>'};
    const i = Array.from(el.options).findIndex((o) => a.value !== null ? o.value === a.value : norm(o.text) === norm(a.text));
    if (i < 0) return {error: 'has no such option'};
    el.selectedIndex = i;
    el.dispatchEvent(new Event('input', {bubbles: true}));
    el.dispatchEvent(new Event('change', {bubbles: true}));
    return {done: true};
  }
  if (a.op === 'submit') {
    const form = el.tagName === 'FORM' ? el : el.closest('form');
    if (!form) return {error: 'is not a form or inside one'};
    form.removeAttribute('target');
    try { form.requestSubmit ? form.requestSubmit() : form.submit(); } catch (e) { form.submit(); }
    return {done: true};
  }
  return {error: 'unknown operation'};
}"#;

impl Tab {
    /// Runs `journey` from its first `goto`; the visit is one page with every step's requests.
    /// With `screenshot`, the page it ends on is captured, unless a step typed a secret (a
    /// picture cannot be redacted).
    pub async fn run_journey(
        &mut self,
        journey: &Journey,
        canaries: &[Canary],
        timing: VisitTiming,
        screenshot: bool,
    ) -> Visit {
        let mut st = self.fresh_state(Phase::Journey);
        let jar_before = cookies::read_jar(&self.conn, self.browser_context.as_deref())
            .await
            .unwrap_or_default();
        let started = Instant::now();
        let mut error = None;
        let mut reason = SettleReason::Quiet;
        let mut secrets: Vec<String> = Vec::new();
        if self.start_guard(&mut st, GuardMode::Journey).await != Some(true) {
            error = Some(format!(
                "journey '{}': request interception could not be turned on, so nothing was run",
                journey.name
            ));
        }
        if error.is_none() {
            for (i, step) in journey.steps.iter().enumerate() {
                let label = format!(
                    "journey '{}' step {}: {}",
                    journey.name,
                    i + 1,
                    step.describe()
                );
                st.step = Some(label.clone());
                match self
                    .journey_step(&mut st, step, canaries, timing, &mut secrets)
                    .await
                {
                    Ok(r) => reason = reason.max(r),
                    Err(why) => {
                        error = Some(format!("{label}: {why}"));
                        break;
                    }
                }
                if st.crashed {
                    break;
                }
            }
        }
        st.step = None;
        let mut visit = Visit::default();
        if !st.crashed && st.load_fired {
            self.collect_dom(&mut st, &mut visit).await;
            // The page the journey ends on; not when a step typed a secret.
            if screenshot && secrets.is_empty() {
                visit.screenshot = self.picture().await;
            }
        }
        let load_ms = started.elapsed().as_millis() as u64;
        let mut visit = self
            .finish(
                st,
                visit,
                &jar_before,
                Ending {
                    url: journey.start().unwrap_or_default().to_string(),
                    error,
                    load_ms,
                    settle_ms: load_ms,
                    reason,
                    not_html: false,
                },
            )
            .await;
        visit.page.found_via = "journey".into();
        redact(&mut visit.page, &secrets);
        visit
    }

    async fn journey_step(
        &mut self,
        st: &mut PageState,
        step: &Step,
        canaries: &[Canary],
        timing: VisitTiming,
        secrets: &mut Vec<String>,
    ) -> Result<SettleReason, String> {
        let wait = Duration::from_millis(step.timeout_ms);
        match &step.action {
            Action::Goto(url) => {
                st.load_fired = false;
                let nav = self
                    .navigate(url, timing.page_timeout)
                    .await
                    .map_err(|e| format!("navigation failed: {e}"))?;
                if let Some(e) = nav["errorText"].as_str().filter(|e| !e.is_empty()) {
                    return Err(format!("navigation failed: {e}"));
                }
                st.main_frame = nav["frameId"].as_str().map(str::to_string);
                self.lock_worlds_clear();
                let until = Instant::now() + timing.page_timeout;
                self.pump_until(st, until, |s| s.load_fired || s.crashed)
                    .await;
                if !st.load_fired {
                    return Err(format!(
                        "the page did not load within {}s",
                        timing.page_timeout.as_secs()
                    ));
                }
                Ok(self.settle(st, timing).await)
            }
            Action::Click(target) => {
                let at = self.find(target, "point", wait).await?;
                expect_navigation(st);
                self.mouse_click(&at).await?;
                Ok(self.after_action(st, timing).await)
            }
            Action::Submit(target) => {
                expect_navigation(st);
                self.find(target, "submit", wait).await?;
                Ok(self.after_action(st, timing).await)
            }
            Action::WaitFor(target) => {
                self.find(target, "exists", wait).await?;
                Ok(SettleReason::Quiet)
            }
            Action::Select(sel) => {
                let arg = json!({"selector": sel.selector, "op": "select",
                                 "value": sel.value, "text": sel.text});
                self.find_raw(arg, wait).await?;
                Ok(self.settle(st, timing).await)
            }
            Action::Type(t) => {
                let value = match (&t.canary, &t.value, &t.env) {
                    (Some(kind), _, _) => canaries
                        .iter()
                        .find(|c| c.kind == *kind)
                        .map(|c| c.value.clone())
                        .ok_or_else(|| format!("no {kind} canary (is the form probe off?)"))?,
                    (_, Some(v), _) => v.clone(),
                    (_, _, Some(name)) => {
                        let v = std::env::var(name)
                            .map_err(|_| format!("the environment variable {name} is not set"))?;
                        secrets.push(v.clone());
                        v
                    }
                    _ => return Err("nothing to type".into()),
                };
                let target = Target::Spec {
                    selector: Some(t.selector.clone()),
                    text: None,
                };
                let focused = self.find(&target, "focus", wait).await?;
                if focused["focused"] != json!(true) {
                    return Err(format!("'{}' cannot take keyboard focus", t.selector));
                }
                self.conn
                    .call(
                        "Input.insertText",
                        json!({"text": value}),
                        Some(&self.session),
                    )
                    .await
                    .map_err(|e| format!("typing failed: {e}"))?;
                self.find(&target, "blur", wait).await?;
                Ok(self.settle(st, timing).await)
            }
        }
    }

    /// After an action that may navigate: wait for the new page to load, then settle.
    async fn after_action(&mut self, st: &mut PageState, timing: VisitTiming) -> SettleReason {
        let until = Instant::now() + Duration::from_millis(300);
        self.pump(st, until).await;
        if st.main_navigating {
            let until = Instant::now() + timing.page_timeout;
            self.pump_until(st, until, |s| s.load_fired || s.crashed)
                .await;
            self.lock_worlds_clear();
        } else {
            st.load_fired = true; // still the same page
        }
        self.settle(st, timing).await
    }

    /// Finds `target` (waiting up to `wait`) and applies `op` to it.
    async fn find(&self, target: &Target, op: &str, wait: Duration) -> Result<Value, String> {
        let (selector, text) = target.parts();
        self.find_raw(json!({"selector": selector, "text": text, "op": op}), wait)
            .await
    }

    async fn find_raw(&self, arg: Value, wait: Duration) -> Result<Value, String> {
        let until = Instant::now() + wait;
        loop {
            let v = self
                .eval_isolated(FIND, arg.clone())
                .await
                .unwrap_or(Value::Null);
            if let Some(e) = v["error"].as_str() {
                return Err(format!("the target {e}"));
            }
            let found = v.is_object() && v["found"] != json!(false);
            if found {
                return Ok(v);
            }
            if Instant::now() >= until {
                return Err(format!(
                    "no visible match for its target within {} ms",
                    wait.as_millis()
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn mouse_click(&self, at: &Value) -> Result<(), String> {
        let (Some(x), Some(y)) = (at["x"].as_f64(), at["y"].as_f64()) else {
            return Err("the target has no position".into());
        };
        for (kind, buttons) in [("mouseMoved", 0), ("mousePressed", 1), ("mouseReleased", 0)] {
            let event = json!({"type": kind, "x": x, "y": y, "button": "left",
                               "buttons": buttons, "clickCount": 1});
            self.conn
                .call("Input.dispatchMouseEvent", event, Some(&self.session))
                .await
                .map_err(|e| format!("the click failed: {e}"))?;
        }
        Ok(())
    }
}

/// Before an action that may leave the page: notice whether it does.
fn expect_navigation(st: &mut PageState) {
    st.load_fired = false;
    st.main_navigating = false;
}

/// Replaces every secret typed from the environment by `[secret]` in what the page records.
fn redact(page: &mut Page, secrets: &[String]) {
    let secrets: Vec<&String> = secrets.iter().filter(|s| s.len() >= 4).collect();
    if secrets.is_empty() {
        return;
    }
    let clean = |s: &mut String| {
        for secret in &secrets {
            let enc: String = url::form_urlencoded::byte_serialize(secret.as_bytes()).collect();
            for form in [secret.as_str(), enc.as_str()] {
                if s.contains(form) {
                    *s = s.replace(form, "[secret]");
                }
            }
        }
    };
    for r in &mut page.requests {
        clean(&mut r.url);
        for s in [&mut r.post_data, &mut r.referer].into_iter().flatten() {
            clean(s);
        }
    }
    for b in &mut page.blocked_submissions {
        clean(b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Request;

    #[test]
    fn secrets_are_redacted_raw_and_url_encoded() {
        let mut page = Page {
            requests: vec![Request {
                url: "https://portal.test/login?pw=s%C3%A9cret+1".into(),
                post_data: Some("user=a&pw=sécret 1".into()),
                ..Default::default()
            }],
            ..Default::default()
        };
        redact(&mut page, &["sécret 1".to_string()]);
        assert_eq!(
            page.requests[0].url,
            "https://portal.test/login?pw=[secret]"
        );
        assert_eq!(
            page.requests[0].post_data.as_deref(),
            Some("user=a&pw=[secret]")
        );
    }
}
