//! `tickstream run`: ingest → enrich → sink in one process, over the in-process transport.
//!
//! The same source, the same enrich processor and the same record codecs as the distributed
//! processors, with an in-memory broker between them instead of Kafka: nothing to install.
//! Results go to JSON Lines files under the data dir (one per topic), and to MongoDB too when
//! `--mongodb-uri` is given; a live view shows them as they come.

mod keyboard;
mod output;
mod view;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use tickstream_enrich::{Enrich, EnrichProcessor};
use tickstream_ingest::{IngestMetrics, MemoryTickSink, Source, binance_reachable};
use tickstream_model::Topology;
use tickstream_model::topology::{BinanceRestSource, SourceConfig, SyntheticSource};
use tickstream_sink::MongoUri;
use tickstream_streams::private_fs::create_private_dir_all;
use tickstream_streams::{
    Health, InMemoryBroker, InMemoryStreams, MemoryError, Shutdown, StateDir, TopicCapacity,
};
use tracing::{error, info};

use crate::common::{TopologyArg, init_logging_to};
use output::Output;
use view::LiveView;

/// Where prices come from in the embedded mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SourceChoice {
    /// Live Binance prices when Binance answers, else the synthetic source (announced).
    Auto,
    /// Live Binance prices, or fail.
    Live,
    /// Exactly the topology's `[source]`.
    Topology,
}

/// Options of `tickstream run`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub topology: TopologyArg,
    /// Results (one JSON Lines file per topic), window state and the log go here.
    #[arg(long, default_value = "./data")]
    pub data_dir: PathBuf,
    /// Where prices come from.
    #[arg(long, value_enum, default_value_t = SourceChoice::Auto)]
    pub source: SourceChoice,
    /// Binance's REST API, probed (2 s) to decide between live and synthetic prices.
    #[arg(long, default_value = BinanceRestSource::DEFAULT_BASE_URL)]
    pub binance_url: String,
    /// Also write prices and analytics to this MongoDB (collections from the topology). Not
    /// TICKSTREAM_MONGODB_URI, which `make` exports for the tests: `run` stays database-free
    /// unless asked.
    #[arg(long, env = "TICKSTREAM_RUN_MONGODB_URI", hide_env_values = true)]
    pub mongodb_uri: Option<MongoUri>,
    /// The most records each in-process topic holds that not every reader has taken yet;
    /// at that many its producer waits (back-pressure), so memory stays flat at any rate.
    #[arg(long, default_value_t = TopicCapacity::DEFAULT.records as u32, value_parser = clap::value_parser!(u32).range(16..=10_000_000))]
    pub topic_capacity: u32,
}

/// Binance's answer to a probe takes at most this long before we call it unreachable.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// The live view's refresh period.
const REFRESH: Duration = Duration::from_secs(1);
/// The in-process transport acknowledges a tick when it takes it: nothing waits to be flushed.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(1);

pub async fn main(args: Args, shutdown: Shutdown) -> anyhow::Result<()> {
    create_private_dir_all(&args.data_dir)
        .with_context(|| format!("creating the data dir {}", args.data_dir.display()))?;
    let interactive = std::io::stdout().is_terminal();
    // On a terminal the live view owns the screen, so log lines go to a file beside the data.
    let log_file = args.data_dir.join("tickstream.log");
    init_logging_to(interactive.then_some(log_file.as_path()))?;
    let mut topology = args.topology.load()?;
    let source_banner = choose_source(&mut topology, &args).await?;
    println!("tickstream run: {source_banner}");
    println!(
        "results: {} (JSON Lines, one file per topic){}{}",
        args.data_dir.display(),
        if args.mongodb_uri.is_some() {
            " and MongoDB"
        } else {
            ""
        },
        if interactive {
            format!("; log: {}", log_file.display())
        } else {
            String::new()
        }
    );
    info!(source = %source_banner, "tickstream run starting");
    run(topology, args, source_banner, interactive, shutdown).await
}

/// Picks the source and says which one runs — never passing synthetic prices off as live.
async fn choose_source(topology: &mut Topology, args: &Args) -> anyhow::Result<String> {
    let configured_live = matches!(
        topology.source,
        SourceConfig::BinanceRest(_) | SourceConfig::BinanceWs(_)
    );
    let probe = match args.source {
        SourceChoice::Topology => false,
        SourceChoice::Live => true,
        SourceChoice::Auto => !matches!(topology.source, SourceConfig::Replay(_)),
    };
    if probe {
        let url = match &topology.source {
            SourceConfig::BinanceRest(rest) => rest.base_url.clone(),
            _ => args.binance_url.clone(),
        };
        if binance_reachable(&url, PROBE_TIMEOUT).await {
            if !configured_live {
                topology.source = SourceConfig::BinanceRest(BinanceRestSource {
                    base_url: url,
                    ..BinanceRestSource::default()
                });
            }
        } else if args.source == SourceChoice::Live {
            bail!(
                "Binance at {url} did not answer within {PROBE_TIMEOUT:?}; check the network, or \
                 run with --source auto to fall back to synthetic prices"
            );
        } else {
            if configured_live {
                topology.source = SourceConfig::Synthetic(SyntheticSource::default());
            }
            return Ok(format!(
                "SYNTHETIC prices (a seeded random walk, not market data): Binance at {url} is unreachable"
            ));
        }
    }
    Ok(match &topology.source {
        SourceConfig::BinanceRest(rest) => format!(
            "LIVE Binance prices from {} (REST, every {:?})",
            rest.base_url, rest.interval
        ),
        SourceConfig::BinanceWs(ws) => {
            format!("LIVE Binance trades from {} (WebSocket)", ws.base_url)
        }
        SourceConfig::Replay(replay) => {
            format!("REPLAYED prices from {} (not live)", replay.path.display())
        }
        SourceConfig::Synthetic(_) => {
            "SYNTHETIC prices (a seeded random walk, not market data), as the topology says"
                .to_owned()
        }
    })
}

/// Drain semantics, in pipeline order, each step awaited as an event, never a timer: the source
/// ends (a replay file's end, or Ctrl-C) and its raw topics are closed; enrich ends when it has
/// processed and committed everything of its closed input (on Ctrl-C: what it had read), and
/// closes the derived and dead-letter topics; the sink ends when it has written all of those.
async fn run(
    topology: Topology,
    args: Args,
    source_banner: String,
    interactive: bool,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let topology = Arc::new(topology);
    let broker = InMemoryBroker::with_capacity(TopicCapacity {
        records: args.topic_capacity as usize,
        ..TopicCapacity::DEFAULT
    });
    let partitions = topology.topics.partitions.map_or(1, |p| p as usize);
    for topic in topology.raw_topics() {
        broker.create_topic(topic, partitions);
    }
    let mut streams = start_enrich(&topology, &args, &broker)?;
    let view = Arc::new(std::sync::Mutex::new(LiveView::new(
        source_banner,
        topology.windows.iter().map(|w| w.label()).collect(),
        &topology.symbols,
    )));
    let output = Output::open(
        &args.data_dir,
        &topology,
        &broker,
        args.mongodb_uri.as_ref().map(MongoUri::expose),
    )
    .await
    .context("opening the outputs")?;

    let keyboard = capture_keyboard(interactive, &shutdown);
    let enrich_thread = {
        let shutdown = shutdown.clone();
        tokio::task::spawn_blocking(move || {
            let failing = StopOthersOnFailure::arm(&shutdown);
            let result = streams.run(&shutdown);
            if result.is_ok() {
                failing.disarm();
            }
            result
        })
    };
    let output_task = {
        let (broker, view, shutdown) = (Arc::clone(&broker), Arc::clone(&view), shutdown.clone());
        tokio::spawn(async move {
            let failing = StopOthersOnFailure::arm(&shutdown);
            let result = output.follow(broker, view, shutdown.clone()).await;
            if result.is_ok() {
                failing.disarm();
            }
            result
        })
    };
    let source_task = tokio::spawn(ingest(
        Arc::clone(&topology),
        Arc::clone(&broker),
        shutdown.clone(),
    ));
    let view_task = tokio::spawn(show(Arc::clone(&view), interactive));

    let source_result = source_task.await;
    for topic in topology.raw_topics() {
        broker.close(topic);
    }
    info!("the source is done; enrich and the sink finish their input");
    let enrich_result = enrich_thread.await;
    let output_result = output_task.await;
    view_task.abort();
    let _ = view_task.await;
    drop(keyboard);

    let stopped = shutdown.is_requested();
    check_outcomes(stopped, source_result, enrich_result, output_result)?;
    println!("stopped; results are in {}", args.data_dir.display());
    Ok(())
}

/// Requests shutdown when dropped, unless disarmed: a stage that fails — with an error, or a
/// panic that unwinds through it — stops the others, in the documented order.
struct StopOthersOnFailure(Option<Shutdown>);

impl StopOthersOnFailure {
    fn arm(shutdown: &Shutdown) -> Self {
        Self(Some(shutdown.clone()))
    }

    /// The stage ended well: nothing to stop.
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for StopOthersOnFailure {
    fn drop(&mut self) {
        if let Some(shutdown) = self.0.take() {
            shutdown.request();
        }
    }
}

type Joined<T, E> = Result<Result<T, E>, tokio::task::JoinError>;

/// Logs how each stage ended; an error if any failed.
fn check_outcomes(
    stopped: bool,
    source: Joined<(), anyhow::Error>,
    enrich: Joined<(), MemoryError>,
    output: Joined<(), anyhow::Error>,
) -> anyhow::Result<()> {
    let mut failed = false;
    match source {
        Ok(Ok(())) if stopped => info!("the source stopped"),
        Ok(Ok(())) => info!("the source reached its end"),
        Ok(Err(e)) => failed |= report("the source failed", &e),
        Err(e) => bail!("the source task failed: {e}"),
    }
    match enrich {
        Ok(Ok(())) if stopped => info!("enrich stopped after committing what it processed"),
        Ok(Ok(())) => info!("enrich reached the end of its input"),
        Ok(Err(e)) => failed |= report("enrich failed", &anyhow::Error::new(e)),
        Err(e) => bail!("the enrich thread failed: {e}"),
    }
    match output {
        Ok(Ok(())) => info!("the sink wrote everything it received"),
        Ok(Err(e)) => failed |= report("writing results failed", &e),
        Err(e) => bail!("the output task failed: {e}"),
    }
    if failed {
        bail!("tickstream run stopped after an error (see the log)");
    }
    Ok(())
}

fn report(what: &str, error: &anyhow::Error) -> bool {
    error!("{what}: {error:#}");
    true
}

/// Enrich over the in-process transport, with the topology's dead-letter topic, commit interval
/// and a fresh state dir: the embedded mode's inputs live in memory only, so window state from
/// an earlier run would not match them.
fn start_enrich(
    topology: &Topology,
    args: &Args,
    broker: &Arc<InMemoryBroker>,
) -> anyhow::Result<InMemoryStreams<EnrichProcessor>> {
    let state_path = args.data_dir.join("state");
    if state_path.exists() {
        std::fs::remove_dir_all(&state_path)
            .with_context(|| format!("clearing the old state in {}", state_path.display()))?;
    }
    let state = StateDir::open(&state_path, &topology.application_id)
        .with_context(|| format!("opening the state dir {}", state_path.display()))?;
    let enrich = Enrich::new(topology).context("the topology's windows")?;
    let config = enrich.streams_config("in-process");
    InMemoryStreams::new(Arc::clone(broker), &config, Some(&state), |_| {
        enrich.processor()
    })
    .context("starting enrich")
}

/// On a terminal, Ctrl-C and `q` are read as keys and request `shutdown` (see keyboard.rs; the
/// guard restores the terminal when dropped). Signals reach `shutdown` through `main`.
fn capture_keyboard(interactive: bool, shutdown: &Shutdown) -> Option<keyboard::KeyboardGuard> {
    let keyboard = interactive
        .then(keyboard::KeyboardGuard::capture)
        .flatten()?;
    keyboard.watch(shutdown.clone());
    Some(keyboard)
}

/// Ingest's own produce loop ([`tickstream_ingest::run`]) over the in-process transport: until
/// the source ends or shutdown is requested. Closing the raw topics is left to the caller.
async fn ingest(
    topology: Arc<Topology>,
    broker: Arc<InMemoryBroker>,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let metrics = IngestMetrics::new(&topology.application_id);
    let mut source = Source::from_topology(&topology, &metrics)?;
    let mut sink = MemoryTickSink::new(broker, &topology, &metrics);
    // `run` serves no endpoints: readiness is only the live view's business.
    let health = Health::default();
    tickstream_ingest::run(
        &mut source,
        &mut sink,
        &metrics,
        &health,
        &shutdown,
        FLUSH_TIMEOUT,
    )
    .await?;
    Ok(())
}

/// Redraws the view every second on a terminal; logs plain lines otherwise.
async fn show(view: Arc<std::sync::Mutex<LiveView>>, interactive: bool) {
    let mut ticker = tokio::time::interval(REFRESH);
    loop {
        ticker.tick().await;
        let mut view = view
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if interactive {
            // Home the cursor and clear the screen, then draw.
            print!("\x1b[H\x1b[2J{}", view.screen());
        } else {
            for line in view.lines() {
                println!("{line}");
            }
        }
    }
}
