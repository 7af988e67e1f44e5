//! Who each recorded thing belongs to: first or third party (by registrable domain, `www` and
//! apex as one site) and which vendor rule, if any, names a request.

use crate::crawl;
use crate::model::Page;
use crate::rules::Engine;

/// Marks third parties and vendors on everything recorded.
pub fn classify(pages: &mut [Page], site: &str, engine: &Engine) {
    let third = |url: &str| -> bool {
        let host = crate::browser::capture::host_of(url);
        !host.is_empty() && !crawl::same_site(site, &host)
    };
    for p in pages.iter_mut() {
        for r in &mut p.requests {
            r.third_party = !r.host.is_empty() && !crawl::same_site(site, &r.host);
            r.vendor = engine.match_url(&r.url).map(|m| m.vendor.id.clone());
        }
        for s in &mut p.scripts {
            s.third_party = s.url.as_deref().is_some_and(third);
        }
        for f in &mut p.frames {
            f.third_party = third(&f.url);
        }
        for st in &mut p.storage {
            st.third_party = third(&st.origin);
        }
    }
}
