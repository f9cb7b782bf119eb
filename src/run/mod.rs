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
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use tickstream_enrich::{Enrich, STORE_NAME};
use tickstream_ingest::{IngestMetrics, Source, binance_reachable};
use tickstream_model::topology::{BinanceRestSource, SourceConfig, SyntheticSource};
use tickstream_model::{EventKind, RecordFormat, Topology};
use tickstream_sink::MongoUri;
use tickstream_streams::private_fs::create_private_dir_all;
use tickstream_streams::{InMemoryBroker, InMemoryStreams, StateDir, StoredRecord};
use tokio::sync::watch;
use tracing::{error, info, warn};

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
}

/// Binance's answer to a probe takes at most this long before we call it unreachable.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// The live view's refresh period.
const REFRESH: Duration = Duration::from_secs(1);

pub fn main(args: Args) -> anyhow::Result<()> {
    create_private_dir_all(&args.data_dir)
        .with_context(|| format!("creating the data dir {}", args.data_dir.display()))?;
    let interactive = std::io::stdout().is_terminal();
    // On a terminal the live view owns the screen, so log lines go to a file beside the data.
    let log_file = args.data_dir.join("tickstream.log");
    init_logging_to(interactive.then_some(log_file.as_path()))?;
    let mut topology = args.topology.load()?;
    let runtime = crate::common::runtime()?;
    let source_banner = runtime.block_on(choose_source(&mut topology, &args))?;
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
    runtime.block_on(run(topology, args, source_banner, interactive))
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

async fn run(
    topology: Topology,
    args: Args,
    source_banner: String,
    interactive: bool,
) -> anyhow::Result<()> {
    let topology = Arc::new(topology);
    let broker = InMemoryBroker::new();
    for topic in topology.raw_topics() {
        broker.create_topic(topic, 1);
    }
    for kind in EventKind::ALL {
        broker.create_topic(topology.topic(kind), 1);
    }

    // The embedded mode starts from scratch: its inputs live in memory only, so window state
    // from an earlier run would not match them.
    let state_path = args.data_dir.join("state");
    if state_path.exists() {
        std::fs::remove_dir_all(&state_path)
            .with_context(|| format!("clearing the old state in {}", state_path.display()))?;
    }
    let state = StateDir::open(&state_path, &topology.application_id)
        .with_context(|| format!("opening the state dir {}", state_path.display()))?;
    let enrich = Enrich::new(&topology).context("the topology's windows")?;
    let raw_topics: Vec<&str> = topology.raw_topics();
    let mut streams = InMemoryStreams::new(
        Arc::clone(&broker),
        &topology.application_id,
        &raw_topics,
        STORE_NAME,
        Some(&state),
        |_| enrich.processor(),
    )
    .context("starting enrich")?;

    let view = Arc::new(std::sync::Mutex::new(LiveView::new(
        source_banner,
        topology.windows.iter().map(|w| w.label()).collect(),
        &topology.symbols,
    )));
    let output = Output::open(
        &args.data_dir,
        &topology,
        streams.dead_letter_topic(),
        args.mongodb_uri.as_ref().map(MongoUri::expose),
    )
    .await
    .context("opening the outputs")?;

    let shutdown = Arc::new(AtomicBool::new(false));
    let (stop_tx, stop_rx) = watch::channel(false);

    let enrich_thread = {
        let shutdown = Arc::clone(&shutdown);
        tokio::task::spawn_blocking(move || streams.run(&shutdown))
    };
    let output_task = {
        let (broker, view, shutdown) = (
            Arc::clone(&broker),
            Arc::clone(&view),
            Arc::clone(&shutdown),
        );
        let handle = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || output.follow(broker, view, shutdown, handle))
    };
    let source_task = tokio::spawn(feed(
        Arc::clone(&topology),
        Arc::clone(&broker),
        stop_rx.clone(),
    ));
    let view_task = tokio::spawn(show(Arc::clone(&view), interactive, stop_rx));

    let shutdown_requested = crate::common::shutdown_signal()?;
    // On a terminal Ctrl-C arrives as a key (see keyboard.rs); the guard restores the terminal.
    let (quit_tx, mut quit_rx) = watch::channel(false);
    let keyboard = if interactive {
        keyboard::KeyboardGuard::capture()
    } else {
        None
    };
    if let Some(keyboard) = &keyboard {
        keyboard.watch(quit_tx);
    }
    let mut source_task = source_task;
    let source_result = tokio::select! {
        () = shutdown_requested => None,
        _ = quit_rx.wait_for(|quit| *quit) => None,
        result = &mut source_task => Some(result),
    };
    let _ = stop_tx.send(true);
    // Let enrich and the outputs drain what the source produced before stopping them.
    tokio::time::sleep(Duration::from_millis(300)).await;
    shutdown.store(true, Ordering::Relaxed);

    let mut failed = false;
    if let Some(result) = source_result {
        match result {
            Ok(Ok(())) => info!("the source is exhausted"),
            Ok(Err(e)) => {
                error!("the source failed: {e:#}");
                failed = true;
            }
            Err(e) => bail!("the source task failed: {e}"),
        }
    } else {
        source_task.abort();
    }
    match enrich_thread.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            error!("enrich failed: {e}");
            failed = true;
        }
        Err(e) => bail!("the enrich thread failed: {e}"),
    }
    match output_task.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            error!("writing results failed: {e:#}");
            failed = true;
        }
        Err(e) => bail!("the output task failed: {e}"),
    }
    let _ = view_task.await;
    drop(keyboard);
    if failed {
        bail!("tickstream run stopped after an error (see the log)");
    }
    println!("stopped; results are in {}", args.data_dir.display());
    Ok(())
}

/// Moves the source's ticks into the raw topic(s) until the source ends or `stop` is set.
async fn feed(
    topology: Arc<Topology>,
    broker: Arc<InMemoryBroker>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let metrics = IngestMetrics::new(&topology.application_id);
    let mut source = Source::from_topology(&topology, &metrics)?;
    let format: RecordFormat = topology.topics.raw_format;
    loop {
        let batch = tokio::select! {
            batch = source.next_batch() => batch?,
            _ = stop.wait_for(|stop| *stop) => return Ok(()),
        };
        let Some(ticks) = batch else {
            return Ok(());
        };
        let now = tickstream_ingest::metrics::now_ms();
        for tick in ticks {
            let Some(topic) = topology.raw_topic_for(tick.symbol.as_str()) else {
                warn!(symbol = %tick.symbol, "no raw topic for this symbol; tick dropped");
                continue;
            };
            let record = StoredRecord {
                key: Some(tick.symbol.as_str().as_bytes().to_vec()),
                value: tick.encode(format),
                timestamp: Some(now),
                headers: Vec::new(),
            };
            broker
                .produce(topic, vec![record])
                .context("producing to the in-process transport")?;
        }
    }
}

/// Redraws the view every second on a terminal; logs plain lines otherwise.
async fn show(
    view: Arc<std::sync::Mutex<LiveView>>,
    interactive: bool,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(REFRESH);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
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
