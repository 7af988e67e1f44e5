//! `POST /v1/events`: parse, consent gate, per-destination allowlist build, durable commit.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::ser::SerializeMap;

use super::{ApiError, AppState, Caller, St, admit, gpc, with_cors};
use crate::relay::consent::Gate;
use crate::relay::event::parse_body;
use crate::relay::metrics::Stage;
use crate::relay::outbox::{
    Decision, DestinationEntry, DestinationState, Enqueued, NewAudit, NewOutboxRow, Stored,
};
use crate::relay::sanitize::Verdict;

/// `POST /v1/events`
pub async fn post_events(State(st): St, req: Request) -> Response {
    let started = Instant::now();
    // The request's own header map, not the clone the `HeaderMap` extractor would make.
    let (parts, body) = req.into_parts();
    let headers = parts.headers;
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let origin = st.allowed_origin(&headers);
    let resp = match events_inner(&st, &headers, peer, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    let status = resp.status();
    if status == StatusCode::ACCEPTED {
        st.metrics.ingest_latency.observe(started.elapsed());
    } else {
        st.metrics.rejected(status.as_u16());
    }
    with_cors(resp, &origin)
}

/// Per-event bookkeeping between sanitizing and answering.
struct Pending {
    event_id: Option<String>,
    reasons: Vec<String>,
    /// Per destination entry of the audit row: name and ingest state.
    states: Vec<(Arc<str>, DestinationState)>,
}

async fn events_inner(
    st: &AppState,
    headers: &HeaderMap,
    peer: Option<SocketAddr>,
    body: Body,
) -> Result<Response, ApiError> {
    let received = chrono::Utc::now();
    let t0 = Instant::now();
    let (body, caller) = admit(st, headers, body).await?;
    let events = parse_body(&body, st.cfg.server.max_events_per_request)
        .map_err(|e| ApiError::bad_input("invalid_event", e))?;
    drop(body);
    let t_parsed = Instant::now();
    st.metrics.stage(Stage::Parse, t_parsed - t0);

    let source = caller.source();
    let signed = matches!(caller, Caller::Server(_));
    let facts = st.request_facts(&caller, headers, peer);
    let gpc = gpc(headers);
    let now = received.timestamp();
    let mut audits = Vec::with_capacity(events.len());
    let mut pending = Vec::with_capacity(events.len());
    let (mut consent_time, mut sanitize_time) =
        (std::time::Duration::ZERO, std::time::Duration::ZERO);
    for mut ev in events {
        if !signed {
            // Only a signed back-end caller may name a subject or a client; a browser could
            // name anyone.
            ev.subject = None;
            ev.client_ip = None;
            ev.client_user_agent = None;
        }
        let c0 = Instant::now();
        let gate = st.consent.check(
            &st.cfg.consent,
            ev.consent_token.as_deref(),
            ev.subject.as_deref(),
            gpc,
            now,
        );
        let c1 = Instant::now();
        consent_time += c1 - c0;
        let mut audit = NewAudit {
            received_ms: received.timestamp_millis(),
            source,
            event_id: None,
            event: None,
            decision: Decision::Dropped,
            reasons: Vec::new(),
            consent_id: None,
            legal_basis: None,
            destinations: Vec::new(),
        };
        let (consent_id, legal_basis) = match gate {
            Gate::Denied { reason, consent_id } => {
                audit.consent_id = consent_id;
                audit.reasons.push(reason.to_string());
                st.metrics.dropped(reason);
                pending.push(Pending {
                    event_id: None,
                    reasons: audit.reasons.clone(),
                    states: Vec::new(),
                });
                audits.push(audit);
                continue;
            }
            Gate::Allowed {
                consent_id,
                legal_basis,
            } => (consent_id, legal_basis),
        };
        audit.consent_id = consent_id;
        audit.legal_basis = legal_basis;
        let s = st.sanitizer.sanitize(&ev, &facts, now);
        drop(ev);
        sanitize_time += c1.elapsed();
        audit.reasons = s.reasons;
        audit.event_id = s.event_id;
        if let Some(why) = s.dropped {
            audit.reasons.push(why.to_string());
            st.metrics.dropped(why);
        }
        for d in s.destinations {
            let name = st.destinations[d.index].clone();
            audit
                .reasons
                .extend(d.reasons.iter().map(|r| format!("{name}:{r}")));
            if audit.event.is_none() {
                audit.event = d.mapped.clone();
            }
            let (state, row) = match d.verdict {
                Verdict::Forward(o) => (
                    DestinationState::Queued,
                    Some(NewOutboxRow {
                        event_id: o.event_id,
                        test_event_code: o.test_event_code,
                        payload: o.payload,
                        event_time: o.event_time,
                    }),
                ),
                Verdict::Dropped => {
                    let why = d.reasons.last().map(String::as_str).unwrap_or("dropped");
                    st.metrics.dropped(&format!("{name}:{why}"));
                    (DestinationState::Dropped, None)
                }
                Verdict::Blocked => {
                    st.metrics.destination(&name).blocked.add(1);
                    (DestinationState::Blocked, None)
                }
            };
            audit.destinations.push(DestinationEntry {
                name,
                state,
                event: d.mapped,
                row,
            });
        }
        audit.decision = if audit.destinations.iter().any(|d| d.row.is_some()) {
            Decision::Queued
        } else if audit
            .destinations
            .iter()
            .any(|d| d.state == DestinationState::Blocked)
        {
            Decision::Blocked
        } else {
            Decision::Dropped
        };
        pending.push(Pending {
            event_id: audit.event_id.clone(),
            reasons: audit.reasons.clone(),
            states: audit
                .destinations
                .iter()
                .map(|d| (d.name.clone(), d.state))
                .collect(),
        });
        audits.push(audit);
    }
    st.metrics.stage(Stage::Consent, consent_time);
    st.metrics.stage(Stage::Sanitize, sanitize_time);

    let t_commit = Instant::now();
    let stored = match st.outbox.ingest(audits, caller.nonce()).await {
        Ok(Stored::Done(s)) => s,
        Ok(Stored::Replayed) => return Err(ApiError::replayed()),
        Err(e) => {
            tracing::error!(error = %e, "cannot store events");
            return Err(ApiError::storage("events were"));
        }
    };
    st.metrics.stage(Stage::Commit, t_commit.elapsed());

    let mut accepted = 0;
    let mut woken = vec![false; st.wake.len()];
    let results: Vec<EventResult> = pending
        .into_iter()
        .zip(stored)
        .map(|(p, per_dest)| {
            let mut dests = Vec::with_capacity(p.states.len());
            let mut any_accepted = false;
            let mut duplicates = 0;
            let mut blocked = false;
            for ((name, state), enq) in p.states.into_iter().zip(&per_dest) {
                let word = match (state, enq) {
                    (_, Enqueued::Accepted) => {
                        any_accepted = true;
                        st.metrics.destination(&name).queued.add(1);
                        if let Some(i) = st.destinations.iter().position(|d| *d == name) {
                            woken[i] = true;
                        }
                        "accepted"
                    }
                    (_, Enqueued::Duplicate) => {
                        duplicates += 1;
                        "duplicate"
                    }
                    (DestinationState::Blocked, _) => {
                        blocked = true;
                        "blocked"
                    }
                    _ => "dropped",
                };
                dests.push((name, word));
            }
            // Object keys in name order, as a JSON map of them always was.
            dests.sort_by(|a, b| a.0.cmp(&b.0));
            let decision = if any_accepted {
                accepted += 1;
                "accepted"
            } else if duplicates > 0 {
                "duplicate"
            } else if blocked {
                "blocked"
            } else {
                "dropped"
            };
            EventResult {
                decision,
                event_id: p.event_id,
                reasons: p.reasons,
                destinations: Words(dests),
            }
        })
        .collect();
    if accepted > 0 {
        st.metrics.accepted.add(accepted);
    }
    for (w, wake) in woken.iter().zip(&st.wake) {
        if *w {
            wake.notify_one();
        }
    }
    tracing::debug!(source, events = results.len(), accepted, "events processed");
    Ok((StatusCode::ACCEPTED, axum::Json(Results { results })).into_response())
}

/// The answer to `POST /v1/events`, serialised directly (no `serde_json::Value` in between).
#[derive(Serialize)]
struct Results {
    results: Vec<EventResult>,
}

/// One event's answer: decision, outgoing event id, reasons, and a word per destination.
#[derive(Serialize)]
struct EventResult {
    decision: &'static str,
    event_id: Option<String>,
    reasons: Vec<String>,
    destinations: Words,
}

/// `{"<destination>": "<word>", ...}` in name order.
struct Words(Vec<(Arc<str>, &'static str)>);

impl Serialize for Words {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (name, word) in &self.0 {
            m.serialize_entry(&**name, word)?;
        }
        m.end()
    }
}
