//! Snapshot format: round trips, sizes, and clear errors for damaged, foreign, future or
//! mismatched snapshots.

use std::sync::Arc;

use tickstream_window::{Config, JumpSpec, SnapshotError, SymbolWindows, Tick, WindowSpec};

fn config() -> Arc<Config> {
    Arc::new(
        Config::new([
            WindowSpec::count(20).expect("valid"),
            WindowSpec::time_ms(60_000).expect("valid"),
        ])
        .expect("valid"),
    )
}

fn fed(config: &Arc<Config>, ticks: usize) -> SymbolWindows {
    let mut s = SymbolWindows::new(Arc::clone(config));
    for i in 0..ticks {
        let price = 30_000.0 + (i as f64 * 0.37).sin() * 25.0;
        s.update(Tick::new(1_700_000_000_000 + 250 * i as i64, price))
            .expect("valid");
    }
    s
}

#[test]
fn empty_state_round_trips() {
    let cfg = config();
    let s = SymbolWindows::new(Arc::clone(&cfg));
    let bytes = s.snapshot();
    assert_eq!(bytes.len(), 12, "magic, version, fingerprint, seen flag");
    let r = SymbolWindows::restore(Arc::clone(&cfg), &bytes).expect("valid");
    assert_eq!(r.newest_ts(), None);
    assert_eq!(r.snapshot(), bytes);
}

#[test]
fn full_state_round_trips_and_is_compact() {
    let cfg = Arc::new(Config::default());
    let s = fed(&cfg, 1_000);
    let bytes = s.snapshot();
    // 12 header + 16 (newest ts, last price) + count:20 (56 moments, 1-2 bytes of removal
    // count, 1 byte of length, 160 bytes of prices, and their event times as varints behind
    // the newest: 1 byte for the newest, 2 for the 19 ticks 10 to 190 ms behind it), and 1
    // byte saying it keeps no quantities.
    assert!((286..=287).contains(&bytes.len()), "{}", bytes.len());
    let r = SymbolWindows::restore(Arc::clone(&cfg), &bytes).expect("valid");
    assert_eq!(r.snapshot(), bytes);
    assert_eq!(
        r.readings().collect::<Vec<_>>(),
        s.readings().collect::<Vec<_>>()
    );
    let mut reused = vec![1, 2, 3];
    s.snapshot_into(&mut reused);
    assert_eq!(reused, bytes, "snapshot_into clears the buffer first");
}

#[test]
fn time_windows_encode_event_times_as_small_deltas() {
    let cfg = config();
    let s = fed(&cfg, 1_000);
    let bytes = s.snapshot();
    // The minute holds 240 ticks 250 ms apart: 2-byte deltas + 8-byte prices, after the
    // count window (<= 287 bytes with the header) and the time window's moments and length,
    // and its 1-byte volume flag. The first delta (newest - oldest, ~60 s) takes one byte more.
    assert!(
        bytes.len() <= 287 + 58 + 2 + 1 + 240 * 10 + 1,
        "{}",
        bytes.len()
    );
}

#[test]
fn unknown_version_is_named() {
    let cfg = config();
    let mut bytes = fed(&cfg, 50).snapshot();
    bytes[2] = 9;
    let err = SymbolWindows::restore(cfg, &bytes).expect_err("future version");
    assert_eq!(
        err,
        SnapshotError::UnknownVersion {
            found: 9,
            supported: &[1, 2]
        }
    );
    assert_eq!(
        err.to_string(),
        "unknown snapshot version 9; this build reads version(s) [1, 2]"
    );
}

#[test]
fn foreign_bytes_are_refused() {
    let cfg = config();
    let err = SymbolWindows::restore(Arc::clone(&cfg), b"{\"json\": true}").expect_err("not ours");
    assert_eq!(err, SnapshotError::BadMagic { found: *b"{\"" });
    let err = SymbolWindows::restore(cfg, &[]).expect_err("empty");
    assert_eq!(
        err,
        SnapshotError::Truncated {
            offset: 0,
            needed: 1
        }
    );
}

#[test]
fn every_truncation_is_an_error() {
    let cfg = config();
    let bytes = fed(&cfg, 500).snapshot();
    for len in 0..bytes.len() {
        match SymbolWindows::restore(Arc::clone(&cfg), &bytes[..len]) {
            Err(SnapshotError::Truncated { .. }) => {}
            other => panic!("prefix of {len} bytes: {other:?}"),
        }
    }
}

#[test]
fn trailing_bytes_are_an_error() {
    let cfg = config();
    let mut bytes = fed(&cfg, 50).snapshot();
    bytes.extend_from_slice(&[0, 0]);
    let err = SymbolWindows::restore(cfg, &bytes).expect_err("trailing");
    assert_eq!(err, SnapshotError::TrailingBytes { extra: 2 });
}

#[test]
fn another_configuration_is_refused() {
    let cfg = config();
    let bytes = fed(&cfg, 50).snapshot();
    let others = [
        Arc::new(Config::new([WindowSpec::count(20).expect("valid")]).expect("valid")),
        Arc::new(
            Config::new([
                WindowSpec::count(21).expect("valid"),
                WindowSpec::time_ms(60_000).expect("valid"),
            ])
            .expect("valid"),
        ),
        Arc::new(
            (*cfg)
                .clone()
                .with_jump(JumpSpec::new(0.05).expect("valid")),
        ),
        Arc::new((*cfg).clone().with_allowed_lateness_ms(0).expect("valid")),
    ];
    for other in others {
        let err = SymbolWindows::restore(Arc::clone(&other), &bytes).expect_err("mismatch");
        assert_eq!(
            err,
            SnapshotError::ConfigMismatch {
                snapshot: cfg.fingerprint(),
                current: other.fingerprint()
            }
        );
        assert!(
            err.to_string().contains("another window configuration"),
            "{err}"
        );
    }
}

#[test]
fn corrupt_fields_are_named() {
    let cfg = config();
    let bytes = fed(&cfg, 50).snapshot();
    let corrupt = |at: usize, value: &[u8]| {
        let mut b = bytes.clone();
        b[at..at + value.len()].copy_from_slice(value);
        SymbolWindows::restore(Arc::clone(&cfg), &b).expect_err("corrupt")
    };
    let field = |e: SnapshotError| match e {
        SnapshotError::Corrupt { field, .. } => field,
        other => panic!("{other:?}"),
    };
    assert_eq!(field(corrupt(11, &[7])), "seen flag");
    assert_eq!(field(corrupt(20, &f64::NAN.to_le_bytes())), "last_price");
    assert_eq!(field(corrupt(20, &(-1.0f64).to_le_bytes())), "last_price");
    assert_eq!(
        field(corrupt(28, &f64::INFINITY.to_le_bytes())),
        "window moments"
    );
    // count:20 length byte sits after 56 bytes of moments and a 1-byte removal count.
    assert_eq!(field(corrupt(28 + 57, &[21])), "count window length");
    // The oldest tick's event time (4,751 ms behind the newest) takes 2 bytes before its price.
    assert_eq!(field(corrupt(28 + 58 + 2, &0.0f64.to_le_bytes())), "price");
    let err = corrupt(28 + 58 + 2, &f64::NAN.to_le_bytes());
    assert_eq!(
        err.to_string(),
        "corrupt snapshot: price at offset 88: not a valid price"
    );
}

/// A state written by a build before count windows kept event times (format version 1) still
/// restores: the same statistics, and count-window bounds unknown until its ticks are all ones
/// that arrived since.
#[test]
fn a_version_1_snapshot_restores_with_count_bounds_unknown_until_the_window_turns_over() {
    let cfg = Arc::new(Config::default());
    let s = fed(&cfg, 100);
    let v2 = s.snapshot();
    // Version 1 wrote each count-window price without the event-time varint before it.
    let mut v1 = v2[..28 + 57 + 1].to_vec();
    v1[2] = 1;
    let mut at = 28 + 57 + 1;
    for _ in 0..20 {
        while v2[at] & 0x80 != 0 {
            at += 1;
        }
        at += 1;
        v1.extend_from_slice(&v2[at..at + 8]);
        at += 8;
    }
    assert_eq!(
        (at + 1, v2[at]),
        (v2.len(), 0),
        "one count window of 20, no quantities"
    );
    let mut r = SymbolWindows::restore(Arc::clone(&cfg), &v1).expect("version 1");
    let stats = |s: &SymbolWindows| s.readings().next().and_then(|r| r.stats);
    assert_eq!(stats(&r), stats(&s));
    assert_eq!(r.readings().next().and_then(|r| r.bounds), None);
    for i in 100..120 {
        let tick = Tick::new(1_700_000_000_000 + 250 * i, 30_000.0);
        r.update(tick).expect("valid");
        let bounds = r.readings().next().and_then(|r| r.bounds);
        assert_eq!(bounds.is_some(), i == 119, "after tick {i}: {bounds:?}");
    }
}
