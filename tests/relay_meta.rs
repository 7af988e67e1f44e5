//! Meta Conversions API delivery, end to end against the strict Meta stand-in, next to TikTok:
//! the same promises (exact payload, retries, dead letters, replay, batching, restart) and the
//! Meta-specific ones (events older than 7 days, `events_received` shortfalls).

mod relay_support;

use std::collections::BTreeSet;
use std::time::Duration;

use relay_support::meta::{SUB_EVENT_TIME, SUB_INVALID, SUB_UNHASHED, SUB_UNKNOWN_FIELD};
use relay_support::{FBCLID, Harness, Mode, Opts, evid, evid_num, glp1_event, ttclid, wait_for};
use serde_json::{Value, json};

fn opts() -> Opts {
    Opts {
        meta: true,
        ..Opts::default()
    }
}

fn ids(events: Vec<Value>) -> BTreeSet<String> {
    events
        .iter()
        .map(|e| e["event_id"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn dead(h: &Harness) -> Vec<pixelwatch::relay::audit::DeadLetter> {
    pixelwatch::relay::audit::dead_letters(&h.db).unwrap_or_default()
}

#[tokio::test]
async fn consented_booking_reaches_meta_as_one_bare_schedule_and_tiktok_too() {
    let mut h = Harness::start(opts()).await;
    let token = h.grant_consent().await;
    let mut ev = glp1_event(&evid(1), &ttclid("both"), Some(&token));
    ev["fbp"] = json!("fb.1.1596403881668.1116446470");
    let (s, v) = h.browser("/v1/events", &ev, false).await;
    assert_eq!(s, 202, "{v}");
    assert_eq!(
        v["results"][0]["destinations"],
        json!({"tiktok": "accepted", "meta": "accepted"})
    );
    let (st, mt) = (h.standin.clone(), h.meta().clone());
    wait_for(10, "both delivered", || {
        st.events().len() == 1 && mt.events().len() == 1
    })
    .await;
    let sent = &mt.events()[0];
    let t = sent["event_time"].as_i64().expect("seconds");
    assert_eq!(
        sent,
        &json!({
            "event_name": "Schedule",
            "event_time": t,
            "event_id": evid(1),
            "action_source": "website",
            "event_source_url": "https://clinic.example/booking",
            "user_data": {"fbc": format!("fb.1.{}.{FBCLID}", t * 1000), "fbp": "fb.1.1596403881668.1116446470"},
        })
    );
    assert_eq!(st.events()[0]["event_id"], evid(1));
    let raw = format!(
        "{}\n{}",
        mt.raw_bodies().join("\n"),
        st.raw_bodies().join("\n")
    )
    .to_lowercase();
    for planted in ["jane", "ozempic", "glp1", "glp-1", "booked", "weight"] {
        assert!(!raw.contains(planted), "{planted} left the relay");
    }
    assert!(
        !raw.contains(&mt.token.to_lowercase()),
        "the token goes in the query, not the body"
    );
    assert!(
        mt.raw_heads()[0].contains("access_token="),
        "Graph API token in the query"
    );
    wait_for(5, "audit delivered", || h.audit()[0].1 == "delivered").await;
    let d = &h.audit_destinations()[0];
    assert_eq!(d["meta"]["state"], "delivered");
    assert_eq!(d["tiktok"]["state"], "delivered");
    assert!(
        d["meta"]["request_id"]
            .as_str()
            .is_some_and(|r| r.starts_with("req-")),
        "{d}"
    );
    h.shutdown().await;
    let db = h.database_text();
    assert!(
        !db.contains("jane.doe") && !db.contains("ozempic"),
        "PHI in the database"
    );
}

#[tokio::test]
async fn client_address_and_user_agent_reach_meta_only_when_configured() {
    for on in [false, true] {
        let mut h = Harness::start(Opts {
            meta_extra: if on {
                "send_client_ip = true\nsend_user_agent = true".into()
            } else {
                String::new()
            },
            ..opts()
        })
        .await;
        let token = h.grant_consent().await;
        let body = glp1_event(&evid(7), &ttclid("ua"), Some(&token)).to_string();
        let headers = [
            ("Origin", relay_support::ORIGIN.to_string()),
            ("Content-Type", "text/plain".to_string()),
            (
                "User-Agent",
                "Mozilla/5.0 (X11; Linux x86_64) Test/1.0".to_string(),
            ),
        ];
        let (s, _) = h.raw("/v1/events", body.into_bytes(), &headers).await;
        assert_eq!(s, 202);
        let (st, mt) = (h.standin.clone(), h.meta().clone());
        wait_for(10, "delivered", || {
            st.events().len() == 1 && mt.events().len() == 1
        })
        .await;
        let user = &mt.events()[0]["user_data"];
        if on {
            assert_eq!(user["client_ip_address"], "127.0.0.1", "{user}");
            assert_eq!(
                user["client_user_agent"],
                "Mozilla/5.0 (X11; Linux x86_64) Test/1.0"
            );
        } else {
            assert!(
                user.get("client_ip_address").is_none() && user.get("client_user_agent").is_none(),
                "{user}"
            );
        }
        let tiktok = st.raw_bodies().join("");
        assert!(
            !tiktok.contains("127.0.0.1") && !tiktok.contains("Mozilla"),
            "never to TikTok"
        );
        h.shutdown().await;
    }
}

#[tokio::test]
async fn transient_and_throttling_errors_are_retried_until_delivered_once() {
    let mut h = Harness::start(Opts {
        timeout_ms: 300,
        max_attempts: 12,
        ..opts()
    })
    .await;
    h.meta().push_modes([
        Mode::Code(1),
        Mode::Code(2),
        Mode::Code(4),
        Mode::Code(17),
        Mode::Code(80003),
        Mode::Http(500),
        Mode::Http(502),
        Mode::Slow(Duration::from_millis(800)),
        Mode::Drop,
    ]);
    let (s, _) = h.send_consented(&evid(2), "retry").await;
    assert_eq!(s, 202);
    let mt = h.meta().clone();
    wait_for(20, "audit delivered", || h.audit()[0].1 == "delivered").await;
    assert_eq!(ids(mt.events()).len(), 1);
    assert_eq!(mt.requests(), 10, "nine failures then one success");
    assert_eq!(
        h.standin.requests(),
        1,
        "TikTok is not held back by Meta's failures"
    );
    h.assert_metrics(&[
        "relay_events_retried_total{destination=\"meta\"} 9",
        "relay_events_retried_total{destination=\"tiktok\"} 0",
        "relay_events_delivered_total{destination=\"meta\"} 1",
        "relay_outbox_depth{destination=\"meta\"} 0",
    ])
    .await;
    h.shutdown().await;
}

#[tokio::test]
async fn invalid_parameter_dead_letters_and_replay_delivers() {
    let mut h = Harness::start(opts()).await;
    h.meta().push_modes([Mode::CodeSub(100, SUB_INVALID)]);
    h.send_consented(&evid(3), "dead").await;
    wait_for(10, "dead letter", || dead(&h).len() == 1).await;
    let d = dead(&h);
    assert_eq!(d[0].destination, "meta");
    assert_eq!(d[0].event_id, evid(3));
    assert_eq!(d[0].last_error.as_deref(), Some("meta_code:100/2804002"));
    let st = h.standin.clone();
    wait_for(10, "TikTok delivered", || st.events().len() == 1).await;
    wait_for(5, "audit settles", || h.audit()[0].1 == "dead_lettered").await;
    assert_eq!(h.audit_destinations()[0]["tiktok"]["state"], "delivered");
    assert_eq!(
        pixelwatch::relay::audit::replay(&h.db, None).expect("replay"),
        1
    );
    let mt = h.meta().clone();
    wait_for(10, "replayed delivery", || mt.events().len() == 1).await;
    wait_for(5, "audit delivered", || h.audit()[0].1 == "delivered").await;
    assert_eq!(st.events().len(), 1, "replay does not resend to TikTok");
    h.shutdown().await;
}

#[tokio::test]
async fn an_invalid_token_is_dead_lettered_not_retried() {
    let mut h = Harness::start(Opts {
        meta_token: Some("EAA-revoked".into()),
        ..opts()
    })
    .await;
    let token = h.grant_consent().await;
    for i in 0..3 {
        h.browser(
            "/v1/events",
            &glp1_event(&evid(40 + i), &ttclid("tok"), Some(&token)),
            false,
        )
        .await;
    }
    wait_for(10, "dead letters", || dead(&h).len() == 3).await;
    assert!(
        dead(&h)
            .iter()
            .all(|d| d.last_error.as_deref() == Some("meta_code:190/463"))
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mt = h.meta().clone();
    assert!(
        mt.requests() <= 3,
        "a credential error is not retried ({})",
        mt.requests()
    );
    assert!(mt.rejections().iter().all(|r| r.code == 190));
    assert_eq!(h.standin.events().len(), 3, "TikTok unaffected");
    h.shutdown().await;
}

#[tokio::test]
async fn events_older_than_seven_days_are_dead_lettered_without_being_sent() {
    let mut h = Harness::start(opts()).await;
    let token = h.grant_consent().await;
    let mut ev = glp1_event(&evid(5), &ttclid("old"), Some(&token));
    ev["event_time"] = json!(chrono::Utc::now().timestamp() - 7 * 24 * 3600 + 5);
    let (_, v) = h.browser("/v1/events", &ev, false).await;
    assert_eq!(v["results"][0]["decision"], "accepted", "{v}");
    wait_for(10, "dead letter", || dead(&h).len() == 1).await;
    assert_eq!(
        dead(&h)[0].last_error.as_deref(),
        Some("event_time_too_old")
    );
    assert_eq!(
        h.meta().requests(),
        0,
        "a stale event would fail Meta's whole request"
    );
    let st = h.standin.clone();
    wait_for(10, "TikTok delivered", || st.events().len() == 1).await;
    h.shutdown().await;
}

#[tokio::test]
async fn a_shortfall_in_events_received_is_counted_in_metrics_and_the_audit() {
    let mut h = Harness::start(opts()).await;
    h.meta().push_modes([Mode::Undercount(1)]);
    let token = h.grant_consent().await;
    let batch: Vec<Value> = (0..3)
        .map(|i| glp1_event(&evid(60 + i), &ttclid("short"), Some(&token)))
        .collect();
    h.browser("/v1/events", &json!({"events": batch}), false)
        .await;
    let mt = h.meta().clone();
    wait_for(10, "delivered", || mt.events().len() == 3).await;
    wait_for(5, "audit", || h.audit().iter().all(|a| a.1 == "delivered")).await;
    h.assert_metrics(&[
        "relay_events_not_counted_total{destination=\"meta\"} 1",
        "relay_events_delivered_total{destination=\"meta\"} 3",
    ])
    .await;
    for (a, d) in h.audit().iter().zip(h.audit_destinations()) {
        assert!(a.2.contains("meta:events_received_shortfall"), "{}", a.2);
        assert_eq!(d["meta"]["counted"], "2/3");
    }
    h.shutdown().await;
}

#[tokio::test]
async fn test_events_never_share_a_batch_and_one_bad_event_is_isolated() {
    let mut h = Harness::start(opts()).await;
    let token = h.grant_consent().await;
    h.meta()
        .push_modes([Mode::Http(503), Mode::Http(503), Mode::Http(503)]);
    let poisoned = evid(3);
    h.meta().poison(&poisoned);
    let batch: Vec<Value> = (0..8u64)
        .map(|i| {
            let mut e = glp1_event(&evid(i), &ttclid("mix"), Some(&token));
            if i >= 6 {
                e["test_event_code"] = json!("TEST42");
            }
            e
        })
        .collect();
    h.browser("/v1/events", &json!({"events": batch}), false)
        .await;
    let mt = h.meta().clone();
    wait_for(10, "seven delivered", || mt.events().len() == 7).await;
    wait_for(10, "one dead letter", || dead(&h).len() == 1).await;
    assert_eq!(dead(&h)[0].event_id, poisoned);
    for acc in mt.accepted() {
        let test = acc.test_event_code.is_some();
        for e in &acc.events {
            assert_eq!(evid_num(e["event_id"].as_str().unwrap()) >= 6, test);
        }
    }
    h.shutdown().await;
}

#[tokio::test]
async fn destinations_batch_and_recover_independently_across_a_restart() {
    let mut h = Harness::start(Opts {
        max_attempts: 10_000,
        ..opts()
    })
    .await;
    let token = h.grant_consent().await;
    h.meta()
        .push_modes(std::iter::repeat_n(Mode::Http(503), 10_000));
    for chunk in 0..6u64 {
        let batch: Vec<Value> = (0..20u64)
            .map(|i| glp1_event(&evid(100 + chunk * 20 + i), &ttclid("ind"), Some(&token)))
            .collect();
        let (s, _) = h
            .browser("/v1/events", &json!({"events": batch}), false)
            .await;
        assert_eq!(s, 202);
    }
    let st = h.standin.clone();
    wait_for(10, "TikTok delivers while Meta is down", || {
        st.events().len() == 120
    })
    .await;
    assert!(h.meta().events().is_empty());
    // Restart against a healthy Meta: the pending rows survive and go out in large batches.
    let meta2 = relay_support::MetaStandIn::start().await;
    h.shutdown().await;
    h.meta = Some(meta2.clone());
    h.restart().await;
    wait_for(15, "Meta catches up", || meta2.events().len() == 120).await;
    assert!(
        meta2.requests() <= 3,
        "120 pending events go out in few requests (Meta takes up to 1,000): {}",
        meta2.requests()
    );
    assert_eq!(h.standin.events().len(), 120, "nothing re-sent to TikTok");
    wait_for(5, "audit", || h.audit().iter().all(|a| a.1 == "delivered")).await;
    h.shutdown().await;
}

/// The stand-in must reject what Meta rejects, or the delivery tests prove nothing.
#[tokio::test]
async fn standin_rejects_what_the_graph_api_rejects() {
    let mt = relay_support::MetaStandIn::start().await;
    let http = reqwest::Client::new();
    let now = chrono::Utc::now().timestamp();
    let good = json!({"event_name": "Schedule", "event_time": now, "event_id": "e1",
        "action_source": "website", "event_source_url": "https://clinic.example/booking",
        "user_data": {"fbc": format!("fb.1.{}.{FBCLID}", now * 1000)}});
    let send = |data: Value, token: &str, ct: &str| {
        http.post(format!("{}?access_token={token}", mt.endpoint))
            .header("Content-Type", ct)
            .body(json!({"data": data}).to_string())
            .send()
    };
    let answer = |r: reqwest::Response| async move {
        let status = r.status().as_u16();
        let v: Value = r.json().await.expect("json");
        (status, v)
    };
    let (s, v) = answer(
        send(json!([good]), &mt.token, "application/json")
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((s, &v["events_received"]), (200, &json!(1)), "{v}");
    let (s, v) = answer(
        send(json!([good]), "wrong", "application/json")
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((s, &v["error"]["code"]), (401, &json!(190)), "{v}");
    let (_, v) = answer(send(json!([good]), &mt.token, "text/plain").await.unwrap()).await;
    assert_eq!(v["error"]["code"], 100);
    let patch = |k: &str, val: Value| {
        let mut e = good.clone();
        e[k] = val;
        e
    };
    let cases = [
        (patch("custom_field", json!(1)), SUB_UNKNOWN_FIELD),
        (
            patch("user_data", json!({"em": "jane@example.com"})),
            SUB_UNHASHED,
        ),
        (patch("user_data", json!({"em": ["ABC"]})), SUB_UNHASHED),
        (patch("user_data", json!({"email": "x"})), SUB_UNKNOWN_FIELD),
        (patch("user_data", json!({})), SUB_INVALID),
        (
            patch("user_data", json!({"fbc": "IwAR-not-a-cookie"})),
            SUB_INVALID,
        ),
        (
            patch("event_time", json!(now - 8 * 24 * 3600)),
            SUB_EVENT_TIME,
        ),
        (patch("event_time", json!(now * 1000)), SUB_EVENT_TIME),
        (patch("action_source", json!("browser")), SUB_INVALID),
        (patch("event_source_url", Value::Null), SUB_INVALID),
        (patch("event_name", json!("")), SUB_INVALID),
        (
            patch("custom_data", json!({"value": 1, "currency": "usd"})),
            SUB_INVALID,
        ),
    ];
    for (ev, sub) in cases {
        let (s, v) = answer(
            send(json!([ev]), &mt.token, "application/json")
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(s, 400, "{ev}");
        assert_eq!(
            (&v["error"]["code"], &v["error"]["error_subcode"]),
            (&json!(100), &json!(sub)),
            "{ev}"
        );
    }
    // One stale event fails the whole request.
    let stale = patch("event_time", json!(now - 8 * 24 * 3600));
    let (_, v) = answer(
        send(json!([good, stale]), &mt.token, "application/json")
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(v["error"]["code"], 100);
    let many: Vec<Value> = (0..1001).map(|_| good.clone()).collect();
    let (_, v) = answer(
        send(json!(many), &mt.token, "application/json")
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(v["error"]["code"], 100);
    let (_, v) = answer(
        send(json!([]), &mt.token, "application/json")
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(v["error"]["code"], 100);
    assert_eq!(mt.accepted().len(), 1);
}
