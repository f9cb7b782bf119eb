//! The Binance WebSocket source: one combined-stream connection (`<symbol>@trade`, optionally
//! `<symbol>@bookTicker`) for all symbols.
//!
//! Binance pings every 20 s and drops connections that do not answer within a minute, and
//! closes every connection after 24 hours. Contract of [`WsStreamer::next_batch`]: it returns
//! the ticks of the frames that arrived; a drop — any close, error or a silent connection — is
//! followed by a reconnect with backoff (the combined-stream URL names the streams, so
//! reconnecting resubscribes). What was traded while disconnected is lost: the gap is logged with
//! its length and counted (`tickstream_ingest_source_gaps_total`), never filled with invented
//! ticks.
//!
//! What the server sends is bounded ([`crate::limits`]): the handshake must complete within
//! [`WS_CONNECT_TIMEOUT`], a message over [`MAX_WS_MESSAGE_BYTES`] or a frame over
//! [`MAX_WS_FRAME_BYTES`] drops the connection (counted, logged), and frames for symbols the
//! topology does not list are dropped. The backoff before a reconnect grows until a
//! connection delivers a tick, so a server that accepts and then misbehaves is not hammered.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tickstream_model::topology::BinanceWsSource;
use tickstream_model::{RawTick, Symbol};
use tokio::net::TcpStream;
use tokio::time::{sleep, timeout};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async_with_config};
use tracing::{info, warn};

use crate::binance::{combined_stream_url, parse_stream_frame};
use crate::limits::{
    MAX_WS_FRAME_BYTES, MAX_WS_MESSAGE_BYTES, SymbolFilter, WS_CONNECT_TIMEOUT, excerpt,
    require_tls,
};
use crate::metrics::{IngestMetrics, now_ms};
use crate::politeness::Backoff;
use crate::rng::SplitMix64;
use crate::source::{Politeness, SourceError};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// No frame (not even a ping) for this long: the connection is dead even if TCP did not say so.
/// Binance pings every 20 s.
const SILENCE_LIMIT: Duration = Duration::from_secs(60);

/// Reads Binance's combined market streams.
pub struct WsStreamer {
    url: String,
    socket: Option<Socket>,
    backoff: Backoff,
    /// Consecutive connection attempts that delivered no tick (failed, or dropped before a
    /// tick): the backoff exponent.
    failed_connects: u32,
    /// Whether the current connection delivered a tick.
    delivered_on_connection: bool,
    symbol_filter: SymbolFilter,
    jitter: SplitMix64,
    /// Epoch ms of the last tick before the connection dropped (the gap's start).
    dropped_after_ms: Option<i64>,
    last_tick_ms: Option<i64>,
    connections: u64,
    metrics: IngestMetrics,
}

impl WsStreamer {
    pub fn new(
        symbols: &[Symbol],
        config: &BinanceWsSource,
        politeness: &Politeness,
        metrics: &IngestMetrics,
    ) -> Result<Self, SourceError> {
        let streams: Vec<&str> = config.streams.iter().map(|s| s.name()).collect();
        let url = combined_stream_url(&config.base_url, symbols, &streams);
        if !(url.starts_with("ws://") || url.starts_with("wss://")) {
            return Err(SourceError::BadUrl {
                url,
                expected: "ws:// or wss://",
            });
        }
        require_tls(&url, "ws://", config.allow_plain_transport)?;
        Ok(Self {
            url,
            socket: None,
            backoff: politeness.backoff,
            failed_connects: 0,
            delivered_on_connection: false,
            symbol_filter: SymbolFilter::new(symbols, metrics.unknown_symbols.clone()),
            jitter: SplitMix64::new(now_ms() as u64),
            dropped_after_ms: None,
            last_tick_ms: None,
            connections: 0,
            metrics: metrics.clone(),
        })
    }

    /// The combined-stream URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Connections made so far (the first plus reconnects).
    pub fn connections(&self) -> u64 {
        self.connections
    }

    /// The ticks of the next frame(s); reconnects as needed (see the module's contract).
    pub async fn next_batch(&mut self) -> Result<Vec<RawTick>, SourceError> {
        loop {
            let socket = match self.socket.as_mut() {
                Some(socket) => socket,
                None => {
                    self.connect().await;
                    continue;
                }
            };
            let frame = match timeout(SILENCE_LIMIT, socket.next()).await {
                Ok(Some(Ok(frame))) => frame,
                Ok(Some(Err(e @ WsError::Capacity(_)))) => {
                    self.metrics.oversized_responses.inc();
                    self.dropped(&format!(
                        "refused a message over the caps ({MAX_WS_MESSAGE_BYTES} bytes per \
                         message, {MAX_WS_FRAME_BYTES} per frame): {e}"
                    ));
                    continue;
                }
                Ok(Some(Err(e))) => {
                    self.dropped(&format!("read failed: {e}"));
                    continue;
                }
                Ok(None) => {
                    self.dropped("connection ended");
                    continue;
                }
                Err(_) => {
                    self.dropped(&format!("no frame for {SILENCE_LIMIT:?}"));
                    continue;
                }
            };
            match frame {
                Message::Text(text) => match parse_stream_frame(text.as_str(), now_ms()) {
                    Ok(tick) if self.symbol_filter.admits(&tick.symbol) => {
                        self.last_tick_ms = Some(now_ms());
                        self.delivered_on_connection = true;
                        self.failed_connects = 0;
                        self.metrics.source_up.set(1);
                        return Ok(vec![tick]);
                    }
                    Ok(_) => {}
                    Err(reason) => {
                        self.metrics.malformed_responses.inc();
                        warn!(reason, frame = %excerpt(text.as_str()), "skipping a WebSocket frame that is not a trade or bookTicker");
                    }
                },
                Message::Ping(payload) => {
                    // tungstenite queues a pong by itself; sending it now does not wait for
                    // the next read to flush it.
                    if let Err(e) = socket.send(Message::Pong(payload)).await {
                        self.dropped(&format!("answering a ping failed: {e}"));
                    }
                }
                Message::Close(frame) => {
                    // Binance closes every connection after 24 h: expected, reconnect.
                    info!(?frame, "Binance closed the WebSocket; reconnecting");
                    self.dropped("closed by the server");
                }
                Message::Pong(_) | Message::Binary(_) | Message::Frame(_) => {}
            }
        }
    }

    async fn connect(&mut self) {
        if self.failed_connects > 0 {
            let wait = self
                .backoff
                .delay(self.failed_connects - 1, self.jitter.next_f64());
            sleep(wait).await;
        }
        let config = WebSocketConfig::default()
            .max_message_size(Some(MAX_WS_MESSAGE_BYTES))
            .max_frame_size(Some(MAX_WS_FRAME_BYTES));
        let connecting = connect_async_with_config(self.url.as_str(), Some(config), false);
        let connected = match timeout(WS_CONNECT_TIMEOUT, connecting).await {
            Ok(connected) => connected.map_err(|e| e.to_string()),
            Err(_) => Err(format!(
                "no completed WebSocket handshake within {WS_CONNECT_TIMEOUT:?} (TCP, TLS and \
                 the upgrade together)"
            )),
        };
        match connected {
            Ok((socket, _response)) => {
                self.socket = Some(socket);
                self.delivered_on_connection = false;
                self.connections += 1;
                if let Some(since) = self.dropped_after_ms.take() {
                    self.metrics.source_gaps.inc();
                    warn!(
                        url = %self.url,
                        gap_ms = now_ms() - since,
                        "WebSocket reconnected: trades between the drop and now were missed (not invented)"
                    );
                } else {
                    info!(url = %self.url, "WebSocket connected");
                }
            }
            Err(error) => {
                self.failed_connects = self.failed_connects.saturating_add(1);
                self.metrics.source_up.set(0);
                warn!(url = %self.url, error = %error, attempts = self.failed_connects, "WebSocket connect failed; retrying with backoff");
            }
        }
    }

    fn dropped(&mut self, reason: &str) {
        warn!(url = %self.url, reason, "WebSocket dropped; reconnecting");
        self.socket = None;
        // The gap starts at the last tick we have (or now, if none came on this connection).
        self.dropped_after_ms = Some(self.last_tick_ms.unwrap_or_else(now_ms));
        self.metrics.source_up.set(0);
        // Reconnect after a short backoff, not at once: a server shedding load must not be
        // hammered. A connection that delivered nothing counts as one more failure, so a
        // server that accepts and then misbehaves meets a growing backoff.
        self.failed_connects = if self.delivered_on_connection {
            self.failed_connects.max(1)
        } else {
            self.failed_connects.saturating_add(1)
        };
    }
}
