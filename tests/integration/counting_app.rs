//! A tiny streams application (the runtime's [`CountingProcessor`]: `value` → `value@count`,
//! keyless records to the dead-letter topic) run as a separate process, so tests can SIGKILL
//! it mid-work.
//!
//! The test binary re-runs itself with `--exact counting_app::child --ignored` and the
//! application's settings in `TICKSTREAM_TEST_COUNTING_APP`: the ignored test below is the
//! child's `main`. Run without that variable it does nothing.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::ChildProcess;
use tickstream_streams::{CountingProcessor, KafkaStreams, ProcessingGuarantee, StreamsConfig};

const SETTINGS_ENV: &str = "TICKSTREAM_TEST_COUNTING_APP";
/// What a child is told, as `key=value` pairs joined by `;`.
#[derive(Debug, Clone)]
pub struct AppSettings {
    pub application_id: String,
    pub input: String,
    pub output: String,
    pub state_dir: PathBuf,
    pub exactly_once: bool,
    pub http: SocketAddr,
}

impl AppSettings {
    fn encode(&self) -> String {
        format!(
            "application_id={};input={};output={};state_dir={};exactly_once={};http={}",
            self.application_id,
            self.input,
            self.output,
            self.state_dir.display(),
            self.exactly_once,
            self.http
        )
    }

    fn decode(text: &str) -> Self {
        let field = |name: &str| {
            text.split(';')
                .find_map(|pair| {
                    pair.strip_prefix(name)
                        .and_then(|rest| rest.strip_prefix('='))
                })
                .unwrap_or_else(|| panic!("{SETTINGS_ENV} lacks {name}: {text}"))
                .to_owned()
        };
        Self {
            application_id: field("application_id"),
            input: field("input"),
            output: field("output"),
            state_dir: PathBuf::from(field("state_dir")),
            exactly_once: field("exactly_once") == "true",
            http: field("http").parse().expect("a socket address"),
        }
    }

    pub fn dead_letter_topic(&self) -> String {
        format!("{}.dlq", self.application_id)
    }
}

/// Starts the counting application as a child process logging to `log`.
pub fn start(settings: &AppSettings, log: &Path) -> ChildProcess {
    let mut command = Command::new(std::env::current_exe().expect("the test binary's path"));
    command
        .args([
            "--exact",
            "counting_app::child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(SETTINGS_ENV, settings.encode())
        .env("TICKSTREAM_KAFKA_BROKERS", crate::support::kafka_brokers());
    ChildProcess::spawn("the counting application", command, log)
}

#[test]
#[ignore = "the counting application's entry point, run as a child process by other tests"]
fn child() {
    let Ok(text) = std::env::var(SETTINGS_ENV) else {
        return;
    };
    let settings = AppSettings::decode(&text);
    tracing_subscriber::fmt()
        .with_env_filter("info")
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .init();
    let mut config = StreamsConfig::new(
        &settings.application_id,
        &crate::support::kafka_brokers(),
        &[settings.input.as_str()],
    );
    config.store_name = "counts".into();
    config.output_topics = vec![settings.output.clone()];
    config.state_dir = settings.state_dir.clone();
    config.processing_guarantee = if settings.exactly_once {
        ProcessingGuarantee::ExactlyOnce
    } else {
        ProcessingGuarantee::AtLeastOnce
    };
    let output = settings.output.clone();
    let streams = KafkaStreams::new(
        config,
        Box::new(move |_| CountingProcessor::new(output.clone())),
    )
    .expect("valid configuration");
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let outcome = runtime.block_on(async {
        let shutdown = tickstream_streams::Shutdown::new();
        shutdown.request_on_signals().expect("the signal handlers");
        tickstream_streams::run_until_shutdown(streams, Some(settings.http), shutdown).await
    });
    if let Err(error) = outcome {
        panic!("the counting application failed: {error}");
    }
}
