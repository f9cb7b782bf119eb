//! What every processor command shares: where the topology and the services are, logging,
//! the async runtime, and settings from the environment (`.env`, `*_FILE` secrets, librdkafka).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::OnceLock;

use anyhow::Context;
use tickstream_model::Topology;
use tickstream_sink::MongoUri;
use tickstream_streams::KafkaSettings;

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
/// from the environment (or a file: `TICKSTREAM_MONGODB_URI_FILE`), never in a topology file;
/// logs and `Debug` show it redacted.
#[derive(Debug, clap::Args)]
pub struct MongoArgs {
    /// MongoDB connection string.
    #[arg(
        long,
        env = "TICKSTREAM_MONGODB_URI",
        default_value = "mongodb://127.0.0.1:27017",
        hide_env_values = true
    )]
    pub mongodb_uri: MongoUri,
}

/// The librdkafka settings [`prepare_environment`] read and checked.
static KAFKA_SETTINGS: OnceLock<KafkaSettings> = OnceLock::new();

/// Reads `./.env` into the environment (without overriding what is already set), the `*_FILE`
/// variants of the MongoDB URIs, and the librdkafka settings (`TICKSTREAM_KAFKA_CONFIG_*`,
/// refusing any that loads code or runs a command). Any problem stops the process before
/// anything connects, naming the file, line or variable — never a value.
///
/// Call it first thing in `main`, before any thread starts: changing the environment is only
/// sound while the process is single-threaded.
pub fn prepare_environment() -> anyhow::Result<()> {
    for assignment in crate::dotenv::read(std::path::Path::new(".env"))? {
        if std::env::var_os(&assignment.key).is_none() {
            // SAFETY: called before any other thread exists (see above).
            unsafe { std::env::set_var(assignment.key, assignment.value) };
        }
    }
    for (name, value) in crate::secrets::mongodb_uris_from_files(|name| std::env::var_os(name))? {
        // SAFETY: as above.
        unsafe { std::env::set_var(name, value) };
    }
    let settings = crate::secrets::kafka_settings(std::env::vars_os())?;
    // A second call keeps the first call's settings: both read the same environment.
    let _ = KAFKA_SETTINGS.set(settings);
    Ok(())
}

/// librdkafka settings from `TICKSTREAM_KAFKA_CONFIG_*` variables (lower-cased, `_` → `.`;
/// `…_FILE` read from a file), for secured clusters: SASL_SSL, certificates, credentials never
/// in a topology file. As [`prepare_environment`] read and checked them.
pub fn kafka_settings_from_env() -> KafkaSettings {
    KAFKA_SETTINGS.get().cloned().unwrap_or_default()
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
            let file = tickstream_streams::private_fs::append_private_file(path)
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

/// The multi-threaded tokio runtime the commands run on.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        mongodb: MongoArgs,
    }

    #[test]
    fn debug_of_the_arguments_redacts_the_uri() {
        let cli = Cli::parse_from(["test", "--mongodb-uri", "mongodb://u:S3cretPW@db:27017/"]);
        let debug = format!("{cli:?}");
        assert!(!debug.contains("S3cretPW"), "{debug}");
        assert!(debug.contains("***@db:27017"), "{debug}");
        assert_eq!(
            cli.mongodb.mongodb_uri.expose(),
            "mongodb://u:S3cretPW@db:27017/"
        );
    }
}
