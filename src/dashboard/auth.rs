//! Who is signed in, and whether a form really came from them.
//!
//! - Accounts live in the store (`store::accounts`); a password is kept only as an argon2id PHC
//!   string ([`hash_password`]). With `--auth-header NAME` the dashboard trusts an authenticating
//!   reverse proxy instead: the header names the account (created as a viewer the first time),
//!   and password sign-in is off.
//! - A session is a random token in a `__Host-` cookie (`Secure`, `HttpOnly`, `SameSite=Lax`,
//!   path `/`); the store keeps only its SHA-256. Sessions end after [`SESSION_HOURS`] or at
//!   sign-out.
//! - Every POST carries the session's CSRF token ([`Checked`] refuses the form otherwise); the
//!   sign-in form, before any session, carries a token that must equal its own cookie's.
//! - Tokens and passwords are never logged.

use axum::extract::{Form, FromRequest, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::{App, views};
use crate::store::StoreError;
use crate::store::accounts::{Role, Session};

/// The session cookie.
pub const SESSION_COOKIE: &str = "__Host-pixelwatch_session";
/// The sign-in form's own token, before a session exists.
const LOGIN_COOKIE: &str = "__Host-pixelwatch_login";
/// How long a session lasts.
pub const SESSION_HOURS: i64 = 12;
/// The shortest password `users add` accepts.
pub const MIN_PASSWORD: usize = 10;

/// Why a password cannot be stored.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("the password is shorter than {MIN_PASSWORD} characters")]
    TooShort,
    #[error("cannot hash the password: {0}")]
    Hash(String),
}

/// An argon2id PHC string of `password` with a fresh random salt.
pub fn hash_password(password: &str) -> Result<String, PasswordError> {
    use argon2::PasswordHasher as _;
    if password.chars().count() < MIN_PASSWORD {
        return Err(PasswordError::TooShort);
    }
    let salt = argon2::password_hash::SaltString::encode_b64(&rand::random::<[u8; 16]>())
        .map_err(|e| PasswordError::Hash(e.to_string()))?;
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| PasswordError::Hash(e.to_string()))
}

/// Whether `password` matches the PHC string `phc` (false for a malformed one).
pub fn verify_password(password: &str, phc: &str) -> bool {
    use argon2::PasswordVerifier as _;
    argon2::password_hash::PasswordHash::new(phc).is_ok_and(|h| {
        argon2::Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

/// Checked against when the account does not exist, so a wrong name costs what a wrong
/// password costs.
static DUMMY_HASH: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| hash_password("not anyone's password").expect("hashes"));

/// The signed-in account of a request.
#[derive(Debug, Clone)]
pub struct Signed {
    pub user: String,
    pub role: Role,
    /// The token this session's forms carry.
    pub csrf: String,
}

impl Signed {
    /// Whether the account may approve, queue scans and mute.
    pub fn may_act(&self) -> bool {
        self.role >= Role::Approver
    }
}

impl From<Session> for Signed {
    fn from(s: Session) -> Signed {
        Signed {
            user: s.user,
            role: s.role,
            csrf: s.csrf,
        }
    }
}

fn random_token() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Equal strings, in time that does not depend on where they differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// A cookie's value from the request.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn set_cookie(name: &str, value: &str, max_age_secs: i64) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age={max_age_secs}"
    ))
    .expect("cookie names and hex tokens are valid header text")
}

fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Starts a session for `user`; returns its cookie.
async fn start_session(app: &App, user: &str) -> Result<(Signed, HeaderValue), StoreError> {
    let token = random_token();
    let csrf = random_token();
    let expires = chrono::Utc::now() + chrono::Duration::hours(SESSION_HOURS);
    app.store
        .create_session(&token_hash(&token), user, &csrf, &rfc3339(expires))
        .await?;
    let role = match app.store.user_with_hash(user).await? {
        Some((u, _)) => u.role,
        None => Role::Viewer,
    };
    let signed = Signed {
        user: user.to_string(),
        role,
        csrf,
    };
    Ok((
        signed,
        set_cookie(SESSION_COOKIE, &token, SESSION_HOURS * 3600),
    ))
}

/// The account a request is signed in as, and a cookie to set when a session was just started
/// (proxy sign-in).
async fn resolve(
    app: &App,
    headers: &HeaderMap,
) -> Result<Option<(Signed, Option<HeaderValue>)>, StoreError> {
    let now = crate::scan::now_rfc3339();
    let session = match cookie(headers, SESSION_COOKIE) {
        Some(t) => app.store.session(&token_hash(t), &now).await?,
        None => None,
    };
    let Some(h) = &app.opts.auth_header else {
        return Ok(session.map(|s| (s.into(), None)));
    };
    let Some(name) = headers
        .get(h.as_str())
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|n| !n.is_empty() && n.len() <= 200)
    else {
        return Ok(None);
    };
    if let Some(s) = session.filter(|s| s.user == name) {
        return Ok(Some((s.into(), None)));
    }
    if app.store.add_user(name, None, Role::Viewer).await? {
        tracing::info!(
            user = name,
            "account created for a user the proxy named (viewer)"
        );
    }
    let (signed, cookie) = start_session(app, name).await?;
    app.store
        .record_action(name, "sign_in", None, "through the proxy's header")
        .await?;
    Ok(Some((signed, Some(cookie))))
}

/// Lets a request through only with a session (or the proxy's header); the account is put in
/// the request's extensions as [`Signed`].
pub(super) async fn require_session(
    State(app): State<App>,
    mut req: Request,
    next: Next,
) -> Response {
    match resolve(&app, req.headers()).await {
        Ok(Some((signed, cookie))) => {
            req.extensions_mut().insert(signed);
            let mut res = next.run(req).await;
            if let Some(c) = cookie {
                res.headers_mut().append(header::SET_COOKIE, c);
            }
            res
        }
        Ok(None) if app.opts.auth_header.is_some() => views::message(
            StatusCode::UNAUTHORIZED,
            "Not signed in",
            "This dashboard is signed in to through its reverse proxy, which did not name you.",
        ),
        Ok(None) if req.method() == axum::http::Method::GET => {
            let next = req
                .uri()
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/");
            let q = url::form_urlencoded::Serializer::new(String::new())
                .append_pair("next", next)
                .finish();
            Redirect::to(&format!("/login?{q}")).into_response()
        }
        Ok(None) => views::message(
            StatusCode::FORBIDDEN,
            "Not signed in",
            "Your session ended; sign in again and repeat the action.",
        ),
        Err(e) => views::store_error(&e),
    }
}

/// A form that proved it came from the signed-in session.
pub trait CsrfForm {
    fn csrf(&self) -> &str;
}

/// A POSTed form of the signed-in account whose CSRF token matched its session's; anything else
/// is refused with 403 before the handler runs.
pub struct Checked<T>(pub Signed, pub T);

impl<T, S> FromRequest<S> for Checked<T>
where
    T: serde::de::DeserializeOwned + CsrfForm + Send,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Response> {
        let signed = req.extensions().get::<Signed>().cloned().ok_or_else(|| {
            views::message(StatusCode::FORBIDDEN, "Not signed in", "Sign in first.")
        })?;
        let Form(form) = Form::<T>::from_request(req, state)
            .await
            .map_err(IntoResponse::into_response)?;
        if !same(form.csrf(), &signed.csrf) {
            tracing::warn!(user = %signed.user, "refused a form whose CSRF token is not its session's");
            return Err(views::message(
                StatusCode::FORBIDDEN,
                "Form refused",
                "This form did not come from your session (forged, or from a session that ended). Reload the page and try again.",
            ));
        }
        Ok(Checked(signed, form))
    }
}

#[derive(Deserialize)]
pub(super) struct LoginQuery {
    next: Option<String>,
}

/// A path on this dashboard to go back to after sign-in (never another site).
fn local_path(next: Option<&str>) -> String {
    match next {
        Some(p) if p.starts_with('/') && !p.starts_with("//") && !p.contains('\\') => p.into(),
        _ => "/".into(),
    }
}

/// The sign-in form. Its token stays the one already in the browser's cookie, if any: a
/// second sign-in form (another tab, a stray request sent to sign-in) must not invalidate the
/// first.
fn login_form(
    headers: &HeaderMap,
    status: StatusCode,
    next: &str,
    error: Option<&str>,
) -> Response {
    let token = cookie(headers, LOGIN_COOKIE)
        .filter(|t| t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_string)
        .unwrap_or_else(random_token);
    let mut res = views::login(next, &token, error);
    *res.status_mut() = status;
    res.headers_mut()
        .append(header::SET_COOKIE, set_cookie(LOGIN_COOKIE, &token, 1800));
    res
}

/// `GET /login`.
pub(super) async fn login_page(
    State(app): State<App>,
    headers: HeaderMap,
    Query(q): Query<LoginQuery>,
) -> Response {
    if app.opts.auth_header.is_some() {
        return views::message(
            StatusCode::OK,
            "Sign in at the proxy",
            "This dashboard is signed in to through its reverse proxy.",
        );
    }
    login_form(
        &headers,
        StatusCode::OK,
        &local_path(q.next.as_deref()),
        None,
    )
}

#[derive(Deserialize)]
pub(super) struct LoginForm {
    #[serde(default)]
    user: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    login_csrf: String,
    next: Option<String>,
}

/// `POST /login`.
pub(super) async fn login(
    State(app): State<App>,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> Response {
    let next = local_path(f.next.as_deref());
    if app.opts.auth_header.is_some() {
        return views::message(
            StatusCode::FORBIDDEN,
            "Sign in at the proxy",
            "Password sign-in is off: this dashboard trusts its reverse proxy.",
        );
    }
    let cookie_token = cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    if cookie_token.is_empty() || !same(cookie_token, &f.login_csrf) {
        return login_form(
            &headers,
            StatusCode::FORBIDDEN,
            &next,
            Some("The sign-in form expired or did not come from this dashboard; try again."),
        );
    }
    let found = match app.store.user_with_hash(f.user.trim()).await {
        Ok(u) => u,
        Err(e) => return views::store_error(&e),
    };
    let (user, hash) = match found {
        Some((u, Some(h))) => (Some(u), h),
        _ => (None, DUMMY_HASH.clone()),
    };
    let password = f.password;
    let ok = tokio::task::spawn_blocking(move || verify_password(&password, &hash))
        .await
        .unwrap_or(false);
    let Some(user) = user.filter(|_| ok) else {
        tracing::info!(user = %f.user.trim(), "sign-in refused");
        return login_form(
            &headers,
            StatusCode::UNAUTHORIZED,
            &next,
            Some("Wrong name or password."),
        );
    };
    let started = async {
        let (_, cookie) = start_session(&app, &user.name).await?;
        app.store
            .record_action(&user.name, "sign_in", None, "with a password")
            .await?;
        Ok::<_, StoreError>(cookie)
    }
    .await;
    match started {
        Ok(cookie) => {
            tracing::info!(user = %user.name, role = user.role.as_str(), "signed in");
            let mut res = Redirect::to(&next).into_response();
            res.headers_mut().append(header::SET_COOKIE, cookie);
            res.headers_mut()
                .append(header::SET_COOKIE, set_cookie(LOGIN_COOKIE, "", 0));
            res
        }
        Err(e) => views::store_error(&e),
    }
}

#[derive(Deserialize)]
pub(super) struct LogoutForm {
    #[serde(default)]
    csrf: String,
}

impl CsrfForm for LogoutForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// `POST /logout`: ends the session.
pub(super) async fn logout(
    State(app): State<App>,
    headers: HeaderMap,
    Checked(signed, _): Checked<LogoutForm>,
) -> Response {
    if let Some(t) = cookie(&headers, SESSION_COOKIE)
        && let Err(e) = app.store.end_session(&token_hash(t)).await
    {
        return views::store_error(&e);
    }
    if let Err(e) = app
        .store
        .record_action(&signed.user, "sign_out", None, "")
        .await
    {
        return views::store_error(&e);
    }
    tracing::info!(user = %signed.user, "signed out");
    let mut res = Redirect::to("/login").into_response();
    res.headers_mut()
        .append(header::SET_COOKIE, set_cookie(SESSION_COOKIE, "", 0));
    res
}

/// Deletes expired sessions every hour, for as long as the dashboard runs.
pub(super) async fn prune_sessions(store: crate::store::Store) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(3600));
    loop {
        every.tick().await;
        match store.prune_sessions(&crate::scan::now_rfc3339()).await {
            Ok(n) if n > 0 => tracing::debug!(sessions = n, "expired sessions deleted"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot delete expired sessions"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_with_argon2id_and_verify() {
        let h = hash_password("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify_password("correct horse battery", &h));
        assert!(!verify_password("correct horse batterx", &h));
        assert!(!verify_password("anything", "not a hash"));
        assert!(matches!(
            hash_password("short"),
            Err(PasswordError::TooShort)
        ));
    }

    #[test]
    fn only_local_paths_are_returned_to_after_sign_in() {
        assert_eq!(local_path(Some("/site?url=x")), "/site?url=x");
        for evil in ["//evil.test/", "https://evil.test/", "/\\evil.test", "x"] {
            assert_eq!(local_path(Some(evil)), "/", "{evil}");
        }
    }

    #[test]
    fn cookies_are_read_by_exact_name() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static(
                "a=1; __Host-pixelwatch_session=abc; x__Host-pixelwatch_session=no",
            ),
        );
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("abc"));
        assert!(same("abc", "abc") && !same("abc", "abd") && !same("abc", "ab"));
    }
}
