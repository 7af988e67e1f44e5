//! The relay's promises about consent, replays, identifiers and stored text, driven through the
//! HTTP API: out-of-order consent syncs, replayed signed requests (also after a restart), click
//! ids and event ids judged by format, and no caller-written text in the database.

mod relay_support;

use std::time::Duration;

use relay_support::{FBCLID, Harness, Opts, TTCLID, evid, ttclid, wait_for};
use serde_json::{Value, json};

fn consent(subject: &str, granted: bool, decided_at: i64) -> Value {
    json!({"subject": subject, "granted": granted, "purposes": ["advertising"],
           "source": "crm", "policy_version": "2026-01", "decided_at": decided_at})
}

fn event(subject: &str, id: u64) -> Value {
    json!({"event": "BookedGLP1Consultation", "subject": subject, "event_id": evid(id),
           "ttclid": TTCLID})
}

async fn decision(h: &Harness, subject: &str, id: u64) -> String {
    let (s, v) = h.signed("/v1/events", &event(subject, id), 0).await;
    assert_eq!(s, 202, "{v}");
    let r = &v["results"][0];
    if r["decision"] == "accepted" {
        "accepted".into()
    } else {
        r["reasons"][0].as_str().unwrap_or("?").to_string()
    }
}

#[tokio::test]
async fn the_latest_decision_wins_whatever_the_arrival_order_and_after_a_restart() {
    let mut h = Harness::start(Opts::default()).await;
    let now = chrono::Utc::now().timestamp();
    let (ten, nine) = (now - 3_600, now - 7_200);
    // A refusal at 10:00 arrives, then a back-end sync delivers a grant from 09:00.
    let (s, v) = h
        .signed("/v1/consent", &consent("p-1", false, ten), 0)
        .await;
    assert_eq!((s, &v["current"]), (201, &json!(true)), "{v}");
    let (s, v) = h
        .signed("/v1/consent", &consent("p-1", true, nine), 0)
        .await;
    assert_eq!(
        (s, &v["current"]),
        (201, &json!(false)),
        "stored, but superseded: {v}"
    );
    assert_eq!(decision(&h, "p-1", 1).await, "consent_refused");
    // Same decision time: the refusal wins in either order.
    h.signed("/v1/consent", &consent("p-2", false, ten), 0)
        .await;
    h.signed("/v1/consent", &consent("p-2", true, ten), 0).await;
    h.signed("/v1/consent", &consent("p-3", true, ten), 0).await;
    h.signed("/v1/consent", &consent("p-3", false, ten), 0)
        .await;
    // A newer grant does replace an older refusal.
    h.signed("/v1/consent", &consent("p-4", false, nine), 0)
        .await;
    h.signed("/v1/consent", &consent("p-4", true, ten), 0).await;
    // A decision dated beyond the clock skew is refused and stores nothing.
    let (s, v) = h
        .signed("/v1/consent", &consent("p-5", true, now + 3_600), 0)
        .await;
    assert_eq!((s, v["field"].as_str()), (400, Some("decided_at")), "{v}");
    let expect = [
        ("p-1", "consent_refused"),
        ("p-2", "consent_refused"),
        ("p-3", "consent_refused"),
        ("p-4", "accepted"),
        ("p-5", "no_consent"),
    ];
    for (i, (subject, want)) in expect.iter().enumerate() {
        assert_eq!(
            decision(&h, subject, 10 + i as u64).await,
            *want,
            "{subject}"
        );
    }
    // The same answers after a restart (the index is rebuilt from the database by the rule).
    h.restart().await;
    for (i, (subject, want)) in expect.iter().enumerate() {
        assert_eq!(
            decision(&h, subject, 20 + i as u64).await,
            *want,
            "{subject} after restart"
        );
    }
    h.shutdown().await;
}

#[tokio::test]
async fn a_replayed_signed_request_is_refused_and_changes_nothing_even_after_a_restart() {
    let mut h = Harness::start(Opts::default()).await;
    let now = chrono::Utc::now().timestamp();
    // Grant, then revoke; an attacker replays the captured grant.
    let grant = serde_json::to_vec(&consent("p-9", true, now - 60)).expect("json");
    let grant_headers = Harness::signed_headers(&grant, 0);
    let (s, _) = h.raw("/v1/consent", grant.clone(), &grant_headers).await;
    assert_eq!(s, 201);
    let (s, _) = h
        .signed("/v1/consent", &consent("p-9", false, now - 30), 0)
        .await;
    assert_eq!(s, 201);
    let (s, v) = h.raw("/v1/consent", grant.clone(), &grant_headers).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (409, Some("replayed_request")),
        "{v}"
    );
    assert_eq!(decision(&h, "p-9", 1).await, "consent_refused");
    // A replayed event is refused too and queues nothing new.
    let ev = serde_json::to_vec(
        &json!({"event": "BookedGLP1Consultation", "event_id": evid(77),
        "ttclid": TTCLID, "subject": "p-10"}),
    )
    .expect("json");
    h.signed("/v1/consent", &consent("p-10", true, now - 10), 0)
        .await;
    let ev_headers = Harness::signed_headers(&ev, 0);
    let (s, _) = h.raw("/v1/events", ev.clone(), &ev_headers).await;
    assert_eq!(s, 202);
    let audit_rows = h.audit().len();
    let (s, v) = h.raw("/v1/events", ev.clone(), &ev_headers).await;
    assert_eq!(s, 409, "{v}");
    assert_eq!(h.audit().len(), audit_rows, "the replay stored nothing");
    // The nonce store is durable.
    h.restart().await;
    let (s, _) = h.raw("/v1/consent", grant, &grant_headers).await;
    assert_eq!(s, 409, "replay after restart");
    let (s, _) = h.raw("/v1/events", ev, &ev_headers).await;
    assert_eq!(s, 409, "replay after restart");
    assert_eq!(decision(&h, "p-9", 2).await, "consent_refused");
    let st = h.standin.clone();
    wait_for(10, "the one event delivered", || st.events().len() == 1).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        st.events().len(),
        1,
        "the replayed event was not sent again"
    );
    h.assert_metrics(&["relay_requests_rejected_total{status=\"409\"} 2"])
        .await;
    // The browser path stays idempotent by event_id: the same beacon twice is one event.
    let token = h.grant_consent().await;
    let beacon = json!({"event": "BookedGLP1Consultation", "event_id": evid(88), "ttclid": TTCLID,
        "consent_token": token});
    h.standin
        .push_modes(std::iter::repeat_n(relay_support::Mode::Http(503), 5));
    let (_, a) = h.browser("/v1/events", &beacon, false).await;
    let (_, b) = h.browser("/v1/events", &beacon, false).await;
    assert_eq!(
        (
            a["results"][0]["decision"].as_str(),
            b["results"][0]["decision"].as_str()
        ),
        (Some("accepted"), Some("duplicate"))
    );
    h.shutdown().await;
}

#[tokio::test]
async fn click_ids_and_event_ids_are_judged_by_format() {
    let mut h = Harness::start(Opts {
        meta: true,
        ..Opts::default()
    })
    .await;
    let token = h.grant_consent().await;
    let base = |extra: Value| {
        let mut e = json!({"event": "BookedGLP1Consultation", "consent_token": token});
        for (k, v) in extra.as_object().expect("object") {
            e[k] = v.clone();
        }
        e
    };
    let cases = [
        // Health words, compact dates and phone numbers inside click ids.
        (
            json!({"ttclid": "E.C.P.abc type 2 diabetes"}),
            "invalid_click_id:ttclid:alphabet",
        ),
        (
            json!({"ttclid": "E.C.P.CqgB19840307abcdefgh"}),
            "invalid_click_id:ttclid:date_shaped",
        ),
        (
            json!({"ttclid": "E.C.P.CqgB5550109999abcdefgh"}),
            "invalid_click_id:ttclid:phone_shaped",
        ),
        (
            json!({"ttclid": "CqgBaZ3xYk7LmQp2RtUvXyZ"}),
            "invalid_click_id:ttclid:prefix",
        ),
        (
            json!({"fbclid": "IwAR jane doe 1984"}),
            "invalid_click_id:fbclid:alphabet",
        ),
        (
            json!({"fbc": "fb.1.449539200000.IwAR2F4dbP0l7Mn1Iaw"}),
            "invalid_click_id:fbc:timestamp",
        ),
        (
            json!({"fbp": "fb.1.1596403881668.5550109999"}),
            "invalid_click_id:fbp:range",
        ),
    ];
    for (extra, reason) in cases {
        let (s, v) = h.browser("/v1/events", &base(extra.clone()), false).await;
        assert_eq!(s, 202, "{v}");
        let r = &v["results"][0];
        assert_eq!(r["decision"], "dropped", "{extra}: {v}");
        assert!(r["reasons"].to_string().contains(reason), "{extra}: {v}");
        assert!(
            r["reasons"].to_string().contains("no_match_key"),
            "{extra}: {v}"
        );
    }
    // Card-, phone- and date-shaped event ids are replaced, not forwarded or hashed.
    for (id, tag) in [
        ("4111111111111111", "ida"),
        ("5550109999123456", "idb"),
        ("appt-1984-03-07-jane", "idc"),
    ] {
        let (_, v) = h
            .browser(
                "/v1/events",
                &base(json!({"event_id": id, "ttclid": ttclid(tag), "fbclid": FBCLID})),
                false,
            )
            .await;
        let r = &v["results"][0];
        assert_eq!(r["decision"], "accepted", "{v}");
        assert!(r["event_id"].as_str().unwrap().starts_with("pw-"), "{v}");
        assert!(
            r["reasons"].to_string().contains("event_id_replaced:"),
            "{v}"
        );
    }
    let (st, mt) = (h.standin.clone(), h.meta().clone());
    wait_for(10, "deliveries", || {
        st.events().len() == 3 && mt.events().len() == 3
    })
    .await;
    let sent = format!("{}{}", st.raw_bodies().join(""), mt.raw_bodies().join(""));
    h.shutdown().await;
    let db = h.database_text();
    for planted in [
        "4111111111111111",
        "5550109999",
        "19840307",
        "1984-03-07",
        "diabetes",
        "jane",
    ] {
        assert!(!sent.contains(planted), "{planted} left the relay");
        assert!(!db.contains(planted), "{planted} in the database");
    }
}

#[tokio::test]
async fn consent_metadata_must_be_configured_values_and_errors_do_not_echo() {
    let mut h = Harness::start(Opts::default()).await;
    let good = json!({"granted": true, "purposes": ["advertising"], "source": "banner",
        "policy_version": "2026-01"});
    let patch = |k: &str, v: Value| {
        let mut b = good.clone();
        b[k] = v;
        b
    };
    for (body, field) in [
        (patch("source", json!("Jane Doe intake call")), "source"),
        (
            patch("policy_version", json!("type 2 diabetes plan")),
            "policy_version",
        ),
        (
            patch("policy_version", json!("1984-03-07")),
            "policy_version",
        ),
        (
            patch("purposes", json!(["advertising", "depression"])),
            "purposes",
        ),
        (patch("Jane Doe", json!(true)), "body"),
    ] {
        let (s, v) = h.browser("/v1/consent", &body, false).await;
        assert_eq!((s, v["field"].as_str()), (400, Some(field)), "{v}");
        let t = v.to_string().to_lowercase();
        for planted in ["jane", "diabetes", "depression", "1984"] {
            assert!(!t.contains(planted), "error echoed {planted}: {t}");
        }
    }
    let (s, _) = h.browser("/v1/consent", &good, false).await;
    assert_eq!(s, 201);
    h.shutdown().await;
    let db = h.database_text();
    for planted in ["jane doe", "diabetes", "depression", "1984-03-07"] {
        assert!(!db.contains(planted), "{planted} in the database");
    }
    let c = rusqlite::Connection::open(&h.db).expect("db");
    let n: i64 = c
        .query_row("SELECT count(*) FROM consent", [], |r| r.get(0))
        .expect("count");
    assert_eq!(n, 1, "only the valid consent was stored");
}
