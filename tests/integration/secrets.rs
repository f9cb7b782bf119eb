//! Secrets stay secret, as the real binary runs: a MongoDB password (in the user info or an
//! option value) appears nowhere in what `sink`, `query` and `run` print, even at
//! `RUST_LOG=trace` with JSON logs, whether the URI parses or not; a bad `.env` is refused
//! with its line number only; state and results are private whatever the umask.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use crate::processes::wait_for_exit;
use crate::support::{
    ChildProcess, block_on, free_local_address, kafka_brokers, require_kafka, unique_name,
};

/// Every process here exits (or is stopped) within this; they need seconds.
const EXIT_LIMIT: Duration = Duration::from_secs(30);

/// A password unique to the test, with the characters that break an unencoded URI.
struct Password {
    /// `S3cretPW-<random>`: never to appear in any output.
    text: String,
    /// The random part alone: no fragment of the password may appear either.
    random: String,
}

impl Password {
    fn new() -> Self {
        let random = unique_name("pw").replace('-', "");
        Self {
            text: format!("S3cretPW-{random}"),
            random,
        }
    }

    fn assert_absent(&self, what: &str, output: &str) {
        assert!(
            !output.contains(&self.text) && !output.contains(&self.random),
            "{what} printed the password:\n{output}"
        );
        assert!(!output.contains("panicked"), "{what} panicked:\n{output}");
    }
}

/// The URIs of each case: one the driver refuses (a `/` in the password, not
/// percent-encoded, and the password again as an option value), one it accepts, pointing at
/// a port where nothing listens (with the password as an option value too).
fn uris(password: &Password) -> [(&'static str, String); 2] {
    let port = free_local_address().port();
    let pw = &password.text;
    [
        (
            "unparsable",
            format!(
                "mongodb://tickstream:{pw}/x@127.0.0.1:{port}/?replicaSet=rs0&tlsCertificateKeyFilePassword={pw}"
            ),
        ),
        (
            "valid",
            format!(
                "mongodb://tickstream:{pw}@127.0.0.1:{port}/?serverSelectionTimeoutMS=1000&connectTimeoutMS=500&appName={pw}"
            ),
        ),
    ]
}

/// A topology with unique names (its topics need not exist), and its application id.
fn write_topology(dir: &Path) -> (PathBuf, String) {
    let app = unique_name("secrets");
    let path = dir.join("topology.toml");
    std::fs::write(
        &path,
        format!(
            r#"
application_id = "{app}"
symbols = ["BTCUSDT", "ETHUSDT"]
[source]
kind = "synthetic"
ticks_per_second = 50.0
[topics]
raw = "{app}.raw"
moving_average = "{app}.ma"
volatility = "{app}.vol"
jumps = "{app}.jumps"
dead_letter = "{app}.dlq"
[[windows]]
kind = "count"
size = 5
[mongodb]
database = "{app}"
"#
        ),
    )
    .expect("write the topology");
    (path, app)
}

/// `tickstream <args>` run from `dir` (so `./.env` is the test's), tracing everything as
/// JSON, with no MongoDB URI but the case's.
fn tickstream(dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tickstream"));
    configure(&mut command, dir);
    command.args(args);
    command
}

fn configure(command: &mut Command, dir: &Path) {
    command
        .current_dir(dir)
        .env("RUST_LOG", "trace")
        .env("TICKSTREAM_LOG_FORMAT", "json")
        .env("TICKSTREAM_KAFKA_BROKERS", kafka_brokers())
        .env_remove("TICKSTREAM_MONGODB_URI")
        .env_remove("TICKSTREAM_MONGODB_URI_FILE")
        .env_remove("TICKSTREAM_RUN_MONGODB_URI");
}

/// Runs `command` to its own exit (within [`EXIT_LIMIT`]); its status and output.
fn run_to_exit(what: &str, command: Command, log: &Path) -> (ExitStatus, String) {
    let process = ChildProcess::spawn(what, command, log);
    let status = block_on(wait_for_exit(process, EXIT_LIMIT));
    (status, std::fs::read_to_string(log).unwrap_or_default())
}

/// Waits until `condition` holds; fails if the process exits first.
fn wait_until(process: &mut ChildProcess, what: &str, condition: impl Fn() -> bool) {
    let started = Instant::now();
    while !condition() {
        process.assert_running();
        assert!(
            started.elapsed() < EXIT_LIMIT,
            "no {what} within {EXIT_LIMIT:?}:\n{}",
            process.log_tail()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until the process's output contains `needle`.
fn wait_for_output(process: &mut ChildProcess, needle: &str) {
    let log = process.log.clone();
    wait_until(process, needle, || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains(needle)
    });
}

#[test]
fn query_and_run_print_no_password_from_either_uri() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (topology, _) = write_topology(dir.path());
    let topology = topology.to_str().expect("UTF-8 path");
    let password = Password::new();
    for (case, uri) in uris(&password) {
        let log = dir.path().join(format!("query-{case}.log"));
        let mut query = tickstream(dir.path(), &["query", "--topology", topology, "latest"]);
        query.env("TICKSTREAM_MONGODB_URI", &uri);
        let (status, output) = run_to_exit("tickstream query", query, &log);
        assert!(!status.success(), "query with the {case} URI: {output}");
        password.assert_absent(&format!("query ({case} URI)"), &output);

        let log = dir.path().join(format!("run-{case}.log"));
        let data = dir.path().join(format!("data-{case}"));
        let data = data.to_str().expect("UTF-8 path");
        let args = ["run", "--topology", topology, "--data-dir", data];
        let mut run = tickstream(dir.path(), &args);
        run.args(["--source", "topology"])
            .env("TICKSTREAM_RUN_MONGODB_URI", &uri);
        let (status, output) = run_to_exit("tickstream run", run, &log);
        assert!(!status.success(), "run with the {case} URI: {output}");
        password.assert_absent(&format!("run ({case} URI)"), &output);
        assert!(output.contains("MongoDB"), "run says what failed: {output}");
    }
}

#[test]
fn sink_prints_no_password_from_either_uri_given_directly_or_in_a_file() {
    require_kafka();
    let dir = tempfile::tempdir().expect("tempdir");
    let (topology, _) = write_topology(dir.path());
    let password = Password::new();
    let [(_, unparsable), (_, valid)] = uris(&password);
    let args = |metrics: &str| {
        let topology = topology.to_str().expect("UTF-8 path").to_owned();
        ["sink", "--topology", &topology, "--metrics-addr", metrics].map(str::to_owned)
    };

    let metrics = free_local_address().to_string();
    let mut sink = tickstream(dir.path(), &[]);
    sink.args(args(&metrics))
        .env("TICKSTREAM_MONGODB_URI", &unparsable);
    let log = dir.path().join("sink-unparsable.log");
    let (status, output) = run_to_exit("tickstream sink", sink, &log);
    assert!(!status.success(), "{output}");
    password.assert_absent("sink (unparsable URI)", &output);
    assert!(
        output.contains("invalid MongoDB URI mongodb://***@") && output.contains("percent-encoded"),
        "the error names the problem: {output}"
    );

    // The valid URI from a file, as a container secret: the sink runs, finds MongoDB
    // unavailable (logging the driver's error), and stops on SIGTERM.
    let secret = dir.path().join("mongodb_uri");
    std::fs::write(&secret, format!("{valid}\n")).expect("write the secret");
    let metrics = free_local_address().to_string();
    let mut sink = tickstream(dir.path(), &[]);
    sink.args(args(&metrics))
        .env("TICKSTREAM_MONGODB_URI_FILE", &secret);
    let log = dir.path().join("sink-valid.log");
    let mut process = ChildProcess::spawn("tickstream sink", sink, &log);
    wait_for_output(&mut process, "MongoDB unavailable");
    let status = process.terminate();
    let output = std::fs::read_to_string(&log).unwrap_or_default();
    password.assert_absent("sink (valid URI from a file)", &output);
    assert!(status.success(), "SIGTERM stops the sink cleanly: {output}");
    assert!(
        output.contains("mongodb://***@127.0.0.1:"),
        "the start-up line shows the URI redacted: {output}"
    );
}

#[test]
fn a_bad_dotenv_is_refused_by_line_number_without_echo_or_panic() {
    let password = Password::new();
    let pw = &password.text;
    let cases: [(&str, Vec<u8>, &str); 4] = [
        (
            "a malformed line",
            format!("TICKSTREAM_LOG_FORMAT=json\n{pw}\n").into_bytes(),
            "line 2",
        ),
        (
            "a NUL byte",
            format!("TICKSTREAM_MONGODB_URI=mongodb://u:{pw}\0@h\n").into_bytes(),
            "line 1: a NUL byte",
        ),
        (
            "a denied librdkafka setting",
            format!("TICKSTREAM_KAFKA_CONFIG_PLUGIN_LIBRARY_PATHS=/tmp/{pw}.so\n").into_bytes(),
            "plugin.library.paths",
        ),
        (
            "a world-writable file",
            format!("TICKSTREAM_MONGODB_URI=mongodb://u:{pw}@h\n").into_bytes(),
            "chmod 600 .env",
        ),
    ];
    for (index, (case, content, expected)) in cases.into_iter().enumerate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dotenv = dir.path().join(".env");
        std::fs::write(&dotenv, content).expect("write .env");
        let mode = if index == 3 { 0o666 } else { 0o600 };
        std::fs::set_permissions(&dotenv, std::fs::Permissions::from_mode(mode)).expect("chmod");
        let log = dir.path().join("query.log");
        let query = tickstream(dir.path(), &["query", "latest"]);
        let (status, output) = run_to_exit("tickstream query", query, &log);
        assert!(!status.success(), "{case}: {output}");
        assert!(output.contains(expected), "{case}: {output}");
        password.assert_absent(case, &output);
    }

    let dir = tempfile::tempdir().expect("tempdir");
    let real = dir.path().join("elsewhere.env");
    std::fs::write(
        &real,
        format!("TICKSTREAM_MONGODB_URI=mongodb://u:{pw}@h\n"),
    )
    .expect("write");
    std::os::unix::fs::symlink(&real, dir.path().join(".env")).expect("symlink");
    let log = dir.path().join("query.log");
    let query = tickstream(dir.path(), &["query", "latest"]);
    let (status, output) = run_to_exit("tickstream query", query, &log);
    assert!(!status.success(), "a symlinked .env: {output}");
    assert!(output.contains("symbolic link"), "{output}");
    password.assert_absent("a symlinked .env", &output);
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// `tickstream <args>` under umask 000, which would make everything it creates 0777/0666.
fn under_umask_000(dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(r#"umask 000; exec "$0" "$@""#)
        .arg(env!("CARGO_BIN_EXE_tickstream"));
    configure(&mut command, dir);
    command.args(args).env("RUST_LOG", "info");
    command
}

#[test]
fn state_and_results_are_private_whatever_the_umask() {
    let brokers = require_kafka();
    let dir = tempfile::tempdir().expect("tempdir");
    let (topology, app) = write_topology(dir.path());
    let topology = topology.to_str().expect("UTF-8 path");

    // run: the data dir, its results and its window state.
    let data = dir.path().join("data");
    let args = ["run", "--topology", topology, "--source", "topology"];
    let mut run = under_umask_000(dir.path(), &args);
    run.arg("--data-dir").arg(&data);
    let mut process = ChildProcess::spawn("tickstream run", run, &dir.path().join("run.log"));
    wait_for_output(&mut process, "ma[count:5]=");
    let state = data.join("state");
    let app_state = state.join(&app);
    let mut dirs = vec![
        data.clone(),
        state,
        app_state.clone(),
        app_state.join("sled"),
    ];
    let results: Vec<PathBuf> = std::fs::read_dir(&data)
        .expect("the data dir")
        .map(|entry| entry.expect("a dir entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    assert!(results.len() >= 4, "one file per topic: {results:?}");
    for file in &results {
        assert_eq!(mode(file), 0o600, "{}", file.display());
    }
    // enrich: its state dir and instance id.
    let metrics = free_local_address().to_string();
    let state_dir = dir.path().join("enrich-state");
    let enrich_args = ["enrich", "--topology", topology, "--metrics-addr", &metrics];
    let mut enrich = under_umask_000(dir.path(), &enrich_args);
    enrich
        .arg("--state-dir")
        .arg(&state_dir)
        .env("TICKSTREAM_KAFKA_BROKERS", &brokers);
    let log = dir.path().join("enrich.log");
    let mut enrich = ChildProcess::spawn("tickstream enrich", enrich, &log);
    let app_state = state_dir.join(&app);
    let instance_id = app_state.join("instance.id");
    wait_until(&mut enrich, "instance id", || instance_id.exists());
    assert_eq!(mode(&app_state.join("instance.id")), 0o600);
    dirs.extend([state_dir, app_state.clone(), app_state.join("sled")]);
    for dir in &dirs {
        assert_eq!(mode(dir), 0o700, "{}", dir.display());
    }
    assert!(enrich.terminate().success());
    let stop = Command::new("kill")
        .args(["-INT", &process.id().to_string()])
        .status()
        .expect("kill -INT");
    assert!(stop.success());
    assert!(process.wait().success());
}
