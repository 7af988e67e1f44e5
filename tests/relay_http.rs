//! HTTP contract of the relay: bad input, signatures, CORS, the browser script, ops endpoints.

mod relay_support;

use relay_support::{Harness, ORIGIN, Opts, SECRET};
use serde_json::{Value, json};

use pixelwatch::relay::ingest::{SIGNATURE_HEADER, TIMESTAMP_HEADER, sign};

fn browser_headers() -> Vec<(&'static str, String)> {
    vec![
        ("Origin", ORIGIN.into()),
        ("Content-Type", "text/plain".into()),
    ]
}

#[tokio::test]
async fn bad_input_gets_a_4xx_naming_the_problem() {
    let mut h = Harness::start(Opts::default()).await;
    let cases: Vec<(Vec<u8>, u16, &str, &str)> = vec![
        (b"{\"event\": ".to_vec(), 400, "body", "not valid JSON"),
        (b"[]".to_vec(), 400, "events", "empty"),
        (br#"{"ttclid":"x"}"#.to_vec(), 400, "event", "missing"),
        (
            br#"{"event":"A","event_time":"yesterday"}"#.to_vec(),
            400,
            "event_time",
            "got string",
        ),
        (
            br#"{"event":"A","event_time":1767225600000}"#.to_vec(),
            400,
            "event_time",
            "milliseconds",
        ),
        (
            br#"{"events":[{"event":"A"},{"event":7}]}"#.to_vec(),
            400,
            "events[1].event",
            "expected a string",
        ),
        (
            br#"{"event":"A","value":{"amount":3}}"#.to_vec(),
            400,
            "value",
            "got object",
        ),
        (
            format!("[{}]", vec![r#"{"event":"A"}"#; 51].join(",")).into_bytes(),
            400,
            "events",
            "limit of 50",
        ),
        (vec![b' '; 9000], 413, "body", "exceeds 8192 bytes"),
        // Exact messages for the parser's hard cases; none of them echoes the input.
        (
            format!("{}{}", "[".repeat(20), "]".repeat(20)).into_bytes(),
            400,
            "body",
            "nesting deeper than 16 levels",
        ),
        (
            b"{\"event\":\"Jane \xff\"}".to_vec(),
            400,
            "body",
            "invalid UTF-8 at byte 15",
        ),
        (
            br#"{"event":"Jane","x":1e999}"#.to_vec(),
            400,
            "body",
            "not valid JSON: number out of range (line 1, column",
        ),
        (
            br#"{"event":"Jane","value":1e300}"#.to_vec(),
            400,
            "value",
            "number out of range (0 to 1000000000)",
        ),
        (
            br#"{"event":"Jane","event_time":1e20}"#.to_vec(),
            400,
            "event_time",
            "number out of range",
        ),
        (
            br#"{"event":"Jane","x":"\udc00"}"#.to_vec(),
            400,
            "body",
            "invalid escape or Unicode code point",
        ),
    ];
    let n = cases.len();
    for (body, status, field, problem) in cases {
        let (s, v) = h.raw("/v1/events", body, &browser_headers()).await;
        assert_eq!(s, status, "{v}");
        assert_eq!(v["field"], field, "{v}");
        assert!(v["message"].as_str().unwrap_or("").contains(problem), "{v}");
        assert!(!v.to_string().contains("Jane"), "echoed input: {v}");
    }
    // No audit rows, nothing queued: refused requests store nothing.
    assert!(h.audit().is_empty());
    let rejected = format!("relay_requests_rejected_total{{status=\"400\"}} {}", n - 1);
    h.assert_metrics(&[&rejected]).await;
    h.shutdown().await;
}

#[tokio::test]
async fn content_type_must_be_json_or_a_browser_beacon() {
    let mut h = Harness::start(Opts {
        legal_basis: Some("contract".into()),
        ..Opts::default()
    })
    .await;
    let ev =
        json!({"event": "BookedGLP1Consultation", "ttclid": relay_support::TTCLID}).to_string();
    let browser = |ct: Option<&str>| {
        let mut v = vec![("Origin", ORIGIN.to_string())];
        if let Some(ct) = ct {
            v.push(("Content-Type", ct.to_string()));
        }
        v
    };
    for (ct, status) in [
        (Some("application/json"), 202),
        (Some("application/json; charset=utf-8"), 202),
        (Some("text/plain;charset=UTF-8"), 202),
        (Some("application/xml"), 415),
        (Some("application/json; charset=latin1"), 415),
        (Some("multipart/form-data; boundary=x"), 415),
        (None, 415),
    ] {
        for path in ["/v1/events", "/v1/consent"] {
            let (s, v) = h.raw(path, ev.clone().into_bytes(), &browser(ct)).await;
            if status == 415 {
                assert_eq!(s, 415, "{path} {ct:?}: {v}");
                assert_eq!(v["field"], "Content-Type", "{v}");
                assert_eq!(v["error"], "unsupported_media_type", "{v}");
            } else if path == "/v1/events" {
                assert_eq!(s, status, "{path} {ct:?}: {v}");
            }
        }
    }
    // Signed back-end callers must say application/json; text/plain is the beacon's.
    let bytes = ev.clone().into_bytes();
    let mut headers = Harness::signed_headers(&bytes, 0);
    headers[0].1 = "text/plain".into();
    let (s, v) = h.raw("/v1/events", bytes, &headers).await;
    assert_eq!((s, v["field"].as_str()), (415, Some("Content-Type")), "{v}");
    // Only the three accepted requests were recorded.
    assert_eq!(h.audit().len(), 3);
    h.shutdown().await;
}

#[tokio::test]
async fn chunked_oversized_body_is_refused() {
    let mut h = Harness::start(Opts::default()).await;
    // Chunked encoding has no Content-Length: the cap must hold while streaming.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut sock = tokio::net::TcpStream::connect(h.base.trim_start_matches("http://"))
        .await
        .expect("connect");
    let mut req = format!(
        "POST /v1/events HTTP/1.1\r\nHost: x\r\nOrigin: {ORIGIN}\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .into_bytes();
    for _ in 0..20 {
        req.extend_from_slice(b"3e8\r\n");
        req.extend_from_slice(&[b' '; 1000]);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let _ = sock.write_all(&req).await;
    let mut buf = vec![0u8; 4096];
    let n = sock.read(&mut buf).await.expect("read");
    let head = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    h.shutdown().await;
}

#[tokio::test]
async fn unsigned_calls_from_unknown_origins_are_refused() {
    let mut h = Harness::start(Opts::default()).await;
    let body =
        br#"{"event":"BookedGLP1Consultation","ttclid":"E.C.P.CqgBaZ3xYk7LmQp2RtUv"}"#.to_vec();
    let (s, v) = h.raw("/v1/events", body.clone(), &[]).await;
    assert_eq!((s, v["error"].as_str()), (403, Some("origin_not_allowed")));
    let (s, _) = h
        .raw(
            "/v1/events",
            body,
            &[("Origin", "https://evil.example".into())],
        )
        .await;
    assert_eq!(s, 403);
    h.shutdown().await;
}

#[tokio::test]
async fn signatures_are_checked_over_body_and_timestamp() {
    let mut h = Harness::start(Opts {
        legal_basis: Some("contract".into()),
        ..Opts::default()
    })
    .await;
    let ev = json!({"event": "BookedGLP1Consultation", "event_id": "sig-1", "ttclid": relay_support::ttclid("sig")});
    let (s, v) = h.signed("/v1/events", &ev, 0).await;
    assert_eq!(s, 202, "{v}");
    let (s, v) = h.signed("/v1/events", &ev, -301).await;
    assert_eq!((s, v["error"].as_str()), (401, Some("stale_signature")));
    let (s, _) = h.signed("/v1/events", &ev, 301).await;
    assert_eq!(s, 401);
    let bytes = ev.to_string().into_bytes();
    let ts = chrono::Utc::now().timestamp();
    let good = sign(SECRET, ts, &bytes);
    let mut tampered = bytes.clone();
    tampered.extend_from_slice(b" ");
    type Headers = Vec<(&'static str, String)>;
    let cases: Vec<(Vec<u8>, Headers, &str)> = vec![
        (
            tampered,
            vec![
                (TIMESTAMP_HEADER, ts.to_string()),
                (SIGNATURE_HEADER, good.clone()),
            ],
            "bad_signature",
        ),
        (
            bytes.clone(),
            vec![
                (TIMESTAMP_HEADER, (ts + 1).to_string()),
                (SIGNATURE_HEADER, good.clone()),
            ],
            "bad_signature",
        ),
        (
            bytes.clone(),
            vec![(SIGNATURE_HEADER, good.clone())],
            "bad_signature",
        ),
        (
            bytes.clone(),
            vec![
                (TIMESTAMP_HEADER, ts.to_string()),
                (SIGNATURE_HEADER, "v1=zz".into()),
            ],
            "bad_signature",
        ),
        (
            bytes.clone(),
            vec![
                (TIMESTAMP_HEADER, ts.to_string()),
                (SIGNATURE_HEADER, sign(b"other", ts, &bytes)),
            ],
            "bad_signature",
        ),
    ];
    for (body, mut headers, code) in cases {
        headers.push(("Content-Type", "application/json".into()));
        let (s, v) = h.raw("/v1/events", body, &headers).await;
        assert_eq!((s, v["error"].as_str()), (401, Some(code)), "{headers:?}");
    }
    assert_eq!(h.audit().len(), 1, "only the valid request is recorded");
    h.shutdown().await;
}

#[tokio::test]
async fn cors_is_limited_to_configured_origins() {
    let mut h = Harness::start(Opts::default()).await;
    let pre = |origin: &'static str| {
        h.http
            .request(reqwest::Method::OPTIONS, format!("{}/v1/consent", h.base))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .send()
    };
    let ok = pre(ORIGIN).await.expect("preflight");
    assert_eq!(ok.status().as_u16(), 204);
    assert_eq!(ok.headers()["access-control-allow-origin"], ORIGIN);
    let bad = pre("https://evil.example").await.expect("preflight");
    assert_eq!(bad.status().as_u16(), 403);
    assert!(bad.headers().get("access-control-allow-origin").is_none());
    let r = h
        .http
        .post(format!("{}/v1/events", h.base))
        .header("Origin", ORIGIN)
        .header("Content-Type", "text/plain")
        .body(r#"{"event":"X"}"#)
        .send()
        .await
        .expect("post");
    assert_eq!(r.headers()["access-control-allow-origin"], ORIGIN);
    h.shutdown().await;
}

#[tokio::test]
async fn consent_input_is_validated() {
    let mut h = Harness::start(Opts::default()).await;
    let cases = [
        (
            json!({"granted": "yes", "purposes": ["advertising"], "source": "b", "policy_version": "1"}),
            400,
        ),
        (
            json!({"granted": true, "purposes": [], "source": "b", "policy_version": "1"}),
            400,
        ),
        (
            json!({"granted": true, "purposes": ["advertising"], "source": "b"}),
            400,
        ),
        (
            json!({"granted": true, "purposes": ["advertising"], "source": "b", "policy_version": "1", "extra": 1}),
            400,
        ),
        (
            json!({"subject": "patient-77", "granted": true, "purposes": ["advertising"], "source": "b", "policy_version": "1"}),
            400,
        ),
    ];
    for (body, status) in cases {
        let (s, v) = h.browser("/v1/consent", &body, false).await;
        assert_eq!(s, status, "{body} -> {v}");
        assert!(v["message"].is_string(), "{v}");
        assert!(v["field"].is_string(), "errors name the field: {v}");
        assert!(
            !v.to_string().contains("yes") && !v.to_string().contains("extra"),
            "echo: {v}"
        );
    }
    // A signed back-end caller may record consent for a subject id; it is stored hashed.
    let (s, v) = h
        .signed(
            "/v1/consent",
            &json!({"subject": "patient-77", "granted": true, "purposes": ["advertising"], "source": "intake_form", "policy_version": "1"}),
            0,
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = h
        .signed(
            "/v1/events",
            &json!({"event": "BookedGLP1Consultation", "subject": "patient-77", "ttclid": relay_support::ttclid("sub")}),
            0,
        )
        .await;
    assert_eq!(
        (s, v["results"][0]["decision"].as_str()),
        (202, Some("accepted")),
        "{v}"
    );
    // A browser cannot borrow a subject's consent by naming the subject.
    let (_, v) = h
        .browser(
            "/v1/events",
            &json!({"event": "BookedGLP1Consultation", "subject": "patient-77", "ttclid": relay_support::ttclid("sub")}),
            false,
        )
        .await;
    assert_eq!(v["results"][0]["reasons"], json!(["no_consent"]), "{v}");
    h.shutdown().await;
    let text = String::from_utf8_lossy(&std::fs::read(&h.db).expect("db")).into_owned();
    assert!(
        !text.contains("patient-77"),
        "subject ids are stored hashed"
    );
}

#[tokio::test]
async fn script_health_readiness_and_metrics() {
    let mut h = Harness::start(Opts::default()).await;
    let (s, js) = h.get("/v1/pixel.js").await;
    assert_eq!(s, 200);
    assert!(
        js.contains("sendBeacon") && js.contains("ttclid") && !js.contains("analytics.tiktok.com")
    );
    assert_eq!(h.get("/healthz").await.0, 200);
    let (s, r) = h.get("/readyz").await;
    assert_eq!(s, 200, "{r}");
    assert!(r.contains("\"database_writable\":true"));
    let (s, m) = h.get("/metrics").await;
    assert_eq!(s, 200);
    for name in [
        "relay_events_accepted_total",
        "relay_events_delivered_total",
        "relay_events_retried_total",
        "relay_events_dead_lettered_total",
        "relay_outbox_depth",
        "relay_ingest_latency_seconds_bucket",
        "relay_delivery_request_seconds_count",
    ] {
        assert!(m.contains(name), "{name} missing");
    }
    h.shutdown().await;
}

#[tokio::test]
async fn readyz_fails_without_a_destination() {
    let standin = relay_support::StandIn::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let text = relay_support::config_text(
        "127.0.0.1:0",
        &dir.path().join("r.db"),
        &standin,
        None,
        &Opts::default(),
    );
    let cfg = pixelwatch::relay::config::RelayConfig::parse(&text, "t").expect("cfg");
    let relay =
        pixelwatch::relay::Relay::start(cfg, pixelwatch::relay::secrets::Secrets::default())
            .await
            .expect("start");
    let r = reqwest::get(format!("http://{}/readyz", relay.addr()))
        .await
        .expect("get");
    assert_eq!(r.status().as_u16(), 503);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("\"destination_configured\":false")
    );
    relay.shutdown().await.expect("shutdown");
}

/// The stand-in must reject what TikTok rejects, or the delivery tests prove nothing.
#[tokio::test]
async fn standin_rejects_what_tiktok_rejects() {
    let st = relay_support::StandIn::start().await;
    let http = reqwest::Client::new();
    let good_event = json!({"event": "Schedule", "event_time": 1767225600, "event_id": "e1",
        "user": {"ttclid": "E.C.P.x"}, "page": {"url": "https://clinic.example/booking"}});
    let body =
        |data: Value| json!({"event_source": "web", "event_source_id": st.pixel, "data": data});
    let send = |b: Value, token: &str| {
        http.post(&st.endpoint)
            .header("Access-Token", token)
            .header("Content-Type", "application/json")
            .body(b.to_string())
            .send()
    };
    let code = |r: reqwest::Response| async move {
        assert_eq!(
            r.status().as_u16(),
            200,
            "TikTok answers business errors with HTTP 200"
        );
        r.json::<Value>().await.expect("json")["code"]
            .as_i64()
            .expect("code")
    };
    assert_eq!(
        code(send(body(json!([good_event])), &st.token).await.unwrap()).await,
        0
    );
    assert_eq!(
        code(send(body(json!([good_event])), "wrong").await.unwrap()).await,
        40105
    );
    let mut wrong_pixel = body(json!([good_event]));
    wrong_pixel["event_source_id"] = json!("OTHER");
    assert_eq!(
        code(send(wrong_pixel, &st.token).await.unwrap()).await,
        40001
    );
    let bad_events = [
        json!({"event_time": 1767225600000i64}),
        json!({"event_time": "1767225600"}),
        json!({"event_id": 42}),
        json!({"user": {"ttclid": "x", "email": "jane@example.com"}}),
        json!({"user": {"ttclid": "x", "first_name": "Jane"}}),
        json!({"properties": {"value": 1, "currency": "XYZ"}}),
        json!({"properties": {"diagnosis": "x"}}),
        json!({"custom_data": {}}),
    ];
    for patch in bad_events {
        let mut ev = good_event.clone();
        for (k, v) in patch.as_object().unwrap() {
            ev[k] = v.clone();
        }
        let c = code(send(body(json!([ev])), &st.token).await.unwrap()).await;
        assert_eq!(c, 40002, "{ev}");
    }
    assert_eq!(
        code(send(body(json!([])), &st.token).await.unwrap()).await,
        40002
    );
    let many: Vec<Value> = (0..1001).map(|_| good_event.clone()).collect();
    assert_eq!(
        code(send(body(json!(many)), &st.token).await.unwrap()).await,
        40002
    );
    let mut src = body(json!([good_event]));
    src["event_source"] = json!("browser");
    assert_eq!(code(send(src, &st.token).await.unwrap()).await, 40002);
    let mut extra = body(json!([good_event]));
    extra["partner_name"] = json!("x");
    assert_eq!(code(send(extra, &st.token).await.unwrap()).await, 40002);
    assert_eq!(st.accepted().len(), 1);
    let codes: Vec<i64> = st.rejections().iter().map(|r| r.code).collect();
    assert!(
        codes.contains(&40105) && codes.contains(&40001),
        "{codes:?}"
    );
}
