//! A fake Binance REST API on 127.0.0.1 (axum), answering with Binance's exact JSON, status
//! codes and headers as each test scripts them, and recording when each request arrived.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;

/// What the fake answers to one request.
#[derive(Clone)]
pub(super) struct Reply {
    pub(super) status: u16,
    pub(super) headers: Vec<(&'static str, String)>,
    pub(super) body: String,
    pub(super) delay: Duration,
}

impl Reply {
    pub(super) fn status(status: u16, body: &str) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: body.to_owned(),
            delay: Duration::ZERO,
        }
    }

    pub(super) fn header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.to_owned()));
        self
    }

    /// Binance's answer to `ticker/price?symbols=[...]`, prices as Binance writes them.
    pub(super) fn prices(prices: &[(&str, &str)]) -> Self {
        let entries: Vec<String> = prices
            .iter()
            .map(|(s, p)| format!(r#"{{"symbol":"{s}","price":"{p}"}}"#))
            .collect();
        Self::status(200, &format!("[{}]", entries.join(",")))
            .header("content-type", "application/json;charset=UTF-8")
            .header("x-mbx-used-weight-1m", "4")
    }
}

pub(super) const PRICES: [(&str, &str); 3] = [
    ("BTCUSDT", "67234.50000000"),
    ("ETHUSDT", "3100.01000000"),
    ("SOLUSDT", "150.25000000"),
];

type Script = Arc<dyn Fn(&str, usize) -> Reply + Send + Sync>;

#[derive(Clone)]
struct FakeState {
    script: Script,
    /// (arrival, path and query) of every request.
    requests: Arc<Mutex<Vec<(Instant, String)>>>,
}

/// A fake Binance REST API: `script(path_and_query, request_number)` decides each answer.
pub(super) struct FakeBinance {
    pub(super) base_url: String,
    pub(super) requests: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl FakeBinance {
    pub(super) async fn start(
        script: impl Fn(&str, usize) -> Reply + Send + Sync + 'static,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1");
        let base_url = format!("http://{}", listener.local_addr().expect("address"));
        let state = FakeState {
            script: Arc::new(script),
            requests: Arc::new(Mutex::new(Vec::new())),
        };
        let requests = Arc::clone(&state.requests);
        let app = Router::new().fallback(answer).with_state(state);
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { base_url, requests }
    }

    pub(super) fn requests(&self) -> Vec<(Instant, String)> {
        self.requests.lock().expect("not poisoned").clone()
    }

    /// The time between request `a` and request `b` (0-based) reaching the server.
    pub(super) fn gap(&self, a: usize, b: usize) -> Duration {
        let requests = self.requests();
        requests[b].0.duration_since(requests[a].0)
    }
}

async fn answer(State(state): State<FakeState>, uri: Uri) -> Response {
    let target = uri.path_and_query().map_or("", |p| p.as_str()).to_owned();
    let number = {
        let mut requests = state.requests.lock().expect("not poisoned");
        requests.push((Instant::now(), target.clone()));
        requests.len() - 1
    };
    let reply = (state.script)(&target, number);
    // Simulates a slow server (the timeout test), not synchronisation.
    tokio::time::sleep(reply.delay).await;
    let mut response = (
        StatusCode::from_u16(reply.status).expect("valid status"),
        reply.body,
    )
        .into_response();
    for (name, value) in reply.headers {
        response
            .headers_mut()
            .insert(name, value.parse().expect("valid header value"));
    }
    response
}
