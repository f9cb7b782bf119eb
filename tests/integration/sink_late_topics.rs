//! A sink started before the analytics topics exist: the raw prices flow meanwhile, `/readyz`
//! says not ready, and analytics are stored within 10 s of the topics' creation.

use std::time::{Duration, Instant};

use mongodb::bson::{Document, doc};
use tickstream_model::{DerivedEvent, Jump, MovingAverage, Symbol, Topology, Volatility};

use crate::processes::{readyz, start, wait_ready};
use crate::sink::{full_ticks, produce_all, wait_for_documents};
use crate::support::{
    create_topic, free_local_address, kafka_brokers, mongodb_uri, producer, require_kafka,
    require_mongodb, unique_name,
};

/// How soon after their creation the analytics must be in MongoDB.
const PICKED_UP_WITHIN: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_started_before_the_analytics_topics_stores_them_once_created() {
    let brokers = require_kafka();
    let mongo = require_mongodb().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let app = unique_name("sink-late");
    let toml = format!(
        r#"
application_id = "{app}"
symbols = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
[topics]
raw = "{app}.raw"
moving_average = "{app}.ma"
volatility = "{app}.vol"
jumps = "{app}.jumps"
dead_letter = "{app}.dlq"
[mongodb]
database = "{app}"
batch_interval = "100ms"
"#
    );
    let path = dir.path().join("topology.toml");
    std::fs::write(&path, &toml).expect("write the topology");
    Topology::from_str(&toml).expect("a valid topology");
    let raw = format!("{app}.raw");
    create_topic(&brokers, &raw, 1).await;
    let producer = producer(&brokers, &[]);
    produce_all(&producer, full_ticks(&raw, 0, 3, 1_700_000_000_000)).await;

    let metrics = free_local_address();
    let mut sink = start(
        "sink",
        &path,
        &kafka_brokers(),
        Some(&mongodb_uri()),
        metrics,
        &dir.path().join("sink.log"),
    );
    let db = mongo.database(&app);
    // Subscribed topics that do not exist stop nothing: the raw prices are stored…
    wait_for_documents(&db.collection::<Document>("prices"), 3).await;
    // …and the sink says it is not ready (it would miss what those topics will carry).
    wait_ready(metrics, false, &mut sink, Duration::from_secs(10)).await;
    sink.assert_running();

    for kind in ["ma", "vol", "jumps"] {
        create_topic(&brokers, &format!("{app}.{kind}"), 1).await;
    }
    let created = Instant::now();
    let symbol = Symbol::new("BTCUSDT").expect("valid");
    let ts = 1_700_000_000_000;
    let events: Vec<(String, String, Vec<u8>, i64)> = vec![
        (
            format!("{app}.ma"),
            "BTCUSDT".to_owned(),
            MovingAverage {
                symbol,
                ts,
                window: "count:20".into(),
                mean: 10.5,
                count: 20,
                min: 9.0,
                max: 12.0,
                vwap: None,
                bounds: None,
            }
            .encode(),
            ts,
        ),
        (
            format!("{app}.vol"),
            "BTCUSDT".to_owned(),
            Volatility {
                symbol,
                ts,
                window: "count:20".into(),
                stddev: 0.5,
                mean: 10.5,
                count: 20,
                bounds: None,
            }
            .encode(),
            ts,
        ),
        (
            format!("{app}.jumps"),
            "BTCUSDT".to_owned(),
            Jump {
                symbol,
                ts,
                from: 100.0,
                to: 103.0,
                change_pct: 3.0,
                threshold_pct: 2.0,
            }
            .encode(),
            ts,
        ),
    ];
    produce_all(&producer, events).await;
    for collection in ["moving_averages", "volatility", "jumps"] {
        let collection = db.collection::<Document>(collection);
        loop {
            let stored = collection.count_documents(doc! {}).await.expect("count");
            if stored == 1 {
                break;
            }
            sink.assert_running();
            assert!(
                created.elapsed() < PICKED_UP_WITHIN,
                "{} holds {stored} document(s) {:?} after the topics were created; sink log:\n{}",
                collection.name(),
                created.elapsed(),
                sink.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    eprintln!(
        "analytics stored {:?} after the topics were created",
        created.elapsed()
    );
    wait_ready(metrics, true, &mut sink, Duration::from_secs(10)).await;
    assert_eq!(readyz(metrics), Some(200));
    let status = sink.terminate();
    assert!(status.success(), "SIGTERM → exit 0, got {status}");
    db.drop().await.expect("drop the test database");
}
