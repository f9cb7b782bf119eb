"""Fixtures of the compat tests (run them with scripts/compat.sh, or `make compat`).

They need the debug binary (`cargo build --bin tickstream`; TICKSTREAM_BIN overrides the path)
and the services of `make services-up`, found through TICKSTREAM_KAFKA_BROKERS and
TICKSTREAM_MONGODB_URI (the Makefile's defaults when unset). The compose tests also start a
mongod of their own with access control on (mongodb.py), from the binary `make services-up`
installed (TICKSTREAM_MONGOD, which scripts/compat.sh sets). A missing one is a failure, not a
skip: these tests exist to be run.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pymongo
import pytest

from compose import EMPTY_SECRET, as_mapping, load_compose, parse_env_file
from mongodb import INIT_SCRIPT, Mongod, SinkGrant
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


# --- the compose stack's .env and mongodb ---------------------------------------------------

@pytest.fixture(scope="session")
def compose_env(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A .env as a user makes it: .env.example with every empty secret filled in."""
    example = (settings.root / ".env.example").read_text()
    text, filled = EMPTY_SECRET.subn(lambda m: f"{m[1]}=compat-{secrets.token_hex(8)}", example)
    assert filled >= 3, f".env.example has {filled} empty passwords: MongoDB root, sink, Grafana?"
    path = tmp_path_factory.mktemp("compose-env") / ".env"
    path.write_text(text)
    return parse_env_file(path.read_text())


@pytest.fixture(scope="session")
def compose_mongod(
    settings: Settings, compose_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Mongod]:
    """The compose file's mongodb service: a mongod with a keyfile, first started as the
    image does with the service's own (interpolated) environment (see mongodb.py)."""
    binary = Path(os.environ.get("TICKSTREAM_MONGOD", ""))
    if not binary.is_file():
        pytest.fail(f"no mongod at TICKSTREAM_MONGOD={binary}: `make services-up` installs it")
    project, _ = load_compose(settings.root / "docker-compose.yml", compose_env)
    environment = as_mapping(project["services"]["mongodb"].get("environment"))
    mongod = Mongod(binary, tmp_path_factory.mktemp("compose-mongodb"))
    try:
        mongod.first_start(environment, SinkGrant.from_script(settings.root / INIT_SCRIPT))
        yield mongod
    finally:
        mongod.stop()


@pytest.fixture(scope="session")
def compose_mongo(
    compose_mongod: Mongod, compose_env: dict[str, str]
) -> Iterator[pymongo.MongoClient]:
    """That mongod as its root user: to clean up and to read what the sink wrote."""
    client: pymongo.MongoClient = pymongo.MongoClient(
        f"mongodb://{compose_mongod.address}/?replicaSet=rs0",
        username=compose_env["MONGO_ROOT_USERNAME"],
        password=compose_env["MONGO_ROOT_PASSWORD"],
        authSource="admin",
        serverSelectionTimeoutMS=5000,
    )
    yield client
    client.close()
