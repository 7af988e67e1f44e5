//! What a settled page leaves to read: its links, title and what a visitor sees (for the health
//! context), inline and loaded scripts by hash, and the keys of every frame's storage — and the
//! visit built from it all once the tab has left the page. Everything is read from an isolated
//! world or the protocol, bounded in count and time.

use std::collections::BTreeSet;
use std::time::Instant;

use serde_json::{Value, json};

use super::capture::{PageState, sha256_hex, storage_origin, strip_fragment};
use super::cookies;
use super::tab::{COLLECT_BUDGET, COLLECT_TIMEOUT, Tab, Visit};
use crate::model::{Frame, PageText, Phase, Script, SettleReason, StorageEntry};

impl Tab {
    /// Collects what a settled page leaves (scripts, storage), leaves it, and builds the visit:
    /// requests split from a landing page, worker requests merged in, cookies diffed.
    pub(super) async fn finish(
        &mut self,
        mut st: PageState,
        mut visit: Visit,
        jar_before: &[cookies::JarCookie],
        end: Ending,
    ) -> Visit {
        if !st.crashed {
            visit.page.scripts.extend(self.hash_scripts(&st).await);
            visit.page.storage = self.collect_storage(&st).await;
            self.leave(&mut st).await;
        }
        let mut error = end.error;
        if st.crashed {
            error = Some("the renderer crashed (the tab was replaced)".to_string());
        }
        visit.browser_died = self.conn.is_closed();
        if !visit.browser_died
            && let Some(jar) = cookies::read_jar(&self.conn, self.browser_context.as_deref()).await
        {
            visit.cookies = cookies::visit_cookies(jar_before, jar, &st);
        }
        visit.crashed = st.crashed || st.tab_broken;
        visit.not_html = end.not_html;
        let reason = end.reason;
        let page = &mut visit.page;
        page.url = end.url.clone();
        page.final_url = st.main_url.clone().unwrap_or(end.url);
        page.status = st.main_status;
        page.error = error;
        page.load_ms = end.load_ms;
        page.settle_ms = end.settle_ms;
        page.settle_reason = reason;
        page.blocked_submissions = std::mem::take(&mut st.blocked);
        page.probe_skipped = st.probe_skipped.map(str::to_string);
        page.frames = st
            .frames
            .iter()
            .map(|u| Frame {
                url: u.clone(),
                third_party: false,
            })
            .collect();
        visit.routes = std::mem::take(&mut st.routes);
        let mut requests = std::mem::take(&mut st.hops);
        let mut rest = Vec::new();
        let split = st
            .landing
            .as_ref()
            .map(|l| (l.hops_at.min(requests.len()), l.order_at));
        if let Some((hops_at, _)) = split {
            rest = requests.split_off(hops_at);
        }
        for (i, key) in st.order.iter().enumerate() {
            if let Some(r) = st.reqs.remove(key) {
                match split {
                    Some((_, order_at)) if i >= order_at => rest.push(r.request),
                    _ => requests.push(r.request),
                }
            }
        }
        if let Some(l) = st.landing.take() {
            let mut landing = l.dom.unwrap_or_default();
            let p = &mut landing.page;
            p.url = l.url.clone();
            p.final_url = l.url;
            p.status = l.status;
            p.found_via = "submission".into();
            p.settle_reason = reason;
            p.requests = rest;
            visit.landing = Some(Box::new(landing));
        }
        // Service and shared workers' requests, judged by the browser session. A page's own
        // service worker is also attached to the tab: one record each, with the guard's reason.
        let mut matched = vec![false; requests.len()];
        for mut w in self.ctx.take_worker_requests() {
            if let Some(why) = &w.error {
                w.phase = Phase::Probe;
                visit.page.blocked_submissions.push(format!(
                    "{} {} ({why}, in a {})",
                    w.method,
                    w.url,
                    w.target.replace('_', " ")
                ));
            }
            let same = requests.iter().enumerate().position(|(i, r)| {
                !matched[i] && r.url == w.url && r.method == w.method && r.target == w.target
            });
            match same {
                Some(i) => {
                    matched[i] = true;
                    if w.error.is_some() {
                        requests[i].error = w.error;
                        requests[i].phase = w.phase;
                    }
                }
                None => {
                    // A record of its own: never the match of a later worker record.
                    requests.push(w);
                    matched.push(true);
                }
            }
        }
        visit.page.requests = requests;
        visit
    }

    /// Links, title and inline scripts of every frame, read from an isolated world so page
    /// scripts cannot tamper with the reader.
    pub(super) async fn collect_dom(&self, st: &mut PageState, visit: &mut Visit) {
        const READER: &str = r#"(() => {
            const out = {links: [], inline: [], title: document.title || null, forms: document.forms.length};
            const clip = (s, n) => String(s || '').slice(0, n * 4).replace(/\s+/g, ' ').trim().slice(0, n);
            if (window === window.top) {
              for (const a of document.querySelectorAll('a[href], area[href]')) {
                if (out.links.length >= 5000) break;
                try { out.links.push([String(a.href), clip(a.innerText || a.getAttribute('aria-label') || a.title, 120)]); } catch (e) {}
              }
              out.context = context(clip);
            }
            let total = 0;
            for (const s of document.querySelectorAll('script:not([src])')) {
              const t = s.textContent || '';
              if (!t.trim()) continue;
              const ty = (s.type || '').toLowerCase();
              if (ty && !/(java|ecma)script|module/.test(ty)) continue;
              total += t.length;
              if (total > 8000000) break;
              out.inline.push(t);
            }
            return out;
        })()"#;
        let frames = self.frame_tree(&self.session).await;
        let mut inline_hashes = BTreeSet::new();
        let budget = Instant::now() + COLLECT_BUDGET;
        for (i, (frame_id, _url)) in frames.iter().enumerate().take(30) {
            if Instant::now() > budget {
                break;
            }
            let reader = format!("{CONTEXT_READER}\n{READER}");
            let Some(value) = self.eval_in_frame(frame_id, &reader).await else {
                continue;
            };
            let v = &value;
            tracing::debug!(
                frame = i,
                links = v["links"].as_array().map(Vec::len).unwrap_or(0),
                "dom read"
            );
            if i == 0 {
                visit.page.title = v["title"].as_str().map(str::to_string);
                visit.page.forms = v["forms"].as_u64().unwrap_or(0) as usize;
                for l in v["links"].as_array().into_iter().flatten() {
                    if let Some(href) = l[0].as_str() {
                        visit.links.push(href.to_string());
                        if let Some(text) = l[1].as_str().filter(|t| !t.is_empty()) {
                            visit.link_texts.push((href.to_string(), text.to_string()));
                        }
                    }
                }
                visit.page.text = page_text(&v["context"]);
            }
            for s in v["inline"].as_array().into_iter().flatten() {
                if let Some(src) = s.as_str() {
                    inline_hashes.insert(sha256_hex(src.as_bytes()));
                }
            }
        }
        // Frames that exist now but navigated before listeners saw them (about:srcdoc excluded).
        for (_, url) in frames.iter().skip(1) {
            if url.starts_with("http") {
                st.frames.insert(strip_fragment(url));
            }
        }
        visit
            .page
            .scripts
            .extend(inline_hashes.into_iter().map(|h| Script {
                url: None,
                sha256: Some(h),
                third_party: false,
            }));
    }

    /// sha256 of every script the page loaded over the network.
    pub(super) async fn hash_scripts(&self, st: &PageState) -> Vec<Script> {
        let mut out = Vec::new();
        let mut seen = BTreeSet::new();
        let budget = Instant::now() + COLLECT_BUDGET;
        for key in st.order.iter() {
            if Instant::now() > budget {
                break;
            }
            let Some(r) = st.reqs.get(key) else { continue };
            if r.request.resource_type != "Script" || !seen.insert(r.request.url.clone()) {
                continue;
            }
            if out.len() >= 300 {
                break;
            }
            let ok = r.done && r.request.error.is_none();
            let sha256 = if ok {
                self.response_body(&r.session, &key.1)
                    .await
                    .map(|b| sha256_hex(&b))
            } else {
                None
            };
            out.push(Script {
                url: Some(r.request.url.clone()),
                sha256,
                third_party: false,
            });
        }
        out
    }

    /// Keys (never values) of local and session storage for every frame's storage key.
    pub(super) async fn collect_storage(&self, st: &PageState) -> Vec<StorageEntry> {
        let mut sessions = vec![self.session.clone()];
        sessions.extend(
            st.sessions
                .iter()
                .filter(|(_, kind)| kind.as_str() == "iframe")
                .map(|(s, _)| s.clone()),
        );
        let mut keys = BTreeSet::new();
        let mut out = BTreeSet::new();
        for session in &sessions {
            for (frame_id, url) in self.frame_tree(session).await {
                if !url.starts_with("http") {
                    continue;
                }
                let Ok(k) = self
                    .conn
                    .call_with_timeout(
                        "Storage.getStorageKey",
                        json!({"frameId": frame_id}),
                        Some(session),
                        COLLECT_TIMEOUT,
                    )
                    .await
                else {
                    continue;
                };
                let Some(storage_key) = k["storageKey"].as_str() else {
                    continue;
                };
                if !keys.insert((session.clone(), storage_key.to_string())) {
                    continue;
                }
                for (is_local, kind) in [(true, "local"), (false, "session")] {
                    let Ok(items) = self
                        .conn
                        .call_with_timeout(
                            "DOMStorage.getDOMStorageItems",
                            json!({"storageId": {"storageKey": storage_key, "isLocalStorage": is_local}}),
                            Some(session),
                            COLLECT_TIMEOUT,
                        )
                        .await
                    else {
                        continue;
                    };
                    for entry in items["entries"].as_array().into_iter().flatten() {
                        let Some(key) = entry[0].as_str() else {
                            continue;
                        };
                        out.insert(StorageEntry {
                            origin: storage_origin(storage_key),
                            kind: kind.to_string(),
                            key: key.to_string(),
                            third_party: false,
                            storage_key: storage_key.to_string(),
                            value_len: entry[1].as_str().map(str::len).unwrap_or(0),
                        });
                    }
                }
            }
        }
        out.into_iter().collect()
    }
}

/// How a page visit ended, for [`Tab::finish`].
pub(super) struct Ending {
    pub(super) url: String,
    pub(super) error: Option<String>,
    pub(super) load_ms: u64,
    pub(super) settle_ms: u64,
    pub(super) reason: SettleReason,
    pub(super) not_html: bool,
}

/// Reads what a visitor sees for the page's health context (isolated world, bounded).
const CONTEXT_READER: &str = r#"function context(clip) {
  const c = {headings: [], description: null, breadcrumbs: [], schema_types: [], schema_names: [],
             buttons: [], choices: 0, password_fields: 0, date_fields: 0, main_text: ''};
  for (const h of document.querySelectorAll('h1, h2')) {
    const t = clip(h.innerText || h.textContent, 160);
    if (t) c.headings.push(t);
    if (c.headings.length >= 12) break;
  }
  const meta = document.querySelector('meta[name="description" i]') || document.querySelector('meta[property="og:description"]');
  if (meta) c.description = clip(meta.getAttribute('content'), 300) || null;
  const crumbs = document.querySelector('[aria-label*="breadcrumb" i], .breadcrumb, .breadcrumbs, [itemtype*="BreadcrumbList"]');
  if (crumbs) {
    for (const part of (crumbs.innerText || '').split(/[\n›»>|\/]+/)) {
      const t = clip(part, 80);
      if (t) c.breadcrumbs.push(t);
      if (c.breadcrumbs.length >= 8) break;
    }
  }
  const medical = /^(Medical|Drug|Physician|Hospital|Dentist|Diagnostic|Therapeutic|Patient|Pharmacy|Optician|Physiotherapy|Surgical)/;
  let nodes = 0;
  const walk = (v) => {
    if (!v || typeof v !== 'object' || nodes++ > 500) return;
    if (Array.isArray(v)) { v.forEach(walk); return; }
    const types = [].concat(v['@type'] || []).filter((t) => typeof t === 'string');
    for (const t of types) {
      if (c.schema_types.length < 20 && !c.schema_types.includes(t)) c.schema_types.push(t);
      if (medical.test(t) && typeof v.name === 'string' && c.schema_names.length < 20) c.schema_names.push(clip(v.name, 120));
      if (t === 'BreadcrumbList') {
        for (const item of [].concat(v.itemListElement || [])) {
          const n = item && (item.name || (item.item && item.item.name));
          if (typeof n === 'string' && c.breadcrumbs.length < 8) c.breadcrumbs.push(clip(n, 80));
        }
      }
    }
    for (const k in v) if (k !== '@context') walk(v[k]);
  };
  for (const s of document.querySelectorAll('script[type="application/ld+json"]')) {
    try { walk(JSON.parse(s.textContent)); } catch (e) {}
  }
  for (const b of document.querySelectorAll('button, input[type=submit], input[type=button], [role=button], a.btn, a.button')) {
    const t = clip(b.innerText || b.value || b.getAttribute('aria-label'), 60);
    if (t && !c.buttons.includes(t)) c.buttons.push(t);
    if (c.buttons.length >= 30) break;
  }
  c.choices = document.querySelectorAll('input[type=radio], input[type=checkbox], select, [role=radio], [role=option], [role=checkbox]').length;
  c.password_fields = document.querySelectorAll('input[type=password]').length;
  c.date_fields = document.querySelectorAll('input[type=date], input[type=datetime-local], input[type=time]').length;
  const root = document.querySelector('main, [role=main], article') || document.body;
  if (root) {
    const skip = new Set(['NAV', 'HEADER', 'FOOTER', 'ASIDE', 'SCRIPT', 'STYLE', 'NOSCRIPT', 'TEMPLATE']);
    const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT, {acceptNode(n) {
      for (let e = n.parentElement; e && e !== root.parentElement; e = e.parentElement) {
        if (skip.has(e.tagName) || e.getAttribute('role') === 'navigation') return NodeFilter.FILTER_REJECT;
      }
      return NodeFilter.FILTER_ACCEPT;
    }});
    const parts = [];
    let len = 0;
    while (walker.nextNode() && len < 20000) {
      // Slice before anything else: one text node may be megabytes (and the heap small).
      const t = walker.currentNode.nodeValue.slice(0, 20000 - len).replace(/\s+/g, ' ').trim();
      if (t) { parts.push(t); len += t.length + 1; }
    }
    c.main_text = parts.join(' ').slice(0, 20000);
  }
  return c;
}"#;

/// The context reader's answer as a [`PageText`].
fn page_text(v: &Value) -> PageText {
    let strings = |key: &str| -> Vec<String> {
        v[key]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect()
    };
    let count = |key: &str| v[key].as_u64().unwrap_or(0) as usize;
    PageText {
        headings: strings("headings"),
        description: v["description"].as_str().map(str::to_string),
        breadcrumbs: strings("breadcrumbs"),
        schema_types: strings("schema_types"),
        schema_names: strings("schema_names"),
        buttons: strings("buttons"),
        choices: count("choices"),
        password_fields: count("password_fields"),
        date_fields: count("date_fields"),
        main_text: v["main_text"].as_str().unwrap_or_default().to_string(),
        link_texts: Vec::new(),
    }
}
