use super::*;

fn audit(event_id: &str, destinations: &[&str]) -> NewAudit {
    NewAudit {
        received_ms: 1,
        source: "server",
        event_id: Some(event_id.into()),
        event: Some("Lead".into()),
        decision: Decision::Queued,
        reasons: vec![],
        consent_id: None,
        legal_basis: None,
        destinations: destinations
            .iter()
            .map(|d| DestinationEntry {
                name: Arc::from(*d),
                state: DestinationState::Queued,
                event: Some("Lead".into()),
                row: Some(NewOutboxRow {
                    event_id: event_id.into(),
                    test_event_code: None,
                    payload: "{}".into(),
                    event_time: 1,
                }),
            })
            .collect(),
    }
}

fn open(dir: &tempfile::TempDir) -> (Outbox, WriterThread, Connection) {
    let (ob, writer, _, reader) =
        Outbox::open(&dir.path().join("o.db"), Synchronous::Full, Arc::default()).expect("open");
    (ob, writer, reader)
}

fn decision(c: &Connection) -> (String, String, i64) {
    c.query_row(
        "SELECT decision, destinations, pending FROM audit ORDER BY id LIMIT 1",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )
    .expect("audit row")
}

#[test]
fn backoff_grows_is_jittered_and_capped() {
    let p = RetryPolicy {
        base_ms: 100,
        cap_ms: 1_000,
        max_attempts: 5,
    };
    for _ in 0..200 {
        let d0 = p.delay_ms(0);
        assert!((50..=100).contains(&d0), "{d0}");
        let d2 = p.delay_ms(2);
        assert!((200..=400).contains(&d2), "{d2}");
        let d9 = p.delay_ms(9);
        assert!((500..=1_000).contains(&d9), "{d9}");
        assert!(p.delay_ms(40) <= 1_000);
    }
}

#[tokio::test]
async fn retry_then_dead_letter_after_max_attempts() {
    let dir = tempfile::tempdir().expect("dir");
    let (ob, writer, reader) = open(&dir);
    let tt: Arc<str> = Arc::from("tiktok");
    assert_eq!(
        ob.ingest(vec![audit("e1", &["tiktok"])], None)
            .await
            .expect("ingest"),
        Stored::Done(vec![vec![Enqueued::Accepted]])
    );
    assert_eq!(
        ob.ingest(vec![audit("e1", &["tiktok"])], None)
            .await
            .expect("dup"),
        Stored::Done(vec![vec![Enqueued::Duplicate]])
    );
    let policy = RetryPolicy {
        base_ms: 10,
        cap_ms: 10,
        max_attempts: 2,
    };
    let retry = || Record::Retry {
        reason: "http:500".into(),
        policy,
    };
    let b = ob.claim(&tt, 10, 1_000).await.expect("claim");
    assert_eq!(b.rows.len(), 1);
    assert_eq!(
        ob.record(&tt, &b.rows, retry(), 1_000)
            .await
            .expect("retry"),
        0
    );
    assert!(
        ob.claim(&tt, 10, 1_000)
            .await
            .expect("claim")
            .rows
            .is_empty(),
        "not due yet"
    );
    let b = ob.claim(&tt, 10, 2_000).await.expect("claim");
    assert_eq!(b.rows[0].attempts, 1);
    assert_eq!(
        ob.record(&tt, &b.rows, retry(), 2_000)
            .await
            .expect("retry"),
        1
    );
    assert!(
        ob.claim(&tt, 10, 99_000)
            .await
            .expect("claim")
            .rows
            .is_empty(),
        "dead rows are not claimed"
    );
    assert!(ob.depth().await.expect("depth").is_empty());
    let (d, dests, pending) = decision(&reader);
    assert_eq!((d.as_str(), pending), ("dead_lettered", 0));
    assert!(
        dests.contains(r#""tiktok":{"event":"Lead","state":"dead_lettered"}"#),
        "{dests}"
    );
    drop(ob);
    writer.join();
}

#[tokio::test]
async fn destinations_are_claimed_and_settled_independently() {
    let dir = tempfile::tempdir().expect("dir");
    let (ob, writer, reader) = open(&dir);
    let (tt, meta): (Arc<str>, Arc<str>) = (Arc::from("tiktok"), Arc::from("meta"));
    ob.ingest(vec![audit("e1", &["tiktok", "meta"])], None)
        .await
        .expect("ingest");
    let mut depth = ob.depth().await.expect("depth");
    depth.sort();
    assert_eq!(depth, vec![("meta".into(), 1), ("tiktok".into(), 1)]);
    let b = ob.claim(&tt, 10, 5).await.expect("claim");
    assert_eq!(b.rows.len(), 1, "one row per destination");
    let delivered = Record::Delivered {
        request_id: "r1".into(),
        shortfall: None,
    };
    ob.record(&tt, &b.rows, delivered, 6).await.expect("record");
    assert_eq!(decision(&reader).0, "queued", "meta still pending");
    let b = ob.claim(&meta, 10, 5).await.expect("claim");
    let short = Record::Delivered {
        request_id: "fb1".into(),
        shortfall: Some((0, 1)),
    };
    ob.record(&meta, &b.rows, short, 7).await.expect("record");
    let (d, dests, pending) = decision(&reader);
    assert_eq!((d.as_str(), pending), ("delivered", 0));
    assert!(dests.contains(r#""counted":"0/1""#), "{dests}");
    let reasons: String = reader
        .query_row("SELECT reasons FROM audit", [], |r| r.get(0))
        .expect("reasons");
    assert!(
        reasons.contains("meta:events_received_shortfall"),
        "{reasons}"
    );
    drop(ob);
    writer.join();
}

#[tokio::test]
async fn a_nonce_is_used_once_and_a_replay_changes_nothing() {
    let dir = tempfile::tempdir().expect("dir");
    let (ob, writer, reader) = open(&dir);
    let nonce = Nonce {
        hash: "abc".into(),
        expires_ms: i64::MAX,
    };
    let first = ob
        .ingest(vec![audit("e1", &["tiktok"])], Some(nonce.clone()))
        .await
        .expect("ingest");
    assert!(matches!(first, Stored::Done(_)));
    let again = ob
        .ingest(vec![audit("e2", &["tiktok"])], Some(nonce))
        .await
        .expect("ingest");
    assert_eq!(again, Stored::Replayed);
    let n: i64 = reader
        .query_row("SELECT count(*) FROM audit", [], |r| r.get(0))
        .expect("count");
    assert_eq!(n, 1, "the replay stored nothing");
    drop(ob);
    writer.join();
}
