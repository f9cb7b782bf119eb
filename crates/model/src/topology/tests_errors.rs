//! Every refusal names its key (rules) or points at the line (parse errors).

use super::*;

fn error(toml: &str) -> TopologyError {
    match Topology::from_str(toml) {
        Ok(t) => panic!("accepted: {t:?}\n---\n{toml}"),
        Err(e) => e,
    }
}

/// (file, the key the error must name, a phrase the message must contain)
const INVALID: &[(&str, &str, &str)] = &[
    ("", "symbols", "is missing"),
    ("symbols = []", "symbols", "at least one"),
    ("symbols = [\"A\", \"A\"]", "symbols", "twice"),
    (
        "application_id = \"has space\"\nsymbols = [\"A\"]",
        "application_id",
        "characters Kafka",
    ),
    (
        "symbols = [\"A\", \"B\"]\n[topics]\nraw = { A = \"a\" }",
        "topics.raw",
        "no entry for B",
    ),
    (
        "symbols = [\"A\"]\n[topics]\nraw = { A = \"a\", B = \"b\" }",
        "topics.raw.B",
        "not in `symbols`",
    ),
    (
        "symbols = [\"A\"]\n[topics]\nraw = { A = \"a/b\" }",
        "topics.raw.A",
        "Kafka",
    ),
    (
        "symbols = [\"A\"]\n[topics]\nraw = \"\"",
        "topics.raw",
        "1 to 249",
    ),
    (
        "symbols = [\"A\"]\n[topics]\njumps = \"prices.raw\"",
        "topics.jumps",
        "also a raw topic",
    ),
    (
        "symbols = [\"A\"]\n[topics]\nvolatility = \"analytics.moving_average\"",
        "topics.volatility",
        "also topics.moving_average",
    ),
    (
        "symbols = [\"A\"]\n[topics]\ndead_letter = \"analytics.jumps\"",
        "topics.dead_letter",
        "also topics.jumps",
    ),
    ("symbols = [\"A\"]\nwindows = []", "windows", "at least one"),
    (
        "symbols = [\"A\"]\n[[windows]]\nsize = 3",
        "windows[0].kind",
        "is missing",
    ),
    (
        "symbols = [\"A\"]\n[[windows]]\nkind = \"count\"",
        "windows[0].size",
        "is missing",
    ),
    (
        "symbols = [\"A\"]\n[[windows]]\nkind = \"count\"\nsize = 0",
        "windows[0].size",
        "1 to 1000000 ticks (the cap)",
    ),
    (
        "symbols = [\"A\"]\n[[windows]]\nkind = \"count\"\nsize = 20000000",
        "windows[0].size",
        "1 to 1000000 ticks (the cap)",
    ),
    (
        "symbols = [\"A\"]\n[[windows]]\nkind = \"count\"\nsize = 5\nmin_count = 6",
        "windows[0].min_count",
        "1..=5",
    ),
    (
        "symbols = [\"A\"]\n[[windows]]\nkind = \"count\"\nsize = 5\nspan = \"1m\"",
        "windows[0].span",
        "kind = \"time\"",
    ),
    (
        "symbols = [\"A\"]\n[[windows]]\nkind = \"count\"\nsize = 5\nallowed_lateness = \"1s\"",
        "windows[0].allowed_lateness",
        "kind = \"time\"",
    ),
    (
        "symbols = [\"A\"]\n[[windows]]\nkind = \"time\"",
        "windows[0].span",
        "is missing",
    ),
    (
        "symbols = [\"A\"]\n[[windows]]\nkind = \"time\"\nspan = \"0s\"",
        "windows[0].span",
        "at least 1ms",
    ),
    (
        "symbols = [\"A\"]\n[[windows]]\nkind = \"time\"\nspan = \"1m\"\nmin_count = 0",
        "windows[0].min_count",
        "at least 1",
    ),
    (
        "symbols = [\"A\"]\n[[windows]]\nkind = \"time\"\nspan = \"1m\"\nsize = 3",
        "windows[0].size",
        "kind = \"count\"",
    ),
    (
        "symbols = [\"A\"]\n[[windows]]\nkind = \"time\"\nspan = \"60s\"\n[[windows]]\nkind = \"time\"\nspan = \"1m\"",
        "windows[1]",
        "same window (time:1m) as windows[0]",
    ),
    (
        "symbols = [\"A\"]\n[jumps]\nthreshold_pct = 0",
        "jumps.threshold_pct",
        "above 0",
    ),
    (
        "symbols = [\"A\"]\n[jumps]\nthreshold_pct = 100.5",
        "jumps.threshold_pct",
        "at most 100",
    ),
    (
        "symbols = [\"A\"]\n[jumps]\nthreshold_pct = nan",
        "jumps.threshold_pct",
        "above 0",
    ),
    (
        "symbols = [\"A\"]\n[source]\ninterval = \"3s\"",
        "source.kind",
        "is missing",
    ),
    (
        "symbols = [\"A\"]\n[source]\nkind = \"synthetic\"\ninterval = \"3s\"",
        "source.interval",
        "kind = \"binance-rest\"",
    ),
    (
        "symbols = [\"A\"]\n[source]\nkind = \"binance-rest\"\nbase_url = \"ftp://x\"",
        "source.base_url",
        "https://",
    ),
    (
        "symbols = [\"A\"]\n[source]\nkind = \"binance-rest\"\nbase_url = \"http://127.0.0.1:1\"",
        "source.base_url",
        "source.allow_plain_transport = true",
    ),
    (
        "symbols = [\"A\"]\n[source]\nkind = \"binance-ws\"\nbase_url = \"ws://127.0.0.1:1\"",
        "source.base_url",
        "plain ws:// (no TLS)",
    ),
    (
        "symbols = [\"A\"]\n[source]\nkind = \"synthetic\"\nallow_plain_transport = true",
        "source.allow_plain_transport",
        "kind = \"binance-rest\" or \"binance-ws\"",
    ),
    (
        "symbols = [\"A\"]\n[source]\nkind = \"binance-rest\"\ninterval = \"0s\"",
        "source.interval",
        "longer than 0",
    ),
    (
        "symbols = [\"A\"]\n[source]\nkind = \"binance-rest\"\nrequest_timeout = \"0ms\"",
        "source.request_timeout",
        "longer than 0",
    ),
    (
        "symbols = [\"A\"]\n[source]\nkind = \"binance-rest\"\n[source.breaker]\nfailures = 0",
        "source.breaker.failures",
        "at least 1",
    ),
    (
        "symbols = [\"A\"]\n[source]\nkind = \"binance-rest\"\n[source.breaker]\nopen_for = \"0s\"",
        "source.breaker.open_for",
        "longer than 0",
    ),
    (
        "symbols = [\"A\"]\n[source]\nkind = \"binance-ws\"\nbase_url = \"https://x\"",
        "source.base_url",
        "wss://",
    ),
    (
        "symbols = [\"A\"]\n[source]\nkind = \"binance-ws\"\nstreams = []",
        "source.streams",
        "is empty",
    ),
    (
        "symbols = [\"A\"]\n[source]\nkind = \"binance-ws\"\nstreams = [\"trade\", \"trade\"]",
        "source.streams",
        "twice",
    ),
    (
        "symbols = [\"A\"]\n[source]\nkind = \"replay\"",
        "source.path",
        "is missing",
    ),
    (
        "symbols = [\"A\"]\n[source]\nkind = \"replay\"\npath = \"\"",
        "source.path",
        "is empty",
    ),
    (
        "symbols = [\"A\"]\n[source]\nkind = \"replay\"\npath = \"x\"\nspeed = 0",
        "source.speed",
        "above 0",
    ),
    (
        "symbols = [\"A\"]\n[source]\nkind = \"synthetic\"\nticks_per_second = 0",
        "source.ticks_per_second",
        "above 0",
    ),
    (
        "symbols = [\"A\"]\n[source]\nkind = \"synthetic\"\nvolatility = 2",
        "source.volatility",
        "[0, 1]",
    ),
    (
        "symbols = [\"A\"]\n[source]\nkind = \"synthetic\"\njump_probability = -0.1",
        "source.jump_probability",
        "[0, 1]",
    ),
    (
        "symbols = [\"A\"]\n[source]\nkind = \"synthetic\"\njump_size_pct = 100",
        "source.jump_size_pct",
        "below 100",
    ),
    (
        "symbols = [\"A\"]\n[source]\nkind = \"synthetic\"\n[source.initial_prices]\nB = 1",
        "source.initial_prices.B",
        "not in `symbols`",
    ),
    (
        "symbols = [\"A\"]\n[source]\nkind = \"synthetic\"\n[source.initial_prices]\nA = -1",
        "source.initial_prices.A",
        "above 0",
    ),
    (
        "symbols = [\"A\"]\n[mongodb]\ndatabase = \"a.b\"",
        "mongodb.database",
        "database name",
    ),
    (
        "symbols = [\"A\"]\n[mongodb]\nbatch_size = 0",
        "mongodb.batch_size",
        "1 to 100000",
    ),
    (
        "symbols = [\"A\"]\n[mongodb]\nbatch_interval = \"0s\"",
        "mongodb.batch_interval",
        "longer than 0",
    ),
    (
        "symbols = [\"A\", \"B\"]\n[mongodb.collections]\nprices = { A = \"a\" }",
        "mongodb.collections.prices",
        "no entry for B",
    ),
    (
        "symbols = [\"A\"]\n[mongodb.collections]\nprices = \"system.x\"",
        "mongodb.collections.prices",
        "collection name",
    ),
    (
        "symbols = [\"A\"]\n[mongodb.collections]\njumps = \"prices\"",
        "mongodb.collections.jumps",
        "also a prices collection",
    ),
    (
        "symbols = [\"A\"]\n[mongodb.collections]\njumps = \"volatility\"",
        "mongodb.collections.jumps",
        "also mongodb.collections.volatility",
    ),
    (
        "symbols = [\"A\"]\n[mongodb.collections]\nvolatility = \"a$b\"",
        "mongodb.collections.volatility",
        "collection name",
    ),
    (
        "symbols = [\"A\"]\n[processing]\ncommit_interval = \"0ms\"",
        "processing.commit_interval",
        "longer than 0",
    ),
    (
        "symbols = [\"A\"]\n[processing]\nstate_dir = \"\"",
        "processing.state_dir",
        "is empty",
    ),
    (
        "symbols = [\"A\"]\n[processing]\nmetrics_addr = \"localhost\"",
        "processing.metrics_addr",
        "127.0.0.1:9464",
    ),
    (
        "symbols = [\"A\"]\n[processing]\nmax_record_bytes = 10",
        "processing.max_record_bytes",
        "64 to 1048576",
    ),
];

#[test]
fn every_rule_names_its_key() {
    for (toml, key, phrase) in INVALID {
        let e = error(toml);
        assert_eq!(e.key(), Some(*key), "{toml}\n{e}");
        let message = e.to_string();
        assert!(message.contains(&format!("invalid `{key}`")), "{message}");
        assert!(
            message.contains(phrase),
            "{toml}\n{message}\n(wanted {phrase:?})"
        );
    }
}

/// `n` time windows of distinct spans (1s, 2s, ...), as TOML.
fn time_windows(n: usize) -> String {
    (1..=n)
        .map(|i| format!("[[windows]]\nkind = \"time\"\nspan = \"{i}s\"\n"))
        .collect()
}

/// Every cap on what a topology makes enrich hold: the key, and the cap in the message.
#[test]
fn caps_name_their_key_and_the_cap() {
    let count = |size: u32| format!("[[windows]]\nkind = \"count\"\nsize = {size}\n");
    let many: Vec<String> = (0..=Topology::MAX_SYMBOLS)
        .map(|i| format!("\"S{i}\""))
        .collect();
    let cases = [
        (
            format!("symbols = [\"A\"]\n{}", time_windows(17)),
            "windows",
            "lists 17 windows, the cap is 16",
        ),
        (
            format!("symbols = [\"A\"]\n{}", count(1_000_001)),
            "windows[0].size",
            "1 to 1000000 ticks (the cap)",
        ),
        (
            format!(
                "symbols = [\"A\"]\n{}{}{}",
                count(1_000_000),
                count(999_999),
                count(2)
            ),
            "windows",
            "2000001 ticks in all (their sizes summed), the cap is 2000000",
        ),
        (
            "symbols = [\"A\"]\n[[windows]]\nkind = \"time\"\nspan = \"169h\"".to_owned(),
            "windows[0].span",
            "is 169h: the cap is 168h (7 days)",
        ),
        (
            "symbols = [\"A\"]\npin_symbols = false\nmax_symbols = 100001".to_owned(),
            "max_symbols",
            "is 100001: write 1 (the symbols listed, always kept) to 100000",
        ),
        (
            "symbols = [\"A\", \"B\"]\npin_symbols = false\nmax_symbols = 1".to_owned(),
            "max_symbols",
            "is 1: write 2",
        ),
        (
            "symbols = [\"A\"]\nmax_symbols = 50".to_owned(),
            "max_symbols",
            "applies with pin_symbols = false only",
        ),
        (
            format!("symbols = [{}]", many.join(", ")),
            "symbols",
            "lists 100001 symbols, the cap is 100000",
        ),
    ];
    for (toml, key, phrase) in &cases {
        let e = error(toml);
        assert_eq!(e.key(), Some(*key), "{e}");
        let message = e.to_string();
        assert!(message.contains(phrase), "{message}\n(wanted {phrase:?})");
    }
}

/// A topology at every cap is accepted.
#[test]
fn a_topology_at_every_cap_is_valid() {
    let symbols: Vec<String> = (0..Topology::MAX_SYMBOLS)
        .map(|i| format!("\"S{i}\""))
        .collect();
    let toml = format!(
        "symbols = [{}]\npin_symbols = false\nmax_symbols = {}\n\
         [[windows]]\nkind = \"count\"\nsize = 1000000\n\
         [[windows]]\nkind = \"count\"\nsize = 999999\n\
         [[windows]]\nkind = \"count\"\nsize = 1\n\
         [[windows]]\nkind = \"time\"\nspan = \"168h\"\n{}",
        symbols.join(", "),
        Topology::MAX_SYMBOLS,
        time_windows(WindowConfig::MAX_WINDOWS - 4)
    );
    let t = Topology::from_str(&toml).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(t.windows.len(), WindowConfig::MAX_WINDOWS);
    assert_eq!(t.max_symbols, Topology::MAX_SYMBOLS);
    let unpinned = Topology::from_str("symbols = [\"A\"]\npin_symbols = false").expect("valid");
    assert_eq!(unpinned.max_symbols, Topology::DEFAULT_MAX_SYMBOLS);
}

#[test]
fn parse_errors_point_at_the_line() {
    // (file, phrases the message must contain)
    let cases: &[(&str, &[&str])] = &[
        (
            "symbols = [\"A\"]\n[topics]\nraww = \"x\"",
            &["unknown field `raww`", "`raw`", "line 3"],
        ),
        (
            "symbols = [\"A\"]\nwindow = []",
            &["unknown field `window`", "`windows`"],
        ),
        ("symbols = [\"btcusdt\"]", &["\"BTCUSDT\"", "line 1"]),
        (
            "symbols = [\"A\"]\n[[windows]]\nkind = \"count\"\nsize = -3",
            &["size = -3", "line 4"],
        ),
        (
            "symbols = [\"A\"]\n[[windows]]\nkind = \"sliding\"",
            &["unknown variant `sliding`", "`count`"],
        ),
        (
            "symbols = [\"A\"]\n[processing]\ncommit_interval = 100",
            &["commit_interval = 100", "\"500ms\""],
        ),
        (
            "symbols = [\"A\"]\n[processing]\ncommit_interval = \"100 ms\"",
            &["invalid duration \"100 ms\""],
        ),
        (
            "symbols = [\"A\"]\n[source]\nkind = \"binance\"",
            &["unknown variant `binance`", "`binance-rest`"],
        ),
        (
            "symbols = [\"A\"]\n[source]\nkind = \"replay\"\npath = \"x\"\nspeed = \"fast\"",
            &["\"max\""],
        ),
        (
            "symbols = [\"A\"]\n[topics]\nraw = 3",
            &["{ BTCUSDT = \"btc\""],
        ),
        ("symbols = [\"A\"\n", &["line"]),
    ];
    for (toml, phrases) in cases {
        let e = error(toml);
        assert!(matches!(e, TopologyError::Parse { .. }), "{toml}: {e:?}");
        let message = e.to_string();
        for phrase in *phrases {
            assert!(
                message.contains(phrase),
                "{toml}\n{message}\n(wanted {phrase:?})"
            );
        }
    }
}

#[test]
fn secrets_get_a_hint() {
    let e = error("symbols = [\"A\"]\n[mongodb]\nuri = \"mongodb://user:pw@host\"");
    let message = e.to_string();
    assert!(message.contains("TICKSTREAM_MONGODB_URI"), "{message}");
    let e = error("brokers = \"localhost:9092\"\nsymbols = [\"A\"]");
    assert!(e.to_string().contains("TICKSTREAM_KAFKA_BROKERS"), "{e}");
}

#[test]
fn file_errors_name_the_file() {
    let missing = super::tests::topologies_dir().join("does-not-exist.toml");
    let e = Topology::from_path(&missing)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        e.starts_with("cannot read topology file") && e.contains("does-not-exist.toml"),
        "{e}"
    );

    let e = error("symbols = []").to_string();
    assert_eq!(
        e,
        "topology: invalid `symbols`: is empty: list at least one trading pair, e.g. symbols = [\"BTCUSDT\"]"
    );
}
