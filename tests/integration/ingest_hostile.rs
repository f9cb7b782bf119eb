//! `tickstream ingest` (the real binary) against a hostile upstream at Binance's URL: huge
//! bodies (declared by Content-Length, and chunked without one), huge WebSocket frames and
//! fragmented messages, absurd `Retry-After` values, a handshake that never completes, symbols
//! the topology does not list. ingest never panics, stays under [`MEMORY_BOUND_KIB`] of peak
//! resident memory, logs each case, answers `/readyz` 503 while the upstream misbehaves and 200
//! again once it behaves — with that upstream's records on Kafka.
//!
//! The fakes are raw TCP (not axum or tungstenite's server) so they can lie: a Content-Length
//! of 3 GiB, a frame header announcing 2^62 bytes.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use futures::SinkExt;
use tickstream_model::DecodeOptions;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;

use crate::processes::{read_to_end, readyz, start, wait_for_exit, wait_ready};
use crate::support::{
    ChildProcess, create_topic, free_local_address, http_get, metric, require_kafka, unique_name,
};

/// The peak resident memory (VmHWM) ingest may reach here: 200 MiB. The caps let the upstream
/// make it hold ~1 MiB per answer; the rest is the process itself (a debug build, librdkafka,
/// the runtime). Before the caps, a 3 GB body took it to 5.6 GiB.
const MEMORY_BOUND_KIB: u64 = 200 * 1024;
/// Waits on an event (start-up, recovery): generous, never the test's pace.
const EVENT: Duration = Duration::from_secs(30);
/// Recovery after the WebSocket's hostile connections: the 10 s handshake timeout plus the
/// growing backoff of three connections that delivered nothing.
const WS_RECOVERY: Duration = Duration::from_secs(60);

/// Peak resident memory of process `pid`, KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM in /proc/{pid}/status"))
}

/// Starts ingest on `topology` (written to `dir`) and waits until it is ready.
async fn start_ingest(dir: &Path, topology: &str) -> (ChildProcess, SocketAddr) {
    let path = dir.join("topology.toml");
    std::fs::write(&path, topology).expect("write the topology");
    let metrics = free_local_address();
    let mut ingest = start(
        "ingest",
        &path,
        &require_kafka(),
        None,
        metrics,
        &dir.join("ingest.log"),
    );
    wait_ready(metrics, true, &mut ingest, EVENT).await;
    (ingest, metrics)
}

/// Asserts the log says each of `expected`, and no panic.
fn assert_logged(ingest: &ChildProcess, expected: &[&str]) {
    let log = std::fs::read_to_string(&ingest.log).expect("read the log");
    assert!(!log.contains("panicked"), "ingest panicked:\n{log}");
    for text in expected {
        assert!(log.contains(text), "the log does not say {text:?}:\n{log}");
    }
}

/// Stops ingest (SIGTERM, a clean exit) after checking its peak memory and metrics.
async fn stop_checked(ingest: ChildProcess, metrics: SocketAddr) {
    let peak = peak_rss_kib(ingest.id());
    eprintln!("ingest peak RSS (VmHWM): {} MiB", peak / 1024);
    assert!(
        peak < MEMORY_BOUND_KIB,
        "VmHWM {peak} KiB over the bound of {MEMORY_BOUND_KIB} KiB"
    );
    let (_, page) = http_get(metrics, "/metrics").expect("/metrics answers");
    assert!(
        !page.contains("XRPUSDT") && !page.contains("DOGEUSDT"),
        "no metric series for symbols the topology does not list:\n{page}"
    );
    send_sigterm(&ingest);
    let status = wait_for_exit(ingest, EVENT).await;
    assert!(status.success(), "ingest exited with {status}");
}

/// SIGTERM without waiting (the caller bounds the wait).
fn send_sigterm(process: &ChildProcess) {
    let status = std::process::Command::new("kill")
        .args(["-TERM", &process.id().to_string()])
        .status()
        .expect("run kill -TERM");
    assert!(status.success(), "kill -TERM failed");
}

/// What the hostile REST fake answers to one request.
#[derive(Clone, Copy)]
enum RestAnswer {
    /// 200 with this JSON body.
    Prices(&'static str),
    /// 429 with this `Retry-After`.
    TooManyRequests(&'static str),
    /// 200 declaring a 3 GiB body, then sending as much as the client takes.
    DeclaredHuge,
    /// 200, chunked, 1 MiB chunks without end (up to 512 MiB).
    ChunkedHuge,
}

const BEFORE: &str =
    r#"[{"symbol":"BTCUSDT","price":"100.5"},{"symbol":"ETHUSDT","price":"10.5"}]"#;
/// After the hostile phase: a listed symbol with a price only this phase sends, and one the
/// topology does not list.
const AFTER: &str = r#"[{"symbol":"BTCUSDT","price":"200.5"},{"symbol":"XRPUSDT","price":"1.5"},{"symbol":"ETHUSDT","price":"20.5"}]"#;
const UNLISTED_ONLY: &str =
    r#"[{"symbol":"XRPUSDT","price":"1.5"},{"symbol":"DOGEUSDT","price":"0.5"}]"#;

/// A REST fake: [`BEFORE`] until `hostile` is set, then `sequence` once, then `after`.
struct HostileRest {
    base_url: String,
    hostile: Arc<AtomicBool>,
    /// Hostile answers served so far.
    served: Arc<AtomicUsize>,
}

impl HostileRest {
    async fn start(sequence: Vec<RestAnswer>, after: RestAnswer) -> Self {
        let sequence: Arc<[RestAnswer]> = sequence.into();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base_url = format!("http://{}", listener.local_addr().expect("address"));
        let hostile = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicUsize::new(0));
        let (h, s) = (Arc::clone(&hostile), Arc::clone(&served));
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (h, s, sequence) = (Arc::clone(&h), Arc::clone(&s), Arc::clone(&sequence));
                tokio::spawn(serve_rest(stream, move || {
                    if !h.load(Ordering::SeqCst) {
                        return RestAnswer::Prices(BEFORE);
                    }
                    let step = s.fetch_add(1, Ordering::SeqCst);
                    sequence.get(step).copied().unwrap_or(after)
                }));
            }
        });
        Self {
            base_url,
            hostile,
            served,
        }
    }
}

/// Answers the requests of one keep-alive connection until it closes.
async fn serve_rest(stream: TcpStream, next: impl Fn() -> RestAnswer) {
    let mut stream = BufReader::new(stream);
    loop {
        // The request head: lines up to the empty one (ingest sends GETs without a body).
        let mut line = String::new();
        loop {
            line.clear();
            match stream.read_line(&mut line).await {
                Ok(0) | Err(_) => return,
                Ok(_) if line == "\r\n" => break,
                Ok(_) => {}
            }
        }
        let keep_going = match next() {
            RestAnswer::Prices(body) => respond(&mut stream, "200 OK", &[], body).await,
            RestAnswer::TooManyRequests(retry_after) => {
                let header = format!("retry-after: {retry_after}");
                respond(&mut stream, "429 Too Many Requests", &[&header], "{}").await
            }
            RestAnswer::DeclaredHuge => {
                let head = "HTTP/1.1 200 OK\r\ncontent-length: 3221225472\r\n\r\n";
                stream_zeros(&mut stream, head, 3 << 30, None).await;
                false
            }
            RestAnswer::ChunkedHuge => {
                let head = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
                stream_zeros(&mut stream, head, 512 << 20, Some(1 << 20)).await;
                false
            }
        };
        if !keep_going {
            return;
        }
    }
}

async fn respond(
    stream: &mut BufReader<TcpStream>,
    status: &str,
    headers: &[&str],
    body: &str,
) -> bool {
    let mut head = format!("HTTP/1.1 {status}\r\ncontent-length: {}\r\n", body.len());
    for header in headers {
        head.push_str(header);
        head.push_str("\r\n");
    }
    head.push_str("content-type: application/json\r\n\r\n");
    let stream = stream.get_mut();
    stream.write_all(head.as_bytes()).await.is_ok()
        && stream.write_all(body.as_bytes()).await.is_ok()
}

/// Writes `head`, then up to `total` zero bytes (as chunks of `chunk` bytes when chunked),
/// until the client stops reading.
async fn stream_zeros(
    stream: &mut BufReader<TcpStream>,
    head: &str,
    total: usize,
    chunked: Option<usize>,
) {
    let stream = stream.get_mut();
    if stream.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    let block = vec![b'0'; chunked.unwrap_or(1 << 20)];
    let mut sent = 0;
    while sent < total {
        let written = match chunked {
            Some(size) => {
                let mut chunk = format!("{size:x}\r\n").into_bytes();
                chunk.extend_from_slice(&block);
                chunk.extend_from_slice(b"\r\n");
                stream.write_all(&chunk).await
            }
            None => stream.write_all(&block).await,
        };
        if written.is_err() {
            return;
        }
        sent += block.len();
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
}

fn rest_topology(app: &str, topic: &str, base_url: &str) -> String {
    format!(
        r#"
        application_id = "{app}"
        symbols = ["BTCUSDT", "ETHUSDT"]
        [topics]
        raw = "{topic}"
        [source]
        kind = "binance-rest"
        base_url = "{base_url}"
        allow_plain_transport = true
        interval = "200ms"
        [source.breaker]
        failures = 20
        "#
    )
}

const REST_HOSTILE: [RestAnswer; 5] = [
    RestAnswer::TooManyRequests("NaN"),
    RestAnswer::TooManyRequests("-5"),
    RestAnswer::DeclaredHuge,
    RestAnswer::ChunkedHuge,
    RestAnswer::Prices(UNLISTED_ONLY),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_survives_huge_bodies_odd_retry_after_and_unlisted_symbols_then_resumes() {
    let brokers = require_kafka();
    let topic = unique_name("hostile-rest");
    create_topic(&brokers, &topic, 1).await;
    let fake = HostileRest::start(REST_HOSTILE.to_vec(), RestAnswer::Prices(AFTER)).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let app = unique_name("hostile-rest");
    let (mut ingest, metrics) =
        start_ingest(dir.path(), &rest_topology(&app, &topic, &fake.base_url)).await;

    fake.hostile.store(true, Ordering::SeqCst);
    wait_ready(metrics, false, &mut ingest, EVENT).await;
    wait_ready(metrics, true, &mut ingest, EVENT).await;
    assert!(
        fake.served.load(Ordering::SeqCst) > REST_HOSTILE.len(),
        "ready again only once the upstream behaved"
    );
    assert_logged(
        &ingest,
        &[
            "Retry-After is not a number of seconds",
            "declares Content-Length 3221225472 bytes, over the cap of 1048576 bytes",
            "passed the cap of 1048576 bytes while streaming",
            "the topology does not list",
            "no price for any configured symbol",
        ],
    );
    assert!(
        metric(metrics, "tickstream_ingest_oversized_responses_total", "").unwrap_or_default()
            >= 2.0
    );
    assert!(
        metric(metrics, "tickstream_ingest_unknown_symbols_total", "").unwrap_or_default() >= 3.0
    );
    stop_checked(ingest, metrics).await;

    let records = read_to_end(&brokers, &topic, 1);
    assert!(
        records.iter().all(|r| r.key.as_deref() != Some("XRPUSDT")),
        "no record for an unlisted symbol"
    );
    let decode = DecodeOptions::new();
    assert!(
        records.iter().any(|r| decode
            .decode(&r.value)
            .is_ok_and(|tick| tick.symbol.as_str() == "BTCUSDT" && tick.price == 200.5)),
        "the prices after the hostile phase reached Kafka"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absurd_retry_after_is_clamped_and_shutdown_still_works() {
    let brokers = require_kafka();
    let topic = unique_name("hostile-retry-after");
    create_topic(&brokers, &topic, 1).await;
    for value in ["18446744073709551615", "1e30"] {
        let sequence = vec![RestAnswer::TooManyRequests(value)];
        let fake = HostileRest::start(sequence, RestAnswer::Prices(BEFORE)).await;
        let dir = tempfile::tempdir().expect("temp dir");
        let app = unique_name("hostile-retry-after");
        let (mut ingest, metrics) =
            start_ingest(dir.path(), &rest_topology(&app, &topic, &fake.base_url)).await;
        fake.hostile.store(true, Ordering::SeqCst);
        wait_ready(metrics, false, &mut ingest, EVENT).await;
        ingest.assert_running();
        assert_logged(
            &ingest,
            &[
                "Binance answered 429",
                "Retry-After is beyond the maximum",
                "wait=3600s",
            ],
        );
        assert_eq!(
            fake.served.load(Ordering::SeqCst),
            1,
            "{value}: no request during the clamped wait"
        );
        assert_eq!(
            readyz(metrics),
            Some(503),
            "{value}: not ready while waiting"
        );
        stop_checked(ingest, metrics).await;
    }
}

/// A combined-stream trade frame.
fn trade(symbol: &str, price: &str) -> Message {
    Message::text(format!(
        r#"{{"stream":"{lower}@trade","data":{{"e":"trade","E":1,"s":"{symbol}","t":1,"p":"{price}","q":"1","T":1700000000000,"m":false,"M":true}}}}"#,
        lower = symbol.to_ascii_lowercase()
    ))
}

/// An unmasked (server-to-client) frame header with a 64-bit length: `opcode` 1 = text,
/// 0 = continuation.
fn frame_header(fin: bool, opcode: u8, len: u64) -> Vec<u8> {
    let mut header = vec![if fin { 0x80 } else { 0 } | opcode, 127];
    header.extend_from_slice(&len.to_be_bytes());
    header
}

/// The WebSocket fake, one script per connection: 0 trades until `hostile`; 1 never answers
/// the handshake; 2 announces a 2^62-byte frame; 3 sends a 1.4 MiB message in 200 KiB
/// fragments; 4 and later send unlisted symbols, then trades at [`WS_AFTER_PRICE`].
async fn hostile_ws(
    listener: TcpListener,
    hostile: Arc<AtomicBool>,
    connections: Arc<AtomicUsize>,
) {
    while let Ok((mut stream, _)) = listener.accept().await {
        let number = connections.fetch_add(1, Ordering::SeqCst);
        let hostile = Arc::clone(&hostile);
        tokio::spawn(async move {
            if number == 1 {
                // Accepts TCP, never answers: held open past ingest's handshake timeout.
                let mut sink = [0u8; 1024];
                let _ = tokio::time::timeout(Duration::from_secs(30), async {
                    while stream.read(&mut sink).await.is_ok_and(|n| n > 0) {}
                })
                .await;
                return;
            }
            let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                return;
            };
            match number {
                0 => {
                    while !hostile.load(Ordering::SeqCst) {
                        if ws.send(trade("BTCUSDT", "100.5")).await.is_err() {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    // The drop that sends ingest into the hostile connections.
                    let _ = ws.close(None).await;
                    return;
                }
                2 => {
                    let mut bytes = frame_header(true, 1, 1 << 62);
                    bytes.extend_from_slice(&[b'a'; 4096]);
                    let _ = ws.get_mut().write_all(&bytes).await;
                }
                3 => {
                    let fragment = vec![b'a'; 200 << 10];
                    for i in 0..7u8 {
                        let mut bytes =
                            frame_header(i == 6, u8::from(i == 0), fragment.len() as u64);
                        bytes.extend_from_slice(&fragment);
                        if ws.get_mut().write_all(&bytes).await.is_err() {
                            break;
                        }
                    }
                }
                _ => {
                    for _ in 0..5 {
                        let _ = ws.send(trade("XRPUSDT", "1.5")).await;
                    }
                    for _ in 0..1200 {
                        if ws.send(trade("BTCUSDT", WS_AFTER_PRICE)).await.is_err() {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
            // Held until the client goes (or a while), so the client's side decides.
            let _ = tokio::time::timeout(Duration::from_secs(30), async {
                while futures::StreamExt::next(&mut ws).await.is_some() {}
            })
            .await;
        });
    }
}

const WS_AFTER_PRICE: &str = "300.5";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_survives_a_stalled_handshake_huge_frames_and_unlisted_symbols_then_resumes() {
    let brokers = require_kafka();
    let topic = unique_name("hostile-ws");
    create_topic(&brokers, &topic, 1).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base_url = format!("ws://{}", listener.local_addr().expect("address"));
    let hostile = Arc::new(AtomicBool::new(false));
    let connections = Arc::new(AtomicUsize::new(0));
    tokio::spawn(hostile_ws(
        listener,
        Arc::clone(&hostile),
        Arc::clone(&connections),
    ));
    let dir = tempfile::tempdir().expect("temp dir");
    let app = unique_name("hostile-ws");
    let topology = format!(
        r#"
        application_id = "{app}"
        symbols = ["BTCUSDT", "ETHUSDT"]
        [topics]
        raw = "{topic}"
        [source]
        kind = "binance-ws"
        base_url = "{base_url}"
        allow_plain_transport = true
        "#
    );
    let (mut ingest, metrics) = start_ingest(dir.path(), &topology).await;

    hostile.store(true, Ordering::SeqCst);
    wait_ready(metrics, false, &mut ingest, EVENT).await;
    wait_ready(metrics, true, &mut ingest, WS_RECOVERY).await;
    assert!(
        connections.load(Ordering::SeqCst) >= 5,
        "ready again only on the connection that behaves"
    );
    assert_logged(
        &ingest,
        &[
            "no completed WebSocket handshake within 10s",
            "refused a message over the caps",
            "the topology does not list",
        ],
    );
    assert!(
        metric(metrics, "tickstream_ingest_oversized_responses_total", "").unwrap_or_default()
            >= 2.0
    );
    assert!(
        metric(metrics, "tickstream_ingest_unknown_symbols_total", "").unwrap_or_default() >= 5.0
    );
    stop_checked(ingest, metrics).await;

    let records = read_to_end(&brokers, &topic, 1);
    assert!(records.iter().all(|r| r.key.as_deref() == Some("BTCUSDT")));
    let decode = DecodeOptions::new();
    assert!(
        records.iter().any(|r| decode
            .decode(&r.value)
            .is_ok_and(|tick| tick.price == 300.5)),
        "the trades after the hostile connections reached Kafka"
    );
}
