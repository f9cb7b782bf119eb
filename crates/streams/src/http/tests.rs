//! The server against misbehaving clients, over real sockets, with short limits.

use std::io::{Read, Write};
use std::net::TcpStream as Client;
use std::time::Instant;

use super::*;

const LIMITS: Limits = Limits {
    header_read_timeout: Duration::from_millis(400),
    max_connections: 8,
    shutdown_grace: Duration::from_millis(300),
};

/// Limits whose header timeout outlasts the test.
const PATIENT: Limits = Limits {
    header_read_timeout: Duration::from_secs(30),
    ..LIMITS
};

/// A server on its own runtime and thread, so the test can use blocking sockets.
struct TestServer {
    address: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

fn start(limits: Limits) -> TestServer {
    let (address_tx, address_rx) = std::sync::mpsc::channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(async move {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            address_tx
                .send(listener.local_addr().expect("bound"))
                .expect("the test waits for the address");
            let endpoints = Endpoints {
                health: Arc::new(Health::default()),
                render: Arc::new(|| "tickstream_test 1\n".to_owned()),
            };
            let shutdown = async {
                let _ = stopped.await;
            };
            serve(listener, router(endpoints), limits, shutdown).await;
        });
    });
    let address = address_rx.recv().expect("the server's address");
    TestServer {
        address,
        stop,
        thread,
    }
}

impl TestServer {
    /// Signals shutdown; returns how long the server took to finish.
    fn stop(self) -> Duration {
        let started = Instant::now();
        self.stop.send(()).expect("the server is running");
        self.thread.join().expect("the server thread");
        started.elapsed()
    }
}

fn connect(address: SocketAddr) -> Client {
    let client = Client::connect(address).expect("connect");
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    client
}

/// Sends `request` whole and reads the response to the end: (status, whole response).
fn exchange(address: SocketAddr, request: &[u8]) -> (u16, String) {
    let mut client = connect(address);
    client.write_all(request).expect("send the request");
    let mut response = Vec::new();
    let _ = client.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {text:?}"));
    (status, text)
}

fn get(address: SocketAddr, path: &str) -> (u16, String) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    exchange(address, request.as_bytes())
}

/// Reads until the server closes the connection; how long that took.
fn time_until_closed(client: &mut Client) -> Duration {
    let started = Instant::now();
    let mut buffer = [0u8; 256];
    while matches!(client.read(&mut buffer), Ok(n) if n > 0) {}
    started.elapsed()
}

#[test]
fn endpoints_answer() {
    let server = start(LIMITS);
    let (status, text) = get(server.address, "/metrics");
    assert_eq!(status, 200);
    assert!(text.ends_with("tickstream_test 1\n"), "{text}");
    assert_eq!(get(server.address, "/healthz").0, 200);
    assert_eq!(get(server.address, "/readyz").0, 503);
    assert_eq!(get(server.address, "/nothing").0, 404);
    server.stop();
}

#[test]
fn a_slow_loris_and_an_idle_connection_are_closed_after_the_header_timeout() {
    let server = start(LIMITS);
    // Taken before connecting: the server's timer starts at accept, so neither measure can
    // come out shorter than the timeout however the test threads are scheduled.
    let opened = Instant::now();
    let mut idle = connect(server.address);
    let mut loris = connect(server.address);
    let address = server.address;
    let trickle = std::thread::spawn(move || {
        let started = opened;
        // One header byte every 50 ms: never a whole head, always some progress.
        for byte in b"GET /healthz HTTP/1.1\r\nX-Slow: ".iter().cycle() {
            if loris.write_all(&[*byte]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
            assert!(started.elapsed() < Duration::from_secs(5), "never cut");
        }
        started.elapsed()
    });
    time_until_closed(&mut idle);
    let idle_for = opened.elapsed();
    let loris_for = trickle.join().expect("the slow client");
    for open_for in [idle_for, loris_for] {
        assert!(
            open_for >= Duration::from_millis(300) && open_for < Duration::from_secs(2),
            "closed after {open_for:?}, the timeout is {:?}",
            LIMITS.header_read_timeout
        );
    }
    // A keep-alive connection left idle after a response is closed as well.
    let mut kept = connect(address);
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
        .expect("send");
    let kept_for = time_until_closed(&mut kept);
    assert!(kept_for < Duration::from_secs(2), "idle for {kept_for:?}");
    server.stop();
}

#[test]
fn idle_connections_beyond_the_limit_do_not_lock_out_a_health_check() {
    // A long header timeout: only closing idle connections for newcomers can let it in.
    let server = start(PATIENT);
    let idle: Vec<Client> = (0..LIMITS.max_connections * 4)
        .map(|_| connect(server.address))
        .collect();
    let started = Instant::now();
    assert_eq!(get(server.address, "/healthz").0, 200);
    // Well within the header timeout: the newcomer closed an idle one instead of waiting.
    assert!(started.elapsed() < Duration::from_secs(2));
    drop(idle);
    server.stop();
}

#[test]
fn oversized_heads_and_bodies_are_refused() {
    let server = start(LIMITS);
    let huge = format!(
        "GET /healthz HTTP/1.1\r\nHost: test\r\nX-Big: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    assert_eq!(exchange(server.address, huge.as_bytes()).0, 431);
    let many: String = (0..100).map(|i| format!("X-{i}: 1\r\n")).collect();
    let request = format!("GET /healthz HTTP/1.1\r\nHost: test\r\n{many}\r\n");
    assert_eq!(exchange(server.address, request.as_bytes()).0, 431);
    let body = b"POST /healthz HTTP/1.1\r\nHost: test\r\nContent-Length: 1000000000\r\n\r\nxx";
    let (status, text) = exchange(server.address, body);
    assert_eq!(status, 413, "{text}");
    server.stop();
}

#[test]
fn shutdown_does_not_wait_for_clients() {
    // A long header timeout: only the shutdown grace can end the half-sent request.
    let server = start(PATIENT);
    let _idle: Vec<Client> = (0..4).map(|_| connect(server.address)).collect();
    // Half a head, then silence: hyper would wait for the rest of this request.
    let mut half = connect(server.address);
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: te")
        .expect("send");
    // The server took the connections (they are not in the backlog only).
    assert_eq!(get(server.address, "/healthz").0, 200);
    let took = server.stop();
    assert!(
        took < PATIENT.shutdown_grace + Duration::from_secs(2),
        "shutdown took {took:?}"
    );
    assert!(
        time_until_closed(&mut half) < Duration::from_secs(1),
        "closed"
    );
}
