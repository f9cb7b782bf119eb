//! The Binance WebSocket source against a fake Binance stream server (tokio-tungstenite).

use std::sync::{Arc, Mutex};

use futures::{SinkExt, StreamExt};
use tickstream_ingest::IngestMetrics;
use tickstream_model::Topology;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response as WsResponse};

use super::{fast_source, one_batch};

fn trade_frame(symbol: &str, price: &str, trade_time: i64) -> Message {
    Message::text(format!(
        r#"{{"stream":"{lower}@trade","data":{{"e":"trade","E":{trade_time},"s":"{symbol}","t":1,"p":"{price}","q":"0.5","T":{trade_time},"m":false,"M":true}}}}"#,
        lower = symbol.to_ascii_lowercase()
    ))
}

#[tokio::test]
// tungstenite's handshake callback returns its (large) error response type; not ours to box.
#[allow(clippy::result_large_err)]
async fn ws_reads_trades_answers_pings_and_reconnects_after_a_drop() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base_url = format!("ws://{}", listener.local_addr().expect("address"));
    let paths = Arc::new(Mutex::new(Vec::<String>::new()));
    let pong = Arc::new(Mutex::new(None::<Vec<u8>>));
    let (server_paths, server_pong) = (Arc::clone(&paths), Arc::clone(&pong));
    let server = tokio::spawn(async move {
        for connection in 0..2 {
            let (stream, _) = listener.accept().await.expect("accept");
            let paths = Arc::clone(&server_paths);
            let mut ws = tokio_tungstenite::accept_hdr_async(
                stream,
                move |request: &Request, response: WsResponse| {
                    paths
                        .lock()
                        .expect("not poisoned")
                        .push(request.uri().to_string());
                    Ok(response)
                },
            )
            .await
            .expect("handshake");
            if connection == 0 {
                ws.send(Message::Ping(b"are-you-there".to_vec().into()))
                    .await
                    .expect("ping");
                ws.send(trade_frame("BTCUSDT", "67000.10", 1_000))
                    .await
                    .expect("send");
                // The client answers the ping while reading.
                while let Some(Ok(message)) = ws.next().await {
                    if let Message::Pong(payload) = message {
                        *server_pong.lock().expect("not poisoned") = Some(payload.to_vec());
                        break;
                    }
                }
                ws.send(trade_frame("ETHUSDT", "3100.5", 2_000))
                    .await
                    .expect("send");
                // A frame Binance never sends: counted, skipped.
                ws.send(Message::text("{\"result\":null,\"id\":1}"))
                    .await
                    .expect("send");
                // The drop (as Binance does after 24 h).
                ws.close(None).await.expect("close");
            } else {
                for (symbol, price, time) in
                    [("BTCUSDT", "67001", 5_000), ("ETHUSDT", "3101", 6_000)]
                {
                    ws.send(trade_frame(symbol, price, time))
                        .await
                        .expect("send");
                }
                // Stay open until the client has read them.
                while ws.next().await.is_some() {}
            }
        }
    });

    let topology = Topology::from_str(&format!(
        r#"
        symbols = ["BTCUSDT", "ETHUSDT"]
        [source]
        kind = "binance-ws"
        base_url = "{base_url}"
        allow_plain_transport = true
        streams = ["trade"]
        "#
    ))
    .expect("a valid topology");
    let metrics = IngestMetrics::new("ingest-test");
    let mut source = fast_source(&topology, &metrics);
    let mut ticks = Vec::new();
    while ticks.len() < 4 {
        ticks.extend(one_batch(&mut source).await);
    }
    let seen: Vec<(&str, f64, Option<i64>)> = ticks
        .iter()
        .map(|t| (t.symbol.as_str(), t.price, t.ts))
        .collect();
    assert_eq!(
        seen,
        [
            ("BTCUSDT", 67000.1, Some(1_000)),
            ("ETHUSDT", 3100.5, Some(2_000)),
            ("BTCUSDT", 67001.0, Some(5_000)),
            ("ETHUSDT", 3101.0, Some(6_000)),
        ],
        "trade time is the event time; nothing invented across the gap"
    );
    assert!(
        ticks.iter().all(|t| t.qty == Some(0.5)),
        "each trade's quantity (q) rides along, for candles' volume and VWAP"
    );
    assert_eq!(
        pong.lock().expect("not poisoned").as_deref(),
        Some(&b"are-you-there"[..])
    );
    let paths = paths.lock().expect("not poisoned").clone();
    assert_eq!(paths.len(), 2, "reconnected once");
    for path in paths {
        assert_eq!(
            path, "/stream?streams=btcusdt@trade/ethusdt@trade",
            "resubscribed"
        );
    }
    assert_eq!(metrics.source_gaps.get(), 1);
    assert_eq!(metrics.malformed_responses.get(), 1);
    drop(source);
    server.await.expect("the fake server");
}
