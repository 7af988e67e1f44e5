//! A progress bar on a terminal: pages done / queued / errors and the current URL. Silent when
//! stderr is not a terminal or with `--quiet`.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::model::Page;
use crate::scan::Progress;

/// Terminal progress for a scan.
pub struct Bar {
    bar: ProgressBar,
}

impl Bar {
    /// A bar on stderr, hidden unless stderr is a terminal and not `quiet`.
    pub fn new(quiet: bool) -> Bar {
        let target = if quiet || !std::io::stderr().is_terminal() {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        };
        let bar = ProgressBar::with_draw_target(None, target);
        bar.set_style(
            ProgressStyle::with_template("{spinner} {elapsed:>4} {prefix} {wide_msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_prefix("0 done, 0 queued, 0 errors");
        bar.enable_steady_tick(Duration::from_millis(120));
        Bar { bar }
    }

    /// Removes the bar.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl Progress for Bar {
    fn page_started(&self, url: &str) {
        self.bar.set_message(super::untrusted::terminal(url));
    }

    fn page_finished(&self, _page: &Page, done: usize, queued: usize, errors: usize) {
        self.bar
            .set_prefix(format!("{done} done, {queued} queued, {errors} errors"));
    }

    fn browser_restarted(&self, reason: &str) {
        self.bar.println(format!(
            "browser restarted: {}",
            super::untrusted::terminal(reason)
        ));
    }
}
