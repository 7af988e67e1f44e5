//! `pixelwatch-relay`: parse arguments, set up logging, call the library, map to an exit code.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use pixelwatch::relay::error::{AdminError, ConfigError, RelayError};
use pixelwatch::relay::outbox::Decision;
use pixelwatch::relay::{self, audit, config::RelayConfig};

/// Exit codes: 0 ok, 1 run error, 3 bad configuration or arguments.
const EXIT_RUN: u8 = 1;
const EXIT_CONFIG: u8 = 3;

#[derive(Parser)]
#[command(
    name = "pixelwatch-relay",
    version,
    about = "Consented, PHI-free conversion relay to the TikTok Events API and Meta Conversions API"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Audit decisions, as stored.
#[derive(Clone, Copy, ValueEnum)]
#[value(rename_all = "snake_case")]
enum DecisionArg {
    Queued,
    Delivered,
    Dropped,
    Blocked,
    DeadLettered,
}

impl From<DecisionArg> for Decision {
    fn from(d: DecisionArg) -> Decision {
        match d {
            DecisionArg::Queued => Decision::Queued,
            DecisionArg::Delivered => Decision::Delivered,
            DecisionArg::Dropped => Decision::Dropped,
            DecisionArg::Blocked => Decision::Blocked,
            DecisionArg::DeadLettered => Decision::DeadLettered,
        }
    }
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
        /// Validate everything except the presence of access tokens and the HMAC secret
        /// (for CI, where secrets are not available).
        #[arg(long)]
        no_secrets: bool,
    },
    /// Show recent audit records (decisions and reason codes; never event values).
    Audit {
        /// Config file.
        #[arg(long, env = "PIXELWATCH_RELAY_CONFIG")]
        config: PathBuf,
        /// Number of records.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Only this decision.
        #[arg(long, value_enum)]
        decision: Option<DecisionArg>,
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
        /// Outbox ids to replay; all dead letters when omitted. Every id must be a dead letter.
        #[arg(long = "id")]
        ids: Vec<i64>,
    },
    /// Print the audit reason an unknown field name gets in this database, to check a guess.
    FieldHash {
        /// Config file.
        #[arg(long, env = "PIXELWATCH_RELAY_CONFIG")]
        config: PathBuf,
        /// Field names.
        #[arg(required = true)]
        names: Vec<String>,
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
            ExitCode::from(exit_code(&e))
        }
    }
}

/// The one place that decides 1 (run error) vs 3 (configuration or arguments).
fn exit_code(e: &anyhow::Error) -> u8 {
    let config_error = e.chain().any(|c| {
        c.downcast_ref::<ConfigError>().is_some()
            || matches!(
                c.downcast_ref::<RelayError>(),
                Some(RelayError::Config(_) | RelayError::NoToken { .. })
            )
            || matches!(
                c.downcast_ref::<AdminError>(),
                Some(AdminError::NotDeadLetters { .. })
            )
    });
    if config_error { EXIT_CONFIG } else { EXIT_RUN }
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
        Command::CheckConfig { config, no_secrets } => check_config(&config, no_secrets),
        Command::Audit {
            config,
            limit,
            decision,
            json,
        } => {
            let cfg = load(&config)?;
            let rows = audit::recent(&cfg.database.path, limit, decision.map(Decision::from))?;
            for r in rows {
                if json {
                    println!("{}", serde_json::to_string(&r)?);
                } else {
                    let dests = r
                        .destinations
                        .as_object()
                        .map(|m| {
                            m.iter()
                                .map(|(k, v)| format!("{k}={}", v["state"].as_str().unwrap_or("?")))
                                .collect::<Vec<_>>()
                                .join(",")
                        })
                        .unwrap_or_default();
                    println!(
                        "{:>6} {} {:<7} {:<13} {:<10} {:<36} consent={} [{}] {}",
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
                        dests,
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
                        "{:>6} {:<8} {:<36} attempts={} {}",
                        d.id,
                        d.destination,
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
        Command::FieldHash { config, names } => {
            let cfg = load(&config)?;
            for n in names {
                println!("{}", audit::unknown_field_reason(&cfg.database.path, &n)?);
            }
            Ok(())
        }
    }
}

fn check_config(config: &Path, no_secrets: bool) -> anyhow::Result<()> {
    let cfg = load(config)?;
    let secrets = if no_secrets {
        None
    } else {
        let s = cfg.load_secrets()?;
        if let Some(d) = cfg.destinations.iter().find(|d| s.token(&d.name).is_none()) {
            return Err(RelayError::NoToken {
                destination: d.name.clone(),
                env: d.access_token_env.clone(),
            }
            .into());
        }
        Some(s)
    };
    println!("config ok: {}", config.display());
    println!("  listen            {}", cfg.server.listen);
    println!("  database          {}", cfg.database.path.display());
    println!(
        "  allowed origins   {}",
        cfg.server.allowed_origins.join(", ")
    );
    for d in &cfg.destinations {
        println!(
            "  destination       {} ({}, {} events per request{})",
            d.name,
            d.kind.as_str(),
            d.batch_size,
            d.test_event_code
                .as_deref()
                .map(|c| format!(", test code {c}"))
                .unwrap_or_default()
        );
        println!(
            "    mappings        {}",
            d.mappings
                .iter()
                .map(|m| format!("{} -> {}", m.from, m.to))
                .collect::<Vec<_>>()
                .join(", ")
        );
        println!(
            "    access token    {}",
            if secrets.is_some() {
                format!("present ({} or file)", d.access_token_env)
            } else {
                format!(
                    "not checked (--no-secrets; expected in {} or file)",
                    d.access_token_env
                )
            }
        );
    }
    println!("  page categories   {}", cfg.page_categories.len());
    println!(
        "  consent basis     {}",
        cfg.consent
            .legal_basis
            .as_deref()
            .unwrap_or("consent required")
    );
    println!(
        "  hmac secret       {}",
        match &secrets {
            None => "not checked (--no-secrets)",
            Some(s) if s.hmac_secret.is_some() => "present",
            Some(_) => "absent (signed calls disabled)",
        }
    );
    Ok(())
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
