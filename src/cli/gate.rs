//! The CI gate and drift commands: `check`, `baseline approve|export`, `diff`.

use super::*;
use crate::diff::Baseline;
use crate::policy::{Policy, Violation};
use crate::report::ci;

pub(super) async fn check(a: CheckArgs) -> Result<Outcome, Error> {
    // Read the inputs first: a broken policy, baseline or rules directory fails before a long scan.
    let policy = match &a.policy {
        Some(p) => Policy::read(p)?,
        None => Policy::default(),
    };
    let baseline = a.baseline.as_deref().map(Baseline::read).transpose()?;
    let engine = engine(a.scan.settings.rules.as_ref())?;
    let quiet = a.scan.out.quiet;
    let opts = a
        .scan
        .settings
        .to_options(&a.scan.url, a.scan.out.browser.clone());
    let report = scan_and_report(opts, &a.scan.out, &engine)
        .await?
        .into_outcome()?;
    let drift = baseline.as_ref().map(|b| crate::diff::diff(b, &report));
    let violations = policy.evaluate(&report, drift.as_ref(), &engine);
    let writes: [(&Option<PathBuf>, String); 3] = [
        (&a.junit, ci::junit(&report, &violations)),
        (
            &a.sarif,
            serde_json::to_string_pretty(&ci::sarif(&report, &violations)).expect("serializable"),
        ),
        (
            &a.markdown,
            ci::markdown(&report, &violations, drift.as_ref(), &engine),
        ),
    ];
    for (path, text) in writes {
        if let Some(p) = path {
            report::write_file(p, text.as_bytes())?;
        }
    }
    if !quiet && let Some(d) = &drift {
        print!("\n{}", crate::diff::render(d));
    }
    if violations.is_empty() {
        if !quiet {
            println!("\ncheck passed: no policy violations");
        }
        return Ok(Outcome::Clean);
    }
    if !quiet {
        println!();
    }
    println!(
        "check FAILED: {} policy violation(s) on {}",
        violations.len(),
        untrusted::terminal(&report.site)
    );
    if !quiet {
        for v in &violations {
            print!("{}", render_violation(v));
        }
    }
    Ok(Outcome::Violation)
}

/// Most reasons printed per violation.
const MAX_REASONS: usize = 8;

/// A violation for a terminal: the cause, the rules it breaks and its pages, then one line per
/// reason (with an evidence excerpt for findings).
fn render_violation(v: &Violation) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let shown: Vec<String> = v
        .pages
        .iter()
        .take(3)
        .map(|p| untrusted::terminal(p))
        .collect();
    let more = v.pages_total.saturating_sub(shown.len());
    let _ = writeln!(
        out,
        "  [{}] {} — {} (on {} page{}: {}{})",
        v.severity.as_str().to_uppercase(),
        untrusted::terminal(&v.title),
        v.rules.join(", "),
        v.pages_total,
        if v.pages_total == 1 { "" } else { "s" },
        shown.join(", "),
        if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        }
    );
    for r in v.reasons.iter().take(MAX_REASONS) {
        let _ = writeln!(
            out,
            "      {:<8} {:<18} {}",
            r.severity.as_str(),
            r.rule,
            untrusted::terminal(&r.text)
        );
        if let Some(e) = &r.evidence {
            let _ = writeln!(
                out,
                "               evidence: {}",
                untrusted::plain(&untrusted::evidence(e, r.matched.as_deref()))
            );
        }
    }
    if v.reasons.len() > MAX_REASONS {
        let _ = writeln!(out, "      ... and {} more", v.reasons.len() - MAX_REASONS);
    }
    out
}

pub(super) async fn baseline(cmd: BaselineCommand) -> Result<Outcome, Error> {
    match cmd {
        BaselineCommand::Approve { site, scan, db } => {
            let site = site.map(|s| site_url(&s)).transpose()?;
            let store = open_store(&db).await?;
            let id = match scan {
                Some(id) => id,
                None => store.latest_scan_id(site.as_deref(), None).await?,
            };
            let report = store.load_scan(id).await?;
            if let Some(s) = &site
                && *s != report.site
            {
                return Err(Error::Usage(format!(
                    "scan {id} is of {}, not {s}",
                    report.site
                )));
            }
            if let Some(reason) = report.unscannable() {
                return Err(Error::Usage(format!(
                    "scan #{id} cannot be a baseline: {reason}; scan again, or approve another scan with --scan ID"
                )));
            }
            store
                .approve_baseline(&Baseline::from_scan(&report))
                .await?;
            println!(
                "approved scan #{id} as the baseline of {}",
                untrusted::terminal(&report.site)
            );
            Ok(Outcome::Clean)
        }
        BaselineCommand::Export { file, site, db } => {
            let site = site.map(|s| site_url(&s)).transpose()?;
            let store = open_store(&db).await?;
            let site = match site {
                Some(s) => s,
                None => {
                    let latest = store.latest_scan_id(None, None).await?;
                    store.load_scan(latest).await?.site
                }
            };
            store.baseline(&site).await?.write(&file)?;
            println!(
                "wrote the baseline of {} to {}",
                untrusted::terminal(&site),
                file.display()
            );
            Ok(Outcome::Clean)
        }
    }
}

pub(super) async fn diff_cmd(a: DiffArgs) -> Result<Outcome, Error> {
    let site = a.site.map(|s| site_url(&s)).transpose()?;
    let store = open_store(&a.db).await?;
    let id = match a.scan {
        Some(id) => id,
        None => store.latest_scan_id(site.as_deref(), None).await?,
    };
    let report = store.load_scan(id).await?;
    let base = if let Some(path) = &a.baseline {
        Baseline::read(path)?
    } else if let Some(against) = a.against {
        Baseline::from_scan(&store.load_scan(against).await?)
    } else {
        store.baseline(&report.site).await?
    };
    let drift = crate::diff::diff(&base, &report);
    if let Some(p) = &a.json {
        let json = serde_json::to_vec_pretty(&drift).expect("serializable");
        report::write_file(p, &json)?;
    }
    if let Some(p) = &a.html {
        let engine = Engine::bundled();
        let (history, first_seen) = history(&store, &report.site).await;
        let cx = report::html::Context {
            drift: Some(&drift),
            history: &history,
            first_seen: &first_seen,
            ..report::html::Context::new(&report, &engine)
        };
        report::write_file(p, report::html::render(&cx).as_bytes())?;
    }
    print!("{}", crate::diff::render(&drift));
    Ok(if drift.is_empty() {
        Outcome::Clean
    } else {
        Outcome::Violation
    })
}
