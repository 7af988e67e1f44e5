//! The CI gate and drift commands: `check`, `baseline approve|export`, `diff`.

use std::path::PathBuf;

use super::*;
use crate::diff::Baseline;
use crate::policy::Policy;
use crate::report::ci;
use crate::rules::Engine;

pub(super) async fn check(a: CheckArgs) -> i32 {
    // Read the inputs first: a broken policy or baseline fails before a long scan.
    let policy = match &a.policy {
        Some(p) => match Policy::read(p) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("error: {e}");
                return EXIT_USAGE;
            }
        },
        None => Policy::default(),
    };
    let baseline = match &a.baseline {
        Some(p) => match Baseline::read(p) {
            Ok(b) => Some(b),
            Err(e) => {
                eprintln!("error: {e}");
                return EXIT_USAGE;
            }
        },
        None => None,
    };
    let (report, code) = match scan_and_report(site_scan_options(&a.scan), &a.scan.common).await {
        Ok(v) => v,
        Err(code) => return code,
    };
    if code != EXIT_OK {
        return code;
    }
    let drift = baseline.as_ref().map(|b| crate::diff::diff(b, &report));
    let engine = match &a.scan.rules {
        Some(dir) => Engine::with_dir(dir).unwrap_or_else(|_| Engine::bundled()),
        None => Engine::bundled(),
    };
    let violations = policy.evaluate(&report, drift.as_ref(), &engine);
    let writes: [(&Option<PathBuf>, String); 3] = [
        (&a.junit, ci::junit(&report, &violations)),
        (
            &a.sarif,
            serde_json::to_string_pretty(&ci::sarif(&report, &violations)).expect("serializable"),
        ),
        (
            &a.markdown,
            ci::markdown(&report, &violations, drift.as_ref()),
        ),
    ];
    for (path, text) in writes {
        if let Some(p) = path
            && let Err(e) = std::fs::write(p, text)
        {
            eprintln!("error: cannot write '{}': {e}", p.display());
            return EXIT_ERROR;
        }
    }
    if let Some(d) = &drift {
        print!("\n{}", crate::diff::render(d));
    }
    if violations.is_empty() {
        println!("\ncheck passed: no policy violations");
        EXIT_OK
    } else {
        println!("\ncheck FAILED: {} policy violation(s)", violations.len());
        for v in &violations {
            println!(
                "  [{}] {}: {} (on {} page{})",
                v.severity.as_str().to_uppercase(),
                v.rule,
                v.message,
                v.pages_total,
                if v.pages_total == 1 { "" } else { "s" }
            );
        }
        EXIT_VIOLATION
    }
}

fn normalize_site(s: String) -> String {
    crate::crawl::normalize(&s)
        .map(|u| u.to_string())
        .unwrap_or(s)
}

pub(super) fn baseline(cmd: BaselineCommand) -> i32 {
    let fail = |e: &dyn std::fmt::Display, code| {
        eprintln!("error: {e}");
        code
    };
    match cmd {
        BaselineCommand::Approve { site, scan, db } => {
            let store = match open_store(db) {
                Ok(s) => s,
                Err(code) => return code,
            };
            let site = site.map(normalize_site);
            let id = match scan {
                Some(id) => id,
                None => match store.latest_scan_id(site.as_deref(), None) {
                    Ok(id) => id,
                    Err(e) => return fail(&e, EXIT_USAGE),
                },
            };
            let report = match store.load_scan(id) {
                Ok(r) => r,
                Err(e) => return fail(&e, EXIT_USAGE),
            };
            if let Some(s) = &site
                && *s != report.site
            {
                return fail(
                    &format!("scan {id} is of {}, not {s}", report.site),
                    EXIT_USAGE,
                );
            }
            let b = Baseline::from_scan(&report);
            if let Err(e) = store.approve_baseline(&b) {
                return fail(&e, EXIT_ERROR);
            }
            println!("approved scan #{id} as the baseline of {}", report.site);
            EXIT_OK
        }
        BaselineCommand::Export { file, site, db } => {
            let store = match open_store(db) {
                Ok(s) => s,
                Err(code) => return code,
            };
            let site = match site.map(normalize_site) {
                Some(s) => s,
                None => match store
                    .latest_scan_id(None, None)
                    .and_then(|id| store.load_scan(id))
                {
                    Ok(r) => r.site,
                    Err(e) => return fail(&e, EXIT_USAGE),
                },
            };
            match store.baseline(&site).map(|b| b.write(&file)) {
                Ok(Ok(())) => {
                    println!("wrote the baseline of {site} to {}", file.display());
                    EXIT_OK
                }
                Ok(Err(e)) => fail(&e, EXIT_ERROR),
                Err(e) => fail(&e, EXIT_USAGE),
            }
        }
    }
}

pub(super) fn diff_cmd(a: DiffArgs) -> i32 {
    let fail = |e: &dyn std::fmt::Display, code| {
        eprintln!("error: {e}");
        code
    };
    let store = match open_store(a.db) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let site = a.site.map(normalize_site);
    let id = match a.scan {
        Some(id) => id,
        None => match store.latest_scan_id(site.as_deref(), None) {
            Ok(id) => id,
            Err(e) => return fail(&e, EXIT_USAGE),
        },
    };
    let report = match store.load_scan(id) {
        Ok(r) => r,
        Err(e) => return fail(&e, EXIT_USAGE),
    };
    let base = if let Some(path) = &a.baseline {
        Baseline::read(path).map_err(|e| fail(&e, EXIT_USAGE))
    } else if let Some(against) = a.against {
        store
            .load_scan(against)
            .map(|r| Baseline::from_scan(&r))
            .map_err(|e| fail(&e, EXIT_USAGE))
    } else {
        store
            .baseline(&report.site)
            .map_err(|e| fail(&e, EXIT_USAGE))
    };
    let base = match base {
        Ok(b) => b,
        Err(code) => return code,
    };
    let drift = crate::diff::diff(&base, &report);
    if let Some(p) = &a.json {
        let json = serde_json::to_vec_pretty(&drift).expect("serializable");
        if let Err(e) = std::fs::write(p, json) {
            return fail(&format!("cannot write '{}': {e}", p.display()), EXIT_ERROR);
        }
    }
    print!("{}", crate::diff::render(&drift));
    if drift.is_empty() {
        EXIT_OK
    } else {
        EXIT_VIOLATION
    }
}
