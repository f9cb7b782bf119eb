//! `tickstream`: the command-line edge of the project.
//!
//! This binary only parses arguments and wires libraries together; the work itself lives in
//! the crates under `crates/`. Each processor is a subcommand, runnable as its own container:
//! `ingest` (market data → raw topic), `enrich` (raw → derived topics), `sink` (topics →
//! MongoDB); `query` reads what the sink stored; `run` chains all three in one process; `topics` creates what they need in Kafka.

mod common;
mod dotenv;
mod enrich;
mod ingest;
mod query;
mod run;
mod secrets;
mod sink;
mod topics;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tickstream_streams::Shutdown;

/// A Kafka Streams-style stateful stream processor for crypto market data.
///
/// Three processors (ingest, enrich, sink) chained through Apache Kafka, with per-symbol
/// windows kept in a local sled store and results persisted to MongoDB.
#[derive(Debug, Parser)]
#[command(name = "tickstream", version, about, long_about = None, arg_required_else_help = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Market data (Binance REST/WebSocket, a replay file, or synthetic) → the raw topic(s).
    Ingest(ingest::Args),
    /// Raw topic(s) → moving averages, volatility and jumps on the derived topics.
    Enrich(enrich::Args),
    /// Raw and derived topics → MongoDB, idempotently.
    Sink(sink::Args),
    /// Ask MongoDB what the sink stored: latest prices, stats, jumps, analytics.
    Query(query::Args),
    /// ingest → enrich → sink in one process, no broker or database needed.
    Run(run::Args),
    /// Create or describe the Kafka topics the topology needs.
    Topics(topics::Args),
}

/// From a request to stop (a signal, the `q` key, a failed stage) to the process's exit, at
/// most this long: within compose's 40 s `stop_grace_period` (after which Docker kills), and
/// beyond the sink's 30 s shutdown grace for its last batch. A sink that meets a MongoDB and a
/// Kafka outage at once while stopping may need longer (its dead letters have a grace of their
/// own): it is cut off here, exit 3, its batch uncommitted and read again on restart.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(35);
/// What the runtime's own shutdown waits for blocking threads (a commit in progress) after the
/// command returned or the deadline passed.
const RUNTIME_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(1);

/// The exit codes, documented in the README ("Exit codes").
mod exit {
    /// The work is done, or it stopped on request after committing what it processed.
    pub const OK: u8 = 0;
    /// Something a person must fix (the last ERROR line says what): bad configuration, an
    /// outage longer than `processing.give_up_after`, a record that cannot be dead-lettered.
    pub const FAILED: u8 = 1;
    // 2: a usage error, from clap (unknown option, missing value).
    // 101: a panic, that is a bug: Rust's own exit code for it, documented, not remapped.
    /// It did not stop within the shutdown deadline after being asked to: what it had not
    /// committed is redone on the next start.
    pub const DEADLINE: u8 = 3;
}

fn main() -> ExitCode {
    if let Err(error) = common::prepare_environment() {
        eprintln!("Error: {error:?}");
        return ExitCode::from(exit::FAILED);
    }
    let cli = Cli::parse();
    let runtime = match common::runtime() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("Error: {error:?}");
            return ExitCode::from(exit::FAILED);
        }
    };
    let shutdown = Shutdown::new();
    let outcome = runtime.block_on(async {
        let command = std::pin::pin!(run_command(cli.command, shutdown.clone()));
        tokio::select! {
            result = command => result.map(|()| true),
            () = deadline_after(&shutdown) => Ok(false),
        }
    });
    // The deadline is enforced here: blocking threads still committing are not waited for
    // (dropping the runtime would wait for them without bound).
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN_TIMEOUT);
    match outcome {
        Ok(true) => ExitCode::from(exit::OK),
        Ok(false) => {
            tracing::error!(
                "did not stop within {SHUTDOWN_DEADLINE:?} of being asked to; what was not \
                 committed is redone on the next start"
            );
            eprintln!("Error: did not stop within {SHUTDOWN_DEADLINE:?} of being asked to");
            ExitCode::from(exit::DEADLINE)
        }
        Err(error) => {
            eprintln!("Error: {error:?}");
            ExitCode::from(exit::FAILED)
        }
    }
}

/// Completes [`SHUTDOWN_DEADLINE`] after shutdown was requested.
async fn deadline_after(shutdown: &Shutdown) {
    shutdown.requested().await;
    tokio::time::sleep(SHUTDOWN_DEADLINE).await;
}

async fn run_command(command: Command, shutdown: Shutdown) -> anyhow::Result<()> {
    // The long-running commands stop in order on a signal; `query` and `topics` keep the
    // default: a signal ends them at once (they have nothing to commit).
    if matches!(
        command,
        Command::Ingest(_) | Command::Enrich(_) | Command::Sink(_) | Command::Run(_)
    ) {
        shutdown
            .request_on_signals()
            .context("installing the SIGTERM/SIGINT handlers")?;
    }
    match command {
        Command::Ingest(args) => ingest::main(args, shutdown).await,
        Command::Enrich(args) => enrich::main(args, shutdown).await,
        Command::Sink(args) => sink::main(args, shutdown).await,
        Command::Query(args) => query::main(args).await,
        Command::Run(args) => run::main(args, shutdown).await,
        Command::Topics(args) => tokio::task::spawn_blocking(move || topics::main(args))
            .await
            .context("the topics command failed")?,
    }
}
