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

/// The first audit record as operators read it (stored row and deliveries together).
fn first_record(c: &Connection) -> crate::relay::audit::AuditRecord {
    let mut all = crate::relay::audit::records(c, usize::MAX, None).expect("audit records");
    all.pop().expect("an audit row")
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
    let r = first_record(&reader);
    assert_eq!(r.decision, "dead_lettered");
    assert_eq!(
        r.destinations,
        serde_json::json!({"tiktok": {"event": "Lead", "state": "dead_lettered"}})
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
    assert_eq!(
        first_record(&reader).decision,
        "queued",
        "meta still pending"
    );
    let b = ob.claim(&meta, 10, 5).await.expect("claim");
    let short = Record::Delivered {
        request_id: "fb1".into(),
        shortfall: Some((0, 1)),
    };
    ob.record(&meta, &b.rows, short, 7).await.expect("record");
    let r = first_record(&reader);
    assert_eq!(r.decision, "delivered");
    assert_eq!(r.destinations["tiktok"]["request_id"], "r1");
    assert_eq!(r.destinations["meta"]["counted"], "0/1");
    assert_eq!(r.request_id.as_deref(), Some("fb1"), "the latest request");
    assert_eq!(r.reasons, vec!["meta:events_received_shortfall"]);
    // Delivery is one row per acknowledged request; the audit row keeps its ingest state.
    let (stored, batches): (String, i64) = reader
        .query_row(
            "SELECT decision, (SELECT count(*) FROM delivery) FROM audit",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("stored");
    assert_eq!((stored.as_str(), batches), ("queued", 2));
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

#[tokio::test]
async fn a_failing_command_is_undone_alone_and_the_rest_of_its_group_commits() {
    let dir = tempfile::tempdir().expect("dir");
    let metrics = Arc::new(Metrics::default());
    let (ob, writer, _, reader) =
        Outbox::open(&dir.path().join("o.db"), Synchronous::Full, metrics.clone()).expect("open");
    // Hold the writer so that the next three commands wait and are applied as one group.
    let hold = ob.call(|_| {
        std::thread::sleep(std::time::Duration::from_millis(200));
        Ok(())
    });
    let first = ob.ingest(vec![audit("e1", &["tiktok"])], None);
    // Writes an audit row, then fails: its write must not survive.
    let failing = ob.call(|c| {
        store::insert_audit(c, &audit("e2", &["tiktok"]))?;
        c.execute("INSERT INTO no_such_table VALUES (1)", [])
    });
    let last = ob.ingest(vec![audit("e3", &["tiktok"])], None);
    let (hold, first, failing, last) = tokio::join!(hold, first, failing, last);
    hold.expect("hold");
    assert_eq!(
        first.expect("first"),
        Stored::Done(vec![vec![Enqueued::Accepted]])
    );
    assert!(
        matches!(failing, Err(StoreError::Sqlite { .. })),
        "{failing:?}"
    );
    assert_eq!(
        last.expect("last"),
        Stored::Done(vec![vec![Enqueued::Accepted]])
    );
    let ids: Vec<String> = reader
        .prepare("SELECT event_id FROM audit ORDER BY id")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .expect("audit");
    assert_eq!(ids, ["e1", "e3"]);
    // What the writer keeps in memory was undone with the command: e2 is not a duplicate.
    assert_eq!(
        ob.ingest(vec![audit("e2", &["tiktok"])], None)
            .await
            .expect("e2"),
        Stored::Done(vec![vec![Enqueued::Accepted]])
    );
    let commits = metrics
        .group_commits
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        commits <= 2,
        "the three commands after the hold share a group ({commits} commits)"
    );
    drop(ob);
    writer.join();
}

#[tokio::test]
async fn a_delivered_batch_is_one_row_and_each_event_reads_as_delivered() {
    let dir = tempfile::tempdir().expect("dir");
    let (ob, writer, reader) = open(&dir);
    let (tt, meta): (Arc<str>, Arc<str>) = (Arc::from("tiktok"), Arc::from("meta"));
    let events: Vec<NewAudit> = (0..5)
        .map(|i| audit(&format!("e{i}"), &["tiktok", "meta"]))
        .collect();
    ob.ingest(events, None).await.expect("ingest");
    let delivered = |id: &str| Record::Delivered {
        request_id: id.into(),
        shortfall: None,
    };
    let b = ob.claim(&tt, 10, 5).await.expect("claim");
    assert_eq!(b.rows.len(), 5);
    ob.record(&tt, &b.rows, delivered("t1"), 6)
        .await
        .expect("record");
    let b = ob.claim(&meta, 3, 5).await.expect("claim");
    ob.record(&meta, &b.rows, delivered("m1"), 7)
        .await
        .expect("record");
    let batches: i64 = reader
        .query_row("SELECT count(*) FROM delivery", [], |r| r.get(0))
        .expect("count");
    assert_eq!(batches, 2, "one row per acknowledged request");
    let all = crate::relay::audit::records(&reader, usize::MAX, None).expect("records");
    let decisions: Vec<&str> = all.iter().rev().map(|r| r.decision.as_str()).collect();
    assert_eq!(
        decisions,
        ["delivered", "delivered", "delivered", "queued", "queued"]
    );
    for r in &all {
        assert_eq!(r.destinations["tiktok"]["state"], "delivered");
        assert_eq!(r.destinations["tiktok"]["request_id"], "t1");
    }
    assert_eq!(all[0].destinations["meta"]["state"], "queued");
    assert_eq!(all[4].destinations["meta"]["request_id"], "m1");
    let only = |d| crate::relay::audit::records(&reader, 2, Some(d)).expect("records");
    let ids = |v: Vec<crate::relay::audit::AuditRecord>| v.iter().map(|r| r.id).collect::<Vec<_>>();
    assert_eq!(
        ids(only(Decision::Delivered)),
        [3, 2],
        "newest first, limited"
    );
    assert_eq!(ids(only(Decision::Queued)), [5, 4]);
    assert!(only(Decision::DeadLettered).is_empty());
    drop(ob);
    writer.join();
}

fn delivered(id: &str) -> Record {
    Record::Delivered {
        request_id: id.into(),
        shortfall: None,
    }
}

/// A retryable failure, due again 5-10 ms later.
fn retry_in_10ms() -> Record {
    Record::Retry {
        reason: "http:503".into(),
        policy: RetryPolicy {
            base_ms: 10,
            cap_ms: 10,
            max_attempts: 5,
        },
    }
}

fn event_ids(b: &Batch) -> Vec<&str> {
    b.rows.iter().map(|r| r.event_id.as_str()).collect()
}

#[tokio::test]
async fn an_event_id_in_the_outbox_is_a_duplicate_across_a_restart_and_free_once_delivered() {
    let dir = tempfile::tempdir().expect("dir");
    let tt: Arc<str> = Arc::from("tiktok");
    let (ob, writer, _) = open(&dir);
    ob.ingest(vec![audit("e1", &["tiktok", "meta"])], None)
        .await
        .expect("ingest");
    drop(ob);
    writer.join();
    // A new writer knows what the table holds: no unique index says it any more (schema v4).
    let (ob, writer, _) = open(&dir);
    assert_eq!(
        ob.ingest(vec![audit("e1", &["tiktok", "meta"])], None)
            .await
            .expect("again"),
        Stored::Done(vec![vec![Enqueued::Duplicate, Enqueued::Duplicate]])
    );
    let b = ob.claim(&tt, 10, 5).await.expect("claim");
    assert_eq!(event_ids(&b), ["e1"], "one row, not two");
    ob.record(&tt, &b.rows, delivered("r1"), 6)
        .await
        .expect("record");
    assert_eq!(
        ob.ingest(vec![audit("e1", &["tiktok", "meta"])], None)
            .await
            .expect("after delivery"),
        Stored::Done(vec![vec![Enqueued::Accepted, Enqueued::Duplicate]]),
        "delivered to tiktok: queued there again; still in meta's outbox"
    );
    let mut depth = ob.depth().await.expect("depth");
    depth.sort();
    assert_eq!(depth, vec![("meta".into(), 1), ("tiktok".into(), 1)]);
    drop(ob);
    writer.join();
}

#[tokio::test]
async fn first_attempts_are_read_once_in_id_order_and_ids_are_never_reused() {
    let dir = tempfile::tempdir().expect("dir");
    let tt: Arc<str> = Arc::from("tiktok");
    let (ob, writer, reader) = open(&dir);
    ob.ingest(vec![audit("e1", &["tiktok"])], None)
        .await
        .expect("ingest");
    let b = ob.claim(&tt, 10, 5).await.expect("claim");
    let first = b.rows[0].id;
    ob.record(&tt, &b.rows, delivered("r1"), 6)
        .await
        .expect("record");
    // The table is empty now: SQLite would give the next row the same id again, below where
    // the claims already read. The writer hands out ids itself.
    ob.ingest(vec![audit("e2", &["tiktok"])], None)
        .await
        .expect("ingest");
    let b = ob.claim(&tt, 10, 5).await.expect("claim");
    assert_eq!(event_ids(&b), ["e2"]);
    assert!(b.rows[0].id > first, "{} after {first}", b.rows[0].id);
    ob.record(&tt, &b.rows, delivered("r2"), 6)
        .await
        .expect("record");
    let left: i64 = reader
        .query_row("SELECT count(*) FROM outbox", [], |r| r.get(0))
        .expect("count");
    assert_eq!(left, 0);
    drop(ob);
    writer.join();
}

#[tokio::test]
async fn retries_and_replayed_dead_letters_are_claimed_after_first_attempts_moved_on() {
    let dir = tempfile::tempdir().expect("dir");
    let tt: Arc<str> = Arc::from("tiktok");
    let (ob, writer, _) = open(&dir);
    let events: Vec<NewAudit> = ["dead", "retry", "ok"]
        .iter()
        .map(|e| audit(e, &["tiktok"]))
        .collect();
    ob.ingest(events, None).await.expect("ingest");
    let b = ob.claim(&tt, 10, 5).await.expect("claim");
    assert_eq!(event_ids(&b), ["dead", "retry", "ok"]);
    let dead = Record::Dead {
        reason: "meta:100".into(),
    };
    ob.record(&tt, &b.rows[..1], dead, 5).await.expect("dead");
    let retry = retry_in_10ms();
    ob.record(&tt, &b.rows[1..2], retry, 5)
        .await
        .expect("retry");
    ob.record(&tt, &b.rows[2..], delivered("r1"), 5)
        .await
        .expect("ok");
    ob.ingest(vec![audit("late", &["tiktok"])], None)
        .await
        .expect("ingest");
    let b = ob.claim(&tt, 10, 5).await.expect("claim");
    assert_eq!(event_ids(&b), ["late"], "the retry is not due yet");
    ob.record(&tt, &b.rows, delivered("r2"), 5)
        .await
        .expect("late");
    let b = ob.claim(&tt, 10, 1_000).await.expect("claim");
    assert_eq!(
        event_ids(&b),
        ["retry"],
        "due: claimed though first attempts moved past it"
    );
    assert_eq!(b.rows[0].attempts, 1);
    ob.record(&tt, &b.rows, delivered("r3"), 1_000)
        .await
        .expect("retried");
    assert!(
        ob.claim(&tt, 10, 1_000)
            .await
            .expect("claim")
            .rows
            .is_empty()
    );
    assert!(
        ob.depth().await.expect("depth").is_empty(),
        "only a dead letter left"
    );
    // An operator replays the dead letter while the relay runs.
    let n = crate::relay::audit::replay(&dir.path().join("o.db"), None).expect("replay");
    assert_eq!(n, 1);
    assert_eq!(
        ob.depth().await.expect("depth"),
        vec![("tiktok".to_string(), 1)]
    );
    let b = ob
        .claim(&tt, 10, chrono::Utc::now().timestamp_millis() + 1)
        .await
        .expect("claim");
    assert_eq!(
        event_ids(&b),
        ["dead"],
        "the replayed row is claimed by the running relay"
    );
    assert_eq!(b.rows[0].attempts, 0);
    drop(ob);
    writer.join();
}

#[tokio::test]
async fn a_batch_of_first_attempts_shares_one_test_event_code() {
    let dir = tempfile::tempdir().expect("dir");
    let tt: Arc<str> = Arc::from("tiktok");
    let (ob, writer, _) = open(&dir);
    let with_code = |e: &str, code: Option<&str>| {
        let mut a = audit(e, &["tiktok"]);
        for d in &mut a.destinations {
            if let Some(row) = &mut d.row {
                row.test_event_code = code.map(str::to_string);
            }
        }
        a
    };
    let events = vec![
        with_code("a", None),
        with_code("b", None),
        with_code("c", Some("TEST1")),
        with_code("d", None),
    ];
    ob.ingest(events, None).await.expect("ingest");
    let mut seen = Vec::new();
    for _ in 0..4 {
        let b = ob.claim(&tt, 10, 5).await.expect("claim");
        if b.rows.is_empty() {
            break;
        }
        seen.push((b.test_event_code.clone(), event_ids(&b).join(",")));
        ob.record(&tt, &b.rows, delivered("r"), 5)
            .await
            .expect("record");
    }
    assert_eq!(
        seen,
        [
            (None, "a,b".to_string()),
            (Some("TEST1".to_string()), "c".to_string()),
            (None, "d".to_string())
        ]
    );
    drop(ob);
    writer.join();
}

#[tokio::test]
async fn a_second_writer_on_one_database_is_refused_until_the_first_is_gone() {
    let dir = tempfile::tempdir().expect("dir");
    let (ob, writer, _) = open(&dir);
    let second = Outbox::open(&dir.path().join("o.db"), Synchronous::Full, Arc::default());
    let Err(e) = second else {
        panic!("a second writer opened the database");
    };
    let msg = e.to_string();
    assert!(matches!(e, StoreError::InUse { .. }), "{msg}");
    assert!(
        msg.contains("o.db.lock") && msg.contains("one relay per database"),
        "{msg}"
    );
    // The operator commands still read it.
    assert!(crate::relay::audit::dead_letters(&dir.path().join("o.db")).is_ok());
    drop(ob);
    writer.join();
    let (ob, writer, _) = open(&dir);
    drop(ob);
    writer.join();
}

#[tokio::test]
async fn retries_and_first_attempts_share_a_batch_in_the_order_they_fell_due() {
    let dir = tempfile::tempdir().expect("dir");
    let tt: Arc<str> = Arc::from("tiktok");
    let (ob, writer, _) = open(&dir);
    ob.ingest(vec![audit("first", &["tiktok"])], None)
        .await
        .expect("ingest");
    let b = ob.claim(&tt, 10, 5).await.expect("claim");
    let retry = retry_in_10ms();
    ob.record(&tt, &b.rows, retry, 5).await.expect("retry");
    // Created at 1 like the first, so due before the retry (at 10-15): while a destination
    // keeps failing, new events are not held back behind its retries, nor the other way round.
    ob.ingest(vec![audit("second", &["tiktok"])], None)
        .await
        .expect("ingest");
    let b = ob.claim(&tt, 10, 1_000).await.expect("claim");
    assert_eq!(event_ids(&b), ["second", "first"]);
    assert_eq!(
        b.rows.iter().map(|r| r.attempts).collect::<Vec<_>>(),
        [0, 1]
    );
    ob.record(&tt, &b.rows, delivered("r1"), 1_000)
        .await
        .expect("record");
    assert!(
        ob.claim(&tt, 10, 1_000)
            .await
            .expect("claim")
            .rows
            .is_empty()
    );
    assert!(ob.depth().await.expect("depth").is_empty());
    drop(ob);
    writer.join();
}
