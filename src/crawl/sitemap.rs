//! robots.txt `Sitemap:` lines and sitemap / sitemap-index XML.

/// What a sitemap document lists.
#[derive(Debug, PartialEq, Eq)]
pub enum SitemapDoc {
    /// `<urlset>`: page URLs.
    Pages(Vec<String>),
    /// `<sitemapindex>`: more sitemaps.
    Index(Vec<String>),
}

/// The `Sitemap:` URLs of a robots.txt (case-insensitive, comments ignored).
pub fn robots_sitemaps(robots: &str) -> Vec<String> {
    robots
        .lines()
        .filter_map(|line| {
            let line = line.split('#').next()?.trim();
            let (k, v) = line.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("sitemap")
                .then(|| v.trim().to_string())
        })
        .filter(|v| !v.is_empty())
        .collect()
}

/// Parses a sitemap or sitemap index; `None` if the text is not one.
pub fn parse_sitemap(xml: &str) -> Option<SitemapDoc> {
    let doc = roxmltree::Document::parse(xml.trim_start_matches('\u{feff}').trim()).ok()?;
    let root = doc.root_element();
    let locs = |parent: &str| -> Vec<String> {
        root.children()
            .filter(|n| n.tag_name().name() == parent)
            .filter_map(|n| n.children().find(|c| c.tag_name().name() == "loc"))
            .filter_map(|loc| loc.text())
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .collect()
    };
    match root.tag_name().name() {
        "urlset" => Some(SitemapDoc::Pages(locs("url"))),
        "sitemapindex" => Some(SitemapDoc::Index(locs("sitemap"))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn robots_lines() {
        let r = "User-agent: *\nDisallow: /admin\nSITEMAP: https://c.com/s1.xml # main\nsitemap:https://c.com/s2.xml\n";
        assert_eq!(
            robots_sitemaps(r),
            vec!["https://c.com/s1.xml", "https://c.com/s2.xml"]
        );
    }

    #[test]
    fn urlset_and_index() {
        let set = r#"<?xml version="1.0"?><urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">
            <url><loc> https://c.com/a </loc></url><url><loc>https://c.com/b</loc><lastmod>2026</lastmod></url></urlset>"#;
        assert_eq!(
            parse_sitemap(set),
            Some(SitemapDoc::Pages(vec![
                "https://c.com/a".into(),
                "https://c.com/b".into()
            ]))
        );
        let idx = r#"<sitemapindex xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"><sitemap><loc>https://c.com/s.xml</loc></sitemap></sitemapindex>"#;
        assert_eq!(
            parse_sitemap(idx),
            Some(SitemapDoc::Index(vec!["https://c.com/s.xml".into()]))
        );
        assert_eq!(parse_sitemap("<html><body>404</body></html>"), None);
        assert_eq!(parse_sitemap("not xml"), None);
    }
}
