//! Walking a multi-step flow: telehealth and weight-loss sites collect conditions in quizzes and
//! intake flows built from option cards, radios, checkboxes and selects with "Next" buttons —
//! no `<form>` to submit. Events fired when a visitor picks a condition carry it to trackers, so
//! the probe walks such a flow: at each step it picks the most health-revealing option (by the
//! lexicon's sensitivity), types canaries into the step's empty fields, presses the step's
//! "Next/Continue" button, and watches the page settle. Requests are stamped with their step.
//! It runs inside the probe phase: the guard holds back everything it holds back for forms.
//!
//! Clicks are real mouse input at the element's centre (`Input.dispatchMouseEvent`), so pages
//! that ignore untrusted clicks still react.

use serde_json::{Value, json};

use super::capture::PageState;
use super::tab::{Tab, VisitTiming};
use crate::lexicon::{Lexicon, Sensitivity};
use crate::model::{Canary, PageText, SettleReason};

/// Texts of buttons that advance a flow.
const NEXT: &str = r"(?i)^(next|continue|get started|start( now| here)?|see (my |your )?results?|submit|done|finish|let'?s (go|begin)|begin|proceed|check (my |your )?eligibility|find my (plan|match|treatment)|show me)\b";

/// Whether a page looks like a flow worth walking: choices to make, or a button that advances.
pub fn looks_like_one(text: &PageText) -> bool {
    let next = regex::Regex::new(NEXT).expect("NEXT is a valid pattern");
    text.choices >= 2 || text.buttons.iter().any(|b| next.is_match(b))
}

/// Reads the current step: the choices it offers (kept in the isolated world by index), the
/// button that advances it, and a signature that changes when the step does.
const SCAN: &str = r##"(a) => {
  const NEXT = new RegExp(a.next, 'i');
  const SKIP = /^(back|previous|prev|close|cancel|skip|menu|log ?in|sign ?in|sign ?up|accept|reject|decline|cookie|privacy|terms|learn more|read more|none of (these|the above)|prefer not|i'?m not sure|not sure)\b/i;
  const visible = (el) => { const r = el.getBoundingClientRect(); if (r.width <= 0 || r.height <= 0) return false;
    const cs = getComputedStyle(el); return cs.visibility !== 'hidden' && cs.display !== 'none'; };
  const text = (el) => String((el && (el.innerText || el.value || el.getAttribute('aria-label') || el.title)) || '')
    .slice(0, 400).replace(/\s+/g, ' ').trim().slice(0, 120);
  const outside = (el) => !!el.closest('nav, header, footer, [role=navigation], #onetrust-banner-sdk, #CybotCookiebotDialog');
  const cands = [];
  const els = [];
  const add = (el, kind, label, option) => {
    if (!label || cands.length >= 40 || SKIP.test(label)) return;
    els.push(el);
    cands.push({idx: cands.length, kind, text: label, option});
  };
  for (const el of document.querySelectorAll('input[type=radio], input[type=checkbox]')) {
    if (el.checked || el.disabled || outside(el)) continue;
    const lab = (el.labels && el.labels[0]) || el.closest('label');
    const target = lab && visible(lab) ? lab : el;
    if (visible(target)) add(target, 'input', text(lab) || el.value);
  }
  for (const el of document.querySelectorAll('[role=radio], [role=option], [role=checkbox]')) {
    if (outside(el) || !visible(el) || el.getAttribute('aria-checked') === 'true' || el.getAttribute('aria-selected') === 'true') continue;
    add(el, 'aria', text(el));
  }
  for (const sel of document.querySelectorAll('select')) {
    if (sel.disabled || outside(sel) || !visible(sel)) continue;
    Array.from(sel.options).forEach((o, oi) => { if (o.value !== '' && !o.disabled && oi !== sel.selectedIndex) add(sel, 'select', o.text.trim(), oi); });
  }
  // Option cards: two or more sibling buttons that are neither navigation nor "Next".
  const groups = new Map();
  for (const b of document.querySelectorAll('button, [role=button], a[href="#"], a:not([href])')) {
    if (outside(b) || b.disabled || !visible(b)) continue;
    const t = text(b);
    if (!t || t.length > 80 || NEXT.test(t) || SKIP.test(t)) continue;
    const g = b.parentElement;
    if (!groups.has(g)) groups.set(g, []);
    groups.get(g).push(b);
  }
  for (const bs of groups.values()) if (bs.length >= 2) for (const b of bs) add(b, 'card', text(b));
  let next = null;
  for (const b of document.querySelectorAll('button, [role=button], input[type=submit], input[type=button], a')) {
    if (outside(b) || b.disabled || !visible(b) || !NEXT.test(text(b))) continue;
    if (b.tagName === 'A') {
      const h = b.getAttribute('href') || '';
      if (h && !h.startsWith('#') && !h.startsWith('javascript:')) {
        try { if (new URL(h, location.href).origin !== location.origin) continue; } catch (e) { continue; }
      }
    }
    next = b;
    break;
  }
  globalThis.funnel = {els, next};
  const main = document.querySelector('main, [role=main]') || document.body;
  const seen = String((main && main.innerText) || '').slice(0, 4000);
  return {cands, next: next ? text(next) : null, sig: seen.length + ':' + seen};
}"##;

/// Where to click the chosen element (or the "Next" button), after scrolling it into view; a
/// `select` is set directly (a native dropdown cannot be clicked through).
const TARGET: &str = r#"(a) => {
  const f = globalThis.funnel || {};
  const el = a.next ? f.next : (f.els || [])[a.idx];
  if (!el || !el.isConnected) return null;
  if (el.tagName === 'SELECT') {
    el.selectedIndex = a.option;
    el.dispatchEvent(new Event('input', {bubbles: true}));
    el.dispatchEvent(new Event('change', {bubbles: true}));
    return {selected: true};
  }
  el.scrollIntoView({block: 'center', inline: 'center'});
  const r = el.getBoundingClientRect();
  return {x: r.left + r.width / 2, y: r.top + r.height / 2};
}"#;

impl Tab {
    /// Walks up to `max_steps` steps of the page's flow. Returns the fields typed into and the
    /// worst reason a settle ended for.
    pub(super) async fn walk_funnel(
        &mut self,
        st: &mut PageState,
        canaries: &[Canary],
        timing: VisitTiming,
        max_steps: usize,
    ) -> (usize, SettleReason) {
        let lexicon = Lexicon::bundled();
        let mut typed = 0;
        let mut reason = SettleReason::Quiet;
        for step in 1..=max_steps {
            let Some(scan) = self.scan_step().await else {
                break;
            };
            let cands = scan["cands"].as_array().cloned().unwrap_or_default();
            let has_next = scan["next"].is_string();
            if step == 1 && (cands.len() < 2 || (!has_next && !cands.iter().any(is_card))) {
                break; // not a flow
            }
            let start_sig = scan["sig"].clone();
            let mut label = format!("funnel step {step}");
            if let Some(best) = best_choice(&cands, lexicon) {
                let text = best["text"].as_str().unwrap_or_default();
                label = format!("funnel step {step}: chose '{}'", clip(text));
                st.step = Some(label.clone());
                let arg = json!({"idx": best["idx"], "option": best["option"]});
                if self.click_target(arg).await {
                    reason = reason.max(self.settle(st, timing).await);
                }
            }
            st.step = Some(label.clone());
            let n = self.type_canaries(canaries, "visible").await;
            typed += n;
            let moved = self.scan_step().await.map(|s| s["sig"].clone()) != Some(start_sig.clone());
            if !moved && has_next {
                st.step = Some(format!(
                    "{label}, pressed '{}'",
                    clip(scan["next"].as_str().unwrap_or("next"))
                ));
                let rescan = self.scan_step().await;
                if rescan.as_ref().is_some_and(|s| s["next"].is_string())
                    && self.click_target(json!({"next": true})).await
                {
                    reason = reason.max(self.settle(st, timing).await);
                }
            } else if n > 0 {
                reason = reason.max(self.settle(st, timing).await);
            }
            let after = self.scan_step().await.map(|s| s["sig"].clone());
            tracing::debug!(
                step,
                moved = after != Some(start_sig.clone()),
                "funnel step"
            );
            if after.is_none() || after == Some(start_sig) {
                break; // the flow did not move on: nothing more to walk
            }
        }
        st.step = None;
        (typed, reason)
    }

    async fn scan_step(&self) -> Option<Value> {
        self.eval_isolated(SCAN, json!({"next": NEXT.trim_start_matches("(?i)")}))
            .await
            .filter(Value::is_object)
    }

    /// Clicks what TARGET points at with real mouse input; `false` when it is gone.
    async fn click_target(&self, arg: Value) -> bool {
        let Some(at) = self
            .eval_isolated(TARGET, arg)
            .await
            .filter(Value::is_object)
        else {
            return false;
        };
        if at["selected"] == json!(true) {
            return true;
        }
        let (Some(x), Some(y)) = (at["x"].as_f64(), at["y"].as_f64()) else {
            return false;
        };
        for (kind, buttons) in [("mouseMoved", 0), ("mousePressed", 1), ("mouseReleased", 0)] {
            let event = json!({"type": kind, "x": x, "y": y, "button": "left",
                               "buttons": buttons, "clickCount": 1});
            if self
                .conn
                .call("Input.dispatchMouseEvent", event, Some(&self.session))
                .await
                .is_err()
            {
                return false;
            }
        }
        true
    }
}

fn is_card(c: &Value) -> bool {
    c["kind"] == "card"
}

/// The most health-revealing choice: critical terms over other health terms over clinical
/// context over anything else; the first on a tie.
fn best_choice<'a>(cands: &'a [Value], lexicon: &Lexicon) -> Option<&'a Value> {
    let score = |c: &Value| -> u8 {
        let text = c["text"].as_str().unwrap_or_default();
        lexicon
            .find_all(text)
            .iter()
            .map(|m| match m.sensitivity {
                Sensitivity::Critical => 3,
                Sensitivity::High => 2,
                Sensitivity::Context => 1,
            })
            .max()
            .unwrap_or(0)
    };
    let mut best: Option<(u8, &Value)> = None;
    for c in cands {
        let s = score(c);
        if best.is_none_or(|(b, _)| s > b) {
            best = Some((s, c));
        }
    }
    best.map(|(_, c)| c)
}

fn clip(s: &str) -> String {
    s.chars().take(60).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_most_sensitive_choice_wins_and_flows_are_recognised() {
        let cands: Vec<Value> = [
            "General wellness",
            "Weight management",
            "Erectile dysfunction",
            "Hair loss",
        ]
        .iter()
        .enumerate()
        .map(|(i, t)| json!({"idx": i, "kind": "card", "text": t}))
        .collect();
        let best = best_choice(&cands, Lexicon::bundled()).unwrap();
        assert_eq!(best["text"], "Erectile dysfunction");
        let none: Vec<Value> = ["Red", "Blue"]
            .iter()
            .map(|t| json!({"kind": "input", "text": t}))
            .collect();
        assert_eq!(
            best_choice(&none, Lexicon::bundled()).unwrap()["text"],
            "Red"
        );
        assert!(looks_like_one(&PageText {
            buttons: vec!["Continue".into()],
            ..Default::default()
        }));
        assert!(!looks_like_one(&PageText {
            buttons: vec!["Contact us".into()],
            choices: 1,
            ..Default::default()
        }));
    }
}
