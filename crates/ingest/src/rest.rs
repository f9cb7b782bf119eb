//! The Binance REST source: one `ticker/price?symbols=[...]` request per interval for all
//! symbols, with the politeness rules of [`crate::politeness`] around every request.
//!
//! Contract of [`RestPoller::next_batch`]: it returns the prices of one successful poll, or a
//! fatal error (an unknown symbol, a request Binance refuses as wrong). Everything transient —
//! 429, 418, 5xx, timeouts, malformed or oversized bodies, an open circuit — is waited out
//! inside, logged and counted; the caller only sees time pass. Dropping the future between
//! polls loses nothing. Bodies are read up to [`MAX_REST_BODY_BYTES`], `Retry-After` waits at
//! most [`MAX_RETRY_AFTER`], and prices for symbols the topology does not list are dropped
//! (see [`crate::limits`]).

use std::time::Duration;

use tickstream_model::topology::BinanceRestSource;
use tickstream_model::{RawTick, Symbol};
use tokio::time::{Instant, sleep, sleep_until};
use tracing::{error, info, warn};

use crate::binance::{
    RestOutcome, classify_rest, rest_ticks, single_ticker_price_url, ticker_price_url,
    ticker_price_weight,
};
use crate::limits::{
    CappedBody, MAX_REST_BODY_BYTES, Oversized, SymbolFilter, deadline_after, excerpt, require_tls,
};
use crate::metrics::{IngestMetrics, WaitReason, now_ms};
use crate::politeness::{
    Backoff, BreakerState, CircuitBreaker, MAX_RETRY_AFTER, WeightTracker, parse_retry_after,
};
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
    symbol_filter: SymbolFilter,
    metrics: IngestMetrics,
}

/// One request's result before classification.
enum Attempt {
    Answer(RestOutcome),
    /// Timeout, refused connection, reset: no answer at all.
    NoAnswer(String),
    /// A body over [`MAX_REST_BODY_BYTES`]: refused unread (or read no further).
    Oversized(Oversized),
}

/// One answer as read: the status, the headers ingest uses, the body within its cap.
struct Answer {
    status: u16,
    used_weight: Option<u32>,
    retry_after: Option<String>,
    body: Vec<u8>,
}

enum ReadError {
    Http(reqwest::Error),
    Oversized(Oversized),
}

impl From<reqwest::Error> for ReadError {
    fn from(e: reqwest::Error) -> Self {
        Self::Http(e)
    }
}

impl From<Oversized> for ReadError {
    fn from(e: Oversized) -> Self {
        Self::Oversized(e)
    }
}

impl RestPoller {
    pub fn new(
        symbols: &[Symbol],
        config: &BinanceRestSource,
        politeness: &Politeness,
        metrics: &IngestMetrics,
    ) -> Result<Self, SourceError> {
        require_tls(&config.base_url, "http://", config.allow_plain_transport)?;
        let client = reqwest::Client::builder()
            .user_agent(concat!("tickstream/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(config.request_timeout)
            // Redirects too: an https upstream must not send ingest to plain http.
            .https_only(!config.allow_plain_transport)
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
            symbol_filter: SymbolFilter::new(symbols, metrics.unknown_symbols.clone()),
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
        self.next_poll = Some(deadline_after(started, self.interval, self.interval));
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
                    let prices = self.configured_prices(prices);
                    if prices.is_empty() {
                        self.metrics.malformed_responses.inc();
                        self.fail("the answer has no price for any configured symbol");
                        continue;
                    }
                    self.breaker.on_success();
                    self.metrics.record_breaker(BreakerState::Closed);
                    self.metrics.source_up.set(1);
                    self.warn_about_missing(&prices);
                    return Ok(rest_ticks(prices, received_ms));
                }
                Attempt::Answer(RestOutcome::TooManyRequests(retry_after)) => {
                    let wait = retry_after.unwrap_or_else(|| self.next_backoff());
                    warn!(?wait, url = %self.url, "Binance answered 429 Too Many Requests; waiting Retry-After");
                    self.metrics.record_wait(WaitReason::TooManyRequests);
                    self.metrics.source_up.set(0);
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
                    self.metrics.source_up.set(0);
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
                Attempt::Oversized(reason) => {
                    self.metrics.oversized_responses.inc();
                    self.fail(&format!("refused: {reason}"));
                }
            }
        }
    }

    /// Sends one GET; records its latency and the used-weight header.
    async fn request(&mut self, url: &str) -> Attempt {
        let started = Instant::now();
        let result = self.read_answer(url).await;
        self.metrics.record_request(started.elapsed());
        match result {
            Ok(answer) => {
                if let Some(used) = answer.used_weight {
                    self.weight.observe(used, now_ms() as u64);
                }
                if matches!(answer.status, 418 | 429) {
                    note_odd_retry_after(answer.retry_after.as_deref());
                }
                Attempt::Answer(classify_rest(
                    answer.status,
                    answer.retry_after.as_deref(),
                    &answer.body,
                ))
            }
            Err(ReadError::Oversized(e)) => Attempt::Oversized(e),
            Err(ReadError::Http(e)) if e.is_timeout() => Attempt::NoAnswer(format!(
                "no answer within the request timeout of {:?}",
                self.request_timeout
            )),
            Err(ReadError::Http(e)) => Attempt::NoAnswer(format!("request failed: {e}")),
        }
    }

    /// The answer to a GET of `url`, its body read chunk by chunk up to
    /// [`MAX_REST_BODY_BYTES`] (the request timeout covers the body too).
    async fn read_answer(&self, url: &str) -> Result<Answer, ReadError> {
        let mut response = self
            .client
            .get(url)
            .timeout(self.request_timeout)
            .send()
            .await?;
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let used_weight = header(USED_WEIGHT_HEADER).and_then(|v| v.trim().parse().ok());
        let retry_after = header("retry-after");
        let mut body = CappedBody::new(MAX_REST_BODY_BYTES, response.content_length())?;
        while let Some(chunk) = response.chunk().await? {
            body.push(&chunk)?;
        }
        Ok(Answer {
            status: response.status().as_u16(),
            used_weight,
            retry_after,
            body: body.into_bytes(),
        })
    }

    fn next_backoff(&mut self) -> Duration {
        let attempt = self.breaker.consecutive_failures().saturating_sub(1);
        self.backoff.delay(attempt, self.jitter.next_f64())
    }

    /// A transient failure: count it against the breaker, then hold the next request for a
    /// backoff (or let the open circuit hold it).
    fn fail(&mut self, reason: &str) {
        self.metrics.source_up.set(0);
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
        self.not_before = Some(deadline_after(Instant::now(), wait, MAX_RETRY_AFTER));
    }

    /// The prices of configured symbols, one per symbol (a repeated entry would multiply
    /// records); the others are counted and dropped before any metric sees them.
    fn configured_prices(&mut self, prices: Vec<(Symbol, f64)>) -> Vec<(Symbol, f64)> {
        let mut kept: Vec<(Symbol, f64)> = Vec::with_capacity(self.symbols.len());
        for (symbol, price) in prices {
            if self.symbol_filter.admits(&symbol) && !kept.iter().any(|(s, _)| *s == symbol) {
                kept.push((symbol, price));
            }
        }
        kept
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

/// Says when a 429/418's `Retry-After` was not taken as sent: clamped to [`MAX_RETRY_AFTER`],
/// or unreadable (the backoff is used instead).
fn note_odd_retry_after(raw: Option<&str>) {
    let Some(raw) = raw else { return };
    match parse_retry_after(Some(raw)) {
        Some(wait)
            if wait == MAX_RETRY_AFTER && raw.trim() != MAX_RETRY_AFTER.as_secs().to_string() =>
        {
            warn!(
                retry_after = excerpt(raw),
                max = ?MAX_RETRY_AFTER,
                "Retry-After is beyond the maximum: waiting the maximum, then asking again"
            )
        }
        Some(_) => {}
        None => warn!(
            retry_after = excerpt(raw),
            "Retry-After is not a number of seconds: backing off instead"
        ),
    }
}
