//! Property tests: PHI planted anywhere in an incoming event never reaches an outgoing byte.

mod relay_support;

use pixelwatch::relay::config::RelayConfig;
use pixelwatch::relay::event::parse_body;
use pixelwatch::relay::sanitize::{Sanitizer, Verdict};
use pixelwatch::relay::tiktok::TikTokClient;
use proptest::prelude::*;
use relay_support::{Harness, Opts, wait_for};
use serde_json::{Value, json};

/// Values that must never leave: names, contact details, dates, identifiers, health terms.
const PLANTS: &[&str] = &[
    "Jane Doe",
    "Marisol Okafor",
    "Dmitri Valenko",
    "jane.doe@example.com",
    "m.okafor+intake@clinicmail.net",
    "+1 (555) 010-9999",
    "+15550109999",
    "555.010.4242",
    "1984-03-07",
    "03/07/1984",
    "March 7, 1984",
    "123-45-6789",
    "MRN 48213377",
    "semaglutide",
    "Ozempic",
    "Wegovy 2.4mg",
    "type 2 diabetes",
    "HIV",
    "erectile dysfunction",
    "bariatric surgery",
    "depression",
];

/// Byte patterns whose presence in output would mean a planted value leaked.
fn needles(plant: &str) -> Vec<String> {
    let lower = plant.to_lowercase();
    let mut out = vec![
        lower.clone(),
        url::form_urlencoded::byte_serialize(lower.as_bytes()).collect::<String>(),
        lower.replace(' ', "%20"),
        serde_json::to_string(&lower)
            .unwrap()
            .trim_matches('"')
            .to_string(),
    ];
    for w in lower.split_whitespace() {
        if w.len() >= 4 {
            out.push(w.to_string());
        }
    }
    out.sort();
    out.dedup();
    out
}

fn config() -> RelayConfig {
    RelayConfig::parse(
        r#"
[server]
listen = "127.0.0.1:0"
[database]
path = "unused.db"
[tiktok]
pixel_code = "CPIXEL01"
send_ttp = true
send_hashed_email = true
send_hashed_phone = true
[[mapping]]
from = "BookedGLP1Consultation"
to = "Schedule"
[[mapping]]
from = "PaidDeposit"
to = "Purchase"
allow_value = true
[[page_category]]
path_pattern = "^/book"
url = "https://clinic.example/booking"
[[page_category]]
path_pattern = ".*"
url = "https://clinic.example/"
"#,
        "props.toml",
    )
    .expect("config")
}

/// Where a planted value goes.
#[derive(Debug, Clone, Copy)]
enum Slot {
    EventId,
    Ttclid,
    Ttp,
    UrlPath,
    UrlQuery,
    UrlFragment,
    Email,
    Phone,
    Currency,
    TestCode,
    ExtraName,
    ExtraValue,
    Nested,
    EventName,
    ConsentToken,
}

const SLOTS: &[Slot] = &[
    Slot::EventId,
    Slot::Ttclid,
    Slot::Ttp,
    Slot::UrlPath,
    Slot::UrlQuery,
    Slot::UrlFragment,
    Slot::Email,
    Slot::Phone,
    Slot::Currency,
    Slot::TestCode,
    Slot::ExtraName,
    Slot::ExtraValue,
    Slot::Nested,
    Slot::EventName,
    Slot::ConsentToken,
];

fn build(placements: &[(Slot, &str)], paid: bool) -> Value {
    let mut ev = json!({
        "event": if paid { "PaidDeposit" } else { "BookedGLP1Consultation" },
        "event_time": chrono::Utc::now().timestamp() - 30,
        "event_id": format!("{:032x}", rand::random::<u128>()),
        "ttclid": "E.C.P.CqgBa9Xz",
        "url": "https://clinic.example/book",
        "value": 49.5,
        "currency": "USD",
    });
    for (slot, p) in placements {
        let p = *p;
        let enc: String = url::form_urlencoded::byte_serialize(p.as_bytes()).collect();
        match slot {
            Slot::EventId => ev["event_id"] = json!(p),
            Slot::Ttclid => ev["ttclid"] = json!(p),
            Slot::Ttp => ev["ttp"] = json!(p),
            Slot::UrlPath => ev["url"] = json!(format!("https://clinic.example/book/{enc}")),
            Slot::UrlQuery => ev["url"] = json!(format!("https://clinic.example/book?q={enc}")),
            Slot::UrlFragment => ev["url"] = json!(format!("https://clinic.example/#{p}")),
            Slot::Email => ev["email"] = json!(p),
            Slot::Phone => ev["phone"] = json!(p),
            Slot::Currency => ev["currency"] = json!(p),
            Slot::TestCode => ev["test_event_code"] = json!(p),
            Slot::ExtraName => ev[p] = json!(1),
            Slot::ExtraValue => ev["patient_note"] = json!(p),
            Slot::Nested => {
                ev["form"] = json!({"fields": [{"label": "x", "value": p}], "meta": {p: p}})
            }
            Slot::EventName => ev["event"] = json!(p),
            Slot::ConsentToken => ev["consent_token"] = json!(p),
        }
    }
    ev
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 600, ..ProptestConfig::default() })]

    #[test]
    fn planted_phi_never_appears_in_an_outgoing_request(
        placements in prop::collection::vec((0..SLOTS.len(), 0..PLANTS.len()), 1..6),
        paid in any::<bool>(),
    ) {
        let placements: Vec<(Slot, &str)> =
            placements.into_iter().map(|(s, p)| (SLOTS[s], PLANTS[p])).collect();
        let body = build(&placements, paid).to_string();
        let events = parse_body(body.as_bytes(), 10).expect("well-typed input");
        let sanitizer = Sanitizer::new(&config(), b"prop-salt".to_vec());
        let client = TikTokClient::new("http://127.0.0.1:9/", "CPIXEL01", "t", std::time::Duration::from_secs(1));
        let out = sanitizer.sanitize(&events[0], chrono::Utc::now().timestamp());
        // Reasons go to the audit log: they must not hold values either.
        let reasons = out.reasons.join(" ").to_lowercase();
        if let Verdict::Forward(o) = &out.verdict {
            let request = client.body(o.test_event_code.as_deref(), &[o.payload.as_str()]).to_lowercase();
            for (_, p) in &placements {
                for n in needles(p) {
                    prop_assert!(!request.contains(&n), "planted {p:?} ({n:?}) leaked: {request}");
                }
            }
        }
        for (_, p) in &placements {
            prop_assert!(!reasons.contains(&p.to_lowercase()), "planted {p:?} in reasons: {reasons}");
        }
    }
}

/// Through the real relay: every plant in every slot and in request headers; the stand-in's raw
/// request bodies must contain none of them.
#[tokio::test]
async fn planted_phi_in_fields_and_headers_never_reaches_the_standin() {
    let mut h = Harness::start(Opts {
        tiktok_extra: "send_ttp = true\nsend_hashed_email = true\nsend_hashed_phone = true".into(),
        ..Opts::default()
    })
    .await;
    let token = h.grant_consent().await;
    let mut sent = 0;
    for (i, p) in PLANTS.iter().enumerate() {
        let mut batch = Vec::new();
        for slot in SLOTS {
            let mut ev = build(&[(*slot, p)], i % 2 == 0);
            if !matches!(slot, Slot::ConsentToken) {
                ev["consent_token"] = json!(token);
            }
            batch.push(ev);
        }
        let body = json!({"events": batch}).to_string();
        let enc: String = url::form_urlencoded::byte_serialize(p.as_bytes()).collect();
        let r = h
            .http
            .post(format!("{}/v1/events", h.base))
            .header("Origin", relay_support::ORIGIN)
            .header("User-Agent", format!("Mozilla/5.0 {enc}"))
            .header("Referer", format!("https://clinic.example/book?name={enc}"))
            .header("Cookie", format!("patient={enc}"))
            .header("X-Forwarded-For", "203.0.113.7")
            .body(body)
            .send()
            .await
            .expect("post");
        assert_eq!(r.status().as_u16(), 202);
        let v: Value = r.json().await.expect("json");
        sent += v["results"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["decision"] == "accepted")
            .count();
    }
    assert!(
        sent > 50,
        "most events should still be delivered, got {sent}"
    );
    let st = h.standin.clone();
    wait_for(20, "all accepted delivered", || st.events().len() == sent).await;
    let raw = st.raw_bodies().join("\n").to_lowercase();
    for p in PLANTS {
        for n in needles(p) {
            assert!(!raw.contains(&n), "planted {p:?} ({n:?}) reached TikTok");
        }
    }
    assert!(!raw.contains("203.0.113.7"), "IP forwarded");
    assert!(!raw.contains("mozilla"), "user agent forwarded");
    h.shutdown().await;
}
