//! `/metrics` (Prometheus text format), `/healthz` (the processing loop is turning) and
//! `/readyz` (partitions assigned and state restored) on one address.
//!
//! Whatever can reach the address can connect, so the server bounds what a client may hold and
//! never lets one delay the process's exit:
//!
//! * **Header timeout** ([`HEADER_READ_TIMEOUT`], 5 s): a request's head must arrive whole
//!   within it, counted from when the connection starts waiting for one. A client trickling a
//!   byte at a time (slow loris), a connection that sends nothing and one left idle after a
//!   response (keep-alive) are all closed then.
//! * **Connection limit** ([`MAX_CONNECTIONS`], 256): at the limit, a new connection closes
//!   the oldest one that is not handling a request (idle, or still sending its head), so a
//!   flood of idle connections can neither exhaust file descriptors (librdkafka needs them
//!   too) nor lock a scraper or a health check out; if every connection is busy, the new one
//!   is closed at once.
//! * **Request size**: a head above 16 KiB or 64 headers is refused (`431`), a request with a
//!   body gets `413` (the endpoints take none; no body is ever read).
//! * **Shutdown**: stop accepting, let requests in flight finish while idle connections close,
//!   and after [`SHUTDOWN_GRACE`] (1 s) drop whatever is still open.
//!
//! `axum::serve` does none of this (it gives hyper no timer, has no limit, and its graceful
//! shutdown waits for every connection), so the accept loop is ours, over hyper's HTTP/1
//! connection; axum still routes.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{Request, Response, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use hyper::body::Incoming;
use hyper::service::{Service, service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinSet};
use tracing::{debug, warn};

use crate::metrics::{Health, StreamsMetrics};

/// How long a request's head may take to arrive, and how long a connection may stay idle.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 256;
/// How long shutdown lets requests in flight finish before it drops their connections.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);
/// The largest request head (hyper's read buffer; 8 KiB is its least).
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// The most headers in a request (a scraper sends a handful).
const MAX_HEADERS: usize = 64;

/// What the endpoints report on. `render` produces the metrics text: the runtime's own metrics
/// plus whatever the processor registered.
#[derive(Clone)]
pub struct Endpoints {
    pub health: Arc<Health>,
    pub render: Arc<dyn Fn() -> String + Send + Sync>,
}

impl Endpoints {
    pub fn for_runtime(metrics: Arc<StreamsMetrics>, health: Arc<Health>) -> Self {
        Self {
            health,
            render: Arc::new(move || metrics.render()),
        }
    }
}

async fn metrics(State(endpoints): State<Endpoints>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        (endpoints.render)(),
    )
}

async fn healthz(State(endpoints): State<Endpoints>) -> impl IntoResponse {
    if endpoints.health.is_alive() {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "processing loop stalled\n")
    }
}

async fn readyz(State(endpoints): State<Endpoints>) -> impl IntoResponse {
    if endpoints.health.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: waiting for partitions or restoring state\n",
        )
    }
}

fn router(endpoints: Endpoints) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(endpoints)
}

/// Binds `address` (failing at once with the address in the error if it is taken) and returns
/// the bound address and the server future, which runs until `shutdown` completes and then at
/// most `SHUTDOWN_GRACE` (1 s) longer.
pub async fn bind(
    address: SocketAddr,
    endpoints: Endpoints,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<(SocketAddr, impl Future<Output = std::io::Result<()>>)> {
    let listener = TcpListener::bind(address).await.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot listen on {address} for /metrics: {e}"),
        )
    })?;
    let bound = listener.local_addr()?;
    let server = serve(listener, router(endpoints), Limits::DEFAULT, shutdown);
    Ok((bound, async move {
        server.await;
        Ok(())
    }))
}

/// The server's bounds (smaller in the tests, so they run fast).
#[derive(Debug, Clone, Copy)]
struct Limits {
    header_read_timeout: Duration,
    max_connections: usize,
    shutdown_grace: Duration,
}

impl Limits {
    const DEFAULT: Self = Self {
        header_read_timeout: HEADER_READ_TIMEOUT,
        max_connections: MAX_CONNECTIONS,
        shutdown_grace: SHUTDOWN_GRACE,
    };
}

/// An open connection, as the accept loop sees it.
struct Open {
    /// Requests being handled on it right now: one with none may be closed for a newcomer.
    in_flight: Arc<AtomicUsize>,
    task: AbortHandle,
}

/// The accept loop: one task per connection, owned by a `JoinSet` (so none outlives the
/// server), tracked by age for the connection limit.
async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let (stop_tx, stop_rx) = watch::channel(());
    let mut tasks = JoinSet::new();
    // Ids grow with each connection: the first entry is the oldest.
    let mut open: BTreeMap<u64, Open> = BTreeMap::new();
    let mut next_id = 0u64;
    let mut shutdown = pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(done) = tasks.join_next_with_id() => match done {
                Ok((_, id)) => {
                    open.remove(&id);
                }
                // Aborted (closed for a newcomer: already removed) or a handler panicked.
                Err(error) => open.retain(|_, o| o.task.id() != error.id()),
            },
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _peer)) => stream,
                    Err(error) => {
                        accept_failed(error).await;
                        continue;
                    }
                };
                if open.len() >= limits.max_connections && !close_oldest_idle(&mut open) {
                    debug!("{} HTTP connections, all busy: closing a new one", open.len());
                    continue;
                }
                let in_flight = Arc::new(AtomicUsize::new(0));
                let task = tasks.spawn(connection(
                    next_id,
                    stream,
                    app.clone(),
                    Arc::clone(&in_flight),
                    stop_rx.clone(),
                    limits.header_read_timeout,
                ));
                open.insert(next_id, Open { in_flight, task });
                next_id += 1;
            }
        }
    }
    drop(listener);
    // Every connection now finishes its request in flight, or closes if it has none.
    drop(stop_rx);
    let _ = stop_tx.send(());
    let finished = tokio::time::timeout(limits.shutdown_grace, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if finished.is_err() {
        debug!(
            "dropping {} HTTP connection(s) still open {:?} after shutdown",
            tasks.len(),
            limits.shutdown_grace
        );
        tasks.shutdown().await;
    }
}

/// Closes the oldest connection with no request in flight; false if every one is busy.
fn close_oldest_idle(open: &mut BTreeMap<u64, Open>) -> bool {
    let idle = open
        .iter()
        .find(|(_, o)| o.in_flight.load(Ordering::Acquire) == 0)
        .map(|(id, _)| *id);
    match idle.and_then(|id| open.remove(&id)) {
        Some(oldest) => {
            oldest.task.abort();
            true
        }
        None => false,
    }
}

/// A connection the peer reset before we took it costs nothing; anything else (out of file
/// descriptors, EMFILE) is worth a warning and a pause, so the loop does not spin on it.
async fn accept_failed(error: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        error.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    warn!("cannot accept an HTTP connection ({error}); retrying in 100 ms");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// Counts a request in flight on its connection while alive.
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn enter(counter: &Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::AcqRel);
        Self(Arc::clone(counter))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Whether the request says it carries a body.
fn has_body(request: &Request<Incoming>) -> bool {
    let headers = request.headers();
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .is_some_and(|length| length.as_bytes() != b"0")
}

/// Serves one connection until it closes, times out, or the server stops (then it finishes
/// the request in flight, if any: the accept loop bounds how long). Returns its id.
async fn connection(
    id: u64,
    stream: TcpStream,
    app: Router,
    in_flight: Arc<AtomicUsize>,
    mut stop: watch::Receiver<()>,
    header_read_timeout: Duration,
) -> u64 {
    let router = TowerToHyperService::new(app);
    let service = service_fn(move |request: Request<Incoming>| {
        let busy = InFlight::enter(&in_flight);
        let routed = (!has_body(&request)).then(|| router.call(request));
        async move {
            let _busy = busy;
            match routed {
                Some(response) => response.await,
                None => Ok(body_refused()),
            }
        }
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .max_buf_size(MAX_HEAD_BYTES)
        .max_headers(MAX_HEADERS);
    let mut conn = pin!(http.serve_connection(TokioIo::new(stream), service));
    tokio::select! {
        served = conn.as_mut() => {
            if let Err(error) = served {
                debug!("HTTP connection closed: {error}");
            }
        }
        // Changed, or the sender is gone: either way the server is stopping.
        _ = stop.changed() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
    id
}

fn body_refused() -> Response<Body> {
    (
        StatusCode::PAYLOAD_TOO_LARGE,
        [(header::CONNECTION, "close")],
        "these endpoints take no request body\n",
    )
        .into_response()
}

#[cfg(test)]
mod tests;
