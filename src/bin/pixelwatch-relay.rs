//! `pixelwatch-relay`: parse arguments, set up logging, call the library, map to an exit code.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use pixelwatch::relay::{self, audit, config::RelayConfig, error::RelayError};

/// Exit codes: 0 ok, 1 run error, 3 bad configuration or arguments.
const EXIT_RUN: u8 = 1;
const EXIT_CONFIG: u8 = 3;

#[derive(Parser)]
#[command(
    name = "pixelwatch-relay",
    version,
    about = "Consented, PHI-free conversion relay to the TikTok Events API"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the relay.
    Serve {
        /// Config file.
        #[arg(long, env = "PIXELWATCH_RELAY_CONFIG")]
        config: PathBuf,
    },
    /// Validate the config and the presence of secrets, then exit.
    CheckConfig {
        /// Config file.
        #[arg(long, env = "PIXELWATCH_RELAY_CONFIG")]
        config: PathBuf,
    },
    /// Show recent audit records (decisions and reason codes; never event values).
    Audit {
        /// Config file.
        #[arg(long, env = "PIXELWATCH_RELAY_CONFIG")]
        config: PathBuf,
        /// Number of records.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Only this decision: queued, delivered, dropped, blocked, dead_lettered.
        #[arg(long)]
        decision: Option<String>,
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// List dead-lettered events.
    DeadLetters {
        /// Config file.
        #[arg(long, env = "PIXELWATCH_RELAY_CONFIG")]
        config: PathBuf,
        /// Print JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Put dead-lettered events back in the outbox (all, or the given outbox ids).
    Replay {
        /// Config file.
        #[arg(long, env = "PIXELWATCH_RELAY_CONFIG")]
        config: PathBuf,
        /// Outbox ids to replay; all dead letters when omitted.
        #[arg(long = "id")]
        ids: Vec<i64>,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_CONFIG } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PIXELWATCH_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            let config_error = e.chain().any(|c| {
                c.downcast_ref::<relay::error::ConfigError>().is_some()
                    || matches!(
                        c.downcast_ref::<RelayError>(),
                        Some(RelayError::Config(_) | RelayError::NoToken { .. })
                    )
            });
            ExitCode::from(if config_error { EXIT_CONFIG } else { EXIT_RUN })
        }
    }
}

fn load(config: &Path) -> anyhow::Result<RelayConfig> {
    Ok(RelayConfig::load(config)?)
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { config } => {
            let cfg = load(&config)?;
            let secrets = cfg.load_secrets()?;
            let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            rt.block_on(relay::serve_until(cfg, secrets, shutdown_signal()))?;
            Ok(())
        }
        Command::CheckConfig { config } => {
            let cfg = load(&config)?;
            let secrets = cfg.load_secrets()?;
            if secrets.access_token.is_none() {
                return Err(RelayError::NoToken {
                    env: cfg.tiktok.access_token_env.clone(),
                }
                .into());
            }
            println!("config ok: {}", config.display());
            println!("  listen            {}", cfg.server.listen);
            println!("  database          {}", cfg.database.path.display());
            println!(
                "  allowed origins   {}",
                cfg.server.allowed_origins.join(", ")
            );
            println!(
                "  mappings          {}",
                cfg.mappings
                    .iter()
                    .map(|m| format!("{} -> {}", m.from, m.to))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            println!("  page categories   {}", cfg.page_categories.len());
            println!(
                "  consent basis     {}",
                cfg.consent
                    .legal_basis
                    .as_deref()
                    .unwrap_or("consent required")
            );
            println!(
                "  access token      present ({} or file)",
                cfg.tiktok.access_token_env
            );
            println!(
                "  hmac secret       {}",
                if secrets.hmac_secret.is_some() {
                    "present"
                } else {
                    "absent (signed calls disabled)"
                }
            );
            Ok(())
        }
        Command::Audit {
            config,
            limit,
            decision,
            json,
        } => {
            let cfg = load(&config)?;
            let rows = audit::recent(&cfg.database.path, limit, decision.as_deref())?;
            for r in rows {
                if json {
                    println!("{}", serde_json::to_string(&r)?);
                } else {
                    println!(
                        "{:>6} {} {:<7} {:<13} {:<10} {:<36} consent={} request={} {}",
                        r.id,
                        r.received_at,
                        r.source,
                        r.decision,
                        r.event.as_deref().unwrap_or("-"),
                        r.event_id.as_deref().unwrap_or("-"),
                        r.consent_id
                            .map(|c| c.to_string())
                            .or(r.legal_basis.clone())
                            .unwrap_or_else(|| "-".into()),
                        r.request_id.as_deref().unwrap_or("-"),
                        r.reasons.join(",")
                    );
                }
            }
            Ok(())
        }
        Command::DeadLetters { config, json } => {
            let cfg = load(&config)?;
            for d in audit::dead_letters(&cfg.database.path)? {
                if json {
                    println!("{}", serde_json::to_string(&d)?);
                } else {
                    println!(
                        "{:>6} {:<36} attempts={} {}",
                        d.id,
                        d.event_id,
                        d.attempts,
                        d.last_error.as_deref().unwrap_or("-")
                    );
                }
            }
            Ok(())
        }
        Command::Replay { config, ids } => {
            let cfg = load(&config)?;
            let n = audit::replay(&cfg.database.path, (!ids.is_empty()).then_some(&ids[..]))?;
            println!("replayed {n} dead letter(s); a running relay sends them on its next poll");
            Ok(())
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
