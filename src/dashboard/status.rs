//! Each site's state as the overview shows it: the verdict (leaking, down, drifted, clean), the
//! worst finding, vendors that sign no BAA, the last scan and its outcome, the next scheduled
//! scan and the findings of recent scans. A stored scan never changes, so what is judged of it
//! (against a baseline, with a set of mutes) is cached by those three.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use crate::diff::mutes::{self, Mute};
use crate::diff::{BASELINE_SCHEMA, Baseline, Drift, Inventory};
use crate::model::{FindingKind, ScanReport, Severity};
use crate::report::verdict;
use crate::rules::Engine;
use crate::store::overview::BaselineRef;
use crate::store::{ScanRow, Store, StoreError};

/// Scans shown in a site's sparkline.
pub const SPARK_SCANS: usize = 30;
/// Cached judgements and drifts kept before the cache starts over.
const CACHE_MAX: usize = 4096;

/// A site's verdict, worst first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    /// Health information reaches a third party (a `phi_leak` no mute covers).
    Leaking,
    /// The last scans failed: no page could be loaded, or the scan could not run.
    Down,
    /// Something appeared since the approved baseline (or none is approved yet).
    Drifted,
    Clean,
    /// Stored, never scanned.
    Unscanned,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Leaking => "leaking",
            Verdict::Down => "down",
            Verdict::Drifted => "drifted",
            Verdict::Clean => "clean",
            Verdict::Unscanned => "not scanned",
        }
    }

    /// The CSS class of its badge.
    pub fn class(self) -> &'static str {
        match self {
            Verdict::Unscanned => "unscanned",
            v => v.as_str(),
        }
    }
}

/// What is judged of one stored scan, given a baseline and the mutes in force.
#[derive(Debug, Clone)]
pub struct Judgement {
    /// Why no page could be loaded, if none could.
    pub unscannable: Option<String>,
    pub leaking: bool,
    /// The worst cause no mute covers: severity, kind, recipient.
    pub worst: Option<(Severity, String, String)>,
    /// Names of vendors seen that offer no BAA.
    pub no_baa: Vec<String>,
    /// The drift against the baseline (an empty one when none is approved), mutes applied.
    pub drift: Drift,
    /// Findings mutes kept out.
    pub muted: usize,
    /// The verdict sentence of the reports, of the findings no mute covers.
    pub sentence: String,
}

/// Judges `report` against `baseline` (none: everything is new) with the active `mutes`.
pub fn judge(
    report: &ScanReport,
    baseline: Option<&Baseline>,
    mutes: &[Mute],
    engine: &Engine,
) -> Judgement {
    let (judged, muted) = mutes::without_muted(report, mutes);
    let empty = Baseline {
        schema: BASELINE_SCHEMA.into(),
        site: report.site.clone(),
        scan_id: None,
        approved_at: String::new(),
        inventory: Inventory::default(),
    };
    let mut drift = crate::diff::diff(baseline.unwrap_or(&empty), report);
    mutes::apply(&mut drift, mutes);
    // The worst severity's causes; among them a leak of health information comes first.
    let causes = verdict::causes(&judged);
    let top = causes.first().map(|c| c.severity);
    let worst = causes
        .iter()
        .filter(|c| Some(c.severity) == top)
        .min_by_key(|c| c.kind != FindingKind::PhiLeak)
        .map(|c| {
            (
                c.severity,
                c.kind.to_string(),
                verdict::recipient(engine, c.vendor),
            )
        });
    Judgement {
        unscannable: report.unscannable(),
        leaking: judged
            .findings
            .iter()
            .any(|f| f.kind == FindingKind::PhiLeak),
        worst,
        no_baa: verdict::vendors(report, engine)
            .into_iter()
            .filter(|v| v.baa == Some(false))
            .map(|v| v.name)
            .collect(),
        drift,
        muted,
        sentence: verdict::sentence(&judged, engine),
    }
}

/// Judgements and scan-to-scan drifts by what they depend on.
#[derive(Default)]
pub struct Cache {
    judged: Mutex<HashMap<String, Arc<Judgement>>>,
    drifts: Mutex<HashMap<(i64, i64), Arc<Drift>>>,
}

fn bounded<K: std::hash::Hash + Eq, V>(map: &mut HashMap<K, V>) {
    if map.len() >= CACHE_MAX {
        map.clear();
    }
}

impl Cache {
    /// The judgement of scan `scan_id` of `site` against its baseline with `mutes`.
    pub async fn judgement(
        &self,
        store: &Store,
        engine: &Engine,
        scan_id: i64,
        baseline: Option<&BaselineRef>,
        mutes: &[Mute],
    ) -> Result<Arc<Judgement>, StoreError> {
        let key = format!(
            "{scan_id}|{:?}|{}",
            baseline.map(|b| (&b.approved_at, b.scan_id)),
            mutes
                .iter()
                .map(|m| format!("{}@{}", m.id, m.expires_at))
                .collect::<Vec<_>>()
                .join(",")
        );
        if let Some(j) = self.judged.lock().expect("not poisoned").get(&key) {
            return Ok(j.clone());
        }
        let report = store.load_scan(scan_id).await?;
        let base = match baseline {
            Some(_) => Some(store.baseline(&report.site).await?),
            None => None,
        };
        let j = Arc::new(judge(&report, base.as_ref(), mutes, engine));
        let mut map = self.judged.lock().expect("not poisoned");
        bounded(&mut map);
        map.insert(key, j.clone());
        Ok(j)
    }

    /// The drift of scan `id` against the scan before it, `prev`.
    pub async fn step(&self, store: &Store, prev: i64, id: i64) -> Result<Arc<Drift>, StoreError> {
        if let Some(d) = self.drifts.lock().expect("not poisoned").get(&(prev, id)) {
            return Ok(d.clone());
        }
        let before = store.load_scan(prev).await?;
        let after = store.load_scan(id).await?;
        let d = Arc::new(crate::diff::diff(&Baseline::from_scan(&before), &after));
        let mut map = self.drifts.lock().expect("not poisoned");
        bounded(&mut map);
        map.insert((prev, id), d.clone());
        Ok(d)
    }
}

/// One row of the overview.
#[derive(Debug, Clone)]
pub struct SiteStatus {
    pub site: String,
    pub verdict: Verdict,
    /// Why, in a few words.
    pub detail: String,
    pub judgement: Option<Arc<Judgement>>,
    pub last: Option<ScanRow>,
    /// Failed runs in a row (watch or worker), if the last ones failed.
    pub failures: i64,
    /// The next scan: a queued job's due time, or the schedule's next time.
    pub next: Option<String>,
    /// Findings per scan, oldest first (at most [`SPARK_SCANS`]).
    pub spark: Vec<ScanRow>,
    pub has_baseline: bool,
}

impl SiteStatus {
    /// The worst severity no mute covers, for sorting.
    pub fn worst(&self) -> Option<Severity> {
        self.judgement
            .as_ref()
            .and_then(|j| j.worst.as_ref().map(|w| w.0))
    }
}

/// The schedule of `site`: the stored site's, else the config's `[[site]]`.
fn schedules(
    sites: &[crate::store::SiteRow],
    config: Option<&crate::config::Config>,
) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = config
        .map(|c| {
            c.sites
                .iter()
                .map(|s| (s.site_key(), s.schedule.clone()))
                .collect()
        })
        .unwrap_or_default();
    out.extend(sites.iter().map(|s| (s.url.clone(), s.schedule.clone())));
    out
}

fn next_time(schedule: &str) -> Option<String> {
    let cron = crate::config::parse_schedule(schedule).ok()?;
    let next = cron.find_next_occurrence(&chrono::Utc::now(), false).ok()?;
    Some(format!(
        "{} (schedule \"{schedule}\")",
        next.format("%Y-%m-%d %H:%M UTC")
    ))
}

/// Every known site's status, by URL; with `only`, just that site's (the others' latest scans
/// are then not loaded and judged).
pub async fn all(app: &super::App, only: Option<&str>) -> Result<Vec<SiteStatus>, StoreError> {
    let store = &app.store;
    let known = store.known_sites().await?;
    let mut recent = store.recent_scans_by_site(SPARK_SCANS).await?;
    let baselines = store.baseline_refs().await?;
    let failures = store.failure_runs().await?;
    let jobs = store.next_jobs().await?;
    let schedules = schedules(&store.sites().await?, app.opts.config.as_ref());
    let mut mutes = store.all_active_mutes().await?;
    let mut out = Vec::with_capacity(known.len());
    for site in known {
        if only.is_some_and(|o| o != site) {
            continue;
        }
        let mut scans = recent.remove(&site).unwrap_or_default();
        let site_mutes = mutes.remove(&site).unwrap_or_default();
        let baseline = baselines.get(&site);
        let judgement = match scans.first() {
            Some(last) => Some(
                app.cache
                    .judgement(store, &app.engine, last.id, baseline, &site_mutes)
                    .await?,
            ),
            None => None,
        };
        let failed = failures.get(&site).copied().unwrap_or(0);
        let next = match jobs.get(&site) {
            Some((due, state)) if state == "running" => Some(format!("running (due {due})")),
            Some((due, _)) => Some(format!("queued for {due}")),
            None => schedules.get(&site).and_then(|s| next_time(s)),
        };
        let (verdict, detail) = verdict_of(judgement.as_deref(), failed, baseline.is_some());
        let last = scans.first().cloned();
        scans.reverse();
        out.push(SiteStatus {
            site,
            verdict,
            detail,
            judgement,
            last,
            failures: failed,
            next,
            spark: scans,
            has_baseline: baseline.is_some(),
        });
    }
    Ok(out)
}

/// The verdict and its reason, from the latest scan's judgement and the run of failures.
pub fn verdict_of(j: Option<&Judgement>, failures: i64, has_baseline: bool) -> (Verdict, String) {
    let Some(j) = j else {
        return match failures {
            0 => (Verdict::Unscanned, "no scan yet".into()),
            n => (
                Verdict::Down,
                format!("{n} failed run(s) in a row, no scan stored"),
            ),
        };
    };
    if let Some(reason) = &j.unscannable {
        return (Verdict::Down, reason.clone());
    }
    if failures > 0 {
        return (
            Verdict::Down,
            format!("the last {failures} run(s) failed; the latest stored scan is older"),
        );
    }
    if j.leaking {
        return (Verdict::Leaking, j.sentence.clone());
    }
    if !has_baseline {
        return (Verdict::Drifted, "no approved baseline yet".into());
    }
    if !j.drift.added.is_empty() {
        return (
            Verdict::Drifted,
            format!("{} new since the approved baseline", j.drift.added.len()),
        );
    }
    (Verdict::Clean, "matches the approved baseline".into())
}
