//! pixelwatch: a tracking scanner for healthcare websites and a PHI-free Events API relay.
//!
//! The scanner (`pixelwatch` binary) drives a real headless Chromium over the Chrome DevTools
//! Protocol, records every request, cookie, storage entry, script and frame on every page of a
//! site, stores each scan (SQLite, or PostgreSQL for a fleet of workers) and reports it. The relay (`pixelwatch-relay` binary) accepts
//! first-party conversion events, gates them on consent, rebuilds them from an allowlist and
//! delivers them durably to the TikTok Events API.

pub mod alert;
pub mod analyze;
pub mod browser;
pub mod cli;
pub mod config;
pub mod crawl;
pub mod dashboard;
pub mod demo;
pub mod diff;
pub mod fixture;
pub mod fleet;
pub mod journey;
pub mod lexicon;
pub mod metrics;
pub mod model;
pub mod policy;
pub mod relay;
pub mod report;
pub mod rules;
pub mod scan;
pub mod screenshots;
pub mod settings;
pub mod store;
pub mod watch;
