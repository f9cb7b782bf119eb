//! Candles through the enrich processor: every candle as the naive recomputation has it, late
//! ticks within and beyond grace, idle closes (also of a task that resumed from the store), and
//! restore equivalence.

use tickstream_model::{Candle, DerivedEvent, Topology};
use tickstream_streams::{KeyValueStore, ProcessError, Processor, ProcessorContext, TaskId};

use super::tests::{Emitted, encode, record, run, stream, symbol};
use super::*;

const CANDLES: &str = r#"
    symbols = ["C00000USDT", "C00001USDT", "C00002USDT"]
    [[windows]]
    kind = "count"
    size = 5
    [[candles]]
    interval = "1s"
    grace = "500ms"
    [[candles]]
    interval = "5s"
    grace = "0s"
    close_idle_after = "2s"
"#;

fn topology() -> Topology {
    Topology::from_str(CANDLES).expect("valid topology")
}

fn candles(emitted: &Emitted) -> Vec<Candle> {
    emitted
        .iter()
        .filter(|(topic, _, _)| topic == "analytics.candles")
        .map(|(_, _, value)| Candle::decode(value).expect("a candle"))
        .collect()
}

fn punctuate(
    processor: &mut EnrichProcessor,
    store: &mut KeyValueStore<SymbolState>,
    now_ms: i64,
) -> Emitted {
    let mut emitted = Vec::new();
    let mut ctx = ProcessorContext::new(TaskId(0), store, &mut emitted);
    processor.punctuate(now_ms, &mut ctx).expect("punctuates");
    emitted
}

fn as_records(emitted: Emitted) -> Vec<naive::DerivedRecord> {
    emitted
        .into_iter()
        .map(|(topic, key, value)| {
            let symbol = std::str::from_utf8(&key.expect("keyed"))
                .expect("utf-8")
                .parse()
                .expect("a symbol");
            (topic, symbol, value)
        })
        .collect()
}

/// A day after now: every open candle has been idle long enough.
fn much_later() -> i64 {
    tickstream_model::clock::now_ms() + 86_400_000
}

#[test]
fn every_candle_matches_a_naive_recomputation_the_last_ones_closed_on_idle() {
    let topology = topology();
    let enrich = Enrich::new(&topology).expect("valid");
    let mut processor = enrich.processor();
    let mut store = KeyValueStore::in_memory(STORE_NAME);
    let ticks = stream(5_000, 3);
    let mut emitted = run(&mut processor, &mut store, &ticks);
    let by_event_time = candles(&emitted).len();
    assert!(
        punctuate(
            &mut processor,
            &mut store,
            tickstream_model::clock::now_ms()
        )
        .is_empty(),
        "nothing is idle yet"
    );
    let idle = punctuate(&mut processor, &mut store, much_later());
    let open = candles(&idle).len();
    assert!(
        (6..=9).contains(&open),
        "{open}: one or two per symbol and interval"
    );
    emitted.extend(idle);
    let expected = naive::recompute(&topology, &ticks);
    assert!(
        by_event_time > 500,
        "{by_event_time} candles closed by event time"
    );
    // Per topic and symbol, in order: candles close between other events.
    let grouped = |records: Vec<naive::DerivedRecord>| {
        let mut groups: std::collections::BTreeMap<_, Vec<_>> = Default::default();
        for record in records {
            groups
                .entry((record.0.clone(), record.1))
                .or_default()
                .push(record);
        }
        groups
    };
    let (actual, expected) = (grouped(as_records(emitted)), grouped(expected));
    assert!(
        actual.keys().eq(expected.keys()),
        "the same topics and symbols"
    );
    for (key, want) in &expected {
        naive::compare(&topology, &actual[key], want).unwrap_or_else(|e| panic!("{key:?}: {e}"));
    }
    assert!(
        punctuate(&mut processor, &mut store, much_later()).is_empty(),
        "each candle once"
    );
}

#[test]
fn restoring_committed_state_gives_the_uninterrupted_candles() {
    let topology = topology();
    let enrich = Enrich::new(&topology).expect("valid");
    let ticks = stream(3_000, 5);
    let mut uninterrupted_store = KeyValueStore::in_memory(STORE_NAME);
    let mut uninterrupted = enrich.processor();
    let mut expected = run(&mut uninterrupted, &mut uninterrupted_store, &ticks);
    expected.extend(punctuate(
        &mut uninterrupted,
        &mut uninterrupted_store,
        much_later(),
    ));

    let mut first = KeyValueStore::in_memory(STORE_NAME);
    let mut outputs = run(&mut enrich.processor(), &mut first, &ticks[..1_717]);
    let (mut restored, _) = first.restored_after_commit().expect("in-memory restore");
    let mut resumed = enrich.processor();
    outputs.extend(run(&mut resumed, &mut restored, &ticks[1_717..]));
    outputs.extend(punctuate(&mut resumed, &mut restored, much_later()));
    assert!(candles(&outputs).len() > 300);
    assert!(outputs == expected, "the outputs after a restore differ");
}

#[test]
fn a_tick_beyond_grace_is_refused_as_late_and_one_within_is_counted() {
    let topology = Topology::from_str(&CANDLES.replace("grace = \"0s\"", "grace = \"500ms\""))
        .expect("valid topology");
    let mut processor = Enrich::new(&topology).expect("valid").processor();
    let mut store = KeyValueStore::in_memory(STORE_NAME);
    let btc = symbol("C00000USDT");
    run(
        &mut processor,
        &mut store,
        &[(btc, 10.0, 100), (btc, 11.0, 900), (btc, 12.0, 1_600)],
    );
    // 1,600 - 900: 700 ms behind, past the 1s candles' 500 ms grace (and [0, 1000) closed).
    let late = encode(btc, 9.0, 900);
    let mut emitted = Vec::new();
    let mut ctx = ProcessorContext::new(TaskId(0), &mut store, &mut emitted);
    match processor.process(&record(10, &late, None), &mut ctx) {
        Err(ProcessError::Rejected(rejection)) => {
            assert_eq!(rejection.code, "late");
            assert!(rejection.message.contains("[0, 1000)"), "{rejection:?}");
        }
        other => panic!("expected late, got {other:?}"),
    }
    assert!(emitted.is_empty(), "a late tick emits nothing");
    // 400 ms behind: counted in [1000, 2000), not the newest candle once 2,100 arrives.
    let within = run(
        &mut processor,
        &mut store,
        &[(btc, 8.0, 2_100), (btc, 13.0, 1_700), (btc, 14.0, 2_600)],
    );
    let closed: Vec<Candle> = candles(&within)
        .into_iter()
        .filter(|c| c.interval == "1s")
        .collect();
    assert_eq!(closed.len(), 1, "{closed:?}");
    assert_eq!(
        (
            closed[0].start,
            closed[0].trades,
            closed[0].low,
            closed[0].close
        ),
        (1_000, 2, 12.0, 13.0)
    );
}

#[test]
fn a_resumed_task_sweeps_the_store_and_closes_quiet_symbols_a_full_delay_after_it_started() {
    let topology = topology();
    let enrich = Enrich::new(&topology).expect("valid");
    let mut store = KeyValueStore::in_memory(STORE_NAME);
    let btc = symbol("C00000USDT");
    run(&mut enrich.processor(), &mut store, &[(btc, 10.0, 100)]);
    let (mut restored, _) = store.restored_after_commit().expect("in-memory restore");

    // The old task is gone; the new one never sees another tick of this symbol.
    let mut resumed = enrich.processor();
    let started = tickstream_model::clock::now_ms();
    // 1s + 500 ms after it started at the earliest, whatever the stored arrival says.
    assert!(punctuate(&mut resumed, &mut restored, started + 1_000).is_empty());
    let idle = candles(&punctuate(&mut resumed, &mut restored, started + 60_000));
    let intervals: Vec<&str> = idle.iter().map(|c| c.interval.as_str()).collect();
    assert_eq!(intervals, ["1s", "5s"]);
    assert!(idle.iter().all(|c| c.trades == 1 && c.start == 0));
}

#[test]
fn after_a_rollback_the_candles_the_undone_batch_closed_close_again() {
    let topology = topology();
    let enrich = Enrich::new(&topology).expect("valid");
    let mut processor = enrich.processor();
    let mut store = KeyValueStore::in_memory(STORE_NAME);
    let btc = symbol("C00000USDT");
    run(&mut processor, &mut store, &[(btc, 10.0, 100)]);
    let (mut store, _) = store.restored_after_commit().expect("commit");
    assert_eq!(
        candles(&punctuate(&mut processor, &mut store, much_later())).len(),
        2
    );
    // The transaction holding those candles aborts: the store is back to the open candles.
    store.abort();
    processor.rolled_back();
    assert_eq!(
        candles(&punctuate(&mut processor, &mut store, much_later())).len(),
        2,
        "closed (and emitted) again in the batch that is redone"
    );
}

#[test]
fn after_an_outage_quiet_symbols_wait_a_whole_delay_from_when_the_input_flowed_again() {
    let topology = topology();
    let mut processor = Enrich::new(&topology).expect("valid").processor();
    let mut store = KeyValueStore::in_memory(STORE_NAME);
    let btc = symbol("C00000USDT");
    run(&mut processor, &mut store, &[(btc, 10.0, 100)]);
    let back = tickstream_model::clock::now_ms() + 600_000;
    processor.input_resumed(back);
    assert!(
        punctuate(&mut processor, &mut store, back + 1_499).is_empty(),
        "the outage held ticks back: 1s + 500 ms from when it ended"
    );
    assert_eq!(
        candles(&punctuate(&mut processor, &mut store, back + 1_500)).len(),
        1
    );
}
