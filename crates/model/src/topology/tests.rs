use std::path::Path;

use super::*;

fn sym(s: &str) -> Symbol {
    Symbol::new(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn parse(toml: &str) -> Topology {
    Topology::from_str(toml).unwrap_or_else(|e| panic!("{e}\n---\n{toml}"))
}

pub(super) fn topologies_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../topologies")
}

#[test]
fn every_shipped_topology_parses() {
    let mut seen = 0;
    let entries = std::fs::read_dir(topologies_dir()).unwrap_or_else(|e| panic!("{e}"));
    for entry in entries {
        let path = entry.unwrap_or_else(|e| panic!("{e}")).path();
        if path.extension().is_some_and(|e| e == "toml") {
            Topology::from_path(&path).unwrap_or_else(|e| panic!("{e}"));
            seen += 1;
        }
    }
    assert!(seen >= 2, "default.toml and seed.toml at least");
}

#[test]
fn seed_reproduces_the_reference_layout() {
    let t =
        Topology::from_path(topologies_dir().join("seed.toml")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(t.symbols, [sym("BTCUSDT"), sym("ETHUSDT"), sym("SOLUSDT")]);
    assert_eq!(
        [
            t.raw_topic_for("BTCUSDT"),
            t.raw_topic_for("ETHUSDT"),
            t.raw_topic_for("SOLUSDT")
        ],
        [Some("btc"), Some("eth"), Some("sol")]
    );
    assert_eq!(t.raw_topics(), ["btc", "eth", "sol"]);
    assert_eq!(t.raw_topic_for("XRPUSDT"), None);
    assert_eq!(t.topics.raw_format, RecordFormat::Reference);
    assert_eq!(t.mongodb.database, "fx");
    assert_eq!(
        ["BTCUSDT", "ETHUSDT", "SOLUSDT"].map(|s| t.prices_collection_for(s)),
        [Some("btc"), Some("eth"), Some("sol")]
    );
    assert_eq!(
        t.windows,
        [WindowConfig::Count {
            size: 20,
            min_count: 20
        }]
    );
    assert_eq!(t.jumps.threshold_pct, 2.0);
    let SourceConfig::BinanceRest(rest) = &t.source else {
        panic!("{:?}", t.source)
    };
    assert_eq!(rest.interval, Duration::from_secs(3));
    assert_eq!(
        rest.breaker,
        BreakerConfig {
            failures: 5,
            open_for: Duration::from_secs(60)
        }
    );
}

#[test]
fn default_toml_is_the_documented_default() {
    let t = Topology::from_path(topologies_dir().join("default.toml"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(t.raw_topics(), ["prices.raw"]);
    assert_eq!(
        t.windows
            .iter()
            .map(WindowConfig::label)
            .collect::<Vec<_>>(),
        ["count:20", "time:5m"]
    );
    assert_eq!(t.source.kind(), "synthetic");
    assert_eq!(
        t.candles
            .iter()
            .map(CandleConfig::label)
            .collect::<Vec<_>>(),
        ["1m"]
    );
    // Everything but the windows, candles and the synthetic source's prices is the built-in
    // default.
    let defaults = Topology {
        windows: t.windows.clone(),
        candles: t.candles.clone(),
        source: t.source.clone(),
        ..Topology::default()
    };
    assert_eq!(t, defaults);
}

#[test]
fn a_minimal_file_gets_every_default() {
    let t = parse(r#"symbols = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]"#);
    assert_eq!(t, Topology::default());
    assert_eq!(t.validate().ok(), Some(()));
    assert_eq!(t.application_id, "tickstream");
    assert!(t.pin_symbols);
    assert_eq!(t.topics.raw, Routing::Shared("prices.raw".into()));
    assert_eq!(t.topics.raw_format, RecordFormat::Full);
    assert_eq!(
        t.derived_topics(),
        [
            "analytics.moving_average",
            "analytics.volatility",
            "analytics.jumps"
        ]
    );
    assert_eq!(t.topics.dead_letter, "tickstream.dlq");
    assert_eq!(
        t.windows,
        [WindowConfig::Count {
            size: 20,
            min_count: 20
        }]
    );
    assert_eq!(t.jumps.threshold_pct, 2.0);
    assert_eq!(
        t.source,
        SourceConfig::Synthetic(SyntheticSource::default())
    );
    assert_eq!(t.mongodb.database, "tickstream");
    assert_eq!(
        EventKind::ALL.map(|k| t.collection(k)),
        ["moving_averages", "volatility", "jumps", "candles"]
    );
    assert!(t.candles.is_empty());
    assert_eq!(
        t.event_kinds().collect::<Vec<_>>(),
        EventKind::ALL[..3],
        "no candles, no candle topic"
    );
    assert_eq!(t.prices_collection_for("BTCUSDT"), Some("prices"));
    assert_eq!(
        (t.mongodb.batch_size, t.mongodb.batch_interval),
        (1000, Duration::from_millis(100))
    );
    let p = &t.processing;
    assert_eq!(p.guarantee, ProcessingGuarantee::ExactlyOnce);
    assert_eq!(p.commit_interval, Duration::from_millis(100));
    assert_eq!(p.state_dir, PathBuf::from("./data/state"));
    assert_eq!(p.metrics_addr.to_string(), "127.0.0.1:9464");
    assert_eq!(p.max_record_bytes, 1024);
    assert_eq!(t.allowed_lateness(), Duration::from_secs(5));

    let named = parse("application_id = \"fx-app\"\nsymbols = [\"BTCUSDT\"]");
    assert_eq!(named.topics.dead_letter, "fx-app.dlq");
}

#[test]
fn sources_windows_and_helpers() {
    let t = parse(
        r#"
        symbols = ["BTCUSDT"]
        pin_symbols = false
        [[windows]]
        kind = "time"
        span = "90s"
        allowed_lateness = "30s"
        [[windows]]
        kind = "count"
        size = 5
        min_count = 3
        [source]
        kind = "binance-ws"
        streams = ["trade", "bookTicker"]
        [processing]
        guarantee = "at_least_once"
        max_record_bytes = 2048
        "#,
    );
    assert_eq!(
        t.windows
            .iter()
            .map(WindowConfig::label)
            .collect::<Vec<_>>(),
        ["time:90s", "count:5"]
    );
    assert_eq!(
        t.windows
            .iter()
            .map(WindowConfig::min_count)
            .collect::<Vec<_>>(),
        [2, 3]
    );
    assert_eq!(t.allowed_lateness(), Duration::from_secs(30));
    let SourceConfig::BinanceWs(ws) = &t.source else {
        panic!("{:?}", t.source)
    };
    assert_eq!(ws.base_url, "wss://stream.binance.com:9443");
    assert_eq!(
        ws.streams.iter().map(|s| s.name()).collect::<Vec<_>>(),
        ["trade", "bookTicker"]
    );
    assert_eq!(t.processing.guarantee, ProcessingGuarantee::AtLeastOnce);
    // Not pinned: any symbol is routed and decoded.
    assert_eq!(t.raw_topic_for("XRPUSDT"), Some("prices.raw"));
    let options = t.decode_options();
    assert_eq!(
        (options.max_bytes(), options.pinned_symbols()),
        (2048, None)
    );
    assert!(
        options
            .decode(br#"{"symbol":"XRPUSDT","price":0.5}"#)
            .is_ok()
    );

    let replay = parse(
        "symbols = [\"A\"]\n[source]\nkind = \"replay\"\npath = \"t.jsonl\"\nspeed = \"max\"",
    );
    assert_eq!(
        replay.source,
        SourceConfig::Replay(ReplaySource {
            path: "t.jsonl".into(),
            speed: ReplaySpeed::Max
        })
    );
    let replay =
        parse("symbols = [\"A\"]\n[source]\nkind = \"replay\"\npath = \"t.jsonl\"\nspeed = 10");
    assert!(matches!(
        replay.source,
        SourceConfig::Replay(ReplaySource {
            speed: ReplaySpeed::Factor(10.0),
            ..
        })
    ));
    let synthetic = parse(
        "symbols = [\"A\", \"B\"]\n[source]\nkind = \"synthetic\"\n[source.initial_prices]\nA = 5",
    );
    let SourceConfig::Synthetic(s) = &synthetic.source else {
        panic!()
    };
    assert_eq!((s.initial_price("A"), s.initial_price("B")), (5.0, 100.0));
}

#[test]
fn validate_rechecks_after_changes() {
    let mut t = Topology::default();
    assert!(t.validate().is_ok());
    t.topics.jumps = t.topics.volatility.clone();
    assert_eq!(
        t.validate().err().as_ref().and_then(TopologyError::key),
        Some("topics.jumps")
    );
}

#[test]
fn repartition_compression_and_outage_keys_parse_with_their_defaults() {
    let t = Topology::from_str("symbols = [\"BTCUSDT\"]").expect("valid");
    assert_eq!(t.topics.repartition, super::RepartitionPolicy::Auto);
    assert_eq!(t.topics.compression.raw, super::Compression::None);
    assert_eq!(t.topics.partitions, None);
    assert_eq!(t.repartition_topic(), "tickstream-repartition");
    assert_eq!(
        t.processing.give_up_after,
        std::time::Duration::from_secs(600)
    );
    let t = Topology::from_str(
        r#"
symbols = ["BTCUSDT"]
[topics]
partitions = 6
repartition = "always"
compression = { raw = "gzip", derived = "zstd" }
[processing]
max_task_idle = "250ms"
give_up_after = "30s"
"#,
    )
    .expect("valid");
    assert_eq!(t.topics.partitions, Some(6));
    assert_eq!(t.topics.repartition, super::RepartitionPolicy::Always);
    assert_eq!(t.topics.compression.raw.as_str(), "gzip");
    assert_eq!(t.topics.compression.derived.as_str(), "zstd");
    assert_eq!(
        t.processing.max_task_idle,
        std::time::Duration::from_millis(250)
    );
    let all = Topology::from_str("symbols = [\"BTCUSDT\"]\n[topics]\ncompression = \"lz4\"")
        .expect("valid");
    assert_eq!(all.topics.compression.derived.as_str(), "lz4");
    for (toml, key) in [
        ("[topics]\npartitions = 0", "topics.partitions"),
        ("[topics]\nrepartition = \"sometimes\"", "repartition"),
        (
            "[processing]\ngive_up_after = \"1s\"",
            "processing.give_up_after",
        ),
        (
            "[processing]\nmax_task_idle = \"5m\"",
            "processing.max_task_idle",
        ),
    ] {
        let error = Topology::from_str(&format!("symbols = [\"BTCUSDT\"]\n{toml}"))
            .expect_err(toml)
            .to_string();
        assert!(error.contains(key), "{toml}: {error}");
    }
}

#[test]
fn plain_transport_is_accepted_only_when_the_topology_allows_it() {
    let rest = parse(
        "symbols = [\"A\"]\n[source]\nkind = \"binance-rest\"\nbase_url = \"http://127.0.0.1:1\"\nallow_plain_transport = true",
    );
    let SourceConfig::BinanceRest(rest) = &rest.source else {
        panic!("{:?}", rest.source)
    };
    assert!(rest.allow_plain_transport);
    let ws = parse(
        "symbols = [\"A\"]\n[source]\nkind = \"binance-ws\"\nbase_url = \"ws://127.0.0.1:1\"\nallow_plain_transport = true",
    );
    let SourceConfig::BinanceWs(ws) = &ws.source else {
        panic!("{:?}", ws.source)
    };
    assert!(ws.allow_plain_transport);
    let default = parse("symbols = [\"A\"]\n[source]\nkind = \"binance-rest\"");
    let SourceConfig::BinanceRest(default) = &default.source else {
        panic!("{:?}", default.source)
    };
    assert!(!default.allow_plain_transport, "TLS unless asked otherwise");
}

#[test]
fn candles_take_an_interval_a_grace_and_an_idle_close() {
    let t = Topology::from_str(
        r#"
        symbols = ["BTCUSDT"]
        [topics]
        candles = "ohlc"
        [[candles]]
        interval = "1m"
        [[candles]]
        interval = "1h"
        grace = "30s"
        close_idle_after = "2h"
        [mongodb.collections]
        candles = "ohlcv"
        "#,
    )
    .expect("valid");
    assert_eq!(
        t.candles,
        [
            CandleConfig {
                interval: Duration::from_secs(60),
                grace: Duration::from_secs(5),
                close_idle_after: Duration::from_secs(65),
            },
            CandleConfig {
                interval: Duration::from_secs(3_600),
                grace: Duration::from_secs(30),
                close_idle_after: Duration::from_secs(7_200),
            },
        ]
    );
    assert_eq!(t.candles[0].label(), "1m");
    assert_eq!(t.topic(EventKind::Candle), "ohlc");
    assert_eq!(t.collection(EventKind::Candle), "ohlcv");
    assert_eq!(t.derived_topics().last(), Some(&"ohlc"));
}

#[test]
fn a_bad_candle_interval_is_refused_naming_its_key() {
    let error = |candles: &str| {
        Topology::from_str(&format!("symbols = [\"BTCUSDT\"]\n{candles}"))
            .expect_err("invalid")
            .to_string()
    };
    for (candles, key, says) in [
        (
            "[[candles]]\ngrace = \"1s\"",
            "candles[0].interval",
            "is missing",
        ),
        (
            "[[candles]]\ninterval = \"500ms\"",
            "candles[0].interval",
            "whole seconds",
        ),
        (
            "[[candles]]\ninterval = \"2d\"",
            "candles[0].interval",
            "is 2d: write whole seconds from 1s to 1d",
        ),
        (
            "[[candles]]\ninterval = \"1m\"\n[[candles]]\ninterval = \"60s\"",
            "candles[1].interval",
            "also candles[0]",
        ),
        (
            "[[candles]]\ninterval = \"1m\"\nclose_idle_after = \"0s\"",
            "candles[0].close_idle_after",
            "is 0",
        ),
        (
            "[[candles]]\ninterval = \"1m\"\nsize = 3",
            "size",
            "unknown field",
        ),
    ] {
        let e = error(candles);
        assert!(e.contains(key) && e.contains(says), "{candles:?}: {e}");
    }
}
