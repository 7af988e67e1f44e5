//! URL normalisation, same-site scope and trap detection.

use url::Url;

/// Query parameters that only track a visit; dropped so `?utm_source=x` is not a new page.
const TRACKING_PARAMS: &[&str] = &[
    "gclid",
    "gbraid",
    "wbraid",
    "dclid",
    "fbclid",
    "ttclid",
    "msclkid",
    "yclid",
    "twclid",
    "li_fat_id",
    "epik",
    "mc_cid",
    "mc_eid",
    "_hsenc",
    "_hsmi",
    "_ga",
    "_gl",
    "igshid",
    "srsltid",
    "ref_src",
    "s_kwcid",
    "ef_id",
];

/// Normalises a page URL for de-duplication: fragment dropped, tracking parameters folded,
/// default port and empty query removed, host lower-cased (the `url` crate does that).
/// Returns `None` for anything that is not http(s).
pub fn normalize(raw: &str) -> Option<Url> {
    let mut u = Url::parse(raw.trim()).ok()?;
    if u.scheme() != "http" && u.scheme() != "https" {
        return None;
    }
    u.host_str()?;
    u.set_fragment(None);
    if u.query().is_some() {
        let kept: Vec<(String, String)> = u
            .query_pairs()
            .filter(|(k, _)| {
                let k = k.to_ascii_lowercase();
                !k.starts_with("utm_") && !TRACKING_PARAMS.contains(&k.as_str())
            })
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        if kept.is_empty() {
            u.set_query(None);
        } else {
            u.query_pairs_mut().clear().extend_pairs(kept);
        }
    }
    Some(u)
}

/// The registrable domain (eTLD+1) of a host: `www.clinic.com` and `clinic.com` share one.
/// IP addresses and single-label hosts are their own site.
pub fn registrable_domain(host: &str) -> String {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if host.parse::<std::net::IpAddr>().is_ok() || host.starts_with('[') || !host.contains('.') {
        return host;
    }
    psl::domain_str(&host).unwrap_or(&host).to_string()
}

/// Whether `url`'s host belongs to the site whose registrable domain is `site`.
pub fn same_site(site: &str, host: &str) -> bool {
    !host.is_empty() && registrable_domain(host) == site
}

/// A path pattern for trap detection: numbers and long hex/uuid-like segments become
/// placeholders and query values are dropped, so `/calendar/2031/07?view=month` and
/// `/calendar/2031/08?view=week` share the pattern `/calendar/{n}/{n}?view`.
pub fn path_pattern(u: &Url) -> String {
    let mut out = String::new();
    for seg in u.path().split('/') {
        if seg.is_empty() {
            continue;
        }
        out.push('/');
        let digits = seg.chars().filter(|c| c.is_ascii_digit()).count();
        if digits > 0 && digits * 2 >= seg.len() {
            out.push_str("{n}");
        } else if seg.len() >= 16 && seg.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            out.push_str("{id}");
        } else {
            out.push_str(seg);
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    let mut keys: Vec<String> = u.query_pairs().map(|(k, _)| k.into_owned()).collect();
    keys.sort();
    keys.dedup();
    if !keys.is_empty() {
        out.push('?');
        out.push_str(&keys.join("&"));
    }
    out
}

/// Links a crawler must never follow: they end sessions or change state.
pub fn is_dangerous(u: &Url) -> bool {
    let text = format!("{}?{}", u.path(), u.query().unwrap_or("")).to_ascii_lowercase();
    [
        "logout",
        "log-out",
        "log_out",
        "signout",
        "sign-out",
        "sign_out",
        "logoff",
        "log-off",
        "unsubscribe",
        "action=delete",
        "/delete",
        "wp-login.php?action=logout",
        "cancel-appointment",
    ]
    .iter()
    .any(|w| text.contains(w))
}

/// File types that are downloads, not pages: recorded, never rendered.
pub fn is_download(u: &Url) -> bool {
    let path = u.path().to_ascii_lowercase();
    let Some(ext) = path
        .rsplit('/')
        .next()
        .and_then(|f| f.rsplit_once('.'))
        .map(|(_, e)| e)
    else {
        return false;
    };
    matches!(
        ext,
        "pdf"
            | "zip"
            | "gz"
            | "tgz"
            | "rar"
            | "7z"
            | "doc"
            | "docx"
            | "xls"
            | "xlsx"
            | "ppt"
            | "pptx"
            | "csv"
            | "jpg"
            | "jpeg"
            | "png"
            | "gif"
            | "webp"
            | "svg"
            | "ico"
            | "mp4"
            | "mov"
            | "avi"
            | "webm"
            | "mp3"
            | "wav"
            | "ogg"
            | "exe"
            | "dmg"
            | "msi"
            | "apk"
            | "iso"
            | "bin"
            | "ics"
            | "vcf"
            | "txt"
            | "json"
            | "css"
            | "js"
            | "woff"
            | "woff2"
            | "ttf"
            | "eot"
            | "rss"
            | "atom"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_drops_fragment_and_tracking() {
        let u = normalize("https://WWW.Clinic.com:443/a?utm_source=x&b=2&fbclid=1#top").unwrap();
        assert_eq!(u.as_str(), "https://www.clinic.com/a?b=2");
        let u = normalize("https://clinic.com/?utm_campaign=glp1").unwrap();
        assert_eq!(u.as_str(), "https://clinic.com/");
        assert!(normalize("mailto:a@b.c").is_none());
        assert!(normalize("javascript:void(0)").is_none());
        assert!(normalize("not a url").is_none());
    }

    #[test]
    fn www_and_apex_are_one_site() {
        let site = registrable_domain("www.clinic.com");
        assert_eq!(site, "clinic.com");
        assert!(same_site(&site, "clinic.com"));
        assert!(same_site(&site, "portal.clinic.com"));
        assert!(!same_site(&site, "clinic.com.evil.net"));
        assert_eq!(registrable_domain("a.b.co.uk"), "b.co.uk");
        assert_eq!(registrable_domain("www.clinic.test"), "clinic.test");
        assert_eq!(registrable_domain("127.0.0.1"), "127.0.0.1");
    }

    #[test]
    fn calendar_pages_share_a_pattern() {
        let a = normalize("https://c.com/calendar/2031/07?view=month").unwrap();
        let b = normalize("https://c.com/calendar/2031/08?view=week").unwrap();
        assert_eq!(path_pattern(&a), path_pattern(&b));
        assert_eq!(path_pattern(&a), "/calendar/{n}/{n}?view");
        let p = normalize("https://c.com/blog?page=7").unwrap();
        assert_eq!(path_pattern(&p), "/blog?page");
        let s = normalize("https://c.com/services/semaglutide").unwrap();
        assert_eq!(path_pattern(&s), "/services/semaglutide");
    }

    #[test]
    fn traps_and_downloads() {
        assert!(is_dangerous(
            &normalize("https://c.com/account/logout").unwrap()
        ));
        assert!(is_dangerous(
            &normalize("https://c.com/x?action=delete").unwrap()
        ));
        assert!(!is_dangerous(&normalize("https://c.com/login").unwrap()));
        assert!(is_download(
            &normalize("https://c.com/forms/intake.PDF").unwrap()
        ));
        assert!(!is_download(
            &normalize("https://c.com/services/botox").unwrap()
        ));
        assert!(!is_download(&normalize("https://c.com/page.html").unwrap()));
    }
}
