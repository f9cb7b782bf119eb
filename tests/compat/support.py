"""What the compat tests share: waiting with a deadline, processes with captured logs,
free ports, HTTP probes and a clean slate on the test Kafka and MongoDB.

Nothing here sleeps to synchronise: every wait polls a condition until a deadline and fails
with what it waited for.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from kafka import KafkaAdminClient, KafkaConsumer
from kafka.errors import KafkaError

T = TypeVar("T")

POLL_INTERVAL = 0.2
STOP_TIMEOUT = 40.0  # compose's stop_grace_period for the processors


class WaitTimeout(AssertionError):
    """A condition did not hold before its deadline."""


def wait_until(
    condition: Callable[[], T | None],
    timeout: float,
    what: str,
    *,
    check: Callable[[], None] | None = None,
) -> T:
    """Polls `condition` until it returns something truthy and returns that. `check` runs on
    every turn and may raise to give up early (e.g. a process exited)."""
    deadline = time.monotonic() + timeout
    while True:
        if check is not None:
            check()
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise WaitTimeout(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(POLL_INTERVAL)


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def http_status(url: str, timeout: float = 2.0) -> int | None:
    """The status of GET `url`, or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code
    except (OSError, urllib.error.URLError):
        return None


@dataclass(frozen=True)
class Settings:
    """Where the binary and the services are (see conftest.py)."""

    root: Path
    binary: Path
    brokers: str
    mongodb_uri: str

    def has_command(self, *command: str) -> bool:
        """Whether `tickstream COMMAND... --help` works (a subcommand being written may not)."""
        result = subprocess.run(
            [str(self.binary), *command, "--help"], capture_output=True, timeout=30
        )
        return result.returncode == 0


# --- processes ----------------------------------------------------------------------------


class ProcessFailed(AssertionError):
    """A process exited when it should not have, or not the way it should."""


class Process:
    """A child process whose stdout and stderr go to `<log_dir>/<name>.log`."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: Path,
        log_dir: Path,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "wb")
        self.popen = subprocess.Popen(
            self.argv,
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def log_tail(self, lines: int = 60) -> str:
        # The child writes the file itself; our handle never buffers anything.
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def describe(self) -> str:
        return f"{self.name} (pid {self.popen.pid}, log {self.log_path}):\n{self.log_tail()}"

    def assert_running(self) -> None:
        code = self.returncode
        if code is not None:
            raise ProcessFailed(f"{self.name} exited with status {code}\n{self.describe()}")

    def wait_exit(self, timeout: float) -> int:
        """The exit status, waiting at most `timeout` seconds for it."""
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise WaitTimeout(
                f"{self.name} did not exit within {timeout:g} s\n{self.describe()}"
            ) from None

    def terminate(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM, then the exit status; SIGKILL (and a failure) after `timeout` seconds."""
        if self.returncode is None:
            self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise ProcessFailed(
                f"{self.name} ignored SIGTERM for {timeout:g} s (killed)\n{self.describe()}"
            ) from None
        finally:
            self._log.close()

    def kill(self) -> None:
        if self.returncode is None:
            self.popen.kill()
            self.popen.wait()
        self._log.close()


@dataclass
class ProcessSet:
    """The processes one test started: stopped in reverse order, logs kept for the report."""

    log_dir: Path
    processes: list[Process] = field(default_factory=list)

    def start(
        self, name: str, argv: Sequence[str], *, env: Mapping[str, str], cwd: Path
    ) -> Process:
        process = Process(name, argv, env=env, cwd=cwd, log_dir=self.log_dir)
        self.processes.append(process)
        return process

    def assert_running(self) -> None:
        for process in self.processes:
            process.assert_running()

    def stop_all(self) -> dict[str, int]:
        """SIGTERMs every process still running (newest first) and returns each exit status;
        one that does not stop is killed and reported."""
        statuses: dict[str, int] = {}
        problems: list[str] = []
        for process in reversed(self.processes):
            try:
                statuses[process.name] = process.terminate()
            except ProcessFailed as e:
                problems.append(str(e))
        if problems:
            raise ProcessFailed("\n\n".join(problems))
        return statuses

    def kill_all(self) -> None:
        for process in self.processes:
            process.kill()

    def report(self) -> str:
        return "\n\n".join(f"--- {p.describe()}" for p in self.processes)


def assert_stopped_cleanly(statuses: Mapping[str, int], processes: ProcessSet) -> None:
    failed = {name: code for name, code in statuses.items() if code != 0}
    assert not failed, (
        f"processes must exit 0 on SIGTERM; these did not: {failed}\n{processes.report()}"
    )


def base_env(home: Path) -> dict[str, str]:
    """The environment every child starts from: only PATH and HOME of ours, so nothing a
    developer exported (TICKSTREAM_*, RUST_LOG) changes what is tested."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home)}


# --- Kafka and MongoDB --------------------------------------------------------------------


def kafka_admin(brokers: str) -> KafkaAdminClient:
    return KafkaAdminClient(bootstrap_servers=brokers.split(","), client_id="tickstream-compat")


def reset_kafka(brokers: str, topics: Iterable[str], application_id: str) -> None:
    """Deletes `topics`, the application's internal topics (`<application_id>-…`: changelog,
    repartition) and its consumer groups, so a rerun starts from nothing."""
    admin = kafka_admin(brokers)
    try:
        wanted = set(topics)
        prefix = f"{application_id}-"
        doomed = sorted(t for t in admin.list_topics() if t in wanted or t.startswith(prefix))
        if doomed:
            admin.delete_topics(doomed, timeout_ms=30_000)
            wait_until(
                lambda: not set(admin.list_topics()) & set(doomed),
                30,
                f"Kafka to delete {doomed}",
            )
        groups = [g["group_id"] for g in admin.list_groups()]
        stale = [g for g in groups if g == application_id or g.startswith(prefix)]
        if stale:
            admin.delete_groups(stale)
    finally:
        admin.close()


def existing_topics(brokers: str) -> set[str]:
    admin = kafka_admin(brokers)
    try:
        return set(admin.list_topics())
    finally:
        admin.close()


@dataclass
class Consumed:
    """What a plain kafka-python consumer read from one topic."""

    topic: str
    records: list[Any] = field(default_factory=list)  # ConsumerRecord
    error: str | None = None

    def values(self) -> list[Any]:
        """Each record's value as JSON (raises on one that is not JSON)."""
        return [json.loads(r.value) for r in self.records]


def consume(
    brokers: str,
    topic: str,
    enough: Callable[[list[Any]], bool],
    timeout: float,
) -> Consumed:
    """Reads `topic` from the beginning the way the reference consumer does (its own group,
    auto-commit, offset reset earliest), plus `read_committed`, until `enough(records)` or
    the deadline. A client error (e.g. UnsupportedCodecError: a batch compressed with a codec
    the plain package cannot read) is kept, not raised, so one topic's failure does not hide
    the others'."""
    result = Consumed(topic)
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=brokers.split(","),
        group_id=f"tickstream-compat-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=True,
        isolation_level="read_committed",
        client_id="tickstream-compat",
    )
    try:
        deadline = time.monotonic() + timeout
        while not enough(result.records) and time.monotonic() < deadline:
            batches = consumer.poll(timeout_ms=500)
            for records in batches.values():
                result.records.extend(records)
    except KafkaError as e:
        name = type(e).__name__
        result.error = str(e) if str(e).startswith(name) else f"{name}: {e}"
    finally:
        consumer.close()
    return result
