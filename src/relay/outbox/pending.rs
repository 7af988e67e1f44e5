//! What the outbox holds, kept in the writer's memory so that enqueueing an event needs no
//! index (schema v4): which `(destination, event_id, test_event_code)` keys have a row, how
//! many rows each destination has, and the next row id.
//!
//! Only the writer thread inserts or deletes outbox rows, so this stays exact: it is built
//! from the table when the writer starts, and every change made inside a transaction is
//! logged so it can be undone with that transaction (a failed group, a command rolled back
//! to its savepoint, a commit that failed). Keys are 128-bit keyed hashes (random keys per
//! process): a caller cannot choose event ids that collide, and by chance two of a billion
//! keys collide with a probability of about 10^-21.

use std::collections::HashSet;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::sync::Arc;

use rusqlite::Connection;

/// One change, as logged for undo: the destination's slot in `rows`, and the key.
enum Change {
    Added(usize, u128),
    Removed(usize, u128),
}

/// The outbox's keys and counts, with the undo log of the open transaction.
pub(super) struct Pending {
    seeds: (RandomState, RandomState),
    keys: HashSet<u128>,
    /// Rows per destination; a destination keeps its slot once it has one.
    rows: Vec<(Arc<str>, i64)>,
    next_id: i64,
    log: Vec<Change>,
}

impl Pending {
    /// Everything in the outbox table now (pending rows and dead letters alike: a dead letter
    /// keeps its event id, as the unique index did before v4).
    pub(super) fn load(c: &Connection) -> rusqlite::Result<Pending> {
        let mut p = Pending {
            seeds: (RandomState::new(), RandomState::new()),
            keys: HashSet::new(),
            rows: Vec::new(),
            next_id: 1,
            log: Vec::new(),
        };
        let mut stmt =
            c.prepare("SELECT id, destination, event_id, test_event_code FROM outbox")?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let id: i64 = r.get(0)?;
            let dest: String = r.get(1)?;
            let event_id: String = r.get(2)?;
            let code: Option<String> = r.get(3)?;
            let key = p.key(&dest, &event_id, code.as_deref());
            p.keys.insert(key);
            let slot = p.slot(&dest);
            p.rows[slot].1 += 1;
            p.next_id = p.next_id.max(id + 1);
        }
        Ok(p)
    }

    /// `dest`'s slot in `rows` (a handful of destinations: a scan is cheaper than a hash).
    fn slot(&mut self, dest: &str) -> usize {
        match self.rows.iter().position(|(d, _)| &**d == dest) {
            Some(i) => i,
            None => {
                self.rows.push((Arc::from(dest), 0));
                self.rows.len() - 1
            }
        }
    }

    fn key(&self, dest: &str, event_id: &str, code: Option<&str>) -> u128 {
        let half = |s: &RandomState| {
            let mut h = s.build_hasher();
            h.write(dest.as_bytes());
            h.write_u8(0xff);
            h.write(event_id.as_bytes());
            h.write_u8(0xff);
            match code {
                Some(c) => {
                    h.write_u8(1);
                    h.write(c.as_bytes());
                }
                None => h.write_u8(0),
            }
            h.finish()
        };
        (u128::from(half(&self.seeds.0)) << 64) | u128::from(half(&self.seeds.1))
    }

    /// Claim the key for a new row: `Some(id)` for the row to insert, `None` when the outbox
    /// already holds this event id for this destination.
    pub(super) fn add(&mut self, dest: &str, event_id: &str, code: Option<&str>) -> Option<i64> {
        let key = self.key(dest, event_id, code);
        if !self.keys.insert(key) {
            return None;
        }
        let slot = self.slot(dest);
        self.rows[slot].1 += 1;
        self.log.push(Change::Added(slot, key));
        let id = self.next_id;
        // Never given back, not even when the transaction is undone: a claim may already have
        // read past a lower id, so ids only grow while the process runs.
        self.next_id += 1;
        Some(id)
    }

    /// A row left the outbox (delivered).
    pub(super) fn remove(&mut self, dest: &str, event_id: &str, code: Option<&str>) {
        let key = self.key(dest, event_id, code);
        if self.keys.remove(&key) {
            let slot = self.slot(dest);
            self.rows[slot].1 -= 1;
            self.log.push(Change::Removed(slot, key));
        }
    }

    /// Rows per destination (pending and dead).
    pub(super) fn rows(&self) -> impl Iterator<Item = (&str, i64)> {
        self.rows.iter().map(|(d, n)| (&**d, *n))
    }

    /// A point to undo back to.
    pub(super) fn mark(&self) -> usize {
        self.log.len()
    }

    /// Undo every change made since `mark`.
    pub(super) fn undo_to(&mut self, mark: usize) {
        while self.log.len() > mark {
            match self.log.pop() {
                Some(Change::Added(slot, key)) => {
                    self.keys.remove(&key);
                    self.rows[slot].1 -= 1;
                }
                Some(Change::Removed(slot, key)) => {
                    self.keys.insert(key);
                    self.rows[slot].1 += 1;
                }
                None => break,
            }
        }
    }

    /// The transaction committed: its changes stay.
    pub(super) fn committed(&mut self) {
        self.log.clear();
    }

    /// The transaction was rolled back: so are its changes.
    pub(super) fn rolled_back(&mut self) {
        self.undo_to(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loaded() -> Pending {
        let c = Connection::open_in_memory().expect("db");
        c.execute_batch(
            "CREATE TABLE outbox (id INTEGER PRIMARY KEY, destination TEXT, event_id TEXT, test_event_code TEXT);
             INSERT INTO outbox VALUES (7, 'tiktok', 'e1', NULL), (9, 'meta', 'e1', 'TEST1');",
        )
        .expect("table");
        Pending::load(&c).expect("load")
    }

    fn counts(p: &Pending) -> Vec<(String, i64)> {
        let mut v: Vec<(String, i64)> = p.rows().map(|(d, n)| (d.to_string(), n)).collect();
        v.sort();
        v
    }

    #[test]
    fn loads_the_table_and_refuses_a_key_it_holds() {
        let mut p = loaded();
        assert_eq!(p.add("tiktok", "e1", None), None, "held since load");
        assert_eq!(p.add("meta", "e1", Some("TEST1")), None);
        assert_eq!(
            p.add("meta", "e1", None),
            Some(10),
            "live and test are apart"
        );
        assert_eq!(p.add("tiktok", "e1", Some("TEST1")), Some(11));
        assert_eq!(
            p.add("tiktokx", "e1", None),
            Some(12),
            "names are not prefixes"
        );
        assert_eq!(
            counts(&p),
            [
                ("meta".into(), 2),
                ("tiktok".into(), 2),
                ("tiktokx".into(), 1)
            ]
        );
    }

    #[test]
    fn an_undone_transaction_leaves_keys_and_counts_as_they_were_but_not_ids() {
        let mut p = loaded();
        p.committed();
        let before = counts(&p);
        let first = p.add("tiktok", "e2", None).expect("new");
        let mark = p.mark();
        p.remove("tiktok", "e1", None);
        assert!(p.add("tiktok", "e3", None).is_some());
        p.undo_to(mark);
        assert_eq!(p.add("tiktok", "e1", None), None, "the removal was undone");
        assert_eq!(p.add("tiktok", "e2", None), None, "kept: before the mark");
        p.rolled_back();
        assert_eq!(counts(&p), before);
        let again = p.add("tiktok", "e2", None).expect("free again");
        assert!(
            again > first + 1,
            "ids are never given back ({first} then {again})"
        );
        p.committed();
        p.rolled_back();
        assert_eq!(p.add("tiktok", "e2", None), None, "committed changes stay");
    }

    #[test]
    fn a_removed_key_can_be_queued_again() {
        let mut p = loaded();
        p.remove("tiktok", "e1", None);
        p.remove("tiktok", "unknown", None);
        p.committed();
        assert_eq!(counts(&p), [("meta".into(), 1), ("tiktok".into(), 0)]);
        assert!(p.add("tiktok", "e1", None).is_some());
    }
}
