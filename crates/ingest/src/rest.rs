//! The Binance REST source: one `ticker/price?symbols=[...]` request per interval for all
//! symbols, with the politeness rules of [`crate::politeness`] around every request.
//!
//! Contract of [`RestPoller::next_batch`]: it returns the prices of one successful poll, or a
//! fatal error (an unknown symbol, a request Binance refuses as wrong). Everything transient —
//! 429, 418, 5xx, timeouts, malformed bodies, an open circuit — is waited out inside, logged and
//! counted; the caller only sees time pass. Dropping the future between polls loses nothing.

use std::time::Duration;

use tickstream_model::topology::BinanceRestSource;
use tickstream_model::{RawTick, Symbol};
use tokio::time::{Instant, sleep, sleep_until};
use tracing::{error, info, warn};

use crate::binance::{
    RestOutcome, classify_rest, rest_ticks, single_ticker_price_url, ticker_price_url,
    ticker_price_weight,
};
use crate::metrics::{IngestMetrics, WaitReason, now_ms};
use crate::politeness::{Backoff, BreakerState, CircuitBreaker, WeightTracker};
use crate::rng::SplitMix64;
use crate::source::{Politeness, SourceError};

/// Binance's used-weight header for the current minute.
const USED_WEIGHT_HEADER: &str = "x-mbx-used-weight-1m";

/// Polls Binance's REST ticker price endpoint.
pub struct RestPoller {
    client: reqwest::Client,
    base_url: String,
    url: String,
    symbols: Vec<Symbol>,
    interval: Duration,
    request_timeout: Duration,
    breaker: CircuitBreaker,
    backoff: Backoff,
    weight: WeightTracker,
    jitter: SplitMix64,
    next_poll: Option<Instant>,
    /// No request before this (Retry-After, weight, backoff). Kept here rather than in a local
    /// sleep so that a cancelled `next_batch` still honours it on the next call.
    not_before: Option<Instant>,
    metrics: IngestMetrics,
}

/// One request's result before classification.
enum Attempt {
    Answer(RestOutcome),
    /// Timeout, refused connection, reset: no answer at all.
    NoAnswer(String),
}

impl RestPoller {
    pub fn new(
        symbols: &[Symbol],
        config: &BinanceRestSource,
        politeness: &Politeness,
        metrics: &IngestMetrics,
    ) -> Result<Self, SourceError> {
        let client = reqwest::Client::builder()
            .user_agent(concat!("tickstream/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(config.request_timeout)
            .build()
            .map_err(|e| SourceError::Client(e.to_string()))?;
        let base_url = config.base_url.trim_end_matches('/').to_owned();
        Ok(Self {
            client,
            url: ticker_price_url(&base_url, symbols),
            base_url,
            symbols: symbols.to_vec(),
            interval: config.interval,
            request_timeout: config.request_timeout,
            breaker: CircuitBreaker::new(config.breaker.failures, config.breaker.open_for),
            backoff: politeness.backoff,
            weight: WeightTracker::new(politeness.weight_limit, politeness.weight_headroom),
            jitter: SplitMix64::new(now_ms() as u64),
            next_poll: None,
            not_before: None,
            metrics: metrics.clone(),
        })
    }

    /// The URL of the batched request.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The breaker's state now.
    pub fn breaker_state(&self) -> BreakerState {
        self.breaker.state(Instant::now().into_std())
    }

    /// Waits for the next interval, then polls until one request succeeds (see the module's
    /// contract). The first call polls at once.
    pub async fn next_batch(&mut self) -> Result<Vec<RawTick>, SourceError> {
        if let Some(due) = self.next_poll {
            sleep_until(due).await;
        }
        let started = Instant::now();
        let ticks = self.poll_until_success().await?;
        self.next_poll = Some(started + self.interval);
        Ok(ticks)
    }

    async fn poll_until_success(&mut self) -> Result<Vec<RawTick>, SourceError> {
        loop {
            if let Some(at) = self.not_before {
                sleep_until(at).await;
                self.not_before = None;
            }
            if let Some(wait) = self.breaker.wait_before_request(Instant::now().into_std()) {
                self.metrics.record_breaker(BreakerState::Open);
                sleep(wait).await;
                continue;
            }
            self.metrics
                .record_breaker(self.breaker.state(Instant::now().into_std()));
            let weight = ticker_price_weight(self.symbols.len());
            if let Some(wait) = self.weight.wait_before_request(weight, now_ms() as u64) {
                warn!(
                    ?wait,
                    "Binance used weight is near the per-minute limit; waiting for the next minute"
                );
                self.metrics.record_wait(WaitReason::Weight);
                self.hold(wait);
                continue;
            }
            let attempt = self.request(&self.url.clone()).await;
            let received_ms = now_ms();
            match attempt {
                Attempt::Answer(RestOutcome::Prices(prices)) => {
                    self.breaker.on_success();
                    self.metrics.record_breaker(BreakerState::Closed);
                    self.warn_about_missing(&prices);
                    return Ok(rest_ticks(prices, received_ms));
                }
                Attempt::Answer(RestOutcome::TooManyRequests(retry_after)) => {
                    let wait = retry_after.unwrap_or_else(|| self.next_backoff());
                    warn!(?wait, url = %self.url, "Binance answered 429 Too Many Requests; waiting Retry-After");
                    self.metrics.record_wait(WaitReason::TooManyRequests);
                    self.hold(wait);
                }
                Attempt::Answer(RestOutcome::Banned(retry_after)) => {
                    let wait = retry_after.unwrap_or(self.backoff.max);
                    error!(
                        ?wait,
                        url = %self.url,
                        "Binance answered 418: this IP is BANNED for sending after 429s; \
                         waiting Retry-After before any further request"
                    );
                    self.metrics.record_wait(WaitReason::Banned);
                    self.hold(wait);
                }
                Attempt::Answer(RestOutcome::InvalidSymbol) => {
                    return Err(self.find_unknown_symbols().await);
                }
                Attempt::Answer(RestOutcome::Rejected { status, body }) => {
                    return Err(SourceError::Rejected {
                        url: self.url.clone(),
                        status,
                        body,
                    });
                }
                Attempt::Answer(RestOutcome::ServerError { status }) => {
                    self.fail(&format!("HTTP {status}"));
                }
                Attempt::Answer(RestOutcome::Malformed { reason }) => {
                    self.metrics.malformed_responses.inc();
                    self.fail(&format!("malformed body: {reason}"));
                }
                Attempt::NoAnswer(reason) => self.fail(&reason),
            }
        }
    }

    /// Sends one GET; records its latency and the used-weight header.
    async fn request(&mut self, url: &str) -> Attempt {
        let started = Instant::now();
        let result = async {
            let response = self
                .client
                .get(url)
                .timeout(self.request_timeout)
                .send()
                .await?;
            let status = response.status().as_u16();
            let header = |name: &str| {
                response
                    .headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            let used_weight = header(USED_WEIGHT_HEADER).and_then(|v| v.trim().parse().ok());
            let retry_after = header("retry-after");
            let body = response.bytes().await?;
            Ok::<_, reqwest::Error>((status, used_weight, retry_after, body))
        }
        .await;
        self.metrics.record_request(started.elapsed());
        match result {
            Ok((status, used_weight, retry_after, body)) => {
                if let Some(used) = used_weight {
                    self.weight.observe(used, now_ms() as u64);
                }
                Attempt::Answer(classify_rest(status, retry_after.as_deref(), &body))
            }
            Err(e) if e.is_timeout() => Attempt::NoAnswer(format!(
                "no answer within the request timeout of {:?}",
                self.request_timeout
            )),
            Err(e) => Attempt::NoAnswer(format!("request failed: {e}")),
        }
    }

    fn next_backoff(&mut self) -> Duration {
        let attempt = self.breaker.consecutive_failures().saturating_sub(1);
        self.backoff.delay(attempt, self.jitter.next_f64())
    }

    /// A transient failure: count it against the breaker, then hold the next request for a
    /// backoff (or let the open circuit hold it).
    fn fail(&mut self, reason: &str) {
        let now = Instant::now().into_std();
        if self.breaker.on_failure(now) {
            self.metrics.record_breaker(BreakerState::Open);
            error!(
                url = %self.url,
                reason,
                failures = self.breaker.consecutive_failures(),
                "circuit breaker OPEN: no requests to Binance until a half-open probe"
            );
            return;
        }
        let wait = self.next_backoff();
        warn!(url = %self.url, reason, ?wait, failures = self.breaker.consecutive_failures(), "Binance request failed; retrying after backoff");
        self.hold(wait);
    }

    /// No request for `wait` from now.
    fn hold(&mut self, wait: Duration) {
        self.not_before = Some(Instant::now() + wait);
    }

    fn warn_about_missing(&self, prices: &[(Symbol, f64)]) {
        for symbol in &self.symbols {
            if !prices.iter().any(|(s, _)| s == symbol) {
                warn!(%symbol, "Binance's answer has no price for this symbol");
            }
        }
    }

    /// The batched request said `Invalid symbol.` without naming it: ask per symbol (weight 2
    /// each, once, at start-up) which ones Binance does not know.
    async fn find_unknown_symbols(&mut self) -> SourceError {
        let mut unknown = Vec::new();
        for symbol in self.symbols.clone() {
            let url = single_ticker_price_url(&self.base_url, &symbol);
            if let Attempt::Answer(RestOutcome::InvalidSymbol) = self.request(&url).await {
                unknown.push(symbol.as_str().to_owned());
            }
        }
        if unknown.is_empty() {
            info!("no single symbol was refused on its own; reporting them all");
            unknown = self.symbols.iter().map(|s| s.as_str().to_owned()).collect();
        }
        SourceError::UnknownSymbol {
            symbols: unknown,
            base_url: self.base_url.clone(),
        }
    }
}
