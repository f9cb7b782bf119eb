//! The topology's caps, on the real binary: `tickstream enrich` on a topology at every cap
//! (16 windows, count windows of 2,000,000 ticks in all, a 7-day span, `max_symbols = 100000`
//! with 99,990 symbols listed) starts and processes ticks of 20 symbols within a stated memory
//! bound (count windows grow with their ticks), sending the ticks of symbol number 100,001 to
//! the dead letters as `symbol_limit`; one step above any cap is refused at start-up, naming
//! the key.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use tickstream_model::Symbol;

use crate::processes::{start, wait_for_exit, wait_ready};
use crate::support::{
    ChildProcess, Progress, create_topic, free_local_address, produce_ticks, require_kafka,
    unique_name,
};

/// Peak resident memory allowed for enrich at every cap with 20 symbols holding a few ticks
/// (README.md, "Limits"): 64 MiB measured, twice that allowed; windows allocated up front
/// would need 48 MB per symbol (2,000,000 count slots of 24 bytes), almost 1 GB here.
const MEMORY_BOUND_KIB: u64 = 128 * 1024;

/// `[[windows]]` at every cap: counts of 1,000,000 + 999,999 + 1 ticks (reporting from the
/// first tick), and 13 time windows up to 168h.
fn windows_at_the_caps() -> String {
    let mut toml = String::new();
    for size in [1_000_000, 999_999, 1] {
        toml += &format!("[[windows]]\nkind = \"count\"\nsize = {size}\nmin_count = 1\n");
    }
    for hours in [168, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12] {
        toml += &format!("[[windows]]\nkind = \"time\"\nspan = \"{hours}h\"\n");
    }
    toml
}

/// `symbols = [...]` with `n` symbols `S0`, `S1`, ...
fn symbols(n: usize) -> String {
    let list: Vec<String> = (0..n).map(|i| format!("\"S{i}\"")).collect();
    format!("symbols = [{}]\n", list.join(", "))
}

/// The topology's top: application id, symbols and `max_symbols`; topics named after `app`.
fn topology(app: &str, dir: &Path, listed: usize, max_symbols: usize, windows: &str) -> String {
    format!(
        "application_id = \"{app}\"\n{}pin_symbols = false\nmax_symbols = {max_symbols}\n\
         [topics]\nraw = \"{app}.raw\"\nmoving_average = \"{app}.ma\"\nvolatility = \"{app}.vol\"\n\
         jumps = \"{app}.jumps\"\ndead_letter = \"{app}.dlq\"\npartitions = 1\n\
         {windows}[processing]\nstate_dir = \"{}\"\n",
        symbols(listed),
        dir.join("state").display()
    )
}

/// The `tickstream.error.code` headers of the first `count` committed records of `topic`.
fn dead_letter_codes(brokers: &str, topic: &str, count: usize) -> Vec<String> {
    use rdkafka::consumer::BaseConsumer;
    let consumer: BaseConsumer = crate::support::read_committed_consumer_on(brokers, topic, 1);
    let deadline = std::time::Instant::now() + crate::support::PROGRESS_TIMEOUT;
    let mut codes = Vec::new();
    while codes.len() < count {
        assert!(
            std::time::Instant::now() < deadline,
            "{topic}: {codes:?} after {:?}",
            crate::support::PROGRESS_TIMEOUT
        );
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(200)) {
            let code = crate::support::header(&message, "tickstream.error.code");
            codes.push(code.unwrap_or_default());
        }
    }
    codes
}

/// VmHWM (peak) and VmRSS of process `pid`, in KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
    };
    (field("VmHWM:"), field("VmRSS:"))
}

#[test]
fn enrich_at_every_cap_starts_within_its_memory_bound() {
    let brokers = require_kafka();
    let dir = tempfile::tempdir().expect("temp dir");
    let app = unique_name("limits");
    let path = dir.path().join("at-caps.toml");
    let max = tickstream_model::Topology::MAX_SYMBOLS;
    // Room for exactly 10 unlisted symbols.
    let toml = topology(&app, dir.path(), max - 10, max, &windows_at_the_caps());
    std::fs::write(&path, toml).expect("write the topology");
    crate::support::block_on(create_topic(&brokers, &format!("{app}.raw"), 1));
    let metrics = free_local_address();
    let log = dir.path().join("enrich.log");
    let mut enrich = start("enrich", &path, &brokers, None, metrics, &log);
    crate::support::block_on(wait_ready(
        metrics,
        true,
        &mut enrich,
        Duration::from_secs(120),
    ));

    // 10 listed and 10 unlisted symbols, 3 ticks each, a second apart; then one symbol too many.
    let names: Vec<String> = (0..10)
        .map(|i| format!("S{i}"))
        .chain((0..10).map(|i| format!("NEW{i}USDT")))
        .collect();
    let mut ticks = Vec::new();
    for n in 0..3i64 {
        for name in names.iter().chain(["ONEMOREUSDT".to_owned()].iter()) {
            let symbol: Symbol = name.parse().expect("a symbol");
            ticks.push((symbol, 100.0 + n as f64, 1_700_000_000_000 + n * 1_000));
        }
    }
    produce_ticks(&format!("{app}.raw"), &ticks);
    // Per symbol: 3 count windows × 3 ticks + 13 time windows × 2 ticks (from the second).
    let expected = names.len() * (3 * 3 + 13 * 2);
    Progress::on(&brokers, &format!("{app}.ma"), 1).wait_for(expected, &mut enrich);
    let refused = dead_letter_codes(&brokers, &format!("{app}.dlq"), 3);
    assert_eq!(refused, ["symbol_limit"; 3], "the 100,001st symbol's ticks");

    let (peak, resident) = memory_kib(enrich.id());
    eprintln!(
        "enrich at every cap, {} symbols: VmHWM {peak} KiB, VmRSS {resident} KiB (bound {MEMORY_BOUND_KIB} KiB)",
        names.len()
    );
    assert!(
        peak < MEMORY_BOUND_KIB,
        "enrich at the caps peaked at {peak} KiB, the bound is {MEMORY_BOUND_KIB} KiB"
    );
    let status = enrich.terminate();
    assert!(status.success(), "SIGTERM → commit → exit 0, got {status}");
}

/// `tickstream enrich` on `toml`: must exit non-zero at once, naming `key` and `cap`.
fn refused(dir: &Path, name: &str, toml: &str, key: &str, cap: &str) {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, toml).expect("write the topology");
    let log = dir.join(format!("{name}.log"));
    let mut command = Command::new(env!("CARGO_BIN_EXE_tickstream"));
    command
        .arg("enrich")
        .arg("--topology")
        .arg(&path)
        .arg("--metrics-addr")
        .arg(free_local_address().to_string());
    let process = ChildProcess::spawn("tickstream enrich", command, &log);
    let status = crate::support::block_on(wait_for_exit(process, Duration::from_secs(30)));
    let output = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(!status.success(), "{name}: accepted ({status}):\n{output}");
    assert!(
        output.contains(&format!("invalid `{key}`")) && output.contains(cap),
        "{name}: the error should name `{key}` and {cap:?}:\n{output}"
    );
}

#[test]
fn a_topology_above_any_cap_is_refused_at_start_up_naming_the_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path();
    let app = unique_name("over-limits");
    let caps = windows_at_the_caps();
    let max = tickstream_model::Topology::MAX_SYMBOLS;
    let extra_time = "[[windows]]\nkind = \"time\"\nspan = \"13h\"\n";
    let cases = [
        (
            "windows",
            topology(&app, d, 3, 10, &format!("{caps}{extra_time}")),
            "windows",
            "the cap is 16",
        ),
        (
            "size",
            topology(
                &app,
                d,
                3,
                10,
                "[[windows]]\nkind = \"count\"\nsize = 1000001\n",
            ),
            "windows[0].size",
            "1 to 1000000",
        ),
        (
            "count-ticks",
            topology(&app, d, 3, 10, &caps.replace("size = 1\n", "size = 2\n")),
            "windows",
            "the cap is 2000000",
        ),
        (
            "span",
            topology(&app, d, 3, 10, &caps.replace("\"168h\"", "\"169h\"")),
            "windows[3].span",
            "the cap is 168h",
        ),
        (
            "max-symbols",
            topology(&app, d, 3, max + 1, &caps),
            "max_symbols",
            "to 100000",
        ),
        (
            "symbols",
            topology(&app, d, max + 1, max + 1, &caps),
            "symbols",
            "the cap is 100000",
        ),
    ];
    for (name, toml, key, cap) in &cases {
        refused(d, name, toml, key, cap);
    }
}
