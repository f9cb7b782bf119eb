//! `tickstream run`, the embedded all-in-one mode, as a user starts it: no broker, no
//! database, no network. It must say its prices are synthetic, show analytics within seconds,
//! write them as JSON Lines, stop cleanly on Ctrl-C, and process a finite source to its end.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use tickstream_model::{DerivedEvent, MovingAverage, RawTick, Topology, Volatility};

use crate::support::ChildProcess;

/// How long the embedded mode may take to show its first analytics.
const FIRST_ANALYTICS: Duration = Duration::from_secs(30);
/// How long replaying 100,000 ticks may take (a debug build on 2 busy cores) before the test
/// calls it a hang.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(180);

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_embedded_mode_announces_synthetic_prices_shows_analytics_and_stops_on_ctrl_c() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let log = dir.path().join("run.log");
    let mut command = Command::new(env!("CARGO_BIN_EXE_tickstream"));
    command
        .args(["run", "--topology"])
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/topologies/default.toml"
        ))
        .arg("--data-dir")
        .arg(&data)
        // Nothing listens there: the probe fails at once, as without internet.
        .args(["--binance-url", "http://127.0.0.1:9"]);
    let mut app = ChildProcess::spawn("tickstream run", command, &log);

    let topology = Topology::from_path(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/topologies/default.toml"
    ))
    .expect("the default topology");
    let started = Instant::now();
    // The count window of 20 fills after 20 ticks of a symbol: the last analytics to appear.
    while !lines(&log)
        .iter()
        .any(|l| l.contains("ma[count:20]=") && !l.contains("ma[count:20]=—"))
    {
        app.assert_running();
        assert!(
            started.elapsed() < FIRST_ANALYTICS,
            "no full-window analytics within {FIRST_ANALYTICS:?}:\n{}",
            app.log_tail()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let output = lines(&log);
    let banner = output
        .iter()
        .find(|l| l.starts_with("tickstream run: "))
        .expect("a line saying where prices come from");
    assert!(
        banner.contains("SYNTHETIC prices") && banner.contains("not market data"),
        "the source is announced as synthetic: {banner}"
    );

    let status = Command::new("kill")
        .args(["-INT", &app.id().to_string()])
        .status()
        .expect("kill -INT");
    assert!(status.success());
    let exit = app.wait();
    assert!(
        exit.success(),
        "Ctrl-C exits 0 ({exit}):\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );

    // What the view showed is on disk: raw ticks and analytics, one JSON object per line.
    let decode = topology.decode_options();
    let raw = lines(&data.join("prices.raw.jsonl"));
    assert!(raw.len() >= 20, "{} raw ticks", raw.len());
    for line in &raw {
        let tick = RawTick::decode(line.as_bytes(), &decode).expect("a raw tick");
        assert_eq!(tick.source.as_deref(), Some("synthetic"));
    }
    let averages: Vec<MovingAverage> = lines(&data.join("analytics.moving_average.jsonl"))
        .iter()
        .map(|l| MovingAverage::decode(l.as_bytes()).expect("a moving average"))
        .collect();
    assert!(
        averages
            .iter()
            .any(|a| a.window == "count:20" && a.count == 20)
    );
    let volatility = lines(&data.join("analytics.volatility.jsonl"));
    assert_eq!(
        volatility.len(),
        averages.len(),
        "a volatility event beside each moving average"
    );
    for line in &volatility {
        Volatility::decode(line.as_bytes()).expect("a volatility event");
    }
}

/// On a terminal, Ctrl-C is a key press, not a signal: `make run` — make, which dies of a
/// SIGINT whatever its child does — must exit 0. `script` gives them a pseudo-terminal.
#[test]
fn make_run_exits_0_on_ctrl_c_at_a_terminal() {
    use std::io::{Read, Write};
    use std::process::Stdio;

    let dir = tempfile::tempdir().expect("tempdir");
    let makefile = dir.path().join("Makefile");
    std::fs::write(
        &makefile,
        format!(
            "run:\n\t{} run --topology {} --data-dir {} --binance-url http://127.0.0.1:9\n",
            env!("CARGO_BIN_EXE_tickstream"),
            concat!(env!("CARGO_MANIFEST_DIR"), "/topologies/default.toml"),
            dir.path().join("data").display()
        ),
    )
    .expect("write a Makefile");
    let command = format!("make -s -f {} run", makefile.display());
    let mut child = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("`script` (util-linux) runs the program on a pseudo-terminal");
    let mut stdout = child.stdout.take().expect("piped stdout");
    let screen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let reader = {
        let screen = std::sync::Arc::clone(&screen);
        std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buffer) {
                if n == 0 {
                    break;
                }
                let text = String::from_utf8_lossy(&buffer[..n]).into_owned();
                screen.lock().expect("screen lock").push_str(&text);
            }
        })
    };
    let started = Instant::now();
    while !screen.lock().expect("screen lock").contains("RECENT JUMPS") {
        assert!(
            started.elapsed() < FIRST_ANALYTICS && matches!(child.try_wait(), Ok(None)),
            "no live view within {FIRST_ANALYTICS:?}:\n{}",
            screen.lock().expect("screen lock")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    child
        .stdin
        .as_mut()
        .expect("piped stdin")
        .write_all(&[0x03])
        .expect("type Ctrl-C");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "still running 20 s after Ctrl-C:\n{}",
                screen.lock().expect("screen lock")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = reader.join();
    let screen = screen.lock().expect("screen lock");
    assert!(status.success(), "exit {status} after Ctrl-C:\n{screen}");
    assert!(screen.contains("SYNTHETIC prices"), "{screen}");
    assert!(screen.contains("stopped; results are in"), "{screen}");
}

/// A derived event's key, read from the event itself (the JSON Lines files hold values only).
#[derive(serde::Deserialize)]
struct Keyed {
    symbol: tickstream_model::Symbol,
}

/// A finite source is drained, not cut off: over a replay file of 100,000 ticks of 4 symbols
/// (a seeded random walk, 3 partitions), `run` writes exactly the derived events the naive
/// recomputation gives — counts and values, per symbol in order — and then exits 0 by itself.
/// One count window: the naive recomputation of a time window rescans each symbol's whole
/// history per tick, too slow for a debug build at this size (enrich's own tests cover them).
#[test]
fn a_replayed_file_is_processed_to_its_last_tick_and_run_exits_0() {
    use tickstream_enrich::naive::{random_walk, sample_symbols};

    use crate::enrich::{assert_matches_naive, expected, grouped};

    const TICKS: usize = 100_000;
    let dir = tempfile::tempdir().expect("tempdir");
    let ticks = random_walk(&sample_symbols(4), TICKS, 7);
    let (topology_path, topology) = replay_deployment(dir.path(), &ticks);

    let data = dir.path().join("data");
    let log = dir.path().join("run.log");
    let log_file = std::fs::File::create(&log).expect("the log file");
    let app = Command::new(env!("CARGO_BIN_EXE_tickstream"))
        .args(["run", "--source", "topology", "--topology"])
        .arg(&topology_path)
        .arg("--data-dir")
        .arg(&data)
        .stdout(log_file.try_clone().expect("clone the log handle"))
        .stderr(log_file)
        .spawn()
        .expect("start tickstream run");
    let exit = wait_for_exit(app, &log);
    assert!(
        exit.success(),
        "run exits 0 at the end of the file ({exit}):\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );

    let raw = lines(&data.join("drain.raw.jsonl"));
    assert_eq!(raw.len(), TICKS, "every tick");
    assert!(
        lines(&data.join("drain.dead-letters.jsonl")).is_empty(),
        "nothing dead-lettered, in the topology's dead-letter file"
    );
    let mut derived = Vec::new();
    for kind in topology.event_kinds() {
        let topic = topology.topic(kind);
        for line in lines(&data.join(format!("{topic}.jsonl"))) {
            let symbol = serde_json::from_str::<Keyed>(&line)
                .unwrap_or_else(|e| panic!("{topic}: a symbol in {line}: {e}"))
                .symbol;
            derived.push((topic.to_owned(), symbol, line.into_bytes()));
        }
    }
    assert_matches_naive(&topology, &grouped(derived), &expected(&topology, &ticks));
}

/// `ticks` as a replay file (full record format) and a topology replaying it at full speed
/// over 3 partitions, with one count window and 2 % jumps.
fn replay_deployment(
    dir: &Path,
    ticks: &[(tickstream_model::Symbol, f64, i64)],
) -> (std::path::PathBuf, Topology) {
    let replay = dir.join("ticks.jsonl");
    let mut file_text = String::new();
    for (symbol, price, ts) in ticks {
        let tick = RawTick::new(*symbol, *price)
            .with_ts(*ts)
            .with_source("replay");
        let line = tick.encode(tickstream_model::RecordFormat::Full);
        file_text.push_str(std::str::from_utf8(&line).expect("JSON is UTF-8"));
        file_text.push('\n');
    }
    std::fs::write(&replay, file_text).expect("write the replay file");
    let mut symbols: Vec<String> = ticks.iter().map(|(s, _, _)| format!("\"{s}\"")).collect();
    symbols.sort();
    symbols.dedup();
    let toml = format!(
        r#"
application_id = "run-drain"
symbols = [{symbols}]
[topics]
raw = "drain.raw"
moving_average = "drain.ma"
volatility = "drain.vol"
jumps = "drain.jumps"
dead_letter = "drain.dead-letters"
partitions = 3
[[windows]]
kind = "count"
size = 20
[jumps]
threshold_pct = 2.0
[source]
kind = "replay"
path = "{path}"
speed = "max"
"#,
        symbols = symbols.join(", "),
        path = replay.display()
    );
    let topology_path = dir.join("topology.toml");
    std::fs::write(&topology_path, &toml).expect("write the topology");
    (
        topology_path,
        Topology::from_str(&toml).expect("a valid topology"),
    )
}

/// The exit status of `app`, which must end by itself within [`DRAIN_TIMEOUT`]; else it is
/// killed and the test fails with its log.
fn wait_for_exit(mut app: std::process::Child, log: &Path) -> std::process::ExitStatus {
    let pid = app.id();
    let (exited, exit) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let _ = exited.send(app.wait().expect("wait for tickstream run"));
    });
    match exit.recv_timeout(DRAIN_TIMEOUT) {
        Ok(status) => {
            let _ = waiter.join();
            status
        }
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            let _ = waiter.join();
            panic!(
                "tickstream run still running {DRAIN_TIMEOUT:?} after starting a finite replay:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
    }
}
