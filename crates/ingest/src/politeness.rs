//! How ingest behaves towards Binance, as pure state machines: no I/O, no clock reads — the
//! caller passes the time in, so every rule is unit-tested without waiting.
//!
//! - [`Backoff`]: exponential backoff with full jitter after 5xx, timeouts, malformed bodies.
//! - [`CircuitBreaker`]: closed → open after N consecutive failures → half-open probe after a
//!   while → closed on success, open again on failure.
//! - [`WeightTracker`]: Binance's `X-MBX-USED-WEIGHT-1M`; slows down before the per-minute
//!   limit instead of running into 429s.
//! - [`parse_retry_after`]: the `Retry-After` header of 429 and 418 answers.

use std::time::{Duration, Instant};

/// Exponential backoff with "equal jitter" (AWS architecture blog): the n-th retry waits a
/// uniformly random time in `[step / 2, step]`, `step = min(max, base · 2^n)`, so many clients
/// failing together do not come back together, and no retry follows its failure immediately.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first step.
    pub base: Duration,
    /// The largest step.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(500),
            max: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// The wait before retry number `attempt` (0 = the first retry); `jitter` in `[0, 1)`
    /// (a random draw) picks the point in `[step / 2, step]`.
    pub fn delay(&self, attempt: u32, jitter: f64) -> Duration {
        let factor = 2u32.saturating_pow(attempt.min(31));
        let step = self.base.saturating_mul(factor).min(self.max);
        let jitter = jitter.clamp(0.0, 1.0);
        step.mul_f64(0.5 + 0.5 * jitter)
    }
}

/// What the circuit lets through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Requests flow; failures are counted.
    Closed,
    /// No requests until the open period is over.
    Open,
    /// One trial request decides: success closes, failure opens again.
    HalfOpen,
}

impl BreakerState {
    /// The value of the `tickstream_ingest_breaker_state` gauge: 0 closed, 1 open, 2 half-open.
    pub fn gauge_value(self) -> i64 {
        match self {
            Self::Closed => 0,
            Self::Open => 1,
            Self::HalfOpen => 2,
        }
    }
}

/// The circuit breaker around the Binance API.
#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    failures_to_open: u32,
    open_for: Duration,
    consecutive_failures: u32,
    state: BreakerState,
    opened_at: Option<Instant>,
}

impl CircuitBreaker {
    /// Opens after `failures_to_open` consecutive failures (at least 1), for `open_for`.
    pub fn new(failures_to_open: u32, open_for: Duration) -> Self {
        Self {
            failures_to_open: failures_to_open.max(1),
            open_for,
            consecutive_failures: 0,
            state: BreakerState::Closed,
            opened_at: None,
        }
    }

    /// The state at `now` (an open circuit whose time is up reports half-open).
    pub fn state(&self, now: Instant) -> BreakerState {
        match (self.state, self.opened_at) {
            (BreakerState::Open, Some(at)) if now.duration_since(at) >= self.open_for => {
                BreakerState::HalfOpen
            }
            (state, _) => state,
        }
    }

    /// `None` when a request may go out at `now` (moving open → half-open when its time is
    /// up); otherwise how long until the half-open probe.
    pub fn wait_before_request(&mut self, now: Instant) -> Option<Duration> {
        match self.state(now) {
            BreakerState::Closed => None,
            BreakerState::HalfOpen => {
                self.state = BreakerState::HalfOpen;
                None
            }
            BreakerState::Open => {
                let opened_at = self.opened_at.unwrap_or(now);
                Some(self.open_for.saturating_sub(now.duration_since(opened_at)))
            }
        }
    }

    /// A request succeeded: the circuit closes.
    pub fn on_success(&mut self) {
        self.consecutive_failures = 0;
        self.state = BreakerState::Closed;
        self.opened_at = None;
    }

    /// A request failed at `now`; returns true when this failure opened the circuit.
    pub fn on_failure(&mut self, now: Instant) -> bool {
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        let opens = match self.state {
            BreakerState::HalfOpen => true,
            BreakerState::Closed => self.consecutive_failures >= self.failures_to_open,
            BreakerState::Open => false,
        };
        if opens {
            self.state = BreakerState::Open;
            self.opened_at = Some(now);
        }
        opens
    }

    /// Consecutive failures so far (the backoff exponent).
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }
}

/// Binance counts request weight per IP per minute (`REQUEST_WEIGHT`, 6,000 per minute on
/// `api.binance.com` today) and answers 429 beyond it; repeated 429s earn a 418 ban. Each
/// answer's `X-MBX-USED-WEIGHT-1M` says how much of the current minute is used: when the next
/// request would pass `headroom` of the limit, wait for the next minute instead.
#[derive(Debug, Clone)]
pub struct WeightTracker {
    limit: u32,
    headroom: f64,
    /// (used weight, epoch ms when observed).
    last: Option<(u32, u64)>,
}

impl WeightTracker {
    /// Binance's `REQUEST_WEIGHT` limit per minute (`GET /api/v3/exchangeInfo` `rateLimits`).
    pub const DEFAULT_LIMIT: u32 = 6000;
    /// Slow down at 90 % of the limit: other clients on the same IP count too.
    pub const DEFAULT_HEADROOM: f64 = 0.9;

    pub fn new(limit: u32, headroom: f64) -> Self {
        Self {
            limit,
            headroom: headroom.clamp(0.0, 1.0),
            last: None,
        }
    }

    /// Records a response's `X-MBX-USED-WEIGHT-1M` seen at `now_ms` (epoch ms).
    pub fn observe(&mut self, used: u32, now_ms: u64) {
        self.last = Some((used, now_ms));
    }

    /// How long to wait at `now_ms` before a request of `weight`; `None` to go ahead. Binance's
    /// window is the calendar minute, so the count resets at the next whole minute.
    pub fn wait_before_request(&self, weight: u32, now_ms: u64) -> Option<Duration> {
        let (used, observed_ms) = self.last?;
        let minute_end = (observed_ms / 60_000 + 1) * 60_000;
        if now_ms >= minute_end {
            return None;
        }
        let budget = (f64::from(self.limit) * self.headroom).floor() as u64;
        if u64::from(used) + u64::from(weight) <= budget {
            return None;
        }
        Some(Duration::from_millis(minute_end - now_ms))
    }
}

impl Default for WeightTracker {
    fn default() -> Self {
        Self::new(Self::DEFAULT_LIMIT, Self::DEFAULT_HEADROOM)
    }
}

/// The longest wait a `Retry-After` imposes: 1 h. Binance asks for seconds after a 429 and
/// bans for 2 minutes up to 3 days with a 418; a longer value is clamped to this, and the
/// request after the wait asks again (a ban still running answers 418 with a fresh
/// `Retry-After`). So no value — `18446744073709551615`, `1e30`, `inf` — parks ingest for
/// longer, or overflows the clock.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60 * 60);

/// `Retry-After` as Binance sends it: seconds, whole or decimal, clamped to
/// [`MAX_RETRY_AFTER`] (digits beyond `u64`, `1e30` and `inf` included). An HTTP date is not
/// parsed (Binance does not send one); `None` for anything unreadable, negative or NaN, so the
/// caller falls back to its backoff. Never panics.
pub fn parse_retry_after(value: Option<&str>) -> Option<Duration> {
    let value = value?.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // More digits than u64 holds is still "a very long time", not garbage.
        let seconds = value.parse::<u64>().unwrap_or(u64::MAX);
        return Some(Duration::from_secs(seconds).min(MAX_RETRY_AFTER));
    }
    let seconds = value.parse::<f64>().ok()?;
    if seconds.is_nan() || seconds < 0.0 {
        return None;
    }
    // `try_from`: `from_secs_f64` panics beyond u64::MAX seconds (and on infinity).
    Some(Duration::try_from_secs_f64(seconds).map_or(MAX_RETRY_AFTER, |d| d.min(MAX_RETRY_AFTER)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_jitter_bounds_and_caps() {
        let b = Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        assert_eq!(b.delay(0, 0.0), Duration::from_millis(50));
        assert_eq!(b.delay(0, 1.0), Duration::from_millis(100));
        assert_eq!(b.delay(2, 0.0), Duration::from_millis(200));
        assert_eq!(b.delay(2, 1.0), Duration::from_millis(400));
        // 100 ms · 2^10 is past the cap.
        assert_eq!(b.delay(10, 1.0), Duration::from_secs(1));
        assert_eq!(b.delay(u32::MAX, 0.5), Duration::from_millis(750));
        let mid = b.delay(1, 0.5);
        assert!(mid > Duration::from_millis(100) && mid < Duration::from_millis(200));
    }

    #[test]
    fn breaker_opens_after_consecutive_failures_only() {
        let t0 = Instant::now();
        let mut breaker = CircuitBreaker::new(3, Duration::from_secs(60));
        assert!(!breaker.on_failure(t0));
        assert!(!breaker.on_failure(t0));
        breaker.on_success();
        assert!(!breaker.on_failure(t0));
        assert!(!breaker.on_failure(t0));
        assert_eq!(breaker.state(t0), BreakerState::Closed);
        assert_eq!(breaker.wait_before_request(t0), None);
        assert!(
            breaker.on_failure(t0),
            "the third consecutive failure opens"
        );
        assert_eq!(breaker.state(t0), BreakerState::Open);
        assert_eq!(
            breaker.wait_before_request(t0 + Duration::from_secs(20)),
            Some(Duration::from_secs(40))
        );
    }

    #[test]
    fn breaker_half_open_probe_closes_on_success() {
        let t0 = Instant::now();
        let mut breaker = CircuitBreaker::new(1, Duration::from_secs(60));
        breaker.on_failure(t0);
        let later = t0 + Duration::from_secs(60);
        assert_eq!(breaker.state(later), BreakerState::HalfOpen);
        assert_eq!(breaker.wait_before_request(later), None);
        breaker.on_success();
        assert_eq!(breaker.state(later), BreakerState::Closed);
        assert_eq!(breaker.consecutive_failures(), 0);
    }

    #[test]
    fn breaker_half_open_probe_failure_reopens_for_a_full_period() {
        let t0 = Instant::now();
        let mut breaker = CircuitBreaker::new(5, Duration::from_secs(10));
        for _ in 0..5 {
            breaker.on_failure(t0);
        }
        let probe_at = t0 + Duration::from_secs(11);
        assert_eq!(breaker.wait_before_request(probe_at), None);
        assert!(breaker.on_failure(probe_at), "a failed probe opens at once");
        assert_eq!(breaker.state(probe_at), BreakerState::Open);
        assert_eq!(
            breaker.wait_before_request(probe_at + Duration::from_secs(1)),
            Some(Duration::from_secs(9))
        );
        assert_eq!(BreakerState::Open.gauge_value(), 1);
        assert_eq!(BreakerState::HalfOpen.gauge_value(), 2);
        assert_eq!(BreakerState::Closed.gauge_value(), 0);
    }

    #[test]
    fn weight_tracker_waits_for_the_next_minute_near_the_limit() {
        let mut tracker = WeightTracker::new(6000, 0.9);
        assert_eq!(tracker.wait_before_request(4, 0), None, "nothing seen yet");
        // 12:00:10 with 5,000 used: 5,004 <= 5,400, go ahead.
        let minute = 60_000 * 1000;
        tracker.observe(5000, minute + 10_000);
        assert_eq!(tracker.wait_before_request(4, minute + 10_500), None);
        // 5,397 + 4 > 5,400: wait until 12:01:00.
        tracker.observe(5397, minute + 20_000);
        assert_eq!(
            tracker.wait_before_request(4, minute + 20_000),
            Some(Duration::from_secs(40))
        );
        // The next minute resets the count.
        assert_eq!(tracker.wait_before_request(4, minute + 60_000), None);
    }

    #[test]
    fn retry_after_reads_seconds_and_refuses_garbage() {
        assert_eq!(parse_retry_after(Some("1")), Some(Duration::from_secs(1)));
        assert_eq!(
            parse_retry_after(Some(" 120 ")),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after(Some("0.5")),
            Some(Duration::from_millis(500))
        );
        assert_eq!(parse_retry_after(Some("-3")), None);
        assert_eq!(
            parse_retry_after(Some("Wed, 21 Oct 2015 07:28:00 GMT")),
            None
        );
        assert_eq!(parse_retry_after(None), None);
    }

    #[test]
    fn absurd_retry_after_values_are_clamped_or_refused_never_panicked_on() {
        for clamped in [
            "18446744073709551615",
            "18446744073709551616",
            "99999999999999999999999999999999999999999",
            "3601",
            "1e30",
            "1E308",
            "inf",
            "+infinity",
            "123456789012345678901234567890.123456789",
            "18446744073709551615.5",
        ] {
            assert_eq!(
                parse_retry_after(Some(clamped)),
                Some(MAX_RETRY_AFTER),
                "{clamped}"
            );
        }
        assert_eq!(parse_retry_after(Some("3600")), Some(MAX_RETRY_AFTER));
        assert_eq!(
            parse_retry_after(Some("0.000000000000000000001")),
            Some(Duration::ZERO)
        );
        for refused in [
            "NaN", "-nan", "-1", "-1e30", "-inf", "", "  ", "1 2", "0x10", "٣",
        ] {
            assert_eq!(parse_retry_after(Some(refused)), None, "{refused:?}");
        }
    }
}
