//! The real browser: launch Chromium, speak CDP, watch each page until it settles, record what
//! it does, and stay invisible while doing it.
//!
//! Rooms: `launch` (find and start Chromium), `cdp` (the raw JSON transport, private to this
//! module), `protocol` (lenient typed events), `pool` (the scan's browser, restarts, workers
//! outside tabs), `tab` (one visit), `capture` (events into a page record), `settle` (when a
//! page is done), `stealth` (what a page could check), `cookies` (who set what), `guard` and
//! `interact` (consent clicks and the side-effect-free form probe), `sandbox` (the probe's
//! throwaway browser context), `viewer` (open a document
//! and look at it, for reports and tests).

pub mod capture;
mod cdp;
mod collect;
pub mod cookies;
mod funnel;
pub mod guard;
pub mod interact;
mod journey;
pub mod launch;
pub mod pool;
mod protocol;
mod sandbox;
pub mod settle;
mod stealth;
pub mod tab;
pub mod viewer;

pub use cdp::CdpError;
pub use cookies::{CookieLedger, VisitCookies};
pub use guard::Guard;
pub use interact::Plan;
pub use launch::{LaunchError, LaunchOptions, find_browser};
pub use pool::{Pool, PoolError};
pub use tab::{Tab, Visit, VisitTiming};
pub use viewer::Viewer;
