use serde_json::json;

use super::*;

fn cfg(tiktok_extra: &str, meta_extra: &str) -> RelayConfig {
    RelayConfig::parse(
        &format!(
            r#"
[server]
listen = "127.0.0.1:0"
[database]
path = "r.db"
[[mapping]]
from = "BookedGLP1Consultation"
to = "Schedule"
[[mapping]]
from = "PaidDeposit"
to = "Purchase"
allow_value = true
[[destination]]
kind = "tiktok"
pixel_code = "C1"
{tiktok_extra}
[[destination]]
kind = "meta"
pixel_id = "1234"
{meta_extra}
[[page_category]]
path_pattern = "^/(book|schedule)"
url = "https://clinic.example/booking"
[[page_category]]
path_pattern = ".*"
url = "https://clinic.example/"
"#
        ),
        "t",
    )
    .expect("config")
}

const NOW: i64 = 1_790_000_000;
const TTCLID: &str = "E.C.P.CqgBaZ3xYk7LmQp2RtUv";
const FBCLID: &str = "IwAR2F4-dbP0l7Mn1IawQQGCINEz7PYXQvwjNwB_qa2ofrHyiLjcbCRxTDMgk";

fn ev(name: &str) -> IncomingEvent {
    IncomingEvent {
        event: name.into(),
        ttclid: Some(TTCLID.into()),
        fbclid: Some(FBCLID.into()),
        event_time: Some(NOW - 5),
        ..Default::default()
    }
}

fn payload(s: &Sanitized, i: usize) -> Value {
    match &s.destinations[i].verdict {
        Verdict::Forward(o) => serde_json::from_str(&o.payload).expect("json"),
        other => panic!("destination {i}: {other:?} {s:?}"),
    }
}

#[test]
fn the_issue_example_becomes_a_bare_schedule_for_each_destination() {
    let s = Sanitizer::new(&cfg("", ""), b"salt".to_vec());
    let mut e = ev("BookedGLP1Consultation");
    e.email = Some("jane@example.com".into());
    e.url = Some("https://clinic.example/book/glp1-weight-loss?dob=1980-01-02".into());
    e.event_id = Some("4f1c2a9e-0b7d-4c3e-9a51-2f6d8e0c1b77".into());
    let out = s.sanitize(&e, &RequestFacts::default(), NOW);
    assert_eq!(
        payload(&out, 0),
        json!({"event":"Schedule","event_time":NOW-5,"event_id":"4f1c2a9e-0b7d-4c3e-9a51-2f6d8e0c1b77",
            "user":{"ttclid":TTCLID},"page":{"url":"https://clinic.example/booking"}})
    );
    assert_eq!(
        payload(&out, 1),
        json!({"event_name":"Schedule","event_time":NOW-5,"event_id":"4f1c2a9e-0b7d-4c3e-9a51-2f6d8e0c1b77",
            "action_source":"website","event_source_url":"https://clinic.example/booking",
            "user_data":{"fbc":format!("fb.1.{}.{FBCLID}", (NOW - 5) * 1000)}})
    );
    assert!(
        out.destinations[0]
            .reasons
            .contains(&"dropped_field:email".to_string())
    );
    assert!(
        out.destinations[1]
            .reasons
            .contains(&"dropped_field:email".to_string())
    );
}

#[test]
fn unmapped_event_is_dropped_per_destination() {
    let s = Sanitizer::new(&cfg("", ""), vec![]);
    let out = s.sanitize(&ev("OzempicRefillRequested"), &RequestFacts::default(), NOW);
    for d in &out.destinations {
        assert_eq!(d.verdict, Verdict::Dropped);
        assert_eq!(d.reasons, vec!["unmapped_event"]);
    }
}

#[test]
fn value_only_where_mapping_allows() {
    let s = Sanitizer::new(&cfg("", ""), vec![]);
    let mut e = ev("BookedGLP1Consultation");
    e.value = Some(99.0);
    e.currency = Some("USD".into());
    let out = s.sanitize(&e, &RequestFacts::default(), NOW);
    assert!(payload(&out, 0).get("properties").is_none());
    assert!(payload(&out, 1).get("custom_data").is_none());
    let mut e = ev("PaidDeposit");
    e.value = Some(99.0);
    e.currency = Some("usd".into());
    let out = s.sanitize(&e, &RequestFacts::default(), NOW);
    assert_eq!(
        payload(&out, 0)["properties"],
        json!({"currency":"USD","value":99.0})
    );
    assert_eq!(
        payload(&out, 1)["custom_data"],
        json!({"currency":"USD","value":99.0})
    );
}

#[test]
fn hashing_follows_each_platforms_normalisation() {
    let both = "send_hashed_email = true\nsend_hashed_phone = true";
    let s = Sanitizer::new(&cfg(both, both), vec![]);
    let mut e = ev("BookedGLP1Consultation");
    e.email = Some("  Jane.Doe@Example.COM ".into());
    e.phone = Some("+1 (555) 010-9999".into());
    let out = s.sanitize(&e, &RequestFacts::default(), NOW);
    let tt = payload(&out, 0);
    assert_eq!(tt["user"]["email"], sha256_hex("jane.doe@example.com"));
    assert_eq!(tt["user"]["phone"], sha256_hex("+15550109999"));
    let meta = payload(&out, 1);
    assert_eq!(
        meta["user_data"]["em"],
        json!([sha256_hex("jane.doe@example.com")])
    );
    assert_eq!(meta["user_data"]["ph"], json!([sha256_hex("15550109999")]));
    // Independent vector (Python hashlib).
    assert_eq!(
        sha256_hex("jane.doe@example.com"),
        "86e0b9e56c17cc4d12387e1949b85053fbe73bc3ce5a1188713a9d300cc6133d"
    );
}

#[test]
fn ip_and_user_agent_reach_meta_only_when_configured() {
    let facts = RequestFacts {
        client_ip: Some("203.0.113.7".parse().expect("ip")),
        user_agent: Some("Mozilla/5.0 (X11; Linux x86_64)".into()),
    };
    let e = ev("BookedGLP1Consultation");
    let off = Sanitizer::new(&cfg("", ""), vec![]).sanitize(&e, &facts, NOW);
    let text = format!("{:?}", off.destinations);
    assert!(
        !text.contains("203.0.113.7") && !text.contains("Mozilla"),
        "{text}"
    );
    let on = Sanitizer::new(
        &cfg("", "send_client_ip = true\nsend_user_agent = true"),
        vec![],
    )
    .sanitize(&e, &facts, NOW);
    let meta = payload(&on, 1);
    assert_eq!(meta["user_data"]["client_ip_address"], "203.0.113.7");
    assert_eq!(
        meta["user_data"]["client_user_agent"],
        "Mozilla/5.0 (X11; Linux x86_64)"
    );
    assert!(payload(&on, 0).to_string().find("203.0.113.7").is_none());
}

#[test]
fn ids_with_phi_shapes_are_replaced_not_hashed() {
    let s = Sanitizer::new(&cfg("", ""), b"k".to_vec());
    for (id, why) in [
        ("jane@example.com", "event_id_replaced:alphabet"),
        ("4111111111111111", "event_id_replaced:card_shaped"),
        ("appt-5550109999-jane", "event_id_replaced:phone_shaped"),
        ("booking-1984-03-07-xyz", "event_id_replaced:date_shaped"),
    ] {
        let mut e = ev("BookedGLP1Consultation");
        e.event_id = Some(id.into());
        let out = s.sanitize(&e, &RequestFacts::default(), NOW);
        assert!(
            out.reasons.contains(&why.to_string()),
            "{id}: {:?}",
            out.reasons
        );
        let o = payload(&out, 0);
        let got = o["event_id"].as_str().expect("id");
        assert!(got.starts_with("pw-"), "{got}");
        // Not derived from the caller's id: the same event with another bad id gets the same id.
        let mut e2 = ev("BookedGLP1Consultation");
        e2.event_id = Some("another-bad id".into());
        let o2 = payload(&s.sanitize(&e2, &RequestFacts::default(), NOW), 0);
        assert_eq!(o2["event_id"], got);
    }
}

#[test]
fn click_ids_are_checked_by_format_and_dropped_with_a_reason() {
    let s = Sanitizer::new(&cfg("", ""), vec![]);
    let mut e = ev("BookedGLP1Consultation");
    e.ttclid = Some("E.C.P.abc wegovy CqgBaZ3xYk7L".into());
    e.fbclid = None;
    e.fbc = Some("fb.1.1789999999000.IwAR19840307abcdefghij".into());
    e.fbp = Some("fb.1.1789999999000.5550109999".into());
    let out = s.sanitize(&e, &RequestFacts::default(), NOW);
    for r in [
        "invalid_click_id:ttclid:alphabet",
        "invalid_click_id:fbc:date_shaped",
        "invalid_click_id:fbp:range",
    ] {
        assert!(
            out.reasons.contains(&r.to_string()),
            "{r}: {:?}",
            out.reasons
        );
    }
    for d in &out.destinations {
        assert_eq!(d.verdict, Verdict::Dropped);
        assert_eq!(d.reasons, vec!["no_match_key"]);
    }
}

#[test]
fn stale_events_are_dropped_for_every_destination() {
    let s = Sanitizer::new(&cfg("", ""), vec![]);
    let mut e = ev("BookedGLP1Consultation");
    e.event_time = Some(NOW - MAX_AGE_SECS - 1);
    let out = s.sanitize(&e, &RequestFacts::default(), NOW);
    assert_eq!(out.dropped, Some("event_time_out_of_window"));
    assert!(out.destinations.is_empty());
}

#[test]
fn unknown_field_names_become_keyed_hashes_and_lengths() {
    let s = Sanitizer::new(&cfg("", ""), b"salt-1".to_vec());
    let mut e = ev("BookedGLP1Consultation");
    e.other_fields = vec!["diagnosis".into(), "Jane Doe".into()];
    let out = s.sanitize(&e, &RequestFacts::default(), NOW);
    let joined = out.reasons.join(" ");
    assert!(
        !joined.contains("diagnosis") && !joined.contains("Jane"),
        "{joined}"
    );
    let r = &out.reasons[0];
    assert!(r.starts_with("unknown_field:") && r.ends_with(":9"), "{r}");
    assert_eq!(
        r,
        &s.unknown_field_reason("diagnosis"),
        "stable per database"
    );
    let other = Sanitizer::new(&cfg("", ""), b"salt-2".to_vec());
    assert_ne!(
        r,
        &other.unknown_field_reason("diagnosis"),
        "keyed by the database salt"
    );
}

#[test]
fn planted_term_in_a_well_formed_click_id_is_blocked_by_the_detector() {
    let s = Sanitizer::new(&cfg("", ""), vec![]);
    let mut e = ev("BookedGLP1Consultation");
    e.ttclid = Some("E.C.P.wegovy_CqgBaZ3xYk7LmQ".into());
    let out = s.sanitize(&e, &RequestFacts::default(), NOW);
    assert_eq!(out.destinations[0].verdict, Verdict::Blocked);
    assert!(
        out.destinations[0]
            .reasons
            .iter()
            .any(|r| r == "detector:user.ttclid:health_term:glp1_drug"),
        "{:?}",
        out.destinations[0].reasons
    );
    // Meta does not receive the TikTok click id, so its event is unaffected.
    assert!(matches!(out.destinations[1].verdict, Verdict::Forward(_)));
}
