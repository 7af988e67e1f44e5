//! How a site is scanned, as one model: command-line flags, `[[site]]` blocks of a config file
//! and stored site rows all fill a [`ScanSettings`] whose every field is optional. Layers combine
//! with one [`ScanSettings::merge`] (the later layer wins: defaults < file or stored row < flags),
//! and the defaults live in one place, [`ScanOptions::default`], applied by
//! [`ScanSettings::apply`].

use std::path::PathBuf;
use std::time::Duration;

use crate::rules::consent::ConsentMode;
use crate::scan::ScanOptions;

/// Scan settings; `None` means "not set here" (a lower layer or the default applies).
#[derive(Debug, Clone, Default, PartialEq, clap::Args, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ScanSettings {
    /// Most pages to visit [default: 200].
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_pages: Option<usize>,
    /// Most link hops from the start URL [default: 5].
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_depth: Option<u32>,
    /// Most pages sharing one path pattern (guards infinite calendars, ?page=N+1) [default: 25].
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_per_pattern: Option<usize>,
    /// Browser tabs working in parallel; a tab spends most of a page waiting for late tags, so
    /// many tabs share 2 cores well [default: 12].
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<usize>,
    /// Seconds a page may take to load before it is stopped and recorded as errored [default: 30].
    #[arg(long = "page-timeout", value_name = "SECS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page_timeout_secs: Option<u64>,
    /// Milliseconds in which nothing new may happen before a page counts as settled (requests
    /// that can still complete and short timers are awaited first; heartbeats, sockets and
    /// streams are not) [default: 500].
    #[arg(long = "settle-quiet", value_name = "MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settle_quiet_ms: Option<u64>,
    /// Most milliseconds to watch a page after load (or after a click or submit) for late tags
    /// [default: 5000].
    #[arg(long = "settle-max", value_name = "MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settle_max_ms: Option<u64>,
    /// Only visit URLs matching this regex (repeatable).
    #[arg(long, value_name = "REGEX")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub include: Option<Vec<String>>,
    /// Never visit URLs matching this regex (repeatable).
    #[arg(long, value_name = "REGEX")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exclude: Option<Vec<String>>,
    /// Do not read robots.txt Sitemap lines and sitemap.xml.
    #[arg(long = "no-sitemap", num_args = 0, default_missing_value = "false")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sitemaps: Option<bool>,
    /// Argument passed to Chromium verbatim (repeatable), e.g. --browser-arg=--proxy-server=...
    #[arg(long = "browser-arg", value_name = "ARG", allow_hyphen_values = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub browser_args: Option<Vec<String>>,
    /// Consent banners: never click (none: everything that fires is pre-consent), press the
    /// banner's accept or reject button, or send the GPC opt-out (gpc) [default: none].
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consent: Option<ConsentMode>,
    /// Do not type canary values into forms (the probe never lets a typed value leave the
    /// browser: every request carrying one is recorded and failed, whoever it is addressed to).
    #[arg(long = "no-probe-forms", num_args = 0, default_missing_value = "false")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probe_forms: Option<bool>,
    /// For staging sites only: let the form probe's submissions (typed canary values included)
    /// through to this host of the scanned site, so confirmation pages and their conversion
    /// pixels are scanned. Never the default; never another host.
    #[arg(long, value_name = "HOST")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub submit_forms: Option<String>,
    /// Most steps of a multi-step flow (quiz, intake: option cards, radios, selects and "Next"
    /// buttons) the form probe walks on a page, choosing the most health-revealing option at
    /// each step; 0 walks none [default: 6].
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub funnel_steps: Option<usize>,
    /// A scripted journey (TOML: goto, click, type, select, wait_for, submit steps) to run after
    /// the crawl; repeatable. Findings name the journey and step. See docs/journeys.md.
    #[arg(long = "journey", value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub journeys: Option<Vec<PathBuf>>,
    /// Your own vendor rules directory (*.toml), added to the bundled rules.
    #[arg(long, value_name = "DIR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rules: Option<PathBuf>,
    /// Adblock-syntax filter list (e.g. EasyPrivacy) to catch unknown trackers (repeatable).
    #[arg(long = "filter-list", value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter_lists: Option<Vec<PathBuf>>,
}

impl ScanSettings {
    /// `over` on top of `self`: every field `over` sets wins.
    pub fn merge(self, over: ScanSettings) -> ScanSettings {
        ScanSettings {
            max_pages: over.max_pages.or(self.max_pages),
            max_depth: over.max_depth.or(self.max_depth),
            max_per_pattern: over.max_per_pattern.or(self.max_per_pattern),
            concurrency: over.concurrency.or(self.concurrency),
            page_timeout_secs: over.page_timeout_secs.or(self.page_timeout_secs),
            settle_quiet_ms: over.settle_quiet_ms.or(self.settle_quiet_ms),
            settle_max_ms: over.settle_max_ms.or(self.settle_max_ms),
            include: over.include.or(self.include),
            exclude: over.exclude.or(self.exclude),
            sitemaps: over.sitemaps.or(self.sitemaps),
            browser_args: over.browser_args.or(self.browser_args),
            consent: over.consent.or(self.consent),
            probe_forms: over.probe_forms.or(self.probe_forms),
            submit_forms: over.submit_forms.or(self.submit_forms),
            funnel_steps: over.funnel_steps.or(self.funnel_steps),
            journeys: over.journeys.or(self.journeys),
            rules: over.rules.or(self.rules),
            filter_lists: over.filter_lists.or(self.filter_lists),
        }
    }

    /// `base` with every field set here applied: the one conversion into a scan's options.
    pub fn apply(&self, base: ScanOptions) -> ScanOptions {
        let s = self.clone();
        ScanOptions {
            max_pages: s.max_pages.unwrap_or(base.max_pages),
            max_depth: s.max_depth.unwrap_or(base.max_depth),
            max_per_pattern: s.max_per_pattern.unwrap_or(base.max_per_pattern),
            concurrency: s.concurrency.unwrap_or(base.concurrency),
            page_timeout: s
                .page_timeout_secs
                .map_or(base.page_timeout, Duration::from_secs),
            settle_quiet: s
                .settle_quiet_ms
                .map_or(base.settle_quiet, Duration::from_millis),
            settle_max: s
                .settle_max_ms
                .map_or(base.settle_max, Duration::from_millis),
            include: s.include.unwrap_or(base.include),
            exclude: s.exclude.unwrap_or(base.exclude),
            sitemaps: s.sitemaps.unwrap_or(base.sitemaps),
            browser_args: s.browser_args.unwrap_or(base.browser_args),
            consent: s.consent.unwrap_or(base.consent),
            probe_forms: s.probe_forms.unwrap_or(base.probe_forms),
            submit_forms: s.submit_forms.or(base.submit_forms),
            funnel_steps: s.funnel_steps.unwrap_or(base.funnel_steps),
            journeys: s.journeys.unwrap_or(base.journeys),
            rules_dir: s.rules.or(base.rules_dir),
            filter_lists: s.filter_lists.unwrap_or(base.filter_lists),
            ..base
        }
    }

    /// The options for a scan of `start` (the defaults, with these settings applied).
    pub fn to_options(&self, start: &str, browser: Option<PathBuf>) -> ScanOptions {
        self.apply(ScanOptions {
            start: start.to_string(),
            browser,
            ..ScanOptions::default()
        })
    }

    /// Every field, the defaults filled in where these settings leave one open.
    pub fn effective(&self) -> ScanSettings {
        let o = self.to_options("", None);
        ScanSettings {
            max_pages: Some(o.max_pages),
            max_depth: Some(o.max_depth),
            max_per_pattern: Some(o.max_per_pattern),
            concurrency: Some(o.concurrency),
            page_timeout_secs: Some(o.page_timeout.as_secs()),
            settle_quiet_ms: Some(o.settle_quiet.as_millis() as u64),
            settle_max_ms: Some(o.settle_max.as_millis() as u64),
            include: Some(o.include),
            exclude: Some(o.exclude),
            sitemaps: Some(o.sitemaps),
            browser_args: Some(o.browser_args),
            consent: Some(o.consent),
            probe_forms: Some(o.probe_forms),
            submit_forms: o.submit_forms,
            funnel_steps: Some(o.funnel_steps),
            journeys: Some(o.journeys),
            rules: o.rules_dir,
            filter_lists: Some(o.filter_lists),
        }
    }

    /// Checks what can be checked before a scan: patterns compile, counts are at least 1.
    pub fn check(&self) -> Result<(), String> {
        for (key, patterns) in [("include", &self.include), ("exclude", &self.exclude)] {
            for p in patterns.iter().flatten() {
                regex::Regex::new(p).map_err(|e| format!("bad {key} pattern '{p}': {e}"))?;
            }
        }
        let zero = [
            ("max_pages", self.max_pages == Some(0)),
            ("concurrency", self.concurrency == Some(0)),
            ("page_timeout_secs", self.page_timeout_secs == Some(0)),
        ];
        if let Some((key, _)) = zero.iter().find(|(_, z)| *z) {
            return Err(format!("{key} must be at least 1"));
        }
        Ok(())
    }

    /// One `key = value` of a config file's `[[site]]` block as settings (an unknown key or a
    /// wrong type is an error naming the key).
    pub fn from_toml_pair(key: &str, value: toml::Value) -> Result<ScanSettings, String> {
        let mut t = toml::Table::new();
        t.insert(key.to_string(), value);
        toml::Value::Table(t)
            .try_into()
            .map_err(|e: toml::de::Error| format!("{key}: {}", e.message()))
    }

    /// Clears one field by its config-file name (`sites set --unset`).
    pub fn unset(&mut self, key: &str) -> Result<(), String> {
        // The field list is serde's: `{key: null}` parses exactly when `key` is a field.
        serde_json::from_value::<ScanSettings>(serde_json::json!({ key: null }))
            .map_err(|e| format!("cannot unset '{key}': {e}"))?;
        let mut map = match serde_json::to_value(&*self).expect("serializable") {
            serde_json::Value::Object(m) => m,
            _ => unreachable!("a struct serializes to an object"),
        };
        map.remove(key);
        *self = serde_json::from_value(serde_json::Value::Object(map)).expect("round trip");
        Ok(())
    }

    /// As stored in a site row (JSON, unset fields left out).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("serializable")
    }

    /// From a stored site row.
    pub fn from_json(json: &str) -> Result<ScanSettings, serde_json::Error> {
        serde_json::from_str(json)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        s: ScanSettings,
    }

    fn flags(args: &[&str]) -> ScanSettings {
        Flags::try_parse_from(std::iter::once("x").chain(args.iter().copied()))
            .unwrap()
            .s
    }

    #[test]
    fn flags_set_only_what_is_given_and_later_layers_win() {
        assert_eq!(flags(&[]), ScanSettings::default());
        let f = flags(&[
            "--max-pages",
            "7",
            "--no-sitemap",
            "--consent",
            "gpc",
            "--include",
            "a",
            "--include",
            "b",
        ]);
        assert_eq!(f.max_pages, Some(7));
        assert_eq!(f.sitemaps, Some(false));
        assert_eq!(f.probe_forms, None);
        assert_eq!(f.include, Some(vec!["a".to_string(), "b".to_string()]));
        let file: ScanSettings =
            toml::from_str("max_pages = 50\nmax_depth = 2\nprobe_forms = false").unwrap();
        let merged = file.merge(f);
        assert_eq!(merged.max_pages, Some(7), "the flag beats the file");
        assert_eq!(merged.max_depth, Some(2), "the file fills what flags leave");
        let o = merged.to_options("https://a.test/", None);
        assert_eq!((o.max_pages, o.max_depth, o.sitemaps), (7, 2, false));
        assert!(!o.probe_forms);
        assert_eq!(o.consent, ConsentMode::Gpc);
        let d = ScanOptions::default();
        assert_eq!(
            o.max_per_pattern, d.max_per_pattern,
            "defaults from one place"
        );
        assert_eq!(
            ScanSettings::default().effective().max_pages,
            Some(d.max_pages)
        );
    }

    #[test]
    fn the_defaults_help_shows_are_the_ones_a_scan_uses() {
        use clap::CommandFactory;
        let effective = serde_json::to_value(ScanSettings::default().effective()).unwrap();
        let mut checked = 0;
        for arg in Flags::command().get_arguments() {
            let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            let Some(shown) = help
                .split("[default: ")
                .nth(1)
                .and_then(|r| r.split(']').next())
            else {
                continue;
            };
            let id = arg.get_id().as_str();
            let used = match &effective[id] {
                serde_json::Value::String(s) => s.clone(),
                v => v.to_string(),
            };
            assert_eq!(shown, used, "--help of {id}");
            checked += 1;
        }
        assert_eq!(checked, 8);
    }

    #[test]
    fn stored_json_round_trips_and_unset_knows_the_fields() {
        let mut s = flags(&["--settle-max", "1500", "--rules", "r", "--no-probe-forms"]);
        let json = s.to_json();
        assert_eq!(
            json,
            r#"{"settle_max_ms":1500,"probe_forms":false,"rules":"r"}"#
        );
        assert_eq!(ScanSettings::from_json(&json).unwrap(), s);
        s.unset("rules").unwrap();
        assert_eq!(s.rules, None);
        let e = s.unset("max_pagez").unwrap_err();
        assert!(e.contains("max_pagez"), "{e}");
    }

    #[test]
    fn checks_name_the_setting() {
        let e = flags(&["--exclude", "("]).check().unwrap_err();
        assert!(e.contains("bad exclude pattern '('"), "{e}");
        let e = flags(&["--concurrency", "0"]).check().unwrap_err();
        assert!(e.contains("concurrency"), "{e}");
        let e =
            ScanSettings::from_toml_pair("max_pages", toml::Value::String("x".into())).unwrap_err();
        assert!(e.starts_with("max_pages: "), "{e}");
    }
}
