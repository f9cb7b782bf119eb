"""Fixtures of the compat tests (run them with scripts/compat.sh, or `make compat`).

They need the debug binary (`cargo build --bin tickstream`; TICKSTREAM_BIN overrides the path)
and the services of `make services-up`, found through TICKSTREAM_KAFKA_BROKERS and
TICKSTREAM_MONGODB_URI (the Makefile's defaults when unset). A missing one is a failure, not a
skip: these tests exist to be run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pymongo
import pytest

from support import ProcessSet, Settings, kafka_admin

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_BROKERS = "127.0.0.1:39092"
DEFAULT_MONGODB_URI = "mongodb://127.0.0.1:37017/?replicaSet=rs0"


@pytest.fixture(scope="session")
def settings() -> Settings:
    binary = Path(os.environ.get("TICKSTREAM_BIN", ROOT / "target/debug/tickstream"))
    if not os.access(binary, os.X_OK):
        pytest.fail(f"no tickstream binary at {binary}: run `cargo build --bin tickstream` first")
    return Settings(
        root=ROOT,
        binary=binary,
        brokers=os.environ.get("TICKSTREAM_KAFKA_BROKERS") or DEFAULT_BROKERS,
        mongodb_uri=os.environ.get("TICKSTREAM_MONGODB_URI") or DEFAULT_MONGODB_URI,
    )


@pytest.fixture(scope="session")
def mongo(settings: Settings) -> Iterator[pymongo.MongoClient]:
    client: pymongo.MongoClient = pymongo.MongoClient(
        settings.mongodb_uri, serverSelectionTimeoutMS=5000
    )
    try:
        client.admin.command("ping")
    except pymongo.errors.PyMongoError as e:
        pytest.fail(f"no MongoDB at {settings.mongodb_uri} ({e}): run `make services-up`")
    yield client
    client.close()


@pytest.fixture(scope="session")
def kafka(settings: Settings) -> str:
    """The broker list, once Kafka answered."""
    try:
        kafka_admin(settings.brokers).close()
    except Exception as e:  # kafka-python raises several unrelated types here
        pytest.fail(f"no Kafka at {settings.brokers} ({e}): run `make services-up`")
    return settings.brokers


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture
def processes(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ProcessSet]:
    """The test's processes; whatever still runs at the end is killed, and when the test
    failed every process's log is printed (pytest shows it under "Captured stdout")."""
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    group = ProcessSet(log_dir)
    yield group
    group.kill_all()
    report = getattr(request.node, "report_call", None)
    if report is None or report.failed:
        print(f"\n===== logs of {request.node.name} =====\n{group.report()}")
