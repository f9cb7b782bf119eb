//! What ingest accepts from whatever answers at Binance's URL. Everything the upstream sends is
//! bounded before it is kept: a body, a WebSocket message and frame have a size cap, a
//! handshake a deadline, a `Retry-After` a maximum ([`crate::politeness::MAX_RETRY_AFTER`]),
//! and a symbol the topology does not list is dropped before any per-symbol metric exists for
//! it. None of it panics: too much is an error that is logged, counted and backed off from.
//!
//! The caps are sized for Binance's biggest answer ingest asks for, with headroom:
//!
//! - REST: `GET /api/v3/ticker/price?symbols=[...]` answers ~50 bytes per symbol
//!   (`{"symbol":"BTCUSDT","price":"67234.50000000"}`); even every pair Binance lists (~3,000)
//!   is ~150 KiB, so [`MAX_REST_BODY_BYTES`] = 1 MiB is several times the largest real answer.
//! - WebSocket: a combined-stream `trade` or `bookTicker` message is ~200–300 bytes;
//!   [`MAX_WS_MESSAGE_BYTES`] = 1 MiB and [`MAX_WS_FRAME_BYTES`] = 256 KiB leave three orders
//!   of magnitude, while a hostile server can make ingest hold at most ~1 MiB per connection
//!   (tungstenite's defaults are 64 MiB and 16 MiB).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use prometheus::IntCounter;
use tickstream_model::Symbol;
use tickstream_streams::{RATE_LIMIT_WINDOW, RateLimiter};
use tracing::warn;

use crate::source::SourceError;

/// The largest REST body read (Content-Length checked up front, then every chunk as it
/// streams in): 1 MiB.
pub const MAX_REST_BODY_BYTES: usize = 1 << 20;
/// The largest WebSocket message (all frames of one message together): 1 MiB.
pub const MAX_WS_MESSAGE_BYTES: usize = 1 << 20;
/// The largest single WebSocket frame, checked against its header before its payload is read:
/// 256 KiB.
pub const MAX_WS_FRAME_BYTES: usize = 256 << 10;
/// TCP connect, TLS and the WebSocket upgrade together: a server that accepts the connection
/// and never finishes the handshake is given up on after 10 s (then retried with backoff).
/// Binance completes it in well under a second.
pub const WS_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

// The sizing, checked at compile time: the whole exchange's ticker/price list (~3,000 pairs at
// ~50 bytes) fits the body cap six times; a frame holds ~1,000 bookTicker messages (~250
// bytes) and is smaller than a message.
const _: () = assert!(MAX_REST_BODY_BYTES >= 6 * 3_000 * 50);
const _: () =
    assert!(MAX_WS_FRAME_BYTES >= 1000 * 250 && MAX_WS_FRAME_BYTES < MAX_WS_MESSAGE_BYTES);

/// An answer larger than its cap.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Oversized {
    #[error("the answer declares Content-Length {declared} bytes, over the cap of {cap} bytes")]
    Declared { declared: u64, cap: usize },
    #[error("the answer passed the cap of {cap} bytes while streaming (at {read} bytes)")]
    Streamed { read: usize, cap: usize },
}

/// A response body collected up to a cap: refused at once when the declared length is over
/// it, and at the first chunk that passes it, so no more than `cap` bytes are ever held.
#[derive(Debug)]
pub struct CappedBody {
    cap: usize,
    bytes: Vec<u8>,
}

impl CappedBody {
    /// A body of at most `cap` bytes, whose `Content-Length` (if any) said `declared`.
    pub fn new(cap: usize, declared: Option<u64>) -> Result<Self, Oversized> {
        match declared {
            Some(declared) if declared > cap as u64 => Err(Oversized::Declared { declared, cap }),
            // The declared length sizes the buffer only once it is known to be within the cap.
            declared => Ok(Self {
                cap,
                bytes: Vec::with_capacity(declared.map_or(0, |d| d as usize)),
            }),
        }
    }

    /// Appends the next chunk; `Err` (and nothing kept) once the total passes the cap.
    pub fn push(&mut self, chunk: &[u8]) -> Result<(), Oversized> {
        let read = self.bytes.len().saturating_add(chunk.len());
        if read > self.cap {
            return Err(Oversized::Streamed {
                read,
                cap: self.cap,
            });
        }
        self.bytes.extend_from_slice(chunk);
        Ok(())
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

/// Keeps the symbols the topology lists and drops the others, counting them in one
/// unlabelled counter (`tickstream_ingest_unknown_symbols_total`) and logging at most one
/// line per [`RATE_LIMIT_WINDOW`]: a symbol Binance should never have sent must not create
/// metric series, records or log floods.
pub struct SymbolFilter {
    configured: HashSet<Symbol>,
    unknown: IntCounter,
    log_limit: RateLimiter<()>,
}

impl SymbolFilter {
    pub fn new(configured: &[Symbol], unknown: IntCounter) -> Self {
        Self {
            configured: configured.iter().copied().collect(),
            unknown,
            log_limit: RateLimiter::new(RATE_LIMIT_WINDOW),
        }
    }

    /// Whether `symbol` is configured; one that is not is counted and (rate-limited) logged.
    pub fn admits(&mut self, symbol: &Symbol) -> bool {
        if self.configured.contains(symbol) {
            return true;
        }
        self.unknown.inc();
        if let Some(suppressed) = self.log_limit.check((), Instant::now()) {
            warn!(
                %symbol,
                suppressed,
                total = self.unknown.get(),
                "the upstream sent a symbol the topology does not list; ignored (counted in \
                 tickstream_ingest_unknown_symbols_total)"
            );
        }
        false
    }
}

/// Refuses a plain (`http://`, `ws://`) URL unless the topology allows it, naming the key.
/// The topology's validation refuses it first; this guards sources built in code.
pub fn require_tls(url: &str, plain: &str, allowed: bool) -> Result<(), SourceError> {
    if url.starts_with(plain) && !allowed {
        return Err(SourceError::PlainTransport {
            url: url.to_owned(),
        });
    }
    Ok(())
}

/// The first 200 characters of `text`: what a log line quotes of upstream text.
pub fn excerpt(text: &str) -> &str {
    let end = text.char_indices().nth(200).map_or(text.len(), |(i, _)| i);
    &text[..end]
}

/// `now + wait`, never panicking: an `Instant` that cannot be represented (a wait of
/// centuries) becomes `now + fallback`, or `now`.
pub fn deadline_after(
    now: tokio::time::Instant,
    wait: Duration,
    fallback: Duration,
) -> tokio::time::Instant {
    now.checked_add(wait)
        .or_else(|| now.checked_add(fallback))
        .unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_declared_length_over_the_cap_is_refused_before_reading() {
        assert_eq!(
            CappedBody::new(10, Some(11)).err(),
            Some(Oversized::Declared {
                declared: 11,
                cap: 10
            })
        );
        assert_eq!(
            CappedBody::new(MAX_REST_BODY_BYTES, Some(u64::MAX))
                .err()
                .map(|e| e.to_string()),
            Some(format!(
                "the answer declares Content-Length {} bytes, over the cap of 1048576 bytes",
                u64::MAX
            ))
        );
        assert!(CappedBody::new(10, Some(10)).is_ok());
        assert!(CappedBody::new(10, None).is_ok());
    }

    #[test]
    fn a_streamed_body_is_refused_at_the_chunk_that_passes_the_cap() {
        let mut body = CappedBody::new(10, None).expect("no length declared");
        body.push(b"12345").expect("within the cap");
        body.push(b"67890").expect("exactly the cap");
        assert_eq!(
            body.push(b"!"),
            Err(Oversized::Streamed { read: 11, cap: 10 })
        );
        assert_eq!(
            body.into_bytes(),
            b"1234567890",
            "nothing past the cap kept"
        );
        // A lying Content-Length (small declared, more sent) is caught while streaming too.
        let mut lying = CappedBody::new(10, Some(2)).expect("declared within the cap");
        assert!(lying.push(&[0; 11]).is_err());
    }

    #[test]
    fn unknown_symbols_are_counted_in_one_counter_and_dropped() {
        let counter = IntCounter::new("unknown_total", "test").expect("a counter");
        let symbol = |s: &str| Symbol::new(s).expect("valid");
        let mut filter = SymbolFilter::new(&[symbol("BTCUSDT")], counter.clone());
        assert!(filter.admits(&symbol("BTCUSDT")));
        for _ in 0..1000 {
            assert!(!filter.admits(&symbol("XRPUSDT")));
        }
        assert!(!filter.admits(&symbol("DOGEUSDT")));
        assert_eq!(counter.get(), 1001);
    }

    #[test]
    fn plain_urls_need_the_topology_key() {
        assert!(require_tls("https://api.binance.com", "http://", false).is_ok());
        assert!(require_tls("http://127.0.0.1:1", "http://", true).is_ok());
        let error = require_tls("ws://127.0.0.1:1/stream", "ws://", false)
            .expect_err("plain refused")
            .to_string();
        assert!(error.contains("allow_plain_transport"), "{error}");
    }

    #[test]
    fn deadlines_never_overflow() {
        let now = tokio::time::Instant::now();
        let hour = Duration::from_secs(3600);
        assert_eq!(deadline_after(now, hour, hour), now + hour);
        assert_eq!(deadline_after(now, Duration::MAX, hour), now + hour);
        assert_eq!(deadline_after(now, Duration::MAX, Duration::MAX), now);
    }
}
