//! The email channel: one multipart (plain text + HTML) message per alert over SMTP with lettre.

use std::time::Duration;

use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::{Alert, AlertError, SendError};
use crate::config::{EmailConfig, Security};

/// An SMTP destination.
pub struct Email {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Mailbox>,
    /// "host:port", for logs and errors.
    server: String,
}

impl Email {
    /// Builds the transport; reads the password now (from the environment or its file).
    pub fn new(c: &EmailConfig) -> Result<Email, AlertError> {
        let bad = |message: String| AlertError::Email {
            server: format!("{}:{}", c.host, c.port()),
            message,
        };
        let builder = match c.security {
            Security::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&c.host)
                .map_err(|e| bad(e.to_string()))?,
            Security::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&c.host)
                .map_err(|e| bad(e.to_string()))?,
            Security::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&c.host),
        };
        let mut builder = builder
            .port(c.port())
            .timeout(Some(Duration::from_secs(c.timeout_secs)));
        if let Some(ca) = &c.ca_file {
            let shown = ca.display();
            let pem = std::fs::read(ca)
                .map_err(|e| bad(format!("cannot read email.ca_file '{shown}': {e}")))?;
            let cert = Certificate::from_pem(&pem)
                .map_err(|e| bad(format!("email.ca_file '{shown}': {e}")))?;
            let params = TlsParameters::builder(c.host.clone())
                .add_root_certificate(cert)
                .build_rustls()
                .map_err(|e| bad(format!("email.ca_file '{shown}': {e}")))?;
            builder = builder.tls(match c.security {
                Security::Tls => Tls::Wrapper(params),
                Security::Starttls => Tls::Required(params),
                Security::None => Tls::None,
            });
        }
        if let Some(user) = &c.username {
            let password = c.password().map_err(bad)?.unwrap_or_default();
            builder = builder.credentials(Credentials::new(user.clone(), password));
        }
        let parse = |a: &String| {
            a.parse::<Mailbox>()
                .map_err(|e| bad(format!("email address '{a}': {e}")))
        };
        Ok(Email {
            transport: builder.build(),
            from: parse(&c.from)?,
            to: c.to.iter().map(parse).collect::<Result<_, _>>()?,
            server: format!("{}:{}", c.host, c.port()),
        })
    }

    /// The server, as "host:port".
    pub fn server(&self) -> &str {
        &self.server
    }

    /// Sends one alert; a 4xx reply, a timeout or a connection failure is worth retrying, a 5xx
    /// reply is not.
    pub async fn send(&self, alert: &Alert) -> Result<(), SendError> {
        let mut b = Message::builder()
            .from(self.from.clone())
            .subject(alert.subject.clone());
        for to in &self.to {
            b = b.to(to.clone());
        }
        let msg = b
            .multipart(MultiPart::alternative_plain_html(
                alert.text.clone(),
                alert.html.clone(),
            ))
            .map_err(|e| SendError::Reject(format!("cannot build the message: {e}")))?;
        match self.transport.send(msg).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_permanent() => Err(SendError::Reject(format!("{}: {e}", self.server))),
            Err(e) => Err(SendError::Retry(format!("{}: {e}", self.server))),
        }
    }
}
