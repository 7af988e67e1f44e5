//! The form probe's canaries: unique synthetic values typed into a page's forms, and the search for
//! them in every third-party request in each encoding a pixel may use (plain, URL-encoded,
//! base64, lowercase, md5, sha1, sha256 — Meta's advanced matching sends the sha256 of the
//! trimmed, lowercased email).

use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::model::{Canary, Request};

/// The values one scan types. Unique per scan, synthetic, and recognisable.
pub fn canaries() -> Vec<Canary> {
    use rand::Rng;
    let mut rng = rand::rng();
    let token: String = (0..6)
        .map(|_| (b'a' + rng.random_range(0..26u8)) as char)
        .collect();
    let digits: u32 = rng.random_range(1000..10000);
    let c = |kind: &str, value: String| Canary {
        kind: kind.into(),
        value,
    };
    vec![
        c("email", format!("pw.canary.{token}@example.com")),
        // 555-01xx style numbers are reserved for fiction; the area code keeps the format valid.
        c("phone", format!("(202) 555-{digits}")),
        c("first_name", "Canary".into()),
        // Each kind has its own token, so a finding names the field that leaked.
        c("last_name", format!("Pw{token}l")),
        c("name", format!("Canary Pw{token}n")),
        c("dob", "1984-07-19".into()),
        c("text", format!("semaglutide refill question pw{token}t")),
    ]
}

/// A value a canary was found as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    pub kind: String,
    /// "plain", "url-encoded", "base64", "lowercase", "md5", "sha1", "sha256".
    pub encoding: &'static str,
    /// "url", "body" or "Referer header".
    pub location: &'static str,
}

fn normalized(c: &Canary) -> Vec<String> {
    match c.kind.as_str() {
        "phone" => {
            let digits: String = c.value.chars().filter(char::is_ascii_digit).collect();
            vec![digits.clone(), format!("1{digits}"), format!("+1{digits}")]
        }
        "dob" => vec![
            c.value.clone(),
            c.value.replace('-', ""),
            "07/19/1984".into(),
            "19840719".into(),
        ],
        // Names are matched on their unique part only: "Canary" alone is not evidence.
        "first_name" => vec![],
        "name" | "last_name" | "text" => {
            let unique = c
                .value
                .split_whitespace()
                .find(|w| w.to_ascii_lowercase().starts_with("pw"))
                .unwrap_or(&c.value)
                .to_string();
            vec![unique]
        }
        _ => vec![c.value.trim().to_string()],
    }
}

/// Every (needle, encoding) to look for, lowercased.
pub fn needles(c: &Canary) -> Vec<(String, &'static str)> {
    let mut out = Vec::new();
    for v in normalized(c) {
        if v.len() < 6 {
            continue;
        }
        let lower = v.to_lowercase();
        out.push((lower.clone(), "plain"));
        let enc: String = url::form_urlencoded::byte_serialize(v.as_bytes()).collect();
        if enc != v {
            out.push((enc.to_lowercase(), "url-encoded"));
        }
        for b in [v.as_str(), lower.as_str()] {
            out.push((
                base64::engine::general_purpose::STANDARD
                    .encode(b)
                    .trim_end_matches('=')
                    .to_lowercase(),
                "base64",
            ));
        }
        out.push((hex::encode(md5::Md5::digest(lower.as_bytes())), "md5"));
        out.push((hex::encode(sha1::Sha1::digest(lower.as_bytes())), "sha1"));
        out.push((hex::encode(Sha256::digest(lower.as_bytes())), "sha256"));
        out.push((hex::encode(Sha256::digest(v.as_bytes())), "sha256"));
    }
    out.sort();
    out.dedup();
    out
}

/// Every encoding of every canary, computed once, to search requests with.
#[derive(Debug, Clone, Default)]
pub struct Needles {
    by_kind: Vec<(String, Vec<(String, &'static str)>)>,
}

impl Needles {
    pub fn new(canaries: &[Canary]) -> Needles {
        Needles {
            by_kind: canaries
                .iter()
                .map(|c| (c.kind.clone(), needles(c)))
                .collect(),
        }
    }

    /// Whether there is anything to look for.
    pub fn is_empty(&self) -> bool {
        self.by_kind.iter().all(|(_, n)| n.is_empty())
    }

    /// Where the canaries turn up in a request's URL, body and Referer, each kind once.
    pub fn find(&self, url: &str, body: &str, referer: &str) -> Vec<Hit> {
        let url_lower = url.to_lowercase();
        let url_decoded = url::form_urlencoded::parse(url.as_bytes())
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&")
            .to_lowercase();
        let body = body.to_lowercase();
        let referer = referer.to_lowercase();
        let mut hits = Vec::new();
        for (kind, needles) in &self.by_kind {
            let found = needles.iter().find_map(|(needle, encoding)| {
                if url_lower.contains(needle) || url_decoded.contains(needle) {
                    Some((*encoding, "url"))
                } else if body.contains(needle) {
                    Some((*encoding, "body"))
                } else if referer.contains(needle) {
                    Some((*encoding, "Referer header"))
                } else {
                    None
                }
            });
            if let Some((encoding, location)) = found {
                hits.push(Hit {
                    kind: kind.clone(),
                    encoding,
                    location,
                });
            }
        }
        hits
    }
}

/// Where the canaries turn up in one request (URL, body, Referer), each kind once.
pub fn search(r: &Request, canaries: &[Canary]) -> Vec<Hit> {
    Needles::new(canaries).find(
        &r.url,
        r.post_data.as_deref().unwrap_or_default(),
        r.referer.as_deref().unwrap_or_default(),
    )
}

/// How a typed value was found: "as typed", "URL-encoded", "base64-encoded", "sha256-hashed".
pub fn encoding_text(encoding: &str) -> String {
    match encoding {
        "plain" => "as typed".into(),
        "url-encoded" => "URL-encoded".into(),
        "base64" => "base64-encoded".into(),
        hash => format!("{hash}-hashed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(url: &str, body: Option<&str>) -> Request {
        Request {
            url: url.into(),
            post_data: body.map(str::to_string),
            ..Default::default()
        }
    }

    #[test]
    fn finds_canaries_in_every_encoding() {
        let cs = canaries();
        let email = cs[0].value.clone();
        let sha = hex::encode(Sha256::digest(email.to_lowercase().as_bytes()));
        let hit = search(
            &req(&format!("https://www.facebook.com/tr?ud[em]={sha}"), None),
            &cs,
        );
        assert_eq!(hit[0].encoding, "sha256");
        assert_eq!(hit[0].kind, "email");
        let enc: String = url::form_urlencoded::byte_serialize(email.as_bytes()).collect();
        let hit = search(&req(&format!("https://t.test/p?e={enc}"), None), &cs);
        assert_eq!((hit[0].kind.as_str(), hit[0].location), ("email", "url"));
        let b64 = base64::engine::general_purpose::STANDARD.encode(&email);
        let hit = search(
            &req("https://t.test/p", Some(&format!("{{\"d\":\"{b64}\"}}"))),
            &cs,
        );
        assert_eq!((hit[0].encoding, hit[0].location), ("base64", "body"));
        let phone_digits: String = cs[1].value.chars().filter(char::is_ascii_digit).collect();
        let md5 = hex::encode(md5::Md5::digest(phone_digits.as_bytes()));
        let hit = search(&req(&format!("https://t.test/p?ph={md5}"), None), &cs);
        assert_eq!((hit[0].kind.as_str(), hit[0].encoding), ("phone", "md5"));
    }

    #[test]
    fn each_kind_is_found_on_its_own() {
        let cs = canaries();
        let text = cs.iter().find(|c| c.kind == "text").unwrap().value.clone();
        let hit = search(&req("https://t.test/p", Some(&text)), &cs);
        let kinds: Vec<&str> = hit.iter().map(|h| h.kind.as_str()).collect();
        assert_eq!(kinds, vec!["text"]);
    }

    #[test]
    fn nothing_found_in_unrelated_requests() {
        let cs = canaries();
        assert!(
            search(
                &req("https://t.test/p?name=Canary&dob=1999-01-01", Some("hello")),
                &cs
            )
            .is_empty()
        );
    }
}
