//! The dashboard's commands: `dashboard` (serve it) and `users add|list|remove|role`.

use std::io::{BufRead, IsTerminal, Write};

use super::*;
use crate::dashboard::{self, auth};

pub(super) async fn dashboard_cmd(a: DashboardArgs) -> Result<Outcome, Error> {
    let config = a
        .config
        .as_deref()
        .map(crate::config::Config::read)
        .transpose()?;
    let browser = a
        .browser
        .or_else(|| config.as_ref().and_then(|c| c.browser.clone()));
    let store = open_store(&a.db).await?;
    if a.auth_header.is_none() && store.users().await?.is_empty() {
        eprintln!(
            "note: no account yet; add one with `pixelwatch users add NAME --role approver --db {}`",
            store.shown()
        );
    }
    let opts = dashboard::Options {
        auth_header: a.auth_header,
        config,
        browser,
    };
    // Printed once listening, with the port picked when `--listen` asked for port 0.
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        if let Ok(addr) = rx.await {
            println!("pixelwatch dashboard on http://{addr}/");
        }
    });
    dashboard::serve(
        store,
        opts,
        a.listen,
        Some(tx),
        crate::watch::shutdown_signal(),
    )
    .await?;
    Ok(Outcome::Clean)
}

/// Reads a password from standard input: prompted twice without echo on a terminal, else the
/// first line of what is piped in.
fn read_password(name: &str) -> Result<String, Error> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        let mut line = String::new();
        stdin.lock().read_line(&mut line).map_err(|e| {
            Error::Run(format!("cannot read the password from standard input: {e}"))
        })?;
        return Ok(line.trim_end_matches(['\n', '\r']).to_string());
    }
    let first = prompt_hidden(&format!("password for {name}: "))?;
    let second = prompt_hidden("again: ")?;
    if first != second {
        return Err(Error::Usage("the passwords differ".into()));
    }
    Ok(first)
}

/// One line from the terminal with echo off (restored afterwards, also on error).
fn prompt_hidden(prompt: &str) -> Result<String, Error> {
    use std::os::fd::AsRawFd;
    let fd = std::io::stdin().as_raw_fd();
    // SAFETY: termios is plain data; tcgetattr fills it for a valid descriptor.
    let mut old: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is standard input, `old` a valid termios.
    let have = unsafe { libc::tcgetattr(fd, &mut old) } == 0;
    if have {
        let mut quiet = old;
        quiet.c_lflag &= !libc::ECHO;
        // SAFETY: as above.
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &quiet) };
    }
    eprint!("{prompt}");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    let read = std::io::stdin().lock().read_line(&mut line);
    if have {
        // SAFETY: restores what tcgetattr read.
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &old) };
    }
    eprintln!();
    read.map_err(|e| Error::Run(format!("cannot read the password: {e}")))?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

/// An account name: 1 to 64 printable characters without spaces.
fn account_name(name: &str) -> Result<&str, Error> {
    let ok = !name.is_empty()
        && name.chars().count() <= 64
        && name.chars().all(|c| !c.is_control() && !c.is_whitespace());
    if ok {
        Ok(name)
    } else {
        Err(Error::Usage(format!(
            "'{}' is not an account name (1 to 64 characters, no spaces)",
            untrusted::terminal(name)
        )))
    }
}

pub(super) async fn users_cmd(cmd: UsersCommand) -> Result<Outcome, Error> {
    match cmd {
        UsersCommand::Add {
            name,
            role,
            no_password,
            db,
        } => {
            let name = account_name(&name)?;
            let hash = if no_password {
                None
            } else {
                let password = read_password(name)?;
                let hash = tokio::task::spawn_blocking(move || auth::hash_password(&password))
                    .await
                    .map_err(|e| Error::Run(format!("hashing failed: {e}")))?
                    .map_err(|e| match e {
                        auth::PasswordError::TooShort => Error::Usage(e.to_string()),
                        other => Error::Run(other.to_string()),
                    })?;
                Some(hash)
            };
            let store = open_store(&db).await?;
            if !store.add_user(name, hash.as_deref(), role).await? {
                return Err(Error::Usage(format!(
                    "account '{name}' exists; remove it first, or change its role with `pixelwatch users role {name} ROLE`"
                )));
            }
            store
                .record_action(
                    &cli_actor(),
                    "user_add",
                    None,
                    &format!("{name} ({})", role.as_str()),
                )
                .await?;
            println!("added {name} ({})", role.as_str());
        }
        UsersCommand::List { db, json } => {
            let users = open_store(&db).await?.users().await?;
            if json {
                for u in &users {
                    println!("{}", serde_json::to_string(u).expect("serializable"));
                }
            } else if users.is_empty() {
                println!("no accounts; add one with `pixelwatch users add NAME --role approver`");
            } else {
                println!("{:<24} {:<9} {:<9} ADDED", "NAME", "ROLE", "PASSWORD");
                for u in &users {
                    println!(
                        "{:<24} {:<9} {:<9} {}",
                        untrusted::terminal(&u.name),
                        u.role.as_str(),
                        if u.has_password { "yes" } else { "proxy" },
                        u.created_at
                    );
                }
            }
        }
        UsersCommand::Remove { name, db } => {
            let store = open_store(&db).await?;
            if !store.remove_user(&name).await? {
                return Err(Error::Usage(format!(
                    "no account '{}'",
                    untrusted::terminal(&name)
                )));
            }
            store
                .record_action(&cli_actor(), "user_remove", None, &name)
                .await?;
            println!(
                "removed {} and ended its sessions",
                untrusted::terminal(&name)
            );
        }
        UsersCommand::Role { name, role, db } => {
            let store = open_store(&db).await?;
            if !store.set_role(&name, role).await? {
                return Err(Error::Usage(format!(
                    "no account '{}'",
                    untrusted::terminal(&name)
                )));
            }
            store
                .record_action(
                    &cli_actor(),
                    "user_role",
                    None,
                    &format!("{name} ({})", role.as_str()),
                )
                .await?;
            println!("{} is now {}", untrusted::terminal(&name), role.as_str());
        }
    }
    Ok(Outcome::Clean)
}

/// Who acts from the command line, as the record of actions names them: `cli:$USER`.
pub(super) fn cli_actor() -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    format!("cli:{user}")
}
