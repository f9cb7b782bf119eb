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

use clap::{Parser, Subcommand};

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

fn main() -> anyhow::Result<()> {
    common::prepare_environment()?;
    let cli = Cli::parse();
    match cli.command {
        Command::Ingest(args) => ingest::main(args),
        Command::Enrich(args) => enrich::main(args),
        Command::Sink(args) => sink::main(args),
        Command::Query(args) => query::main(args),
        Command::Run(args) => run::main(args),
        Command::Topics(args) => topics::main(args),
    }
}
