//! Every flag the README shows, used the way a user types it: one scan with the crawl, consent,
//! probe and rules flags, each checked for its effect; the history flags of `diff` and
//! `baseline`; and a guard that fails when the README shows a flag no test uses.

mod outputs_support;

use clap::CommandFactory;
use outputs_support::{run, s, text};
use pixelwatch::fixture::{Body, FixtureServer, Response, Site};
use serde_json::Value;

const HOST: &str = "www.flags.test";

fn site() -> Site {
    let page = |body: &str| Response::html(format!("<html><body>{body}</body></html>"));
    Site::new()
        .route(
            HOST,
            "/",
            page(
                r#"<a href="/a">a</a> <a href="/items/1">1</a> <a href="/items/2">2</a>
                <a href="/items/3">3</a> <a href="/slow">slow</a> <a href="/skip-me">skip</a>
                <a href="/outside">outside</a> <a href="/form">form</a> <a href="/quiz">quiz</a>
                <button onclick="document.cookie='consent=yes; path=/'">Accept all</button>
                <script src="https://cdn.mywidget.test/w.js"></script>
                <img src="https://pixel.unknown-tracker.test/p.gif">"#,
            ),
        )
        .route(HOST, "/a", page(r#"<a href="/a/b">deeper</a>"#))
        .route(HOST, "/a/b", page("too deep"))
        .route(HOST, "/items/1", page("1"))
        .route(HOST, "/items/2", page("2"))
        .route(HOST, "/items/3", page("3"))
        .route(HOST, "/skip-me", page("excluded"))
        .route(HOST, "/outside", page("not included"))
        .route(
            HOST,
            "/slow",
            Response {
                body: Body::Hang,
                ..Response::html("")
            },
        )
        .route(
            HOST,
            "/form",
            page(r#"<form action="/send" method="post"><input type="email" name="email"><button>Send</button></form>"#),
        )
        .route(HOST, "/send", page("thanks"))
        .route(
            HOST,
            "/quiz",
            page(
                r#"<div><button type=button onclick="fetch('/pick?c=anxiety')">Anxiety</button>
                <button type=button onclick="fetch('/pick?c=none')">Something else</button></div>
                <button type=button>Continue</button>"#,
            ),
        )
        .route(HOST, "/pick", Response::status(204))
        .route("cdn.mywidget.test", "/w.js", Response::js("1;"))
        .route("pixel.unknown-tracker.test", "/p.gif", Response::status(204))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_scan_flags_each_do_what_they_say() {
    let server = FixtureServer::start(site()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = |f: &str| dir.path().join(f).display().to_string();
    std::fs::create_dir(path("rules")).unwrap();
    std::fs::write(
        path("rules/mine.toml"),
        "[[vendor]]\nid = \"mywidget\"\nname = \"My Widget\"\ncategory = \"cdn\"\nhosts = [\"cdn.mywidget.test\"]\nbaa = false\nbaa_checked = \"2026-11-01\"\nseverity = \"info\"\n",
    )
    .unwrap();
    std::fs::write(path("list.txt"), "! a list\n||unknown-tracker.test^\n").unwrap();
    let mut args = s(&[
        "scan",
        "https://www.flags.test/",
        "-q",
        "--no-sitemap",
        "--max-pages",
        "20",
        "--max-depth",
        "1",
        "--max-per-pattern",
        "2",
        "--page-timeout",
        "3",
        "--concurrency",
        "2",
        "--settle-quiet",
        "200",
        "--settle-max",
        "1000",
        "--include",
        r"^https://www\.flags\.test/($|a|items|slow|skip-me|form)",
        "--exclude",
        "skip-me",
        "--consent",
        "accept",
        "--no-probe-forms",
        "--rules",
        &path("rules"),
        "--filter-list",
        &path("list.txt"),
        "--db",
        &path("h.db"),
        "--json",
        &path("r.json"),
    ]);
    for a in server.browser_args() {
        args.push(format!("--browser-arg={a}"));
    }
    let out = run(&args).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "", "-q prints no summary");
    let r: Value = serde_json::from_slice(&std::fs::read(path("r.json")).unwrap()).unwrap();
    let mut visited: Vec<&str> = r["pages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            p["url"]
                .as_str()
                .unwrap()
                .trim_start_matches("https://www.flags.test")
        })
        .collect();
    visited.sort();
    assert_eq!(
        visited,
        ["/", "/a", "/form", "/items/1", "/items/2", "/slow"]
    );
    let skipped = |url: &str| -> String {
        r["skipped"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["url"] == format!("https://www.flags.test{url}"))
            .map(|s| s["reason"].as_str().unwrap().to_string())
            .unwrap_or_else(|| panic!("{url} not skipped: {}", r["skipped"]))
    };
    assert!(skipped("/a/b").contains("--max-depth 1"));
    assert!(skipped("/items/3").contains("more than 2 pages share"));
    assert!(skipped("/skip-me").contains("--exclude"));
    assert!(skipped("/outside").contains("--include"));
    let page = |u: &str| {
        r["pages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["url"] == format!("https://www.flags.test{u}"))
            .unwrap()
            .clone()
    };
    // --page-timeout: the hanging page is stopped and recorded as errored.
    assert!(
        page("/slow")["error"].as_str().is_some(),
        "{}",
        page("/slow")
    );
    // --consent accept: the banner button was pressed.
    assert_eq!(r["consent_mode"], "accept");
    assert!(
        page("/")["consent_action"].as_str().is_some(),
        "{}",
        page("/")
    );
    // --no-probe-forms: nothing typed.
    assert_eq!(r["canaries"], serde_json::json!([]));
    assert_eq!(page("/form")["probed_fields"], 0);
    // --rules: the user's vendor names the widget's requests.
    assert!(
        page("/")["requests"]
            .as_array()
            .unwrap()
            .iter()
            .any(|q| q["vendor"] == "mywidget")
    );
    // --filter-list: an unknown tracker the list blocks is a medium finding naming list and line.
    let listed = r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["rule"] == "list.txt:2")
        .unwrap_or_else(|| panic!("{}", r["findings"]));
    assert_eq!(
        (listed["kind"].as_str(), listed["severity"].as_str()),
        (Some("tracker"), Some("medium"))
    );

    // diff --scan/--against and baseline approve --scan on the stored history.
    let db = path("h.db");
    let again = run(&args).await;
    assert_eq!(again.status.code(), Some(0), "{}", text(&again.stderr));
    let d = run(&s(&["diff", "--db", &db, "--scan", "2", "--against", "1"])).await;
    assert_eq!(
        d.status.code(),
        Some(0),
        "{}{}",
        text(&d.stdout),
        text(&d.stderr)
    );
    let a = run(&s(&["baseline", "approve", "--scan", "1", "--db", &db])).await;
    assert_eq!(a.status.code(), Some(0), "{}", text(&a.stderr));
    assert!(text(&a.stdout).contains("approved scan #1"));
    let l = run(&s(&[
        "scans",
        "list",
        "--db",
        &db,
        "--site",
        "https://www.flags.test/",
        "--limit",
        "1",
        "--json",
    ]))
    .await;
    assert_eq!(text(&l.stdout).lines().count(), 1);
}

/// Flags of `pixelwatch` (long and short) that the README and docs show.
fn documented_flags() -> Vec<String> {
    let mut known = std::collections::BTreeSet::new();
    fn walk(c: &clap::Command, known: &mut std::collections::BTreeSet<String>) {
        for a in c.get_arguments() {
            if let Some(l) = a.get_long() {
                known.insert(format!("--{l}"));
            }
            if let Some(sh) = a.get_short() {
                known.insert(format!("-{sh}"));
            }
        }
        for sub in c.get_subcommands() {
            walk(sub, known);
        }
    }
    walk(&pixelwatch::cli::Cli::command(), &mut known);
    let docs = [
        "README.md",
        "docs/watch.md",
        "docs/github-actions.yml",
        "docs/gitlab-ci.yml",
    ]
    .iter()
    .map(|f| {
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/").to_string() + f).unwrap()
    })
    .collect::<Vec<_>>()
    .join("\n");
    let re = regex::Regex::new(r"(?:^|[\s`(|])(--[a-z][a-z-]*|-[a-z]{1,2})\b").unwrap();
    let mut found: Vec<String> = re
        .captures_iter(&docs)
        .map(|c| c[1].to_string())
        .map(|f| if f == "-vv" { "-v".into() } else { f })
        .filter(|f| known.contains(f))
        .collect();
    found.sort();
    found.dedup();
    found
}

#[test]
fn every_flag_the_readme_shows_is_used_by_a_test() {
    let tests_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests");
    let mut sources = String::new();
    for e in std::fs::read_dir(tests_dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "rs") {
            sources.push_str(&std::fs::read_to_string(&p).unwrap());
        }
    }
    let flags = documented_flags();
    assert!(flags.len() > 25, "{flags:?}");
    let unused: Vec<&String> = flags
        .iter()
        .filter(|f| {
            !(sources.contains(&format!("\"{f}\""))
                || sources.contains(&format!("\"{f}="))
                || (f.as_str() == "-v" && sources.contains("\"-vv\"")))
        })
        .collect();
    assert!(unused.is_empty(), "README flags no test uses: {unused:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_probe_flags_each_do_what_they_say() {
    let server = FixtureServer::start(site()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = |f: &str| dir.path().join(f).display().to_string();
    std::fs::write(
        path("j.toml"),
        "name = \"deeper\"\n[[step]]\ngoto = \"https://www.flags.test/a\"\n[[step]]\nclick = \"deeper\"\n",
    )
    .unwrap();
    let scan = |funnel: &'static str| {
        let mut args = s(&[
            "scan",
            "https://www.flags.test/",
            "-q",
            "--no-sitemap",
            "--include",
            r"^https://www\.flags\.test/($|form|quiz)",
            "--settle-quiet",
            "200",
            "--settle-max",
            "1000",
            "--funnel-steps",
            funnel,
            "--submit-forms",
            "www.flags.test",
            "--journey",
            &path("j.toml"),
            "--db",
            &path("h.db"),
            "--json",
            &path("r.json"),
        ]);
        for a in server.browser_args() {
            args.push(format!("--browser-arg={a}"));
        }
        args
    };
    let out = run(&scan("0")).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let r: Value = serde_json::from_slice(&std::fs::read(path("r.json")).unwrap()).unwrap();
    let pages = r["pages"].as_array().unwrap();
    // --submit-forms: the form's submission reached the named host.
    assert!(
        server
            .requests()
            .iter()
            .any(|q| q.method == "POST" && q.target == "/send"),
        "the submission was held back"
    );
    assert!(pages.iter().any(|p| p["found_via"] == "submission"));
    // --journey: its page, ended where its click led.
    let j = pages
        .iter()
        .find(|p| p["found_via"] == "journey")
        .expect("journey page");
    assert_eq!(j["final_url"], "https://www.flags.test/a/b", "{j}");
    // --funnel-steps 0: the quiz was left alone.
    assert!(
        !server
            .requests()
            .iter()
            .any(|q| q.target.starts_with("/pick"))
    );

    server.clear_log();
    let out = run(&scan("2")).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        server
            .requests()
            .iter()
            .any(|q| q.target == "/pick?c=anxiety"),
        "--funnel-steps 2 walks the quiz, choosing the health-revealing option"
    );
}
