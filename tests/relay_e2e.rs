//! End-to-end relay tests: real HTTP, real SQLite, strict TikTok stand-in failing on demand.

mod relay_support;

use std::time::Duration;

use relay_support::{Harness, Mode, Opts, evid, evid_num, glp1_event, ttclid, wait_for};
use serde_json::json;

#[tokio::test]
async fn consented_glp1_booking_reaches_tiktok_as_one_bare_schedule() {
    let mut h = Harness::start(Opts::default()).await;
    let token = h.grant_consent().await;
    let (s, v) = h
        .browser(
            "/v1/events",
            &glp1_event(&evid(1001), &ttclid("Cq"), Some(&token)),
            false,
        )
        .await;
    assert_eq!(s, 202, "{v}");
    assert_eq!(v["results"][0]["decision"], "accepted", "{v}");
    let st = h.standin.clone();
    wait_for(10, "delivery", || st.events().len() == 1).await;
    let sent = &st.events()[0];
    let expected = json!({
        "event": "Schedule",
        "event_time": sent["event_time"],
        "event_id": evid(1001),
        "user": {"ttclid": ttclid("Cq")},
        "page": {"url": "https://clinic.example/booking"},
    });
    assert_eq!(sent, &expected);
    assert!(sent["event_time"].is_i64());
    let raw = st.raw_bodies().join("\n").to_lowercase();
    for planted in ["jane", "ozempic", "glp1", "glp-1", "booked", "weight"] {
        assert!(!raw.contains(planted), "{planted} left the relay: {raw}");
    }
    // Audit: delivered with TikTok's request id, reasons name the dropped email but not its value.
    wait_for(5, "audit delivered", || {
        h.audit()
            .iter()
            .any(|a| a.1 == "delivered" && a.3.is_some())
    })
    .await;
    let audit = h.audit();
    let row = audit
        .iter()
        .find(|a| a.1 == "delivered")
        .expect("delivered row");
    assert!(row.2.contains("dropped_field:email"), "{}", row.2);
    assert!(!row.2.contains("jane"), "{}", row.2);
    // Nothing raw in the database file either.
    h.shutdown().await;
    let bytes = std::fs::read(&h.db).expect("db file");
    let text = String::from_utf8_lossy(&bytes).to_lowercase();
    assert!(
        !text.contains("jane.doe") && !text.contains("ozempic"),
        "PHI in the database file"
    );
}

#[tokio::test]
async fn without_consent_or_with_gpc_nothing_is_sent_and_decisions_are_audited() {
    let mut h = Harness::start(Opts::default()).await;
    let (s, v) = h
        .browser(
            "/v1/events",
            &glp1_event("nc-1", &ttclid("noconsent"), None),
            false,
        )
        .await;
    assert_eq!(s, 202);
    assert_eq!(v["results"][0]["decision"], "dropped");
    assert_eq!(v["results"][0]["reasons"], json!(["no_consent"]));
    // Consent given, but the browser signals Global Privacy Control.
    let token = h.grant_consent().await;
    let (_, v) = h
        .browser(
            "/v1/events",
            &glp1_event("nc-2", &ttclid("gpc"), Some(&token)),
            true,
        )
        .await;
    assert_eq!(v["results"][0]["reasons"], json!(["gpc"]));
    // Consent withdrawn with the same token: later events are dropped.
    let (s, _) = h
        .browser(
            "/v1/consent",
            &json!({"consent_token": token, "granted": false, "purposes": ["advertising"],
                    "source": "banner", "policy_version": "2026-01"}),
            false,
        )
        .await;
    assert_eq!(s, 201);
    let (_, v) = h
        .browser(
            "/v1/events",
            &glp1_event("nc-3", &ttclid("refused"), Some(&token)),
            false,
        )
        .await;
    assert_eq!(v["results"][0]["reasons"], json!(["consent_refused"]));
    // A consent POST carrying Sec-GPC records a refusal even if it says granted.
    let (s, v) = h
        .browser(
            "/v1/consent",
            &json!({"granted": true, "purposes": ["advertising"], "source": "banner", "policy_version": "2026-01"}),
            true,
        )
        .await;
    assert_eq!(
        (s, &v["granted"], &v["gpc"]),
        (201, &json!(false), &json!(true))
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(h.standin.requests(), 0, "nothing may reach TikTok");
    let audit = h.audit();
    assert_eq!(audit.len(), 3);
    assert!(audit.iter().all(|a| a.1 == "dropped"));
    h.assert_metrics(&[
        "relay_events_dropped_total{reason=\"no_consent\"} 1",
        "relay_events_dropped_total{reason=\"gpc\"} 1",
    ])
    .await;
    h.shutdown().await;
}

#[tokio::test]
async fn legal_basis_from_config_allows_server_events_without_consent() {
    let mut h = Harness::start(Opts {
        legal_basis: Some("contract: booking terms v3".into()),
        ..Opts::default()
    })
    .await;
    let (s, v) = h
        .signed(
            "/v1/events",
            &json!({"event": "BookedGLP1Consultation", "event_id": "srv-1", "ttclid": ttclid("srv")}),
            0,
        )
        .await;
    assert_eq!(s, 202, "{v}");
    let st = h.standin.clone();
    wait_for(10, "delivery", || st.events().len() == 1).await;
    let c = rusqlite::Connection::open(&h.db).expect("db");
    let basis: String = c
        .query_row("SELECT legal_basis FROM audit", [], |r| r.get(0))
        .expect("row");
    assert_eq!(basis, "contract: booking terms v3");
    h.shutdown().await;
}

#[tokio::test]
async fn transient_failures_are_retried_until_delivered_once() {
    let mut h = Harness::start(Opts {
        timeout_ms: 300,
        ..Opts::default()
    })
    .await;
    h.standin.push_modes([
        Mode::Code(40100),
        Mode::Http(500),
        Mode::Http(502),
        Mode::Code(50001),
        Mode::Slow(Duration::from_millis(800)),
        Mode::Drop,
    ]);
    let (s, _) = h.send_consented("rt-1", "retry").await;
    assert_eq!(s, 202);
    let st = h.standin.clone();
    wait_for(15, "audit delivered", || h.audit()[0].1 == "delivered").await;
    // The slow answer may still have been accepted after the relay gave up: TikTok would
    // de-duplicate on event_id, so count distinct ids.
    let ids: std::collections::BTreeSet<_> = st
        .events()
        .iter()
        .map(|e| e["event_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 1);
    assert_eq!(st.requests(), 7, "six failures then one success");
    h.assert_metrics(&[
        "relay_events_retried_total{destination=\"tiktok\"} 6",
        "relay_events_delivered_total{destination=\"tiktok\"} 1",
        "relay_outbox_depth{destination=\"tiktok\"} 0",
    ])
    .await;
    h.shutdown().await;
}

#[tokio::test]
async fn parameter_error_dead_letters_and_replay_delivers() {
    let mut h = Harness::start(Opts::default()).await;
    h.standin.push_modes([Mode::Code(40002)]);
    h.send_consented(&evid(0xd1), "dead").await;
    let db = h.db.clone();
    wait_for(10, "dead letter", || {
        pixelwatch::relay::audit::dead_letters(&db).is_ok_and(|d| d.len() == 1)
    })
    .await;
    let dead = pixelwatch::relay::audit::dead_letters(&db).expect("list");
    assert_eq!(dead[0].event_id, evid(0xd1));
    assert_eq!(dead[0].destination, "tiktok");
    assert_eq!(dead[0].last_error.as_deref(), Some("tiktok_code:40002"));
    assert_eq!(h.audit()[0].1, "dead_lettered");
    assert!(h.standin.events().is_empty());
    assert_eq!(
        pixelwatch::relay::audit::replay(&db, None).expect("replay"),
        1
    );
    let st = h.standin.clone();
    wait_for(10, "replayed delivery", || st.events().len() == 1).await;
    assert_eq!(st.events()[0]["event_id"], evid(0xd1));
    h.shutdown().await;
}

#[tokio::test]
async fn wrong_token_is_dead_lettered_not_retried_forever() {
    let mut h = Harness::start(Opts {
        token: Some("revoked-token".into()),
        ..Opts::default()
    })
    .await;
    h.send_consented("tok-1", "tok").await;
    let db = h.db.clone();
    wait_for(10, "dead letter", || {
        pixelwatch::relay::audit::dead_letters(&db).is_ok_and(|d| d.len() == 1)
    })
    .await;
    assert_eq!(h.standin.rejections()[0].code, 40105);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        h.standin.requests(),
        1,
        "a credential error must not be retried"
    );
    h.shutdown().await;
}

#[tokio::test]
async fn test_events_never_share_a_batch_with_live_events() {
    let mut h = Harness::start(Opts::default()).await;
    let token = h.grant_consent().await;
    // Hold delivery back while both kinds queue up, so they would fit in one batch.
    h.standin
        .push_modes([Mode::Http(503), Mode::Http(503), Mode::Http(503)]);
    let mut batch = Vec::new();
    for i in 0..6u64 {
        let mut e = glp1_event(&evid(i), &ttclid("mix"), Some(&token));
        if i.is_multiple_of(2) {
            e["test_event_code"] = json!("TEST42");
        }
        batch.push(e);
    }
    let (s, v) = h
        .browser("/v1/events", &json!({"events": batch}), false)
        .await;
    assert_eq!(s, 202, "{v}");
    let st = h.standin.clone();
    wait_for(10, "all delivered", || st.events().len() == 6).await;
    for acc in st.accepted() {
        let test = acc.test_event_code.is_some();
        for e in &acc.events {
            let n = evid_num(e["event_id"].as_str().unwrap());
            assert_eq!(n.is_multiple_of(2), test, "event {n} in the wrong batch");
        }
    }
    h.shutdown().await;
}

#[tokio::test]
async fn unmapped_and_phi_carrying_events_never_leave() {
    let mut h = Harness::start(Opts::default()).await;
    let token = h.grant_consent().await;
    let (_, v) = h
        .browser(
            "/v1/events",
            &json!({"events": [
                {"event": "OzempicRefillRequested", "ttclid": ttclid("x"), "consent_token": token},
                {"event": "BookedGLP1Consultation", "ttclid": "E.C.P.semaglutide_CqgBaZ3xYk", "consent_token": token},
                {"event": "BookedGLP1Consultation", "event_id": evid(0xa1), "ttclid": ttclid("fine"), "consent_token": token,
                 "notes": "type 2 diabetes", "ozempic_dose_mg": 1}
            ]}),
            false,
        )
        .await;
    let r = &v["results"];
    assert_eq!(r[0]["decision"], "dropped");
    assert_eq!(
        r[0]["reasons"],
        json!(["event_id_derived", "tiktok:unmapped_event"])
    );
    assert_eq!(r[1]["decision"], "blocked");
    assert_eq!(r[2]["decision"], "accepted");
    // Unknown fields are recorded as a keyed hash and a length, never by name.
    let reasons: Vec<String> = serde_json::from_value(r[2]["reasons"].clone()).unwrap();
    let unknown: Vec<&String> = reasons
        .iter()
        .filter(|r| r.starts_with("unknown_field:"))
        .collect();
    assert_eq!(unknown.len(), 2, "{reasons:?}");
    assert!(
        unknown.iter().any(|r| r.ends_with(":5")) && unknown.iter().any(|r| r.ends_with(":15")),
        "{reasons:?}"
    );
    let joined = reasons.join(" ").to_lowercase();
    assert!(
        !joined.contains("notes") && !joined.contains("ozempic"),
        "{joined}"
    );
    let st = h.standin.clone();
    wait_for(10, "delivery", || st.events().len() == 1).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(st.events().len(), 1);
    assert_eq!(st.events()[0]["event_id"], evid(0xa1));
    let audit = h.audit();
    let all = format!("{audit:?}").to_lowercase();
    assert!(
        !all.contains("ozempic") && !all.contains("diabetes"),
        "{all}"
    );
    h.shutdown().await;
}

#[tokio::test]
async fn graceful_shutdown_keeps_undelivered_events_for_the_next_start() {
    let mut h = Harness::start(Opts::default()).await;
    h.standin
        .push_modes(std::iter::repeat_n(Mode::Http(503), 1000));
    h.send_consented(&evid(0xc1), "gs").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let standin = h.standin.clone();
    h.shutdown().await;
    // Same database, healthy TikTok.
    let standin2 = relay_support::StandIn::start().await;
    let text = relay_support::config_text("127.0.0.1:0", &h.db, &standin2, None, &Opts::default());
    let cfg = pixelwatch::relay::config::RelayConfig::parse(&text, "t").expect("cfg");
    let relay = pixelwatch::relay::Relay::start(
        cfg,
        pixelwatch::relay::secrets::Secrets::with_token("tiktok", &standin2.token),
    )
    .await
    .expect("restart");
    let st = standin2.clone();
    wait_for(10, "delivery after restart", || st.events().len() == 1).await;
    assert_eq!(st.events()[0]["event_id"], evid(0xc1));
    assert!(standin.events().is_empty());
    relay.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn one_bad_event_is_isolated_and_the_rest_of_the_batch_delivered() {
    let mut h = Harness::start(Opts::default()).await;
    let token = h.grant_consent().await;
    let poisoned = evid(3);
    h.standin.poison(&poisoned);
    let batch: Vec<_> = (0..8u64)
        .map(|i| glp1_event(&evid(i), &ttclid("bisect"), Some(&token)))
        .collect();
    let (s, _) = h
        .browser("/v1/events", &json!({"events": batch}), false)
        .await;
    assert_eq!(s, 202);
    let st = h.standin.clone();
    wait_for(10, "seven delivered", || st.events().len() == 7).await;
    let db = h.db.clone();
    wait_for(10, "one dead letter", || {
        pixelwatch::relay::audit::dead_letters(&db).is_ok_and(|d| d.len() == 1)
    })
    .await;
    let dead = pixelwatch::relay::audit::dead_letters(&db).expect("list");
    assert_eq!(dead[0].event_id, poisoned);
    assert!(
        st.events()
            .iter()
            .all(|e| e["event_id"] != poisoned.as_str())
    );
    // 1 full batch + bisection: 8 -> 4+4 -> 2+2 -> 1+1: 7 requests in all.
    assert_eq!(st.requests(), 7, "bisection cost");
    h.shutdown().await;
}
