//! Binance's wire formats, read without I/O: the REST ticker price answer, its error bodies and
//! status codes, and WebSocket combined-stream frames.

use std::time::Duration;

use serde::Deserialize;
use tickstream_model::{RawTick, Symbol};

use crate::politeness::parse_retry_after;

/// `source` of REST ticks. Binance's `ticker/price` carries no event time, so `ts` is when
/// ingest received the answer; the name says so.
pub const REST_SOURCE: &str = "binance-rest/receive-time";
/// `source` of `<symbol>@trade` ticks: `ts` is the trade time (`T`).
pub const WS_TRADE_SOURCE: &str = "binance-ws";
/// `source` of `<symbol>@bookTicker` ticks: the bid/ask mid-price; bookTicker carries no event
/// time, so `ts` is the receive time.
pub const WS_BOOK_TICKER_SOURCE: &str = "binance-ws/bookTicker-mid/receive-time";

/// Request weight of `GET /api/v3/ticker/price`: 2 with `symbol` (one), 4 with `symbols`
/// (any number) — so one batched request beats one request per symbol from two symbols on.
pub fn ticker_price_weight(symbols: usize) -> u32 {
    match symbols {
        0 | 1 => 2,
        _ => 4,
    }
}

/// `{base_url}/api/v3/ticker/price?symbols=["BTCUSDT","ETHUSDT"]`, URL-encoded. Symbols are
/// validated upper-case letters and digits, so only the brackets, quotes are escaped.
pub fn ticker_price_url(base_url: &str, symbols: &[Symbol]) -> String {
    let list: Vec<String> = symbols
        .iter()
        .map(|s| format!("%22{}%22", s.as_str()))
        .collect();
    format!(
        "{}/api/v3/ticker/price?symbols=%5B{}%5D",
        base_url.trim_end_matches('/'),
        list.join(",")
    )
}

/// `{base_url}/api/v3/ticker/price?symbol=BTCUSDT`: used once, to find which symbol Binance
/// refused when the batched request says `Invalid symbol.` without naming it.
pub fn single_ticker_price_url(base_url: &str, symbol: &Symbol) -> String {
    format!(
        "{}/api/v3/ticker/price?symbol={}",
        base_url.trim_end_matches('/'),
        symbol.as_str()
    )
}

/// What one REST answer means for the poller.
#[derive(Debug, PartialEq)]
pub enum RestOutcome {
    /// 200 with prices: `(symbol, price)`, in Binance's order.
    Prices(Vec<(Symbol, f64)>),
    /// 429: wait `Retry-After` (None: header missing or unreadable).
    TooManyRequests(Option<Duration>),
    /// 418: the IP is banned for `Retry-After`.
    Banned(Option<Duration>),
    /// 400 with code -1121 `Invalid symbol.`.
    InvalidSymbol,
    /// 5xx, 403 (WAF) or 409: Binance-side trouble, retried with backoff.
    ServerError { status: u16 },
    /// A 200 whose body is not the expected JSON, or a 200 with entries that cannot be read.
    Malformed { reason: String },
    /// Any other 4xx: our request is wrong, retrying will not help.
    Rejected { status: u16, body: String },
}

#[derive(Deserialize)]
struct TickerPrice {
    symbol: String,
    price: String,
}

#[derive(Deserialize)]
struct ErrorBody {
    code: i64,
}

/// Binance's error code for an unknown symbol.
pub const INVALID_SYMBOL_CODE: i64 = -1121;

/// Classifies an answer: `status`, its `Retry-After` header, its body.
pub fn classify_rest(status: u16, retry_after: Option<&str>, body: &[u8]) -> RestOutcome {
    match status {
        200 => parse_ticker_prices(body),
        429 => RestOutcome::TooManyRequests(parse_retry_after(retry_after)),
        418 => RestOutcome::Banned(parse_retry_after(retry_after)),
        400 if serde_json::from_slice::<ErrorBody>(body)
            .is_ok_and(|e| e.code == INVALID_SYMBOL_CODE) =>
        {
            RestOutcome::InvalidSymbol
        }
        403 | 409 | 500..=599 => RestOutcome::ServerError { status },
        _ => RestOutcome::Rejected {
            status,
            body: String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned(),
        },
    }
}

/// `[{"symbol":"BTCUSDT","price":"67234.50000000"}, ...]` (prices are JSON strings).
fn parse_ticker_prices(body: &[u8]) -> RestOutcome {
    let entries: Vec<TickerPrice> = match serde_json::from_slice(body) {
        Ok(entries) => entries,
        Err(e) => {
            return RestOutcome::Malformed {
                reason: format!("not a JSON array of {{symbol, price}}: {e}"),
            };
        }
    };
    let mut prices = Vec::with_capacity(entries.len());
    for entry in entries {
        let symbol = Symbol::new(&entry.symbol).map_err(|e| e.to_string());
        let price = parse_price(&entry.price);
        match (symbol, price) {
            (Ok(symbol), Some(price)) => prices.push((symbol, price)),
            (symbol, _) => {
                return RestOutcome::Malformed {
                    reason: format!(
                        "entry {:?} / price {:?} is not a valid symbol and positive price ({})",
                        entry.symbol,
                        entry.price,
                        symbol.err().unwrap_or_else(|| "bad price".to_owned())
                    ),
                };
            }
        }
    }
    RestOutcome::Prices(prices)
}

/// A Binance decimal string as a finite, positive price.
fn parse_price(text: &str) -> Option<f64> {
    text.parse::<f64>()
        .ok()
        .filter(|p| p.is_finite() && *p > 0.0)
}

/// Raw ticks from REST prices received at `received_ms`.
pub fn rest_ticks(prices: Vec<(Symbol, f64)>, received_ms: i64) -> Vec<RawTick> {
    prices
        .into_iter()
        .map(|(symbol, price)| {
            RawTick::new(symbol, price)
                .with_ts(received_ms)
                .with_source(REST_SOURCE)
        })
        .collect()
}

/// `{base_url}/stream?streams=btcusdt@trade/ethusdt@trade` (stream names are lower-case).
pub fn combined_stream_url(base_url: &str, symbols: &[Symbol], streams: &[&str]) -> String {
    let names: Vec<String> = symbols
        .iter()
        .flat_map(|s| {
            let lower = s.as_str().to_ascii_lowercase();
            streams
                .iter()
                .map(move |stream| format!("{lower}@{stream}"))
        })
        .collect();
    format!(
        "{}/stream?streams={}",
        base_url.trim_end_matches('/'),
        names.join("/")
    )
}

#[derive(Deserialize)]
struct Combined {
    data: StreamEvent,
}

/// The fields of `trade` and `bookTicker` events ingest reads.
#[derive(Deserialize)]
struct StreamEvent {
    /// Event type: "trade"; absent in bookTicker events.
    e: Option<String>,
    s: String,
    /// Trade price.
    p: Option<String>,
    /// Trade quantity (base asset).
    q: Option<String>,
    /// Trade id: consecutive per symbol.
    t: Option<u64>,
    /// Whether the buyer was the maker.
    m: Option<bool>,
    /// Trade time, epoch ms.
    #[serde(rename = "T")]
    trade_time: Option<i64>,
    /// Best bid price.
    b: Option<String>,
    /// Best ask price.
    a: Option<String>,
}

/// One combined-stream frame as a tick; `Err` names what is wrong. bookTicker frames give the
/// mid-price stamped with `received_ms`.
pub fn parse_stream_frame(text: &str, received_ms: i64) -> Result<RawTick, String> {
    let frame: Combined = serde_json::from_str(text)
        .map_err(|e| format!("not a combined-stream frame {{stream, data}}: {e}"))?;
    let event = frame.data;
    let symbol = Symbol::new(&event.s).map_err(|e| format!("symbol {:?}: {e}", event.s))?;
    match (
        event.e.as_deref(),
        event.p,
        event.trade_time,
        event.b,
        event.a,
    ) {
        (Some("trade"), Some(p), Some(time), _, _) => {
            let price = parse_price(&p).ok_or_else(|| format!("trade price {p:?}"))?;
            let mut tick = RawTick::new(symbol, price)
                .with_ts(time)
                .with_source(WS_TRADE_SOURCE);
            if let (Some(id), Some(maker)) = (event.t, event.m) {
                tick = tick.with_trade(id, maker);
            }
            // The quantity makes candles' volume and VWAP; a trade without one is still a price.
            match event.q {
                None => Ok(tick),
                Some(q) => {
                    let qty = q
                        .parse::<f64>()
                        .ok()
                        .filter(|q| q.is_finite() && *q >= 0.0)
                        .ok_or_else(|| format!("trade quantity {q:?}"))?;
                    Ok(tick.with_qty(qty))
                }
            }
        }
        (None, _, _, Some(bid), Some(ask)) => {
            let bid = parse_price(&bid).ok_or_else(|| format!("bid {bid:?}"))?;
            let ask = parse_price(&ask).ok_or_else(|| format!("ask {ask:?}"))?;
            Ok(RawTick::new(symbol, (bid + ask) / 2.0)
                .with_ts(received_ms)
                .with_source(WS_BOOK_TICKER_SOURCE))
        }
        (kind, ..) => Err(format!(
            "event {kind:?} is neither a complete trade nor a bookTicker"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn symbols(names: &[&str]) -> Vec<Symbol> {
        names
            .iter()
            .map(|n| Symbol::new(n).expect("valid"))
            .collect()
    }

    #[test]
    fn batched_url_lists_every_symbol_once_encoded() {
        assert_eq!(
            ticker_price_url("http://127.0.0.1:1/", &symbols(&["BTCUSDT", "ETHUSDT"])),
            "http://127.0.0.1:1/api/v3/ticker/price?symbols=%5B%22BTCUSDT%22,%22ETHUSDT%22%5D"
        );
        assert_eq!(ticker_price_weight(3), 4);
        assert_eq!(ticker_price_weight(1), 2);
    }

    #[test]
    fn prices_are_read_from_binance_strings() {
        let body = br#"[{"symbol":"BTCUSDT","price":"67234.50000000"},{"symbol":"ETHUSDT","price":"3100.01"}]"#;
        assert_eq!(
            classify_rest(200, None, body),
            RestOutcome::Prices(vec![
                (Symbol::new("BTCUSDT").expect("valid"), 67234.5),
                (Symbol::new("ETHUSDT").expect("valid"), 3100.01),
            ])
        );
        let ticks = rest_ticks(vec![(Symbol::new("BTCUSDT").expect("valid"), 1.5)], 77);
        assert_eq!(ticks[0].ts, Some(77));
        assert_eq!(ticks[0].source.as_deref(), Some(REST_SOURCE));
    }

    #[test]
    fn malformed_bodies_are_reported_not_panicked_on() {
        for body in [
            &b"<html>oops"[..],
            b"{\"symbol\":\"BTCUSDT\"}",
            b"[{\"symbol\":\"BTCUSDT\",\"price\":\"abc\"}]",
            b"[{\"symbol\":\"BTCUSDT\",\"price\":\"-1\"}]",
            b"[{\"symbol\":\"btc usdt\",\"price\":\"1\"}]",
            b"",
        ] {
            assert!(
                matches!(
                    classify_rest(200, None, body),
                    RestOutcome::Malformed { .. }
                ),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn statuses_map_to_the_right_behaviour() {
        assert_eq!(
            classify_rest(429, Some("7"), b""),
            RestOutcome::TooManyRequests(Some(Duration::from_secs(7)))
        );
        assert_eq!(
            classify_rest(418, Some("120"), b""),
            RestOutcome::Banned(Some(Duration::from_secs(120)))
        );
        assert_eq!(
            classify_rest(400, None, br#"{"code":-1121,"msg":"Invalid symbol."}"#),
            RestOutcome::InvalidSymbol
        );
        assert_eq!(
            classify_rest(503, None, b"busy"),
            RestOutcome::ServerError { status: 503 }
        );
        assert!(matches!(
            classify_rest(400, None, br#"{"code":-1100,"msg":"Illegal characters"}"#),
            RestOutcome::Rejected { status: 400, .. }
        ));
    }

    #[test]
    fn trade_frames_carry_the_trade_time_and_quantity() {
        let frame = r#"{"stream":"btcusdt@trade","data":{"e":"trade","E":1732390000125,"s":"BTCUSDT","t":12345,"p":"67234.50","q":"0.01","T":1732390000123,"m":true,"M":true}}"#;
        let tick = parse_stream_frame(frame, 5).expect("a trade");
        assert_eq!(tick.symbol.as_str(), "BTCUSDT");
        assert_eq!(tick.price, 67234.5);
        assert_eq!(tick.ts, Some(1_732_390_000_123));
        assert_eq!(tick.qty, Some(0.01));
        assert_eq!((tick.trade_id, tick.buyer_maker), (Some(12345), Some(true)));
        assert_eq!(tick.source.as_deref(), Some(WS_TRADE_SOURCE));
        let bad = frame.replace(r#""q":"0.01""#, r#""q":"-1""#);
        let error = parse_stream_frame(&bad, 5).expect_err("a negative quantity");
        assert!(error.contains("quantity"), "{error}");
    }

    #[test]
    fn book_ticker_frames_give_the_mid_price_at_receive_time() {
        let frame = r#"{"stream":"bnbusdt@bookTicker","data":{"u":400900217,"s":"BNBUSDT","b":"25.35190000","B":"31.21000000","a":"25.36520000","A":"40.66000000"}}"#;
        let tick = parse_stream_frame(frame, 99).expect("a bookTicker");
        assert!((tick.price - 25.35855).abs() < 1e-9);
        assert_eq!(tick.ts, Some(99));
        assert_eq!(tick.source.as_deref(), Some(WS_BOOK_TICKER_SOURCE));
    }

    #[test]
    fn bad_frames_are_errors() {
        for frame in [
            "not json",
            r#"{"result":null,"id":1}"#,
            r#"{"stream":"x","data":{"e":"trade","s":"BTCUSDT","p":"1"}}"#,
            r#"{"stream":"x","data":{"e":"trade","s":"BTCUSDT","p":"NaN","T":1}}"#,
        ] {
            assert!(parse_stream_frame(frame, 0).is_err(), "{frame}");
        }
    }

    #[test]
    fn combined_url_names_lower_case_streams() {
        assert_eq!(
            combined_stream_url(
                "ws://127.0.0.1:9/",
                &symbols(&["BTCUSDT", "ETHUSDT"]),
                &["trade", "bookTicker"]
            ),
            "ws://127.0.0.1:9/stream?streams=btcusdt@trade/btcusdt@bookTicker/ethusdt@trade/ethusdt@bookTicker"
        );
    }
}
