//! A broker that stalls under enrich for longer than the transaction timeout and the group
//! session (a starved or paused JVM, frozen here with SIGSTOP): its coordinator expires
//! enrich's open transaction and fences its producer, the group drops the member. enrich
//! must ride it out — replace the producer, rejoin, redo the batch — and commit every derived
//! event exactly once. Before this test, two ways out of it were found by hand: enrich exited
//! on the fenced producer, and on an abort answered `INVALID_TXN_STATE` (Kafka 4.x, an abort
//! racing the coordinator's own).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tickstream_enrich::naive::{random_walk as ticks, sample_symbols as symbols};
use tickstream_model::EventKind;

use crate::enrich::{Deployment, assert_matches_naive, expected};
use crate::outages::PRIVATE_BROKER;
use crate::processes::{readyz, wait_ready};
use crate::support::{
    PrivateBroker, Progress, free_local_address, metric, produce_ticks_on, unique_name,
};

/// Past `transaction.timeout.ms` and the group session (10 s each).
const FREEZE: Duration = Duration::from_secs(15);
/// Recovery after the freeze: the broker's controller fences and re-admits it, the group
/// rebalances, the tasks restore. An event awaited, never the test's pace.
const RECOVERY: Duration = Duration::from_secs(90);

#[test]
fn enrich_rides_out_a_broker_frozen_past_its_transaction_timeout_and_commits_every_event_once() {
    let _turn = PRIVATE_BROKER.blocking_lock();
    let broker = PrivateBroker::start();
    let brokers = broker.brokers();
    let dir = tempfile::tempdir().expect("tempdir");
    let name = unique_name("enrich-freeze");
    let symbols = symbols(3);
    let deployment = Deployment::with_topics(
        &name,
        dir.path(),
        &symbols,
        3,
        &format!("raw = \"{name}.raw\""),
        &brokers,
        // No candles: a broker frozen for longer than close_idle_after looks, to enrich,
        // exactly like symbols gone quiet, and their candles would close before the ticks
        // the freeze held back (see the README's "Candles").
        "",
    );
    let input = ticks(&symbols, 6_000, 5);
    let (before, during) = input.split_at(3_000);
    produce_ticks_on(&brokers, deployment.raw_topic(), before);
    let want = expected(&deployment.topology, &input);

    let metrics = free_local_address();
    let mut app = deployment.start(
        &dir.path().join("state"),
        metrics,
        &dir.path().join("enrich.log"),
    );
    let moving_averages = deployment.topology.topic(EventKind::MovingAverage);
    Progress::on(&brokers, moving_averages, deployment.partitions).wait_for(1_000, &mut app);

    // Ticks keep coming before, during and after the freeze, so a transaction is open with
    // records in flight when the broker stops answering.
    let chunks_acknowledged = Arc::new(AtomicUsize::new(0));
    let feeder = {
        let (brokers, topic) = (brokers.clone(), deployment.raw_topic().to_owned());
        let during = during.to_vec();
        let acknowledged = Arc::clone(&chunks_acknowledged);
        std::thread::spawn(move || {
            for chunk in during.chunks(30) {
                produce_ticks_on(&brokers, &topic, chunk);
                acknowledged.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let started = Instant::now();
    while chunks_acknowledged.load(Ordering::Relaxed) < 5 {
        app.assert_running();
        assert!(
            started.elapsed() < RECOVERY,
            "the feeder's first chunks never landed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Freeze with a transaction open: records processed since the last commit. Two looks at
    // /metrics 5 ms apart that see records processed and no commit in between say so; the
    // next commit is then at most a commit interval (100 ms) away, and the freeze comes first
    // nearly always. (Whether that transaction then aborts — the coordinator expiring it, the
    // producer fenced — or still commits after the thaw is the broker's timing.)
    let counter = |name| metric(metrics, name, "").unwrap_or(0.0);
    let progress = || {
        (
            counter("tickstream_commits_total"),
            counter("tickstream_process_duration_seconds_count"),
        )
    };
    loop {
        let (commits, processed) = progress();
        std::thread::sleep(Duration::from_millis(5));
        let (commits_after, processed_after) = progress();
        if commits_after == commits && processed_after > processed {
            break;
        }
        app.assert_running();
        assert!(
            started.elapsed() < RECOVERY,
            "enrich processed nothing uncommitted while fed"
        );
    }

    broker.freeze();
    let frozen = Instant::now();
    // The freeze's length is what is tested; enrich must stay up all through it. It must also
    // say it is not ready: once its group session has run out (librdkafka enforces it
    // locally), or once a commit fails — during the freeze, or just after it when a commit
    // waited the freeze out.
    let mut said_not_ready = false;
    while frozen.elapsed() < FREEZE {
        app.assert_running();
        said_not_ready |= readyz(metrics) == Some(503);
        std::thread::sleep(Duration::from_millis(100));
    }
    broker.thaw();
    let thawed = Instant::now();
    while !said_not_ready && thawed.elapsed() < RECOVERY {
        app.assert_running();
        said_not_ready |= readyz(metrics) == Some(503);
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        said_not_ready,
        "/readyz stayed 200 through a {FREEZE:?} freeze and {RECOVERY:?} after it; log:\n{}",
        app.log_tail()
    );
    feeder
        .join()
        .expect("the feeder delivers every tick once the broker answers");

    deployment.wait_for(&want, &mut app);
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    runtime.block_on(wait_ready(metrics, true, &mut app, RECOVERY));
    // The outputs must be exact whichever way the open transaction went.
    eprintln!(
        "after the freeze: {} aborts, {} producer resets",
        counter("tickstream_transaction_aborts_total"),
        counter("tickstream_producer_resets_total")
    );
    assert!(app.terminate().success(), "SIGTERM exits 0");
    assert_matches_naive(&deployment.topology, &deployment.outputs(), &want);
}
