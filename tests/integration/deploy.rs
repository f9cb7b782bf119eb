//! The deployment files (`docker-compose.yml`, `deploy/`) against the code they deploy, without
//! a Docker engine:
//!
//! - every metric the Grafana dashboard and the Prometheus rules query is one a processor
//!   exports, and the dashboard covers what operators look at;
//! - a real Prometheus (Debian package `prometheus`, installed by `make deps`) scrapes a running
//!   streams application, answers a query for processed records, and evaluates our alert rules;
//! - the compose stack's topic step creates exactly the topics tickstream's topology parser sees;
//! - the image's HEALTHCHECK script tells a serving `/healthz` from a dead port;
//! - every third-party image is pinned by digest ([`images`]).
//!
//! The Compose file's schema validation is `make check-deploy` (scripts/check-deploy.sh); its
//! secrets (empty in .env.example, never in argv) and the sink's least-privilege MongoDB user,
//! tests/compat/test_compose_secrets.py (`make compat`).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tickstream_enrich::EnrichMetrics;
use tickstream_ingest::IngestMetrics;
use tickstream_sink::SinkMetrics;
use tickstream_streams::{
    CountingProcessor, Endpoints, Health, KafkaStreams, Shutdown, StreamsConfig, StreamsMetrics,
    bind_http,
};

use crate::support::{
    ChildProcess, create_topic, free_local_address, http_get, produce_keyed, producer,
    require_kafka, unique_name,
};

mod images;

/// The repository root: the deployment files are read where they are committed.
fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn read(relative: &str) -> String {
    let path = repo_path(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Every metric family the processors export: the one list dashboards and rules are checked
/// against. A processor that registers new metrics adds its registry here.
fn exported_metric_names() -> BTreeSet<String> {
    const APP: &str = "deploy-check";
    // enrich: the streams runtime's metrics plus its analytics gauges, in one registry.
    let enrich = StreamsMetrics::new(APP);
    EnrichMetrics::register(enrich.registry());
    let ingest = IngestMetrics::new(APP);
    let sink = SinkMetrics::new(APP);
    [enrich.registry(), ingest.registry(), sink.registry()]
        .into_iter()
        .flat_map(|registry| registry.names())
        .collect()
}

/// The `tickstream_…` metric names `text` mentions. Scans the whole file, not only PromQL
/// expressions: any such identifier anywhere must exist (names use `_`, while job names,
/// uids and application ids in these files use `-` or none).
fn referenced_metric_names(text: &str) -> BTreeSet<String> {
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("tickstream_") {
        let before = rest[..at].chars().next_back();
        let tail = &rest[at..];
        let end = tail.find(|c| !is_ident(c)).unwrap_or(tail.len());
        if !before.is_some_and(is_ident) {
            names.insert(tail[..end].to_owned());
        }
        rest = &tail[end..];
    }
    names
}

/// A referenced series exists when it is an exported family, or a histogram's
/// `_bucket`/`_sum`/`_count` series of one.
fn is_exported(name: &str, exported: &BTreeSet<String>) -> bool {
    exported.contains(name)
        || ["_bucket", "_sum", "_count"].iter().any(|suffix| {
            name.strip_suffix(suffix)
                .is_some_and(|f| exported.contains(f))
        })
}

const METRIC_FILES: &[&str] = &[
    "deploy/grafana/dashboards/tickstream.json",
    "deploy/prometheus/prometheus.yml",
    "deploy/prometheus/rules/tickstream.yml",
    "deploy/prometheus/tests/rules_test.yml",
];

#[test]
fn dashboard_and_alert_rules_query_only_exported_metrics() {
    let exported = exported_metric_names();
    let mut unknown = Vec::new();
    let mut referenced = 0;
    for file in METRIC_FILES {
        for name in referenced_metric_names(&read(file)) {
            referenced += 1;
            if !is_exported(&name, &exported) {
                unknown.push(format!("{file}: {name}"));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "metrics no processor exports (a typo, or a metric renamed in the code?):\n  {}\n\
         exported: {exported:?}",
        unknown.join("\n  ")
    );
    assert!(referenced > 20, "only {referenced} metric references found");
}

#[test]
fn the_metric_check_catches_unknown_names() {
    let exported = exported_metric_names();
    let names = referenced_metric_names(
        r#"rate(tickstream_records_consumed_totl[1m]) + tickstream_commit_duration_seconds_bucket
           {application="tickstream-enrich"} x_tickstream_ignored"#,
    );
    let unknown: Vec<_> = names
        .iter()
        .filter(|n| !is_exported(n, &exported))
        .collect();
    assert_eq!(unknown, ["tickstream_records_consumed_totl"]);
}

/// Panels and their queries: every panel asks the provisioned Prometheus datasource, and the
/// dashboard shows what the issue lists: prices, analytics, throughput, lag, DLQ, restores.
#[test]
fn dashboard_covers_the_pipeline_through_the_provisioned_datasource() {
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("deploy/grafana/dashboards/tickstream.json"))
            .expect("the dashboard is JSON");
    let datasource_uid = read("deploy/grafana/provisioning/datasources/prometheus.yml")
        .lines()
        .find_map(|line| {
            line.trim()
                .strip_prefix("uid:")
                .map(|v| v.trim().to_owned())
        })
        .expect("the provisioned datasource has a uid");
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut expressions = Vec::new();
    for panel in panels.iter().filter(|p| p["type"] != "row") {
        let title = &panel["title"];
        assert_eq!(panel["datasource"]["uid"], *datasource_uid, "panel {title}");
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {title} has no query");
        for target in targets {
            assert_eq!(
                target["datasource"]["uid"], *datasource_uid,
                "panel {title}"
            );
            let expr = target["expr"].as_str().expect("a PromQL expression");
            assert!(!expr.trim().is_empty(), "panel {title} has an empty query");
            expressions.push(expr.to_owned());
        }
    }
    let used = referenced_metric_names(&expressions.join("\n"));
    for (what, metric) in [
        ("prices", "tickstream_enrich_last_price"),
        ("moving averages", "tickstream_enrich_moving_average"),
        ("volatility", "tickstream_enrich_volatility"),
        ("jump events", "tickstream_enrich_jumps_total"),
        (
            "ingest throughput",
            "tickstream_ingest_ticks_produced_total",
        ),
        ("enrich throughput", "tickstream_records_consumed_total"),
        ("sink throughput", "tickstream_sink_documents_written_total"),
        ("enrich consumer lag", "tickstream_consumer_lag_records"),
        ("sink consumer lag", "tickstream_sink_consumer_lag_records"),
        ("dead letters", "tickstream_dead_letter_records_total"),
        (
            "sink dead letters",
            "tickstream_sink_dead_letter_records_total",
        ),
        ("restore progress", "tickstream_restore_remaining_records"),
    ] {
        assert!(used.contains(metric), "no panel shows {what} ({metric})");
    }
}

/// Runs the image's HEALTHCHECK script against `address`: whether it reports healthy, and what
/// it said.
fn run_healthcheck(address: SocketAddr) -> (bool, String) {
    let output = Command::new("bash")
        .arg(repo_path("deploy/docker/healthcheck.sh"))
        .env(
            "TICKSTREAM_METRICS_ADDR",
            format!("0.0.0.0:{}", address.port()),
        )
        .output()
        .expect("run bash");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_healthcheck_reads_healthz() {
    let endpoints = Endpoints::for_runtime(
        Arc::new(StreamsMetrics::new("healthcheck")),
        Arc::new(Health::default()),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (address, serve) = bind_http(free_local_address(), endpoints, async {
        let _ = stopped.await;
    })
    .await
    .expect("bind /healthz");
    let server = tokio::spawn(serve);
    let (healthy, said) = tokio::task::spawn_blocking(move || run_healthcheck(address))
        .await
        .expect("healthcheck thread");
    let _ = stop.send(());
    server.await.expect("server task").expect("server");
    assert!(
        healthy,
        "the healthcheck failed against a serving /healthz: {said}"
    );
    let dead = free_local_address();
    let (healthy, said) = run_healthcheck(dead);
    assert!(
        !healthy,
        "the healthcheck passed with nothing listening on {dead}"
    );
    assert!(
        said.contains("nothing listens"),
        "unexpected diagnosis: {said}"
    );
}

fn prometheus_binary() -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("prometheus"))
            .find(|candidate| candidate.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "the `prometheus` binary is not installed: `make deps` installs it \
             (Debian package prometheus)"
        )
    })
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The value of a single-series instant query, once Prometheus has one.
fn query_value(prometheus: SocketAddr, query: &str) -> Option<f64> {
    let (status, body) = http_get(
        prometheus,
        &format!("/api/v1/query?query={}", percent_encode(query)),
    )?;
    if status != 200 {
        return None;
    }
    let answer: serde_json::Value = serde_json::from_str(&body).ok()?;
    answer["data"]["result"][0]["value"][1]
        .as_str()?
        .parse()
        .ok()
}

/// The health of every alerting rule Prometheus loaded (`ok`, `unknown`, `err`).
fn rule_health(prometheus: SocketAddr) -> Vec<(String, String)> {
    let Some((200, body)) = http_get(prometheus, "/api/v1/rules") else {
        return Vec::new();
    };
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    let groups = answer["data"]["groups"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    groups
        .iter()
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
        .map(|r| {
            let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
            (text(&r["name"]), text(&r["health"]))
        })
        .collect()
}

/// Asks the application's processing thread to stop when dropped, also when an assertion
/// failed: the tokio runtime waits for that thread before the test can end.
struct StopOnDrop(Shutdown);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.request();
    }
}

const RECORDS: u32 = 300;
const PROMETHEUS_DEADLINE: Duration = Duration::from_secs(90);

/// A real Prometheus scrapes a running streams application's /metrics and answers a query for
/// the records it processed; it also loads and evaluates deploy/prometheus/rules.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_prometheus_scrapes_a_running_processor() {
    let prometheus = prometheus_binary();
    let brokers = require_kafka();
    let input = unique_name("deploy-input");
    let output = unique_name("deploy-output");
    create_topic(&brokers, &input, 2).await;
    create_topic(&brokers, &output, 2).await;

    // The application, in process: the runtime's counting processor with its HTTP endpoints.
    let application_id = unique_name("deploy-app");
    let state_dir = tempfile::tempdir().expect("a state dir");
    let mut config = StreamsConfig::new(&application_id, &brokers, &[input.as_str()]);
    config.store_name = "counts".into();
    config.output_topics = vec![output.clone()];
    config.state_dir = state_dir.path().to_owned();
    let output_topic = output.clone();
    let streams = KafkaStreams::new(
        config,
        Box::new(move |_| CountingProcessor::new(output_topic.clone())),
    )
    .expect("a valid configuration");
    let endpoints = Endpoints::for_runtime(streams.metrics(), streams.health());
    let (stop_server, server_stopped) = tokio::sync::oneshot::channel::<()>();
    let (metrics_address, serve) = bind_http(free_local_address(), endpoints, async {
        let _ = server_stopped.await;
    })
    .await
    .expect("bind /metrics");
    let server = tokio::spawn(serve);
    let shutdown = StopOnDrop(Shutdown::new());
    let token = shutdown.0.clone();
    let worker = tokio::task::spawn_blocking(move || streams.run(&token));

    produce_keyed(&producer(&brokers, &[]), &input, 0..RECORDS, 10).await;

    // Prometheus on loopback, scraping every second, with the stack's alert rules.
    let dir = tempfile::tempdir().expect("a temp dir");
    let web_address = free_local_address();
    let config_file = dir.path().join("prometheus.yml");
    std::fs::write(
        &config_file,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {rules}\n\
             scrape_configs:\n  - job_name: enrich\n    static_configs:\n      - targets: ['{metrics_address}']\n",
            rules = repo_path("deploy/prometheus/rules/tickstream.yml").display(),
        ),
    )
    .expect("write the Prometheus config");
    let mut command = Command::new(&prometheus);
    command.args([
        format!("--config.file={}", config_file.display()),
        format!("--storage.tsdb.path={}", dir.path().join("data").display()),
        format!("--web.listen-address={web_address}"),
    ]);
    // Killed on drop, also when an assertion below fails.
    let mut server_process = ChildProcess::spawn("prometheus", command, &dir.path().join("log"));

    let query =
        format!("sum(tickstream_records_consumed_total{{application=\"{application_id}\"}})");
    let deadline = Instant::now() + PROMETHEUS_DEADLINE;
    let mut last = None;
    while last.is_none_or(|value| value < f64::from(RECORDS)) {
        server_process.assert_running();
        assert!(
            Instant::now() < deadline,
            "Prometheus at {web_address} never reported {RECORDS} consumed records for `{query}` \
             (last answer: {last:?}); its log:\n{}",
            server_process.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        last = query_value(web_address, &query);
    }
    assert!(last.is_some_and(|v| v > 0.0));

    // Every rule of the stack loaded and evaluated without error in a real Prometheus.
    let alerts = read("deploy/prometheus/rules/tickstream.yml")
        .lines()
        .filter(|line| line.trim_start().starts_with("- alert:"))
        .count();
    let mut health = rule_health(web_address);
    while health.len() != alerts || health.iter().any(|(_, h)| h != "ok") {
        assert!(
            Instant::now() < deadline && health.iter().all(|(_, h)| h != "err"),
            "Prometheus did not evaluate all {alerts} rules cleanly: {health:?}; its log:\n{}",
            server_process.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        health = rule_health(web_address);
    }

    drop(server_process);
    drop(shutdown);
    worker
        .await
        .expect("the processing thread")
        .expect("the application stopped cleanly");
    let _ = stop_server.send(());
    server.await.expect("server task").expect("server");
}
