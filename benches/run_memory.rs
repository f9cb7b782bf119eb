//! `tickstream run`'s memory at a steady rate: the release binary on the synthetic source at
//! 20,000 ticks/s; its RSS (`VmRSS`) sampled every 10 s. The in-process transport releases what
//! every reader committed, so RSS at the end must stay within 1.2x of RSS after the first minute.
//!
//! ```sh
//! cargo bench --bench run_memory      # 5 minutes; TICKSTREAM_BENCH_RUN_SECS=60 for a shorter run
//! ```
//!
//! Without `--bench` (as `cargo test --all-targets` runs it) it runs the binary for 3 s and
//! checks that it is alive and stops on SIGINT. Needs no service.
//!
//! The results are read, not stored: each JSON Lines file of the data dir is a named pipe this
//! bench drains (counting lines), so 5 minutes of output do not fill the disk. The bench
//! topology keeps its windows small (20 ticks, 2 s of event time): a 5-minute time window at
//! 20,000 ticks/s would legitimately hold 6,000,000 prices, growth that is the window's, not
//! the transport's.

mod support;

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const TICKS_PER_SECOND: u32 = 20_000;
const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// Output files of the bench topology, as `run` names them (`<topic>.jsonl`).
const OUTPUTS: [&str; 5] = [
    "bench.raw",
    "bench.ma",
    "bench.vol",
    "bench.jumps",
    "bench.dead-letters",
];

fn topology() -> String {
    format!(
        r#"
application_id = "run-bench"
symbols = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT"]
[topics]
raw = "bench.raw"
moving_average = "bench.ma"
volatility = "bench.vol"
jumps = "bench.jumps"
dead_letter = "bench.dead-letters"
[[windows]]
kind = "count"
size = 20
[[windows]]
kind = "time"
span = "2s"
[jumps]
threshold_pct = 2.0
[source]
kind = "synthetic"
seed = 42
ticks_per_second = {TICKS_PER_SECOND}.0
"#
    )
}

/// Makes `path` a named pipe and drains it on a thread, counting lines.
fn drain_pipe(path: &Path) -> Arc<AtomicU64> {
    let status = Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("mkfifo (coreutils)");
    assert!(status.success(), "mkfifo {}", path.display());
    let lines = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&lines);
    let path = path.to_owned();
    std::thread::spawn(move || {
        // Blocks until `run` opens the pipe for writing.
        let mut reader = BufReader::with_capacity(1 << 20, File::open(&path).expect("open fifo"));
        let mut line = Vec::new();
        while let Ok(n) = reader.read_until(b'\n', &mut line) {
            if n == 0 {
                break;
            }
            counter.fetch_add(1, Ordering::Relaxed);
            line.clear();
        }
    });
    lines
}

/// `VmRSS` of `pid` in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn main() {
    let measuring = support::benchmarking();
    let seconds = support::setting("TICKSTREAM_BENCH_RUN_SECS", 300, 3) as u64;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    std::fs::create_dir(&data).expect("data dir");
    let counters: Vec<_> = OUTPUTS
        .iter()
        .map(|name| (*name, drain_pipe(&data.join(format!("{name}.jsonl")))))
        .collect();
    let topology_path = dir.path().join("topology.toml");
    std::fs::write(&topology_path, topology()).expect("write the topology");

    let mut child = Command::new(env!("CARGO_BIN_EXE_tickstream"))
        .args(["run", "--source", "topology", "--topology"])
        .arg(&topology_path)
        .arg("--data-dir")
        .arg(&data)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start tickstream run");
    let pid = child.id();
    let started = Instant::now();
    let mut samples = Vec::new();
    while started.elapsed() < Duration::from_secs(seconds) {
        std::thread::sleep(SAMPLE_EVERY.min(Duration::from_secs(seconds)));
        assert!(
            matches!(child.try_wait(), Ok(None)),
            "tickstream run exited early"
        );
        let elapsed = started.elapsed().as_secs();
        let raw = counters[0].1.load(Ordering::Relaxed);
        samples.push((elapsed, rss_kib(pid), raw));
        if measuring {
            println!(
                "t={elapsed:>4} s  RSS {:>7} KiB  raw ticks written {raw:>9} ({:.0}/s)",
                rss_kib(pid),
                raw as f64 / started.elapsed().as_secs_f64()
            );
        }
    }
    let stop_asked = Instant::now();
    let status = Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .expect("kill -INT");
    assert!(status.success());
    let exit = child.wait().expect("wait for tickstream run");
    let stop_took = stop_asked.elapsed();
    assert!(exit.success(), "SIGINT exits 0 ({exit})");
    if !measuring {
        println!("run_memory: smoke run ok ({seconds} s, stopped in {stop_took:?})");
        return;
    }
    let at = |secs: u64| {
        samples
            .iter()
            .find(|(t, _, _)| *t >= secs)
            .or(samples.last())
            .map_or(0, |(_, rss, _)| *rss)
    };
    let (first_minute, end) = (at(60), samples.last().map_or(0, |(_, rss, _)| *rss));
    println!(
        "RSS at 1 min {first_minute} KiB, at the end {end} KiB: {:.3}x",
        end as f64 / first_minute.max(1) as f64
    );
    for (name, lines) in &counters {
        println!("{name}: {} lines", lines.load(Ordering::Relaxed));
    }
    println!("stopped {stop_took:?} after SIGINT");
}
