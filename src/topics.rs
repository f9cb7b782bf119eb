//! `tickstream topics create|describe`: the Kafka topics a topology needs — raw, repartition,
//! changelog, derived, dead-letter — created idempotently with their partitions and cleanup
//! policy, or shown against what the broker has. No Kafka shell tools needed.

use anyhow::Context;
use tickstream_enrich::Enrich;
use tickstream_streams::{StreamsConfig, TopicSpec, TopicState, create_topics, describe_topics};

use crate::common::{BrokersArg, TopologyArg, init_logging, kafka_settings_from_env};

/// Partitions of a fresh deployment's topics when the topology does not say
/// (`topics.partitions`) and no raw topic exists yet: the reference tutorial's `--partitions 3`.
const DEFAULT_PARTITIONS: i32 = 3;

/// Options of `tickstream topics`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub action: Action,
}

#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Create every topic the topology needs that does not exist (idempotent).
    Create(Target),
    /// Show every topic the topology needs against what exists; exits 1 if any is missing or
    /// wrong.
    Describe(Target),
}

#[derive(Debug, clap::Args)]
pub struct Target {
    #[command(flatten)]
    pub topology: TopologyArg,
    #[command(flatten)]
    pub kafka: BrokersArg,
}

impl Target {
    /// The application's runtime configuration (as enrich runs it) and its topics, with the
    /// partition count: the topology's, else the raw topics' (largest), else 3.
    fn specs(&self) -> anyhow::Result<(StreamsConfig, Vec<TopicSpec>)> {
        let topology = self.topology.load()?;
        let enrich = Enrich::new(&topology)
            .with_context(|| format!("in {}", self.topology.path.display()))?;
        let mut config = enrich.streams_config(&self.kafka.brokers);
        config.kafka_settings = kafka_settings_from_env();
        let partitions = match config.partitions {
            Some(n) => n,
            None => {
                // What exists decides; describing at the default count tells which do.
                let sources =
                    describe_topics(&config, config.topic_specs(DEFAULT_PARTITIONS, true))
                        .context("reading the raw topics' partition counts")?;
                sources
                    .iter()
                    .filter(|s| s.spec.role == tickstream_streams::TopicRole::Source)
                    .filter_map(|s| s.existing.as_ref().map(|e| e.partitions))
                    .max()
                    .unwrap_or(DEFAULT_PARTITIONS)
            }
        };
        let specs = config.topic_specs(partitions, true);
        Ok((config, specs))
    }
}

pub fn main(args: Args) -> anyhow::Result<()> {
    init_logging();
    match args.action {
        Action::Create(target) => {
            let (config, specs) = target.specs()?;
            let created = create_topics(&config, &specs).with_context(|| {
                format!(
                    "creating the topology's topics on {}",
                    config.bootstrap_servers
                )
            })?;
            let states = describe_topics(&config, specs)?;
            print_table(&states);
            println!(
                "{} created, {} already there",
                created.len(),
                states.len() - created.len()
            );
            let problems = problems(&states);
            anyhow::ensure!(
                problems == 0,
                "{problems} topics exist with the wrong layout (see above): fix or delete them"
            );
            Ok(())
        }
        Action::Describe(target) => {
            let (config, specs) = target.specs()?;
            let states = describe_topics(&config, specs).with_context(|| {
                format!(
                    "describing the topology's topics on {}",
                    config.bootstrap_servers
                )
            })?;
            print_table(&states);
            let problems = problems(&states);
            anyhow::ensure!(
                problems == 0,
                "{problems} topics missing or wrong: run `tickstream topics create --topology {}`",
                target.topology.path.display()
            );
            Ok(())
        }
    }
}

fn problems(states: &[TopicState]) -> usize {
    states.iter().filter(|s| s.problem().is_some()).count()
}

fn print_table(states: &[TopicState]) {
    let width = states
        .iter()
        .map(|s| s.spec.name.len())
        .max()
        .unwrap_or(5)
        .max(5);
    println!(
        "{:<12} {:<width$} {:>10} {:>8} {:<8} status",
        "role", "topic", "partitions", "needed", "cleanup"
    );
    for state in states {
        let (partitions, cleanup) = match &state.existing {
            Some(e) => (
                e.partitions.to_string(),
                e.cleanup_policy.clone().unwrap_or_else(|| "?".to_owned()),
            ),
            None => ("-".to_owned(), "-".to_owned()),
        };
        println!(
            "{:<12} {:<width$} {:>10} {:>8} {:<8} {}",
            state.spec.role.name(),
            state.spec.name,
            partitions,
            state.spec.partitions,
            cleanup,
            state.problem().unwrap_or_else(|| "ok".to_owned())
        );
    }
}
