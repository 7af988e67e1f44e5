//! `POST /v1/consent`: record a consent decision, ordered by its decision time.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{ApiError, AppState, Caller, St, admit, gpc, with_cors};
use crate::relay::consent::{ADVERTISING, ConsentRequest, NewConsent, subject_key, token_key};
use crate::relay::event::parse_json;
use crate::relay::ids;
use crate::relay::outbox::Stored;

/// `POST /v1/consent`
pub async fn post_consent(State(st): St, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let headers = parts.headers;
    let origin = st.allowed_origin(&headers);
    let resp = match consent_inner(&st, &headers, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    if !resp.status().is_success() {
        st.metrics.rejected(resp.status().as_u16());
    }
    with_cors(resp, &origin)
}

async fn consent_inner(
    st: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (body, caller) = admit(st, headers, body).await?;
    let invalid = |e| ApiError::bad_input("invalid_consent", e);
    let req = parse_json(&body)
        .and_then(ConsentRequest::from_json)
        .map_err(invalid)?;
    drop(body);
    let now = chrono::Utc::now().timestamp();
    let decided_at = st.consent_rules.check(&req, now).map_err(invalid)?;
    let bad = |field: &str, message: &str| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_consent",
            Some(field),
            message,
        )
    };
    if matches!(caller, Caller::Browser) && req.subject.is_some() {
        return Err(bad(
            "subject",
            "subject ids may only be set by signed back-end callers",
        ));
    }
    let (key, token) = match (&req.consent_token, &req.subject) {
        (Some(t), _) => match ids::check_token(t) {
            Ok(()) => (token_key(t), Some(t.clone())),
            Err(p) => {
                return Err(bad(
                    "consent_token",
                    &format!(
                        "malformed token ({}): 16-128 characters of A-Z, a-z, 0-9, - and _, no card-, phone- or date-shaped digits",
                        p.code()
                    ),
                ));
            }
        },
        (None, Some(s)) if !s.trim().is_empty() && s.len() <= 128 => (subject_key(s), None),
        (None, Some(_)) => return Err(bad("subject", "must be 1-128 characters")),
        (None, None) => {
            let t = ids::new_token();
            (token_key(&t), Some(t))
        }
    };
    let gpc = gpc(headers);
    let granted = req.granted && !(gpc && req.purposes.iter().any(|p| p == ADVERTISING));
    let rec = NewConsent {
        key_hash: key,
        granted,
        purposes: req.purposes,
        source: req.source,
        policy_version: req.policy_version,
        gpc,
        decided_at,
    };
    match st.outbox.consent(rec.clone(), caller.nonce()).await {
        Ok(Stored::Done(id)) => {
            let current = st.consent.record(id, &rec);
            Ok((
                StatusCode::CREATED,
                axum::Json(json!({
                    "consent_id": id, "consent_token": token, "granted": granted, "gpc": gpc,
                    "current": current,
                })),
            )
                .into_response())
        }
        Ok(Stored::Replayed) => Err(ApiError::replayed()),
        Err(e) => {
            tracing::error!(error = %e, "cannot store consent");
            Err(ApiError::storage("consent was"))
        }
    }
}
