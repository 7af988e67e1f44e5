//! Open one document in the browser and look at it: evaluate an expression, take a screenshot
//! at a given window size. For rendering our own reports and for tests; a scan uses tabs.

use std::time::Duration;

use serde_json::{Value, json};

use super::cdp::CdpError;
use super::guard::Guard;
use super::launch::LaunchOptions;
use super::pool::{Pool, PoolError};
use super::tab::Tab;

/// A browser with one tab.
pub struct Viewer {
    pool: Pool,
    tab: Tab,
}

impl Viewer {
    /// Starts a browser with `opts` and opens a tab.
    pub async fn launch(opts: &LaunchOptions) -> Result<Viewer, PoolError> {
        let pool = Pool::new(opts.clone(), Guard::default());
        let tab = pool.open_tab().await?;
        Ok(Viewer { pool, tab })
    }

    /// Navigates to `url` and waits for its load event; `false` when it did not load in `limit`.
    pub async fn open(&mut self, url: &str, limit: Duration) -> bool {
        self.tab.open_url(url, limit).await
    }

    /// Evaluates `expression` in the document and returns its value.
    pub async fn evaluate(&self, expression: &str) -> Result<Value, CdpError> {
        let res = self
            .tab
            .conn
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true}),
                Some(&self.tab.session),
            )
            .await?;
        Ok(res["result"]["value"].clone())
    }

    /// Lays pages out at `width` x `height` CSS pixels (`mobile` emulates a phone's viewport).
    pub async fn resize(&self, width: u32, height: u32, mobile: bool) -> Result<(), CdpError> {
        self.tab
            .conn
            .call(
                "Emulation.setDeviceMetricsOverride",
                json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile}),
                Some(&self.tab.session),
            )
            .await
            .map(|_| ())
    }

    /// A PNG of the first screen.
    pub async fn screenshot(&self) -> Result<Vec<u8>, CdpError> {
        self.tab.screenshot(Duration::from_secs(10)).await
    }

    /// Closes the tab and the browser.
    pub async fn close(self) {
        self.tab.close().await;
        self.pool.shutdown().await;
    }
}
