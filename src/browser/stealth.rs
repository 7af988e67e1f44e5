//! Being a visitor, not a scanner: what a page could check, and how we answer.
//!
//! Tag managers load some pixels only for "humans", so a scan a page can recognise misses
//! exactly what it exists to find. Protocol-native signals come first: routes from
//! `Page.navigatedWithinDocument`, cookies from `Set-Cookie` and the jar, DOM reads in isolated
//! worlds; `Runtime.enable` is never sent to a page or iframe session (a page can tell), and
//! there is no binding. The one main-world hook (`hook.js`, timers for the settle rules) adds no
//! property anywhere and keeps every patched function native-looking; we read it with
//! `Runtime.evaluate` through a global lexical name chosen at random per browser.
//!
//! The user agent drops "Headless" and carries matching client hints (an override without
//! `userAgentMetadata` empties `navigator.userAgentData.brands`), in workers too; each tab is
//! its own focused window (`newWindow`), so `outerWidth` is not 0 and focus checks pass.

use rand::Rng;
use serde_json::{Value, json};

/// Longest timer the settle rules wait for (ms).
pub const TIMER_BOUND_MS: u64 = 5_000;
/// Timers scheduled this long after load (or an interaction) are awaited (ms).
const TIMER_WINDOW_MS: u64 = 5_000;

/// How this browser presents itself, and the name of its hidden hook.
#[derive(Debug, Clone)]
pub struct Disguise {
    hook_name: String,
    hook_source: String,
    user_agent: String,
    metadata: Value,
    gpc: bool,
}

impl Disguise {
    /// From the browser's own `Browser.getVersion` answer; `gpc` sends the Global Privacy
    /// Control signal.
    pub fn new(version: &Value, gpc: bool) -> Disguise {
        let user_agent = version["userAgent"]
            .as_str()
            .unwrap_or_default()
            .replace("HeadlessChrome", "Chrome");
        let full = version["product"]
            .as_str()
            .and_then(|p| p.split('/').nth(1))
            .unwrap_or("0.0.0.0")
            .to_string();
        let mut rng = rand::rng();
        let hook_name: String = std::iter::once('_')
            .chain((0..14).map(|_| (b'a' + rng.random_range(0..26u8)) as char))
            .collect();
        let hook_source = include_str!("hook.js")
            .replace("__PIXELWATCH_HOOK__", &hook_name)
            .replace("__TIMER_BOUND__", &TIMER_BOUND_MS.to_string())
            .replace("__TIMER_WINDOW__", &TIMER_WINDOW_MS.to_string())
            .replace(
                "__WINDOW_WIDTH__",
                &super::launch::WINDOW_SIZE.0.to_string(),
            )
            .replace(
                "__WINDOW_HEIGHT__",
                &super::launch::WINDOW_SIZE.1.to_string(),
            )
            .replace("__GPC__", if gpc { "true" } else { "false" });
        let metadata = client_hints(&user_agent, &full);
        Disguise {
            hook_name,
            hook_source,
            user_agent,
            metadata,
            gpc,
        }
    }

    /// Parameters of `Network.setUserAgentOverride` (also valid for `Emulation.`).
    pub fn user_agent_override(&self) -> Value {
        json!({"userAgent": self.user_agent, "userAgentMetadata": self.metadata})
    }

    /// Headers every request carries (`Network.setExtraHTTPHeaders`), if any.
    pub fn extra_headers(&self) -> Option<Value> {
        self.gpc.then(|| json!({"headers": {"Sec-GPC": "1"}}))
    }

    /// The main-world hook, for `Page.addScriptToEvaluateOnNewDocument`.
    pub fn hook_source(&self) -> &str {
        &self.hook_source
    }

    /// An expression that returns the ms until each pending short timer is due.
    pub fn pending_timers_expression(&self) -> String {
        format!(
            "typeof {0} === 'object' ? {0}.pending() : null",
            self.hook_name
        )
    }

    /// An expression that opens a new window for awaited timers.
    pub fn arm_expression(&self) -> String {
        format!("typeof {0} === 'object' && {0}.arm()", self.hook_name)
    }
}

/// `userAgentMetadata` that matches a Chrome user agent string.
fn client_hints(user_agent: &str, full_version: &str) -> Value {
    let major = full_version.split('.').next().unwrap_or("0");
    let (platform, platform_version) = if user_agent.contains("Windows") {
        ("Windows", "10.0.0")
    } else if user_agent.contains("Mac OS X") {
        ("macOS", "14.5.0")
    } else if user_agent.contains("Android") {
        ("Android", "14.0.0")
    } else {
        ("Linux", "")
    };
    let arm = user_agent.contains("aarch64") || user_agent.contains("arm");
    json!({
        "brands": [
            {"brand": "Chromium", "version": major},
            {"brand": "Google Chrome", "version": major},
            {"brand": "Not.A/Brand", "version": "99"},
        ],
        "fullVersionList": [
            {"brand": "Chromium", "version": full_version},
            {"brand": "Google Chrome", "version": full_version},
            {"brand": "Not.A/Brand", "version": "99.0.0.0"},
        ],
        "fullVersion": full_version,
        "platform": platform,
        "platformVersion": platform_version,
        "architecture": if arm { "arm" } else { "x86" },
        "model": "",
        "mobile": user_agent.contains("Mobile"),
        "bitness": "64",
        "wow64": false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_match_the_user_agent_and_the_hook_name_is_random() {
        let v = json!({"product": "HeadlessChrome/156.0.8078.73",
            "userAgent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/156.0.0.0 Safari/537.36"});
        let a = Disguise::new(&v, false);
        let b = Disguise::new(&v, true);
        assert!(a.extra_headers().is_none());
        assert_eq!(b.extra_headers().unwrap()["headers"]["Sec-GPC"], "1");
        assert!(b.hook_source().contains("if (true)") && a.hook_source().contains("if (false)"));
        assert!(!a.user_agent.contains("Headless"));
        let o = a.user_agent_override();
        assert_eq!(o["userAgentMetadata"]["platform"], "Linux");
        assert_eq!(o["userAgentMetadata"]["brands"][0]["version"], "156");
        assert_eq!(o["userAgentMetadata"]["fullVersion"], "156.0.8078.73");
        assert_ne!(a.hook_name, b.hook_name);
        assert!(
            a.hook_source()
                .contains(&format!("const {} =", a.hook_name))
        );
        assert!(!a.hook_source().contains("__"), "every placeholder filled");
    }
}
