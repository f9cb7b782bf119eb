"""docker-compose.yml, exercised without Docker (see compose.py and mongodb.py for what is mapped
and what stays unverified): its tickstream services must come up as written and fill MongoDB
through the sink's least-privilege user, with private state files, and a misspelt variable or
command must make the exercise fail, quickly. The secrets' side: test_compose_secrets.py."""

from __future__ import annotations

import stat
import subprocess
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pymongo
import pytest

from compose import (
    ComposeFailure,
    Container,
    Exercise,
    Host,
    Image,
    load_compose,
    tickstream_containers,
)
from mongodb import Mongod
from support import (
    ProcessSet,
    Settings,
    assert_stopped_cleanly,
    kafka_admin,
    port_open,
    reset_kafka,
    wait_until,
)

DATA_TIMEOUT = 30.0
EXPECTED_SERVICES = {"topics", "ingest", "enrich", "sink"}


@dataclass
class Stack:
    """One compose file, read and mapped onto this machine."""

    exercise: Exercise
    env: dict[str, str]
    topology: dict

    @property
    def containers(self) -> dict[str, Container]:
        return self.exercise.containers


def prepare(
    settings: Settings,
    compose_file: Path,
    tmp_path: Path,
    processes: ProcessSet,
    env: dict[str, str],
    mongod: Mongod,
    **bounds: float,
) -> Stack:
    tmp_path.mkdir(parents=True, exist_ok=True)
    project, unset = load_compose(compose_file, env)
    assert not unset, (
        f"{compose_file.name} reads variables neither .env nor a default sets: {sorted(unset)}"
    )
    host = Host(
        settings.root,
        settings.binary,
        settings.brokers,
        f"mongodb://{mongod.address}/?replicaSet=rs0",
        tmp_path / "containers",
    )
    image = Image.from_dockerfile(settings.root / "Dockerfile")
    containers = tickstream_containers(project, image, host)
    missing = EXPECTED_SERVICES - set(containers)
    assert not missing, (
        f"{compose_file.name}: no service from the tickstream image for {sorted(missing)}"
    )
    topology_path = Path(containers["ingest"].env["TICKSTREAM_TOPOLOGY"])
    topology = tomllib.loads(topology_path.read_text())
    return Stack(Exercise(containers, processes, **bounds), env, topology)


def topology_topics(topology: dict) -> list[str]:
    topics = topology.get("topics", {})
    raw = topics.get("raw", "prices.raw")
    app = topology.get("application_id", "tickstream")
    names = list(raw.values()) if isinstance(raw, dict) else [raw]
    names += [topics.get(k, f"analytics.{k}") for k in ("moving_average", "volatility", "jumps")]
    return [*names, topics.get("dead_letter", f"{app}.dlq")]


def clean_slate(settings: Settings, mongo: pymongo.MongoClient, topology: dict) -> None:
    reset_kafka(
        settings.brokers, topology_topics(topology), topology.get("application_id", "tickstream")
    )
    mongo.drop_database(topology["mongodb"]["database"])


def assert_topics_created(settings: Settings, topology: dict) -> None:
    """What the topics one-shot made: every topic the topology names, with the topology's
    partition count (the test broker auto-creates topics with ONE partition, so a topic the
    processors created instead would show)."""
    partitions = topology.get("topics", {}).get("partitions", 3)
    admin = kafka_admin(settings.brokers)
    try:
        described = {t["name"]: t for t in admin.describe_topics(topology_topics(topology))}
    finally:
        admin.close()
    wrong = {
        name: ("missing" if t.get("error_code") else f"{len(t['partitions'])} partitions")
        for name, t in described.items()
        if t.get("error_code") or len(t["partitions"]) != partitions
    }
    assert not wrong, f"after the topics service, expected {partitions} partitions each: {wrong}"


def assert_topics_described(stack: Stack) -> None:
    """`tickstream topics describe` with the topics service's own environment: every topic the
    topology needs (internal ones too) exists with the right partitions and cleanup policy."""
    c = stack.containers["topics"]
    argv = [*c.argv[:-1], "describe"]
    result = subprocess.run(argv, env=c.env, cwd=c.cwd, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, (
        f"after the topics service, `tickstream topics describe` exited {result.returncode}:\n"
        f"{result.stdout}{result.stderr}"
    )


def assert_mongodb_filled(
    mongo: pymongo.MongoClient, topology: dict, check: Callable[[], None]
) -> None:
    db = mongo[topology["mongodb"]["database"]]
    collections = {
        "prices": "prices",
        "moving_averages": "moving_averages",
        "volatility": "volatility",
    }
    collections.update(
        {k: v for k, v in topology["mongodb"].get("collections", {}).items() if k in collections}
    )
    symbols = set(topology["symbols"])

    def filled() -> bool:
        return all(set(db[c].distinct("symbol")) == symbols for c in collections.values())

    try:
        wait_until(
            filled, DATA_TIMEOUT, "prices and analytics of every symbol in MongoDB", check=check
        )
    except AssertionError as e:
        counts = {c: db[c].count_documents({}) for c in collections.values()}
        raise AssertionError(f"{e}; documents so far: {counts}") from None
    for price in db[collections["prices"]].find().limit(50):
        assert isinstance(price["price"], float) and price["price"] > 0, price


def assert_state_private(stack: Stack) -> None:
    """What enrich wrote into its state volume (sled's files included) is its user's alone:
    the image's entrypoint sets umask 077 and the store sets its own modes."""
    state_dir = Path(stack.containers["enrich"].env["TICKSTREAM_STATE_DIR"])
    entries = list(state_dir.rglob("*"))
    assert entries, f"enrich wrote nothing into its state volume {state_dir}"
    shared = {
        str(path.relative_to(state_dir)): oct(stat.S_IMODE(path.lstat().st_mode))
        for path in entries
        if not path.is_symlink() and path.lstat().st_mode & 0o077
    }
    assert not shared, f"state files readable by group or others (want 0600/0700): {shared}"


def test_compose_services_come_up_and_fill_mongodb(
    settings: Settings,
    kafka: str,
    compose_env: dict[str, str],
    compose_mongod: Mongod,
    compose_mongo: pymongo.MongoClient,
    processes: ProcessSet,
    tmp_path: Path,
) -> None:
    started = time.monotonic()
    stack = prepare(
        settings, settings.root / "docker-compose.yml", tmp_path, processes, compose_env,
        compose_mongod,
    )  # fmt: skip
    clean_slate(settings, compose_mongo, stack.topology)

    # The sink connects as its own user (deploy/mongodb/initdb), created in compose_mongod
    # at its first start; the root user only reads the result here.
    stack.exercise.up()
    assert_topics_created(settings, stack.topology)
    assert_topics_described(stack)
    assert_mongodb_filled(compose_mongo, stack.topology, stack.exercise.assert_running)
    statuses = processes.stop_all()
    assert_stopped_cleanly(statuses, processes)
    assert_state_private(stack)
    assert time.monotonic() - started < 90, "the compose exercise must stay under 90 s"


def misspelt(compose_file: Path, directory: Path, old: str, new: str) -> Path:
    text = compose_file.read_text()
    assert text.count(old) == 1, f"{compose_file.name} should contain {old!r} exactly once"
    path = directory / "docker-compose.yml"
    path.write_text(text.replace(old, new))
    return path


def assert_commands_exist(settings: Settings, stack: Stack) -> None:
    """So a failure below comes from the misspelling, not from a command the binary lacks."""
    for name, c in stack.containers.items():
        command = c.argv[1:3] if c.argv[1:2] == ["topics"] else c.argv[1:2]
        assert settings.has_command(
            *command
        ), f"{name}: `tickstream {' '.join(command)}` does not exist"


@pytest.mark.parametrize(
    ("old", "new", "culprit"),
    [
        # The processors would fall back to their default broker and never reach kafka:9092.
        (
            "    TICKSTREAM_KAFKA_BROKERS: kafka:9092\n",
            "    TICKSTREAM_KAFKA_BROKER: kafka:9092\n",
            "topics",
        ),
        ('    command: ["enrich"]\n', '    command: ["enrch"]\n', "enrich"),
    ],
    ids=["misspelt-variable", "misspelt-command"],
)
def test_compose_mistakes_fail_the_exercise(
    settings: Settings,
    kafka: str,
    compose_env: dict[str, str],
    compose_mongod: Mongod,
    compose_mongo: pymongo.MongoClient,
    processes: ProcessSet,
    tmp_path: Path,
    old: str,
    new: str,
    culprit: str,
) -> None:
    assert not port_open("127.0.0.1", 9092), (
        "something listens on 127.0.0.1:9092, tickstream's default broker: a misspelt "
        "TICKSTREAM_KAFKA_BROKERS would reach it and the mistake would go unnoticed here"
    )
    original = prepare(
        settings, settings.root / "docker-compose.yml", tmp_path / "original", processes,
        compose_env, compose_mongod,
    )  # fmt: skip
    assert_commands_exist(settings, original)
    started = time.monotonic()
    broken = misspelt(settings.root / "docker-compose.yml", tmp_path, old, new)
    stack = prepare(
        settings,
        broken,
        tmp_path,
        processes,
        compose_env,
        compose_mongod,
        one_shot_timeout=45,
        healthy_timeout=20,
        ready_timeout=20,
    )
    clean_slate(settings, compose_mongo, stack.topology)

    with pytest.raises(ComposeFailure) as failure:
        stack.exercise.up()
    assert failure.value.service == culprit, (
        f"expected {culprit} to fail first, got: {failure.value}"
    )
    processes.stop_all()
    assert time.monotonic() - started < 90, "the failure must be detected within 90 s"
