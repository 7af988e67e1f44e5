//! The webhook channel: a JSON POST whose `text` field is the plain-text alert (Slack, Mattermost
//! and Teams incoming webhooks accept it), with the structured alert alongside.

use std::time::Duration;

use super::{Alert, AlertError, SendError};
use crate::config::WebhookConfig;
use crate::report::untrusted::slack;

/// A webhook destination.
pub struct Webhook {
    client: reqwest::Client,
    url: String,
    /// The URL without path and query (which often hold a token), for logs and errors.
    shown: String,
}

impl Webhook {
    pub fn new(c: &WebhookConfig) -> Result<Webhook, AlertError> {
        let shown = url::Url::parse(&c.url)
            .map(|u| format!("{}://{}", u.scheme(), u.host_str().unwrap_or("")))
            .unwrap_or_else(|_| "webhook".into());
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(c.timeout_secs))
            .build()
            .map_err(|e| AlertError::Webhook {
                url: shown.clone(),
                message: e.to_string(),
            })?;
        Ok(Webhook {
            client,
            url: c.url.clone(),
            shown,
        })
    }

    /// Where it posts (scheme and host only).
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// The JSON body for an alert: `text` is the plain-text alert escaped for Slack's mrkdwn
    /// (`&`, `<`, `>`), so nothing a page wrote can mention, link or ping.
    pub fn body(alert: &Alert) -> serde_json::Value {
        let mut body = serde_json::json!({
            "text": format!("*{}*\n{}", slack(&alert.subject), slack(&alert.text)),
            "subject": slack(&alert.subject),
            "site": alert.site,
            "kind": alert.kind,
            "severity": alert.severity.as_str(),
            "scan_id": alert.scan_id,
        });
        if let (Some(obj), Some(extra)) = (body.as_object_mut(), alert.payload.as_object()) {
            for (k, v) in extra {
                obj.insert(k.clone(), v.clone());
            }
        }
        body
    }

    /// Posts one alert: 2xx is delivered; 408, 429, 5xx and network errors are retried; any
    /// other status is rejected.
    pub async fn send(&self, alert: &Alert) -> Result<(), SendError> {
        let resp = self
            .client
            .post(&self.url)
            .json(&Webhook::body(alert))
            .send()
            .await
            .map_err(|e| SendError::Retry(format!("{}: {}", self.shown, e.without_url())))?;
        let status = resp.status();
        if status.is_success() {
            Ok(())
        } else if status.as_u16() == 408 || status.as_u16() == 429 || status.is_server_error() {
            Err(SendError::Retry(format!("{}: HTTP {status}", self.shown)))
        } else {
            Err(SendError::Reject(format!("{}: HTTP {status}", self.shown)))
        }
    }
}
