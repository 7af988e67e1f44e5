//! The bundled demo: a small GLP-1 clinic site with a TikTok and a Meta pixel, served on
//! loopback with its tracker hosts mapped locally. Needs no internet and no database server.

use std::time::Duration;

use crate::fixture::{FixtureServer, Response, Site};

/// The demo site's host.
pub const DEMO_HOST: &str = "www.demo-clinic.test";
/// The demo's start URL.
pub const DEMO_URL: &str = "https://www.demo-clinic.test/";

const LAYOUT: &str = include_str!("../demo/layout.html");

fn page(title: &str, body: &str) -> String {
    LAYOUT.replace("{{title}}", title).replace("{{body}}", body)
}

/// The demo clinic and its trackers, as a fixture site.
pub fn site() -> Site {
    let h = DEMO_HOST;
    let robots = format!("User-agent: *\nAllow: /\nSitemap: https://{h}/sitemap.xml\n");
    let sitemap = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">
  <url><loc>https://{h}/</loc></url>
  <url><loc>https://{h}/patient-resources</loc></url>
</urlset>"#
    );
    Site::new()
        .page(h, "/", &page("Home", include_str!("../demo/home.html")))
        .page(
            h,
            "/services/semaglutide-weight-loss",
            &page(
                "Semaglutide weight loss",
                include_str!("../demo/service.html"),
            ),
        )
        .page(
            h,
            "/services/semaglutide-weight-loss/book",
            &page("Book a consultation", include_str!("../demo/book.html")),
        )
        .page(h, "/about", &page("About", include_str!("../demo/about.html")))
        .page(
            h,
            "/contact",
            &page("Contact", include_str!("../demo/contact.html")),
        )
        .page(
            h,
            "/contact/thank-you",
            &page("Thank you", "<h1>Thank you</h1>"),
        )
        .page(
            h,
            "/patient-resources",
            &page("Patient resources", include_str!("../demo/resources.html")),
        )
        .route(h, "/robots.txt", Response::ok("text/plain", robots))
        .route(h, "/sitemap.xml", Response::ok("application/xml", sitemap))
        .route(
            h,
            "/appointments",
            Response::html("<h1>Booked</h1>").header("set-cookie", "booking=1; Path=/"),
        )
        .route(
            "analytics.tiktok.com",
            "/i18n/pixel/events.js",
            Response::js(include_str!("../demo/tiktok-events.js")),
        )
        .route(
            "analytics.tiktok.com",
            "/api/v2/pixel",
            Response::ok("application/json", r#"{"code":0,"message":"OK"}"#).header(
                "set-cookie",
                "ttwid=1%7Cdemo; Domain=.tiktok.com; Path=/; Max-Age=31536000; Secure; SameSite=None",
            ),
        )
        .route(
            "connect.facebook.net",
            "/en_US/fbevents.js",
            Response::js(include_str!("../demo/fbevents.js")),
        )
        .route(
            "www.facebook.com",
            "/tr",
            Response::ok("image/gif", GIF.to_vec()).header(
                "set-cookie",
                "fr=0demo; Domain=.facebook.com; Path=/; Max-Age=7776000; Secure; HttpOnly; SameSite=None",
            ),
        )
}

/// A 1x1 transparent GIF.
pub const GIF: &[u8] = &[
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
    0xff, 0xff, 0xff, 0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b,
];

/// Starts the demo server.
pub async fn serve() -> std::io::Result<FixtureServer> {
    FixtureServer::start(site()).await
}

/// Scan settings suited to the demo (small, quick settle).
pub fn scan_options(server: &FixtureServer) -> crate::scan::ScanOptions {
    crate::scan::ScanOptions {
        start: DEMO_URL.to_string(),
        max_pages: 50,
        concurrency: 2,
        page_timeout: Duration::from_secs(20),
        settle_quiet: Duration::from_millis(300),
        settle_max: Duration::from_secs(3),
        browser_args: server.browser_args(),
        ..Default::default()
    }
}
