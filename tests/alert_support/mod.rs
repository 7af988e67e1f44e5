//! Real local things for alert and watch tests: a clinic site whose TikTok pixel can be switched
//! on, an SMTP server over TCP that stores what it receives (and can refuse DATA with 451, or
//! speak TLS), and helpers to read the MIME message it got.

#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use pixelwatch::fixture::{Response, Site};

use base64::Engine as _;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// The clinic's host.
pub const HOST: &str = "www.clinic.test";

/// Version 1 has no pixel; once `changed` is set, the TikTok pixel loads on one deep page.
pub fn site(changed: Arc<AtomicBool>) -> Site {
    Site::new()
        .handler(HOST, "/", move |req| {
            let path = req.target.split('?').next().unwrap_or("/");
            let pixel = if changed.load(Ordering::SeqCst) && path == "/services/deep/booking" {
                r#"<script src="https://analytics.tiktok.com/i18n/pixel/events.js"></script>"#
            } else {
                ""
            };
            let body = match path {
                "/" => r#"<a href="/services">Services</a>"#,
                "/services" => r#"<a href="/services/deep/booking">Book</a>"#,
                "/services/deep/booking" => "<h1>Book</h1>",
                _ => return Response::status(404),
            };
            Response::html(format!(
                "<html><head>{pixel}</head><body>{body}</body></html>"
            ))
        })
        .route(
            "analytics.tiktok.com",
            "/i18n/pixel/events.js",
            Response::js("1;"),
        )
}

/// One message the server accepted.
#[derive(Debug, Clone)]
pub struct Received {
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    pub data: String,
}

/// A minimal SMTP server: 220, EHLO/HELO 250, MAIL/RCPT 250, DATA 354 ... "." 250, QUIT 221.
pub struct SmtpSink {
    port: u16,
    received: Arc<Mutex<Vec<Received>>>,
    data_attempts: Arc<AtomicUsize>,
    refuse: Arc<AtomicBool>,
    auths: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SmtpSink {
    pub async fn start() -> SmtpSink {
        SmtpSink::start_with(None).await
    }

    /// A server speaking TLS from the first byte (SMTPS) with a self-signed certificate for
    /// 127.0.0.1; returns it and the certificate (PEM) to trust.
    pub async fn start_tls() -> (SmtpSink, String) {
        let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
        let pem = cert.cert.pem();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        (SmtpSink::start_with(Some(acceptor)).await, pem)
    }

    async fn start_with(tls: Option<tokio_rustls::TlsAcceptor>) -> SmtpSink {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let data_attempts = Arc::new(AtomicUsize::new(0));
        let refuse = Arc::new(AtomicBool::new(false));
        let auths = Arc::new(Mutex::new(Vec::new()));
        let (r, d, f, a) = (
            received.clone(),
            data_attempts.clone(),
            refuse.clone(),
            auths.clone(),
        );
        let task = tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    continue;
                };
                let (r, d, f, a) = (r.clone(), d.clone(), f.clone(), a.clone());
                let tls = tls.clone();
                tokio::spawn(async move {
                    let _ = match tls {
                        Some(acceptor) => match acceptor.accept(sock).await {
                            Ok(s) => session(s, r, d, f, a).await,
                            Err(_) => Ok(()),
                        },
                        None => session(sock, r, d, f, a).await,
                    };
                });
            }
        });
        SmtpSink {
            port,
            received,
            data_attempts,
            refuse,
            auths,
            task,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Answer DATA with "451 try again later" (true) or accept (false).
    pub fn refuse(&self, on: bool) {
        self.refuse.store(on, Ordering::SeqCst);
    }

    pub fn messages(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Credentials received with AUTH PLAIN, as "user:password".
    pub fn auths(&self) -> Vec<String> {
        self.auths.lock().unwrap().clone()
    }

    /// How many DATA commands arrived (accepted or refused).
    pub fn data_attempts(&self) -> usize {
        self.data_attempts.load(Ordering::SeqCst)
    }

    /// An `[email]` config section pointing at this server.
    pub fn email_toml(&self) -> String {
        format!(
            "[email]\nhost = \"127.0.0.1\"\nport = {}\nsecurity = \"none\"\nfrom = \"pixelwatch <alerts@clinic.test>\"\nto = [\"privacy@clinic.test\"]\ntimeout_secs = 5\n",
            self.port
        )
    }
}

async fn session<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin>(
    sock: S,
    received: Arc<Mutex<Vec<Received>>>,
    data_attempts: Arc<AtomicUsize>,
    refuse: Arc<AtomicBool>,
    auths: Arc<Mutex<Vec<String>>>,
) -> std::io::Result<()> {
    let (rd, mut wr) = tokio::io::split(sock);
    let mut lines = BufReader::new(rd).lines();
    wr.write_all(b"220 sink.test ESMTP\r\n").await?;
    let mut from = String::new();
    let mut to = Vec::new();
    while let Some(line) = lines.next_line().await? {
        let upper = line.to_ascii_uppercase();
        if upper.starts_with("EHLO") {
            wr.write_all(b"250-sink.test\r\n250-AUTH PLAIN\r\n250 8BITMIME\r\n")
                .await?;
        } else if upper.starts_with("AUTH PLAIN ") {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(line[11..].trim())
                .unwrap_or_default();
            let parts: Vec<String> = raw
                .split(|b| *b == 0)
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .collect();
            auths.lock().unwrap().push(parts[1..].join(":"));
            wr.write_all(b"235 2.7.0 authenticated\r\n").await?;
        } else if upper.starts_with("HELO")
            || upper.starts_with("RSET")
            || upper.starts_with("NOOP")
        {
            wr.write_all(b"250 OK\r\n").await?;
        } else if upper.starts_with("MAIL FROM:") {
            from = line[10..].trim().to_string();
            to.clear();
            wr.write_all(b"250 OK\r\n").await?;
        } else if upper.starts_with("RCPT TO:") {
            to.push(line[8..].trim().to_string());
            wr.write_all(b"250 OK\r\n").await?;
        } else if upper == "DATA" {
            data_attempts.fetch_add(1, Ordering::SeqCst);
            if refuse.load(Ordering::SeqCst) {
                wr.write_all(b"451 4.3.0 try again later\r\n").await?;
                continue;
            }
            wr.write_all(b"354 end with .\r\n").await?;
            let mut data = String::new();
            while let Some(l) = lines.next_line().await? {
                if l == "." {
                    break;
                }
                let l = l
                    .strip_prefix('.')
                    .filter(|_| l.starts_with(".."))
                    .unwrap_or(&l);
                data.push_str(l);
                data.push('\n');
            }
            received.lock().unwrap().push(Received {
                mail_from: from.clone(),
                rcpt_to: to.clone(),
                data,
            });
            wr.write_all(b"250 OK queued\r\n").await?;
        } else if upper.starts_with("QUIT") {
            wr.write_all(b"221 bye\r\n").await?;
            wr.flush().await?;
            let _ = wr.shutdown().await;
            return Ok(());
        } else {
            wr.write_all(b"502 not implemented\r\n").await?;
        }
    }
    Ok(())
}

/// A parsed message: unfolded, decoded headers and the decoded text and HTML parts.
#[derive(Debug)]
pub struct Mail {
    pub headers: Vec<(String, String)>,
    pub text: Option<String>,
    pub html: Option<String>,
}

impl Mail {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn split_headers(raw: &str) -> (Vec<(String, String)>, String) {
    let (head, body) = raw.split_once("\n\n").unwrap_or((raw, ""));
    let unfolded = head.replace("\n ", " ").replace("\n\t", " ");
    let headers = unfolded
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), decode_words(v.trim())))
        .collect();
    (headers, body.to_string())
}

/// Decodes RFC 2047 encoded words (`=?utf-8?b?...?=` and `?q?`).
fn decode_words(v: &str) -> String {
    let mut out = String::new();
    for word in v.split(' ') {
        let piece = if let Some(inner) = word.strip_prefix("=?").and_then(|w| w.strip_suffix("?="))
        {
            let mut p = inner.splitn(3, '?');
            let (_, enc, text) = (p.next(), p.next().unwrap_or(""), p.next().unwrap_or(""));
            if enc.eq_ignore_ascii_case("b") {
                String::from_utf8_lossy(
                    &base64::engine::general_purpose::STANDARD
                        .decode(text)
                        .unwrap_or_default(),
                )
                .into_owned()
            } else {
                qp(&text.replace('_', " "))
            }
        } else {
            format!("{word} ")
        };
        out.push_str(&piece);
    }
    out.trim_end().to_string()
}

fn qp(s: &str) -> String {
    let s = s.replace("=\n", "");
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'='
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses a multipart/alternative message as the sink stored it.
pub fn parse(data: &str) -> Mail {
    let (headers, body) = split_headers(data);
    let ct = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let boundary = ct
        .split("boundary=")
        .nth(1)
        .map(|b| {
            b.trim_matches('"')
                .split('"')
                .next()
                .unwrap_or("")
                .to_string()
        })
        .unwrap_or_default();
    let mut mail = Mail {
        headers,
        text: None,
        html: None,
    };
    if boundary.is_empty() {
        return mail;
    }
    for part in body.split(&format!("--{boundary}")) {
        let part = part.trim_start_matches('\n');
        if part.starts_with("--") || part.trim().is_empty() {
            continue;
        }
        let (h, b) = split_headers(part);
        let get = |n: &str| {
            h.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(n))
                .map(|(_, v)| v.to_ascii_lowercase())
                .unwrap_or_default()
        };
        let decoded = match get("content-transfer-encoding").as_str() {
            "base64" => String::from_utf8_lossy(
                &base64::engine::general_purpose::STANDARD
                    .decode(b.split_whitespace().collect::<String>())
                    .unwrap_or_default(),
            )
            .into_owned(),
            "quoted-printable" => qp(&b),
            _ => b,
        };
        let decoded = decoded.replace("\r\n", "\n");
        let decoded = decoded
            .strip_suffix('\n')
            .map(str::to_string)
            .unwrap_or(decoded);
        if get("content-type").starts_with("text/plain") {
            mail.text = Some(decoded);
        } else if get("content-type").starts_with("text/html") {
            mail.html = Some(decoded);
        }
    }
    mail
}
