//! `tickstream`: the command-line edge of the project.
//!
//! This binary only parses arguments and wires libraries together; the work itself lives in
//! the crates under `crates/`. Processors (`ingest`, `enrich`, `sink`) appear here as their
//! libraries land; until then the binary offers no command that would pretend to work.

use clap::Parser;

/// A Kafka Streams-style stateful stream processor for crypto market data.
///
/// Three processors (ingest, enrich, sink) chained through Apache Kafka, with per-symbol
/// windows kept in a local sled store and results persisted to MongoDB.
#[derive(Debug, Parser)]
#[command(name = "tickstream", version, about, long_about = None, arg_required_else_help = true)]
struct Cli {}

fn main() -> anyhow::Result<()> {
    let _cli = Cli::parse();
    Ok(())
}
