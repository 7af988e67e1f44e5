//! Dashboard accounts and sessions. A password is stored only as an argon2 PHC string (hashed by
//! `dashboard::auth`); an account without one signs in only through a reverse proxy's header. A
//! session is stored by the SHA-256 of its cookie's token, so the table never holds a token that
//! would sign anyone in; each session carries the CSRF token its forms must return.

use super::db::{Row, params};
use super::{Store, StoreError};

/// What an account may do: `viewer` reads, `approver` also approves baselines, queues scans and
/// mutes findings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Approver,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Approver => "approver",
        }
    }

    fn parse(s: &str) -> Result<Role, StoreError> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "approver" => Ok(Role::Approver),
            other => Err(StoreError::Decode(format!("unknown role '{other}'"))),
        }
    }
}

/// One account (never its hash).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct User {
    pub name: String,
    pub role: Role,
    /// Whether it can sign in with a password (else only through the proxy header).
    pub has_password: bool,
    pub created_at: String,
}

/// A live session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub user: String,
    pub role: Role,
    /// What every form of this session must send back.
    pub csrf: String,
    pub expires_at: String,
}

fn user_row(r: &Row) -> Result<User, StoreError> {
    Ok(User {
        name: r.get(0)?,
        role: Role::parse(&r.get::<String>(1)?)?,
        has_password: r.get::<Option<String>>(2)?.is_some(),
        created_at: r.get(3)?,
    })
}

impl Store {
    /// Adds an account; false when the name is taken.
    pub async fn add_user(
        &self,
        name: &str,
        password_hash: Option<&str>,
        role: Role,
    ) -> Result<bool, StoreError> {
        let n = self
            .db()
            .execute(
                "INSERT INTO users (name, password_hash, role, created_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (name) DO NOTHING",
                params![name, password_hash, role.as_str(), super::now()],
            )
            .await?;
        Ok(n == 1)
    }

    /// Every account, by name.
    pub async fn users(&self) -> Result<Vec<User>, StoreError> {
        self.db()
            .query(
                "SELECT name, role, password_hash, created_at FROM users ORDER BY name",
                &[],
            )
            .await?
            .iter()
            .map(user_row)
            .collect()
    }

    /// An account and its password hash (if it has one).
    pub async fn user_with_hash(
        &self,
        name: &str,
    ) -> Result<Option<(User, Option<String>)>, StoreError> {
        let row = self
            .db()
            .query_opt(
                "SELECT name, role, password_hash, created_at FROM users WHERE name = $1",
                params![name],
            )
            .await?;
        row.map(|r| Ok((user_row(&r)?, r.get(2)?))).transpose()
    }

    /// Changes an account's role (its sessions read the role anew on every request); false when
    /// there is no such account.
    pub async fn set_role(&self, name: &str, role: Role) -> Result<bool, StoreError> {
        let n = self
            .db()
            .execute(
                "UPDATE users SET role = $2 WHERE name = $1",
                params![name, role.as_str()],
            )
            .await?;
        Ok(n == 1)
    }

    /// Removes an account and ends its sessions; false when there was none.
    pub async fn remove_user(&self, name: &str) -> Result<bool, StoreError> {
        let mut tx = self.db().begin().await?;
        tx.execute("DELETE FROM sessions WHERE user_name = $1", params![name])
            .await?;
        let n = tx
            .execute("DELETE FROM users WHERE name = $1", params![name])
            .await?;
        tx.commit().await?;
        Ok(n == 1)
    }

    /// Stores a session (by its token's hash) until `expires_at`.
    pub async fn create_session(
        &self,
        token_hash: &str,
        user: &str,
        csrf: &str,
        expires_at: &str,
    ) -> Result<(), StoreError> {
        self.db()
            .execute(
                "INSERT INTO sessions (token_hash, user_name, csrf, created_at, expires_at)
                 VALUES ($1, $2, $3, $4, $5)",
                params![token_hash, user, csrf, super::now(), expires_at],
            )
            .await?;
        Ok(())
    }

    /// The session of a token hash, if it exists and has not expired at `now`.
    pub async fn session(
        &self,
        token_hash: &str,
        now: &str,
    ) -> Result<Option<Session>, StoreError> {
        let row = self
            .db()
            .query_opt(
                "SELECT s.user_name, u.role, s.csrf, s.expires_at FROM sessions s
                 JOIN users u ON u.name = s.user_name
                 WHERE s.token_hash = $1 AND s.expires_at > $2",
                params![token_hash, now],
            )
            .await?;
        row.map(|r| {
            Ok(Session {
                user: r.get(0)?,
                role: Role::parse(&r.get::<String>(1)?)?,
                csrf: r.get(2)?,
                expires_at: r.get(3)?,
            })
        })
        .transpose()
    }

    /// Ends a session (sign-out).
    pub async fn end_session(&self, token_hash: &str) -> Result<(), StoreError> {
        self.db()
            .execute(
                "DELETE FROM sessions WHERE token_hash = $1",
                params![token_hash],
            )
            .await?;
        Ok(())
    }

    /// Deletes sessions that expired before `now`; returns how many.
    pub async fn prune_sessions(&self, now: &str) -> Result<u64, StoreError> {
        self.db()
            .execute("DELETE FROM sessions WHERE expires_at <= $1", params![now])
            .await
    }
}
