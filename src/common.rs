//! What every processor command shares: where the topology and the services are, logging,
//! the async runtime, and librdkafka settings from the environment.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use tickstream_model::Topology;

/// Prefix of environment variables passed to librdkafka as settings:
/// `TICKSTREAM_KAFKA_CONFIG_SECURITY_PROTOCOL=SASL_SSL` sets `security.protocol`.
pub const KAFKA_CONFIG_ENV_PREFIX: &str = "TICKSTREAM_KAFKA_CONFIG_";

/// The topology file option, the same for every command.
#[derive(Debug, clap::Args)]
pub struct TopologyArg {
    /// The topology file (TOML): topics, symbols, windows, thresholds, collections.
    #[arg(
        id = "topology",
        long = "topology",
        value_name = "FILE",
        short,
        env = "TICKSTREAM_TOPOLOGY",
        default_value = "topologies/default.toml"
    )]
    pub path: PathBuf,
}

impl TopologyArg {
    /// Reads and validates the topology; a bad file stops the process before anything connects.
    pub fn load(&self) -> anyhow::Result<Topology> {
        Topology::from_path(&self.path)
            .with_context(|| format!("loading the topology {}", self.path.display()))
    }
}

/// Where the Kafka brokers are: the same option for every command that talks to Kafka.
#[derive(Debug, clap::Args)]
pub struct BrokersArg {
    /// Kafka bootstrap servers, comma-separated.
    #[arg(
        long,
        env = "TICKSTREAM_KAFKA_BROKERS",
        default_value = "127.0.0.1:9092"
    )]
    pub brokers: String,
}

/// The options every processor takes.
#[derive(Debug, clap::Args)]
pub struct ProcessorArgs {
    #[command(flatten)]
    pub topology: TopologyArg,
    #[command(flatten)]
    pub kafka: BrokersArg,
    /// Where to serve /metrics, /healthz and /readyz (default: the topology's
    /// processing.metrics_addr).
    #[arg(long, env = "TICKSTREAM_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
}

impl ProcessorArgs {
    pub fn metrics_addr(&self, topology: &Topology) -> SocketAddr {
        self.metrics_addr
            .unwrap_or(topology.processing.metrics_addr)
    }
}

/// Where MongoDB is (sink writes, query reads). Credentials and TLS options go in the URI,
/// from the environment, never in a topology file; logs show it redacted.
#[derive(Debug, clap::Args)]
pub struct MongoArgs {
    /// MongoDB connection string.
    #[arg(
        long,
        env = "TICKSTREAM_MONGODB_URI",
        default_value = "mongodb://127.0.0.1:27017",
        hide_env_values = true
    )]
    pub mongodb_uri: String,
}

/// Reads `KEY=VALUE` lines of `./.env` (if there is one) into the environment, without
/// overriding what is already set: credentials and addresses stay out of topology files and
/// command lines. Blank lines and `#` comments are skipped; values may be quoted.
///
/// Call it first thing in `main`, before any thread starts: changing the environment is only
/// sound while the process is single-threaded.
pub fn load_dotenv() -> anyhow::Result<()> {
    let text = match std::fs::read_to_string(".env") {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).context("reading ./.env"),
    };
    for (key, value) in parse_dotenv(&text).context("in ./.env")? {
        if std::env::var_os(&key).is_none() {
            // SAFETY: called before any other thread exists (see above).
            unsafe { std::env::set_var(key, value) };
        }
    }
    Ok(())
}

/// The `KEY=VALUE` pairs of a `.env` file's text.
fn parse_dotenv(text: &str) -> anyhow::Result<Vec<(String, String)>> {
    let mut pairs = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((key, value)) = line.split_once('=') else {
            anyhow::bail!("line {}: expected KEY=VALUE, found {line:?}", number + 1);
        };
        let value = value.trim();
        let unquoted = ['"', '\'']
            .iter()
            .find_map(|q| value.strip_prefix(*q).and_then(|v| v.strip_suffix(*q)))
            .unwrap_or(value);
        pairs.push((key.trim().to_owned(), unquoted.to_owned()));
    }
    Ok(pairs)
}

/// librdkafka settings from `TICKSTREAM_KAFKA_CONFIG_*` variables (lower-cased, `_` → `.`),
/// for secured clusters: SASL_SSL, certificates, credentials never in a topology file.
pub fn kafka_settings_from_env() -> Vec<(String, String)> {
    let mut settings: Vec<(String, String)> = std::env::vars()
        .filter_map(|(name, value)| {
            let key = name.strip_prefix(KAFKA_CONFIG_ENV_PREFIX)?;
            Some((key.to_ascii_lowercase().replace('_', "."), value))
        })
        .collect();
    settings.sort();
    settings
}

/// Log lines to stderr; `RUST_LOG` filters (default `info`), `TICKSTREAM_LOG_FORMAT=json` for
/// one JSON object per line.
pub fn init_logging() {
    // Only fails with a file to open.
    let _ = init_logging_to(None);
}

/// Like [`init_logging`], appending to `file` instead of stderr when given.
pub fn init_logging_to(file: Option<&std::path::Path>) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let writer = match file {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("opening the log file {}", path.display()))?;
            tracing_subscriber::fmt::writer::BoxMakeWriter::new(std::sync::Mutex::new(file))
        }
        None => tracing_subscriber::fmt::writer::BoxMakeWriter::new(std::io::stderr),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(file.is_none() && std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if std::env::var("TICKSTREAM_LOG_FORMAT").as_deref() == Ok("json") {
        builder.json().init();
    } else {
        builder.init();
    }
    Ok(())
}

/// A future that resolves on SIGTERM or SIGINT (Ctrl-C), logging which: how every command
/// learns it should finish its work and exit. Call it inside the runtime.
pub fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => tracing::info!(signal = "SIGTERM", "stopping"),
            _ = tokio::signal::ctrl_c() => tracing::info!(signal = "SIGINT", "stopping"),
        }
    })
}

/// The multi-threaded tokio runtime the commands run on.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotenv_lines_are_pairs_comments_are_skipped_and_quotes_dropped() {
        let text = "# credentials\n\nA=1\nexport B = \"two words\"\nC='x=y'\n";
        let pairs = parse_dotenv(text).expect("valid");
        let expected = [("A", "1"), ("B", "two words"), ("C", "x=y")];
        assert_eq!(
            pairs,
            expected.map(|(k, v)| (k.to_owned(), v.to_owned())).to_vec()
        );
        let error = parse_dotenv("A=1\nnonsense\n").expect_err("no '='");
        assert!(error.to_string().contains("line 2"), "{error}");
    }
}
