//! The scan report (`pixelwatch.scan/v1`): observations per page, findings and a summary.
//!
//! Field names are a contract (see DESIGN.md): adding fields is fine, renaming or removing one
//! needs a new schema id.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Schema id written into every report.
pub const SCAN_SCHEMA: &str = "pixelwatch.scan/v1";

/// One scan of one site.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ScanReport {
    pub schema: String,
    /// Database id, when the scan was stored.
    #[serde(default)]
    pub id: Option<i64>,
    /// The start URL as normalised.
    pub site: String,
    pub started_at: String,
    pub finished_at: String,
    /// "none" (never clicks a consent banner), "accept", "reject" or "gpc" (never clicks, sends
    /// the Global Privacy Control signal).
    pub consent_mode: String,
    pub pages: Vec<Page>,
    /// Same-site URLs found but not visited (limits, downloads, excluded, traps), with why.
    #[serde(default)]
    pub skipped: Vec<Skipped>,
    /// Links to other sites: recorded, never crawled.
    #[serde(default)]
    pub external_links: Vec<String>,
    /// Every cookie seen in the scan, once, with the page where it first appeared.
    #[serde(default)]
    pub cookies: Vec<CookieSeen>,
    /// The synthetic values typed into forms (empty with --no-probe-forms).
    #[serde(default)]
    pub canaries: Vec<Canary>,
    pub findings: Vec<Finding>,
    pub summary: Summary,
}

impl ScanReport {
    /// Why the scan says nothing about the site: not one page loaded (with the start page's
    /// reason). `None` when at least one page loaded.
    pub fn unscannable(&self) -> Option<String> {
        if self.pages.iter().any(|p| p.error.is_none()) {
            return None;
        }
        let start = self.pages.first()?;
        Some(format!(
            "no page of {} could be loaded: {}",
            self.site,
            start.error.as_deref().unwrap_or("unknown error")
        ))
    }
}

/// What one page did.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Page {
    pub url: String,
    pub final_url: String,
    /// HTTP status of the main document, if a response arrived.
    pub status: Option<u16>,
    /// Why the page failed or is incomplete (timeout, crash, network error); null when fine.
    pub error: Option<String>,
    /// Crawl depth from the start URL.
    #[serde(default)]
    pub depth: u32,
    /// How the page was found: "start", "link", "sitemap", "pushstate".
    #[serde(default)]
    pub found_via: String,
    #[serde(default)]
    pub title: Option<String>,
    /// Milliseconds from navigation to the end of the settle window.
    #[serde(default)]
    pub load_ms: u64,
    /// Milliseconds the page was watched after its load event before it counted as settled.
    #[serde(default)]
    pub settle_ms: u64,
    /// Why watching the page ended: `quiet` (nothing left that could still complete, no short
    /// timer pending, nothing new for the quiet window), `max` (cut at --settle-max) or
    /// `timeout` (the page did not load within --page-timeout).
    #[serde(default)]
    pub settle_reason: SettleReason,
    /// Forms on the page (after scripts ran).
    #[serde(default)]
    pub forms: usize,
    /// The consent banner button pressed on this page (with --consent accept|reject).
    #[serde(default)]
    pub consent_action: Option<String>,
    /// Form fields typed into with canary values.
    #[serde(default)]
    pub probed_fields: usize,
    /// Why the form probe did not run on a page that has forms (a gap in what was checked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_skipped: Option<String>,
    /// First-party form submissions the probe held back (never reached the site).
    #[serde(default)]
    pub blocked_submissions: Vec<String>,
    /// Why the page reveals health information about its visitor, when it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<PageHealth>,
    /// File name of the page's screenshot in the `--screenshots` directory (kept only for
    /// pages with a finding).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub screenshot: Option<String>,
    /// What a visitor sees, read for the page's health context (not written to the report).
    #[serde(skip)]
    pub text: PageText,
    pub requests: Vec<Request>,
    pub cookies: Vec<Cookie>,
    pub storage: Vec<StorageEntry>,
    pub scripts: Vec<Script>,
    pub frames: Vec<Frame>,
}

/// One request that left the browser (each redirect hop is its own entry).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Request {
    pub url: String,
    pub host: String,
    pub method: String,
    /// CDP resource type: Document, Script, Image, XHR, Fetch, Ping (beacon), ...
    pub resource_type: String,
    /// URL of the script or document that caused the request, if known.
    pub initiator: Option<String>,
    pub status: Option<u16>,
    pub third_party: bool,
    /// Request body as text (decoded from `postDataEntries`); capped, see `post_data_truncated`.
    pub post_data: Option<String>,
    #[serde(default)]
    pub post_data_truncated: bool,
    /// Rule id of the vendor this request belongs to, if any.
    pub vendor: Option<String>,
    /// The `Referer` header as sent.
    #[serde(default)]
    pub referer: Option<String>,
    /// URL of the frame document that issued it.
    #[serde(default)]
    pub frame_url: Option<String>,
    /// "page", "iframe", "worker", "service_worker", ...
    #[serde(default)]
    pub target: String,
    /// For the final hop of a redirect chain: the URLs before it, in order.
    #[serde(default)]
    pub redirect_chain: Vec<String>,
    /// Network error text when the request failed.
    #[serde(default)]
    pub error: Option<String>,
    /// When it was sent: "load" (before any interaction), "consent" (after the consent button),
    /// "probe" (after canary values were typed).
    #[serde(default)]
    pub phase: Phase,
    /// The step of a walked flow or a journey that caused it ("funnel step 2: chose 'Anxiety'").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
}

/// Defines a string-valued enum the report, policies and rules files spell in snake_case: a
/// typo in a file is an error with its line, and code compares enums, not strings.
macro_rules! words {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($(#[$vm])* #[serde(rename = $text)] $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The name written in reports and files.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.as_str() == other
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                $name::ALL
                    .iter()
                    .copied()
                    .find(|v| v.as_str() == s)
                    .ok_or_else(|| {
                        let all: Vec<&str> = $name::ALL.iter().map(|v| v.as_str()).collect();
                        format!("unknown {} '{s}' (one of {})", stringify!($name), all.join(", "))
                    })
            }
        }
    };
}

words! {
    /// When a request was sent.
    Phase {
        /// Before any interaction.
        Load => "load",
        /// After the consent button was pressed.
        Consent => "consent",
        /// After canary values were typed (the form probe, a walked flow).
        Probe => "probe",
        /// During a scripted journey.
        Journey => "journey",
    }
}

#[allow(clippy::derivable_impls)]
impl Default for Phase {
    fn default() -> Phase {
        Phase::Load
    }
}

words! {
    /// What a finding is about.
    FindingKind {
        Tracker => "tracker",
        PhiLeak => "phi_leak",
        NoConsent => "no_consent",
        GpcIgnored => "gpc_ignored",
        SessionReplay => "session_replay",
        ThirdPartyFrame => "third_party_frame",
    }
}

words! {
    /// Who set a cookie.
    SetBy {
        /// A `Set-Cookie` response header.
        Http => "http",
        /// `document.cookie` or the CookieStore.
        Script => "script",
    }
}

#[allow(clippy::derivable_impls)]
impl Default for SetBy {
    fn default() -> SetBy {
        SetBy::Script
    }
}

words! {
    /// What a vendor does (rules/vendors.toml `category`).
    Category {
        Advertising => "advertising",
        Analytics => "analytics",
        TagManager => "tag_manager",
        SessionReplay => "session_replay",
        Social => "social",
        Chat => "chat",
        Scheduling => "scheduling",
        Cdn => "cdn",
        Fonts => "fonts",
        Payments => "payments",
        Other => "other",
    }
}

impl Category {
    /// Categories whose requests are judged as trackers (CDNs, fonts, payments are not).
    pub fn is_tracking(self) -> bool {
        matches!(
            self,
            Category::Advertising
                | Category::Analytics
                | Category::TagManager
                | Category::SessionReplay
                | Category::Social
        )
    }
}

/// What a visitor sees on a page, bounded: the inputs of its health context.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PageText {
    /// h1 and h2 texts.
    pub headings: Vec<String>,
    /// Meta (or Open Graph) description.
    pub description: Option<String>,
    pub breadcrumbs: Vec<String>,
    /// JSON-LD `@type` values (`MedicalWebPage`, `MedicalCondition`, `Drug`, ...).
    pub schema_types: Vec<String>,
    /// Names of JSON-LD nodes with a medical type.
    pub schema_names: Vec<String>,
    /// Texts of buttons and submit inputs.
    pub buttons: Vec<String>,
    /// Choice controls: radios, checkboxes, selects, ARIA options.
    pub choices: usize,
    pub password_fields: usize,
    pub date_fields: usize,
    /// The main content's text (navigation, header and footer left out), capped.
    pub main_text: String,
    /// Texts of links on other pages that point to this one.
    pub link_texts: Vec<String>,
}

/// Why a page reveals health information about whoever visits it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct PageHealth {
    /// The health terms the page is about, most telling first.
    pub topics: Vec<String>,
    /// Lexicon category of the first topic.
    pub category: Option<String>,
    /// "critical" for sensitive topics (reproductive and sexual health, mental health,
    /// substance use, HIV, gender-affirming care), else "high".
    pub sensitivity: String,
    /// Page role id from rules/page-roles.toml (booking, intake, confirmation, ...).
    pub role: Option<String>,
    /// What a visitor sees that makes it so ("title names semaglutide", "page role: booking").
    pub reasons: Vec<String>,
}

/// Why watching a page ended.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Default)]
#[serde(rename_all = "lowercase")]
pub enum SettleReason {
    #[default]
    Quiet,
    Max,
    Timeout,
}

impl SettleReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SettleReason::Quiet => "quiet",
            SettleReason::Max => "max",
            SettleReason::Timeout => "timeout",
        }
    }
}

/// A synthetic value the form probe typed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Canary {
    /// "email", "phone", "first_name", "last_name", "name", "dob", "text".
    pub kind: String,
    pub value: String,
}

/// A cookie as the browser holds it. Values are never recorded.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Cookie {
    pub name: String,
    pub domain: String,
    pub path: String,
    /// Unix seconds; null for a session cookie.
    pub expires: Option<f64>,
    pub http_only: bool,
    pub secure: bool,
    pub same_site: Option<String>,
    pub third_party: bool,
    /// "http" (Set-Cookie) or "script" (document.cookie / CookieStore).
    pub set_by: SetBy,
    /// Partition key (CHIPS) when partitioned.
    #[serde(default)]
    pub partition_key: Option<String>,
    #[serde(default)]
    pub value_len: usize,
}

/// A cookie across the whole scan.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CookieSeen {
    #[serde(flatten)]
    pub cookie: Cookie,
    pub first_seen_page: String,
}

/// One localStorage or sessionStorage key. Values are never recorded.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct StorageEntry {
    pub origin: String,
    /// "local" or "session".
    pub kind: String,
    pub key: String,
    #[serde(default)]
    pub third_party: bool,
    /// The storage key when partitioned under a top-level site.
    #[serde(default)]
    pub storage_key: String,
    #[serde(default)]
    pub value_len: usize,
}

/// A script the page ran.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Script {
    /// null for inline scripts.
    pub url: Option<String>,
    /// sha256 of the source (hex); null when the body could not be read.
    pub sha256: Option<String>,
    pub third_party: bool,
}

/// A frame in the page (the main frame excluded).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Frame {
    pub url: String,
    pub third_party: bool,
}

/// Same-site URL that was not visited, with why.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Skipped {
    pub url: String,
    pub reason: String,
}

/// Something the rules judged.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Finding {
    pub kind: FindingKind,
    pub severity: Severity,
    pub vendor: Option<String>,
    pub page: String,
    pub request_url: Option<String>,
    pub evidence: String,
    /// "file:id" of the rule that fired.
    pub rule: String,
    /// The text that matched inside `evidence` (a health term, a typed value), for excerpts and
    /// highlighting; null when the finding is about presence alone.
    #[serde(default)]
    pub matched: Option<String>,
}

/// Finding severity, worst first when sorted.
#[derive(
    Debug,
    Clone,
    Copy,
    Serialize,
    Deserialize,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Critical,
    High,
    Medium,
    Low,
    Info,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::High => "high",
            Severity::Medium => "medium",
            Severity::Low => "low",
            Severity::Info => "info",
        }
    }
}

/// Totals for people and dashboards.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Summary {
    pub pages: usize,
    pub pages_errored: usize,
    pub requests: usize,
    pub third_party_requests: usize,
    /// Third-party host -> number of requests.
    pub third_party_hosts: BTreeMap<String, usize>,
    /// Vendor rule id -> number of requests.
    pub vendors: BTreeMap<String, usize>,
    pub cookies: usize,
    pub third_party_cookies: usize,
    pub storage_entries: usize,
    pub scripts: usize,
    pub frames: usize,
    pub skipped: usize,
    pub findings: usize,
    /// CDP messages the scanner could not decode (protocol drift); should be 0.
    pub cdp_decode_failures: u64,
    /// CDP events dropped because a tab's queue was full; should be 0.
    #[serde(default)]
    pub cdp_events_dropped: u64,
    /// Pages by why watching them ended ("quiet", "max", "timeout").
    #[serde(default)]
    pub settle_reasons: BTreeMap<String, usize>,
    /// Times the browser had to be restarted during the scan.
    #[serde(default)]
    pub browser_restarts: u32,
    /// Times the browser was replaced to free tabs the form probe parked (planned, not a crash).
    #[serde(default)]
    pub browser_replacements: u32,
    /// Pages with forms the form probe could not run on (each says why: `probe_skipped`).
    #[serde(default)]
    pub probes_skipped: usize,
    pub duration_ms: u64,
}
