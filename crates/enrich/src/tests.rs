use tickstream_model::{
    DerivedEvent, Jump, MovingAverage, RawTick, RecordFormat, Symbol, Topology,
};
use tickstream_streams::{
    KeyValueStore, ProcessError, Processor, ProcessorContext, Record, StoreError, TaskId,
};

use super::*;

const TOPOLOGY: &str = r#"
    symbols = ["C00000USDT", "C00001USDT", "C00002USDT"]
    [[windows]]
    kind = "count"
    size = 5
    [[windows]]
    kind = "time"
    span = "10s"
    min_count = 2
    [jumps]
    threshold_pct = 1.0
"#;

pub(super) fn symbol(name: &str) -> Symbol {
    name.parse().expect("a valid symbol")
}

pub(super) type Emitted = Vec<(String, Option<Vec<u8>>, Vec<u8>)>;

pub(super) fn record<'a>(offset: i64, value: &'a [u8], timestamp: Option<i64>) -> Record<'a> {
    Record {
        topic: "prices.raw",
        partition: 0,
        offset,
        timestamp,
        key: None,
        value: Some(value),
    }
}

pub(super) fn stream(n: usize, seed: u64) -> Vec<(Symbol, f64, i64)> {
    naive::random_walk(&naive::sample_symbols(3), n, seed)
}

pub(super) fn encode(symbol: Symbol, price: f64, ts: i64) -> Vec<u8> {
    RawTick::new(symbol, price)
        .with_ts(ts)
        .encode(RecordFormat::Full)
}

pub(super) fn run(
    processor: &mut EnrichProcessor,
    store: &mut KeyValueStore<SymbolState>,
    ticks: &[(Symbol, f64, i64)],
) -> Emitted {
    let mut emitted = Vec::new();
    for (offset, (symbol, price, ts)) in ticks.iter().enumerate() {
        let value = encode(*symbol, *price, *ts);
        let mut ctx = ProcessorContext::new(TaskId(0), store, &mut emitted);
        processor
            .process(&record(offset as i64, &value, None), &mut ctx)
            .expect("valid ticks are accepted");
    }
    emitted
}

#[test]
fn window_labels_are_the_topologys() {
    let topology = Topology::from_str(TOPOLOGY).expect("valid topology");
    let config = window_config(&topology).expect("valid windows");
    let labels: Vec<String> = config
        .windows()
        .iter()
        .map(|w| w.label().to_owned())
        .collect();
    let expected: Vec<String> = topology.windows.iter().map(|w| w.label()).collect();
    assert_eq!(labels, expected);
    assert_eq!(labels, ["count:5", "time:10s"]);
}

#[test]
fn every_event_matches_a_naive_recomputation() {
    let topology = Topology::from_str(TOPOLOGY).expect("valid topology");
    let enrich = Enrich::new(&topology).expect("valid");
    let ticks = stream(20_000, 7);
    let emitted = run(
        &mut enrich.processor(),
        &mut KeyValueStore::in_memory(STORE_NAME),
        &ticks,
    );
    let actual: Vec<naive::DerivedRecord> = emitted
        .into_iter()
        .map(|(topic, key, value)| {
            let symbol = std::str::from_utf8(&key.expect("keyed"))
                .expect("utf-8")
                .parse();
            (topic, symbol.expect("a symbol"), value)
        })
        .collect();
    let expected = naive::recompute(&topology, &ticks);
    let jumps = expected
        .iter()
        .filter(|(t, _, _)| t == "analytics.jumps")
        .count();
    assert!(jumps > 50, "the stream has jumps to detect ({jumps})");
    naive::compare(&topology, &actual, &expected).unwrap_or_else(|e| panic!("{e}"));
}

/// The runtime commits the dirty windows, and a new task (after a crash or a move) starts
/// from the committed bytes: the outputs must not tell the difference.
#[test]
fn restoring_committed_state_gives_the_uninterrupted_outputs() {
    let topology = Topology::from_str(TOPOLOGY).expect("valid topology");
    let enrich = Enrich::new(&topology).expect("valid");
    let ticks = stream(3_000, 11);
    let uninterrupted = run(
        &mut enrich.processor(),
        &mut KeyValueStore::in_memory(STORE_NAME),
        &ticks,
    );

    let mut first = KeyValueStore::in_memory(STORE_NAME);
    let mut outputs = run(&mut enrich.processor(), &mut first, &ticks[..1_234]);
    let (mut restored, changed) = first.restored_after_commit().expect("in-memory restore");
    assert_eq!(changed, 3, "one value per symbol");
    outputs.extend(run(&mut enrich.processor(), &mut restored, &ticks[1_234..]));
    assert_eq!(outputs, uninterrupted);
}

#[test]
fn state_from_other_windows_stops_the_task_with_a_way_out() {
    let topology = Topology::from_str(TOPOLOGY).expect("valid topology");
    let mut store = KeyValueStore::in_memory(STORE_NAME);
    run(
        &mut Enrich::new(&topology).expect("valid").processor(),
        &mut store,
        &stream(10, 1),
    );
    let (mut restored, _) = store.restored_after_commit().expect("in-memory restore");

    let changed = Topology::from_str(&TOPOLOGY.replace("size = 5", "size = 6")).expect("valid");
    let mut processor = Enrich::new(&changed).expect("valid").processor();
    let value = encode(symbol("C00000USDT"), 1.0, 1_800_000_000_000);
    let mut emitted = Vec::new();
    let error = processor
        .process(
            &record(0, &value, None),
            &mut ProcessorContext::new(TaskId(0), &mut restored, &mut emitted),
        )
        .expect_err("the old state does not fit the new windows");
    let ProcessError::Store(StoreError::Corrupt { reason, .. }) = error else {
        panic!("a store error, not {error:?}");
    };
    assert!(reason.contains("another window configuration"), "{reason}");
    assert!(reason.contains("delete the state dir"), "{reason}");
}

#[test]
fn unusable_ticks_are_rejected_with_their_reason_and_change_nothing() {
    let topology = Topology::from_str(TOPOLOGY).expect("valid topology");
    let mut processor = Enrich::new(&topology).expect("valid").processor();
    let mut store = KeyValueStore::in_memory(STORE_NAME);
    let long = format!(
        r#"{{"symbol":"C00000USDT","price":1.0,"pad":"{}"}}"#,
        "x".repeat(2000)
    );
    let cases: [(&[u8], Option<i64>, &str); 10] = [
        (b"{not json", Some(1), "not_json"),
        (br#"{"price":1.0,"ts":1}"#, None, "missing_field"),
        (
            br#"{"symbol":"C00000USDT","price":"1.0","ts":1}"#,
            None,
            "mistyped_field",
        ),
        (
            br#"{"symbol":"C00000USDT","price":"NaN","ts":1}"#,
            None,
            "mistyped_field",
        ),
        (
            br#"{"symbol":"C00000USDT","price":-3.5,"ts":1}"#,
            None,
            "non_positive_price",
        ),
        (
            br#"{"symbol":"C00000USDT","price":0,"ts":1}"#,
            None,
            "non_positive_price",
        ),
        (
            br#"{"symbol":"C99999USDT","price":1.0,"ts":1}"#,
            None,
            "unknown_symbol",
        ),
        (
            br#"{"symbol":"C00000USDT","price":1.0}"#,
            None,
            "missing_event_time",
        ),
        (long.as_bytes(), Some(1), "oversized"),
        (b"", Some(1), "not_json"),
    ];
    let mut emitted = Vec::new();
    for (offset, (value, timestamp, code)) in cases.iter().enumerate() {
        let mut ctx = ProcessorContext::new(TaskId(0), &mut store, &mut emitted);
        match processor.process(&record(offset as i64, value, *timestamp), &mut ctx) {
            Err(ProcessError::Rejected(rejection)) => {
                assert_eq!(rejection.code, *code, "{}", String::from_utf8_lossy(value));
                assert!(!rejection.message.is_empty());
            }
            other => panic!(
                "{:?}: expected {code}, got {other:?}",
                String::from_utf8_lossy(value)
            ),
        }
    }
    assert!(emitted.is_empty());
    let (_, changed) = store.restored_after_commit().expect("in-memory restore");
    assert_eq!(changed, 0, "rejected ticks leave no state behind");

    // A tick later than the allowed lateness (5 s default) is refused by the windows.
    let mut ctx = ProcessorContext::new(TaskId(0), &mut store, &mut emitted);
    let on_time = encode(symbol("C00000USDT"), 1.0, 100_000);
    processor
        .process(&record(20, &on_time, None), &mut ctx)
        .expect("accepted");
    let late = encode(symbol("C00000USDT"), 1.0, 90_000);
    match processor.process(&record(21, &late, None), &mut ctx) {
        Err(ProcessError::Rejected(rejection)) => assert_eq!(rejection.code, "late_tick"),
        other => panic!("expected late_tick, got {other:?}"),
    }
}

#[test]
fn the_reference_format_takes_its_event_time_from_the_kafka_timestamp() {
    let topology = Topology::from_str(&format!(
        "{TOPOLOGY}\n[topics]\nraw_format = \"reference\"\n"
    ))
    .expect("valid topology");
    let mut processor = Enrich::new(&topology).expect("valid").processor();
    let mut store = KeyValueStore::in_memory(STORE_NAME);
    let mut emitted = Vec::new();
    for (offset, price) in [10.0, 10.5].into_iter().enumerate() {
        let value = format!(r#"{{"symbol":"C00000USDT","price":{price}}}"#);
        let mut ctx = ProcessorContext::new(TaskId(0), &mut store, &mut emitted);
        processor
            .process(
                &record(offset as i64, value.as_bytes(), Some(5_000 + offset as i64)),
                &mut ctx,
            )
            .expect("accepted");
    }
    let (topic, _, value) = emitted.last().expect("a jump");
    assert_eq!(topic, "analytics.jumps");
    let jump = Jump::decode(value).expect("decodes");
    assert_eq!((jump.ts, jump.from, jump.to), (5_001, 10.0, 10.5));
}

/// With `pin_symbols = false`, new symbols beyond `max_symbols` go to the dead letters; the
/// configured ones and those already kept go on, and a task that is closed frees its share.
#[test]
fn new_symbols_beyond_max_symbols_are_refused_with_symbol_limit() {
    let topology = Topology::from_str(
        "symbols = [\"C00000USDT\"]\npin_symbols = false\nmax_symbols = 3\n\
         [[windows]]\nkind = \"count\"\nsize = 2\nmin_count = 1",
    )
    .expect("valid topology");
    let enrich = Enrich::new(&topology).expect("valid");
    let mut processor = enrich.processor();
    let mut store = KeyValueStore::in_memory(STORE_NAME);
    let mut emitted = Vec::new();
    let mut offset = 0;
    let mut feed = |processor: &mut EnrichProcessor, name: &str| {
        offset += 1;
        let value = encode(symbol(name), 1.0, offset);
        let mut ctx = ProcessorContext::new(TaskId(0), &mut store, &mut emitted);
        processor.process(&record(offset, &value, None), &mut ctx)
    };
    for name in ["X1USDT", "X2USDT", "C00000USDT", "X1USDT"] {
        feed(&mut processor, name).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    match feed(&mut processor, "X3USDT") {
        Err(ProcessError::Rejected(rejection)) => {
            assert_eq!(rejection.code, "symbol_limit");
            assert!(rejection.message.contains("max_symbols"), "{rejection:?}");
        }
        other => panic!("expected symbol_limit, got {other:?}"),
    }
    feed(&mut processor, "X2USDT").expect("a symbol already kept");
    feed(&mut processor, "C00000USDT").expect("a configured symbol");
    drop(processor);
    let mut next = enrich.processor();
    feed(&mut next, "X3USDT").expect("the closed task's symbols were given back");
}

/// Ticks with a traded quantity: every moving average carries the VWAP of its window's
/// ticks, as recomputed from them; without quantities, null.
#[test]
fn moving_averages_carry_the_vwap_of_their_window_when_ticks_carry_quantities() {
    let topology = Topology::from_str(TOPOLOGY).expect("valid topology");
    let mut processor = Enrich::new(&topology).expect("valid").processor();
    let mut store = KeyValueStore::in_memory(STORE_NAME);
    let btc = symbol("C00000USDT");
    let ticks: Vec<(f64, i64, f64)> = (0..40)
        .map(|i| {
            (
                100.0 + f64::from(i % 9),
                1_000 + i64::from(i) * 700,
                0.5 + f64::from(i % 4),
            )
        })
        .collect();
    let mut emitted = Vec::new();
    for (offset, (price, ts, qty)) in ticks.iter().enumerate() {
        let value = RawTick::new(btc, *price)
            .with_ts(*ts)
            .with_qty(*qty)
            .encode(RecordFormat::Full);
        let mut ctx = ProcessorContext::new(TaskId(0), &mut store, &mut emitted);
        processor
            .process(&record(offset as i64, &value, None), &mut ctx)
            .expect("accepted");
    }
    let averages: Vec<MovingAverage> = emitted
        .iter()
        .filter(|(topic, _, _)| topic == "analytics.moving_average")
        .map(|(_, _, v)| MovingAverage::decode(v).expect("decodes"))
        .collect();
    assert!(averages.len() > 60);
    for ma in averages {
        let upto = ticks.iter().take_while(|(_, ts, _)| *ts <= ma.ts).count();
        let held: Vec<&(f64, i64, f64)> = match ma.window.as_str() {
            "count:5" => ticks[upto - 5..upto].iter().collect(),
            _ => ticks[..upto]
                .iter()
                .filter(|(_, ts, _)| *ts > ma.ts - 10_000)
                .collect(),
        };
        let volume: f64 = held.iter().map(|(_, _, q)| q).sum();
        let want = held.iter().map(|(p, _, q)| p * q).sum::<f64>() / volume;
        let got = ma.vwap.expect("a vwap");
        assert!(
            (got - want).abs() <= 1e-12 * want,
            "{} at {}: {got} vs {want}",
            ma.window,
            ma.ts
        );
    }
}
