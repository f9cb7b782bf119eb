//! The `/metrics` endpoints of a real processor (`tickstream ingest`, synthetic source, the
//! shared broker) against hostile clients: a slow-loris client is cut after the header
//! timeout; with 1,000 idle connections open `/healthz` still answers at once and the process
//! holds no more than its connection limit; and SIGINT ends the process within its shutdown
//! deadline while idle and half-sent connections are still open.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::processes::{start, wait_for_exit, wait_ready};
use crate::support::{create_topic, free_local_address, http_get, require_kafka, unique_name};

/// Idle connections the flood opens.
const FLOOD: usize = 1_000;
/// The server's limits (`tickstream_streams`'s http module, documented in README.md).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_CONNECTIONS: usize = 256;
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// The test opens over a thousand sockets: make sure the soft limit allows it.
fn raise_open_files_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        let wanted = (4 * FLOOD) as libc::rlim_t;
        if limit.rlim_cur < wanted {
            limit.rlim_cur = wanted.min(limit.rlim_max);
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
        }
    }
    assert!(
        limit.rlim_cur as usize > 2 * FLOOD,
        "RLIMIT_NOFILE is {}: raise it (ulimit -n 4096)",
        limit.rlim_cur
    );
}

fn connect(address: SocketAddr) -> TcpStream {
    let stream =
        TcpStream::connect_timeout(&address, Duration::from_secs(2)).expect("connect to /metrics");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("read timeout");
    stream
}

/// A client sending one header byte a second, never a whole head: how long until the server
/// closed the connection.
fn slow_loris(address: SocketAddr) -> Duration {
    let mut stream = connect(address);
    stream
        .set_read_timeout(Some(Duration::from_millis(1)))
        .expect("read timeout");
    let started = Instant::now();
    for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: "
        .iter()
        .cycle()
    {
        assert!(
            started.elapsed() < 4 * HEADER_READ_TIMEOUT,
            "a slow-loris client is still connected after {:?}",
            started.elapsed()
        );
        if stream.write_all(&[*byte]).is_err() || closed(&mut stream) {
            return started.elapsed();
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    unreachable!("the cycle never ends")
}

/// Whether the server closed `stream` (a read timing out means it is still open).
fn closed(stream: &mut TcpStream) -> bool {
    let mut buffer = [0u8; 512];
    match stream.read(&mut buffer) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

/// File descriptors the process `pid` holds.
fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|entries| entries.count())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_clients_neither_lock_out_healthz_nor_delay_shutdown() {
    raise_open_files_limit();
    let brokers = require_kafka();
    let dir = tempfile::tempdir().expect("temp dir");
    let app = unique_name("http-hostile");
    let raw = format!("{app}.raw");
    create_topic(&brokers, &raw, 1).await;
    let path = dir.path().join("topology.toml");
    let topology = format!(
        "application_id = \"{app}\"\nsymbols = [\"BTCUSDT\"]\n[topics]\nraw = \"{raw}\"\n\
         [source]\nkind = \"synthetic\"\nticks_per_second = 5\n"
    );
    std::fs::write(&path, topology).expect("write the topology");
    let metrics = free_local_address();
    let log = dir.path().join("ingest.log");
    let mut ingest = start("ingest", &path, &brokers, None, metrics, &log);
    wait_ready(metrics, true, &mut ingest, Duration::from_secs(60)).await;

    let cut_after = tokio::task::spawn_blocking(move || slow_loris(metrics))
        .await
        .expect("the slow client");
    eprintln!("slow-loris client cut after {cut_after:?}");
    assert!(
        cut_after >= HEADER_READ_TIMEOUT - Duration::from_secs(1)
            && cut_after <= HEADER_READ_TIMEOUT + Duration::from_secs(2),
        "cut after {cut_after:?}, the header timeout is {HEADER_READ_TIMEOUT:?}"
    );

    let flood: Vec<TcpStream> = (0..FLOOD).map(|_| connect(metrics)).collect();
    let asked = Instant::now();
    let answer = tokio::task::spawn_blocking(move || http_get(metrics, "/healthz"))
        .await
        .expect("the health check");
    let took = asked.elapsed();
    eprintln!("/healthz with {FLOOD} idle connections open: {answer:?} in {took:?}");
    assert_eq!(answer.map(|(status, _)| status), Some(200));
    assert!(took < Duration::from_secs(1), "/healthz took {took:?}");
    let held = open_files(ingest.id());
    eprintln!("ingest holds {held} file descriptors");
    assert!(
        held < MAX_CONNECTIONS + 200,
        "ingest holds {held} file descriptors with {FLOOD} connections offered"
    );

    // Fresh idle connections and a half-sent request, open while the signal arrives.
    let mut waiting: Vec<TcpStream> = (0..MAX_CONNECTIONS / 2).map(|_| connect(metrics)).collect();
    let mut half = connect(metrics);
    half.write_all(b"GET /metrics HTTP/1.1\r\nHost: x")
        .expect("half a request");
    waiting.push(half);
    assert_eq!(http_get(metrics, "/healthz").map(|(s, _)| s), Some(200));
    let signalled = Instant::now();
    let status = std::process::Command::new("kill")
        .args(["-INT", &ingest.id().to_string()])
        .status()
        .expect("run kill -INT");
    assert!(status.success());
    // The HTTP server's grace, plus flushing a few ticks to a broker that answers.
    let deadline = SHUTDOWN_GRACE + Duration::from_secs(3);
    let exit = wait_for_exit(ingest, deadline).await;
    eprintln!(
        "ingest exited {exit} {:?} after SIGINT",
        signalled.elapsed()
    );
    assert!(exit.success(), "SIGINT → flush → exit 0, got {exit}");
    drop((flood, waiting));
}
