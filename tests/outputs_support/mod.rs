//! Checks every output format shares in tests: terminal-safe text, SARIF that the schema and
//! GitHub's upload rules accept, Markdown rendered as GitHub does, HTML opened in the real
//! headless Chromium (DOM dump and screenshots).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use pixelwatch::fixture::FixtureServer;
use serde_json::Value;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_pixelwatch");

/// Runs `pixelwatch ARGS` as a user would (without `PIXELWATCH_DB` from the environment).
pub async fn run(args: &[String]) -> Output {
    tokio::process::Command::new(BIN)
        .args(args)
        .env_remove("PIXELWATCH_DB")
        .output()
        .await
        .expect("binary runs")
}

pub fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Asserts an exit code, showing both streams when it differs.
pub fn assert_exit(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout:\n{}\nstderr:\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// `pixelwatch CMD URL` (scan or check) against a fixture server, with short settle times, no
/// sitemap and a database.
pub fn scan_command(cmd: &str, url: &str, db: &str, server: &FixtureServer) -> Vec<String> {
    let mut v = s(&[
        cmd,
        url,
        "--no-sitemap",
        "--settle-quiet",
        "200",
        "--settle-max",
        "1500",
        "--db",
        db,
    ]);
    v.extend(
        server
            .browser_args()
            .into_iter()
            .map(|a| format!("--browser-arg={a}")),
    );
    v
}

/// Characters that must never reach a terminal or a plain-text message from a page.
pub fn hidden(c: char) -> bool {
    (c.is_control() && c != '\n')
        || matches!(c, '\u{061c}' | '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}')
}

/// Text safe to print: no control or bidi character but newlines, no line longer than
/// `max_line`, and no line that a page faked (`fake_lines` are what a page tried to start a
/// line with).
pub fn assert_terminal_safe(what: &str, text: &str, max_line: usize, fake_lines: &[&str]) {
    if let Some(c) = text.chars().find(|c| hidden(*c)) {
        panic!("{what}: raw {c:?} in output:\n{text}");
    }
    for line in text.lines() {
        assert!(
            line.chars().count() <= max_line,
            "{what}: a line of {} characters:\n{line}",
            line.chars().count()
        );
        for fake in fake_lines {
            assert!(
                !line.trim_start().starts_with(fake),
                "{what}: a page started a line with {fake:?}:\n{text}"
            );
        }
    }
}

/// The Chromium to drive: `$CHROME`, else the Debian paths.
pub fn chromium() -> PathBuf {
    if let Some(p) = std::env::var_os("CHROME").filter(|p| Path::new(p).exists()) {
        return PathBuf::from(p);
    }
    [
        "/usr/lib/chromium/chromium",
        "/usr/bin/chromium",
        "/usr/bin/google-chrome",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
    .expect("Chromium is installed (scripts/setup.sh)")
}

fn headless(profile: &Path) -> Command {
    let mut c = Command::new(chromium());
    c.args([
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        // The report must not need the network: nothing resolves.
        "--host-resolver-rules=MAP * ~NOTFOUND",
    ])
    .arg(format!("--user-data-dir={}", profile.display()));
    c
}

/// The DOM of a local HTML file after Chromium parsed (and, for a test copy, scripted) it.
pub fn dump_dom(file: &Path, width: u32, height: u32) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = headless(profile.path())
        .arg(format!("--window-size={width},{height}"))
        .arg("--virtual-time-budget=2000")
        .arg("--dump-dom")
        .arg(format!("file://{}", file.display()))
        .output()
        .expect("chromium runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Opens a local HTML file in the real headless Chromium through the crate's own CDP client, at
/// a device size (`mobile`: a phone's viewport handling), with no network; evaluates `probe` (a
/// JavaScript expression) once the page has loaded, saves a PNG screenshot of the first screen,
/// and returns the probe's value.
pub async fn render_at(
    file: &Path,
    width: u32,
    height: u32,
    mobile: bool,
    probe: &str,
    png: &Path,
) -> Value {
    use pixelwatch::browser::{LaunchOptions, Viewer};
    let mut viewer = Viewer::launch(&LaunchOptions {
        executable: None,
        extra_args: vec!["--host-resolver-rules=MAP * ~NOTFOUND".into()],
        ..Default::default()
    })
    .await
    .expect("Chromium starts");
    viewer.resize(width, height, mobile).await.unwrap();
    assert!(
        viewer
            .open(
                &format!("file://{}", file.display()),
                std::time::Duration::from_secs(15)
            )
            .await,
        "the report loads"
    );
    let value = viewer.evaluate(probe).await.unwrap();
    std::fs::write(png, viewer.screenshot().await.unwrap()).unwrap();
    viewer.close().await;
    value
}

/// Width and height of a PNG file.
pub fn png_size(png: &Path) -> (u32, u32) {
    let bytes = std::fs::read(png).expect("the screenshot was written");
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "a PNG file");
    assert_eq!(&bytes[12..16], b"IHDR");
    let dim = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
    (dim(16), dim(20))
}

/// Markdown rendered as GitHub renders it (GFM tables, autolinks, strikethrough; raw HTML kept, so any that leaked would show).
pub fn render_markdown(md: &str) -> String {
    let mut o = comrak::Options::default();
    o.extension.table = true;
    o.extension.autolink = true;
    o.extension.strikethrough = true;
    o.render.r#unsafe = true;
    comrak::markdown_to_html(md, &o)
}

/// `html` with every `<code>…</code>` and `<pre>…</pre>` removed: what a reader sees as prose.
pub fn outside_code(html: &str) -> String {
    let mut s = html.to_string();
    for (open, close) in [("<pre", "</pre>"), ("<code", "</code>")] {
        while let Some(i) = s.find(open) {
            let Some(j) = s[i..].find(close) else { break };
            s.replace_range(i..i + j + close.len(), " ");
        }
    }
    s
}

/// Validates a SARIF file against the SARIF 2.1.0 schema (Python jsonschema, installed by
/// `scripts/setup.sh --test`).
pub fn assert_sarif_schema_valid(path: &Path) {
    let schema = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/sarif-2.1.0-rtm.5.json"
    );
    let check = Command::new("python3")
        .args([
            "-c",
            "import json, sys, jsonschema; jsonschema.validate(json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))); print('valid')",
        ])
        .arg(path)
        .arg(schema)
        .output()
        .expect("python3 runs (scripts/setup.sh --test installs jsonschema)");
    assert!(
        check.status.success(),
        "SARIF is not valid: {}",
        String::from_utf8_lossy(&check.stderr)
    );
}

/// GitHub code scanning's documented upload rules ("SARIF support for code scanning"): required
/// properties present and non-empty, limits respected, and every artifact URI relative (a URI
/// with a scheme that is not the checkout's `file` rejects the whole upload).
pub fn assert_github_accepts(sarif: &Value) {
    assert!(sarif["$schema"].as_str().is_some_and(|s| !s.is_empty()));
    assert_eq!(sarif["version"], "2.1.0");
    let runs = sarif["runs"].as_array().expect("runs[]");
    assert!(!runs.is_empty() && runs.len() <= 20, "runs per file");
    let scheme = regex::Regex::new(r"^[A-Za-z][A-Za-z0-9+.-]*:").unwrap();
    for run in runs {
        let driver = &run["tool"]["driver"];
        assert!(driver["name"].as_str().is_some_and(|s| !s.is_empty()));
        let rules = driver["rules"].as_array().expect("tool.driver.rules[]");
        assert!(rules.len() <= 25_000);
        let ids: Vec<&str> = rules.iter().map(|r| r["id"].as_str().unwrap()).collect();
        for r in rules {
            for field in ["shortDescription", "fullDescription", "help"] {
                let text = r[field]["text"].as_str().unwrap_or_default();
                assert!(!text.is_empty(), "rule {} lacks {field}.text", r["id"]);
                assert!(text.chars().count() <= 1024 || field == "help");
            }
            assert!(r["name"].as_str().is_none_or(|n| n.chars().count() <= 255));
            assert!(
                r["properties"]["tags"]
                    .as_array()
                    .is_none_or(|t| t.len() <= 20)
            );
        }
        let results = run["results"].as_array().expect("results[]");
        assert!(results.len() <= 25_000);
        for res in results {
            let rule = res["ruleId"].as_str().expect("ruleId");
            assert!(ids.contains(&rule), "ruleId {rule} is not among the rules");
            let text = res["message"]["text"].as_str().unwrap_or_default();
            assert!(!text.is_empty(), "message.text");
            assert!(
                !text.chars().any(hidden),
                "raw control in message: {text:?}"
            );
            let fp = res["partialFingerprints"]["primaryLocationLineHash"]
                .as_str()
                .expect("partialFingerprints.primaryLocationLineHash");
            assert!(!fp.is_empty());
            let locations = res["locations"].as_array().expect("locations[]");
            assert!((1..=10).contains(&locations.len()), "1 to 10 locations");
            let related = res["relatedLocations"]
                .as_array()
                .map(Vec::len)
                .unwrap_or(0);
            assert!(related <= 1000);
            for loc in locations
                .iter()
                .chain(res["relatedLocations"].as_array().into_iter().flatten())
            {
                let pl = &loc["physicalLocation"];
                let uri = pl["artifactLocation"]["uri"]
                    .as_str()
                    .expect("artifactLocation.uri");
                assert!(!uri.is_empty());
                assert!(!scheme.is_match(uri), "URI with a scheme: {uri}");
                assert!(
                    uri.bytes().all(|b| b.is_ascii_graphic()),
                    "URI with spaces or non-ASCII: {uri}"
                );
                for k in ["startLine", "startColumn", "endLine", "endColumn"] {
                    assert!(
                        pl["region"][k].as_u64().is_some_and(|n| n >= 1),
                        "region.{k}"
                    );
                }
            }
        }
    }
}

/// Every process below `pid`.
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut parent_of: Vec<(u32, u32)> = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may hold spaces, so read after the last ')'.
        let after = &stat[stat.rfind(')').map_or(0, |i| i + 1)..];
        if let Some(ppid) = after.split_whitespace().nth(1).and_then(|v| v.parse().ok()) {
            parent_of.push((p, ppid));
        }
    }
    let mut out = vec![];
    let mut frontier = vec![pid];
    while let Some(q) = frontier.pop() {
        for &(p, pp) in &parent_of {
            if pp == q {
                out.push(p);
                frontier.push(p);
            }
        }
    }
    out
}

/// Whether process `pid` is still running (a zombie waiting for its reaper counts as gone).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let after = &stat[stat.rfind(')').map_or(0, |i| i + 1)..];
            !matches!(after.split_whitespace().next(), Some("Z" | "X"))
        }
        Err(_) => false,
    }
}
