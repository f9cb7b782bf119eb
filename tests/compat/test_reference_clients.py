"""The seed layout (topologies/seed.toml) against the reference system's own Python clients.

The reference's users keep their kafka-python producer and consumer and their pymongo queries
(../shared/docs/product.md §1). Here tickstream's ingest (polling a fake Binance), enrich and
sink run as processes, the reference producer writes to `btc` beside ingest, a PLAIN
kafka-python consumer (no lz4/snappy/zstd) reads every topic the seed topology produces, and
the reference's three queries run on database `fx`.

The seed layout's names (topics btc/eth/sol, database fx) are the point, so nothing else in
tests/ may use them; the test deletes them first, so reruns start clean.
"""

from __future__ import annotations

import calendar
import json
import re
import subprocess
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pymongo
import pytest
from kafka import KafkaProducer

from fake_binance import FakeBinance
from support import (
    Consumed,
    ProcessSet,
    Settings,
    assert_stopped_cleanly,
    base_env,
    consume,
    existing_topics,
    free_port,
    http_status,
    reset_kafka,
    wait_until,
)

BURST_TICKS_PER_SECOND = 3000.0  # synthetic: many records per producer batch, so codecs apply
BURST_RECORDS = 3000  # per raw topic
START_TIMEOUT = 60.0  # each processor ready (/readyz)
DATA_TIMEOUT = 60.0  # every topic and collection holds what the test waits for
PRODUCER_PRICE = 67234.5  # what the reference producer sends, byte for byte its json.dumps
PRODUCE_BEFORE_ANSWER = 27  # answers 25-29 are 3 % up (fake_binance.JUMP_EVERY); ~5 s in: all ready
MALFORMED = b'{"symbol": "BTCUSDT"}'  # no price: the reference's "enhanced" consumer skips it
LAST_N = 20
JUMP_THRESHOLD_PCT = 2.0


@dataclass(frozen=True)
class Layout:
    """The names topologies/seed.toml gives its topics and collections."""

    application_id: str
    symbols: list[str]
    raw: dict[str, str]  # symbol -> topic
    derived: dict[str, str]  # moving_average / volatility / jumps -> topic
    dead_letter: str
    database: str
    prices: dict[str, str]  # symbol -> collection
    analytics: dict[str, str]  # moving_averages / volatility / jumps -> collection

    @classmethod
    def read(cls, path: Path) -> Layout:
        t = tomllib.loads(path.read_text())
        topics, collections = t["topics"], t["mongodb"]["collections"]
        return cls(
            application_id=t["application_id"],
            symbols=t["symbols"],
            raw=topics["raw"],
            derived={k: topics[k] for k in ("moving_average", "volatility", "jumps")},
            dead_letter=topics["dead_letter"],
            database=t["mongodb"]["database"],
            prices=collections["prices"],
            analytics={k: collections[k] for k in ("moving_averages", "volatility", "jumps")},
        )

    def produced_topics(self) -> list[str]:
        return [*self.raw.values(), *self.derived.values(), self.dead_letter]


def seed_topology_for_test(seed: Path, tmp_path: Path, base_url: str) -> Path:
    """seed.toml with the fake Binance, a fast interval and a state dir of the test's own."""
    text = seed.read_text()
    for key, value in {
        "base_url": base_url,
        "interval": "200ms",
        "state_dir": str(tmp_path / "state"),
    }.items():
        text, n = re.subn(rf'(?m)^{key}\s*=\s*"[^"]*"', f'{key} = "{value}"', text)
        assert n == 1, f'{seed} has {n} `{key} = "..."` lines; the test rewrites exactly one'
    # The fake Binance speaks plain http on 127.0.0.1: allowed for this test only.
    text = re.sub(r'(?m)^(base_url = "[^"]*")$', r"\1\nallow_plain_transport = true", text)
    path = tmp_path / "seed.toml"
    path.write_text(text)
    return path


def burst_topology_for_test(seed: Path, tmp_path: Path) -> Path:
    """seed.toml with a fast synthetic source instead of Binance: at a few thousand ticks per
    second librdkafka puts many records in one batch and compresses it when the codec saves
    bytes (a batch of one tiny record never is). The reference's users meet such batches as
    soon as ingest catches up after an outage."""
    text = seed.read_text()
    synthetic = f"""[source]
kind = "synthetic"
seed = 7
ticks_per_second = {BURST_TICKS_PER_SECOND}
volatility = 0.001
jump_probability = 0.01
jump_size_pct = 3.0

[source.initial_prices]
BTCUSDT = 67000.0
ETHUSDT = 3100.0
SOLUSDT = 150.0

"""
    text, n = re.subn(r"(?ms)^\[source\]\n.*?(?=^\[mongodb\])", synthetic, text)
    assert n == 1, f"{seed}: expected one [source] section before [mongodb]"
    text, n = re.subn(r'(?m)^state_dir\s*=\s*"[^"]*"', f'state_dir = "{tmp_path / "state"}"', text)
    assert n == 1, f"{seed}: expected one state_dir line"
    path = tmp_path / "seed-burst.toml"
    path.write_text(text)
    return path


def create_topics(settings: Settings, topology: Path, layout: Layout, cwd: Path) -> None:
    """`tickstream topics create`, as an operator runs it before the processors."""
    result = subprocess.run(
        [str(settings.binary), "topics", "create", "--topology", str(topology)],
        env={**base_env(cwd), "TICKSTREAM_KAFKA_BROKERS": settings.brokers},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, (
        f"tickstream topics create exited {result.returncode}:\n{result.stdout}{result.stderr}"
    )
    missing = set(layout.produced_topics()) - existing_topics(settings.brokers)
    assert not missing, f"tickstream topics create did not create {sorted(missing)}"


def start_pipeline(
    settings: Settings,
    processes: ProcessSet,
    topology: Path,
    cwd: Path,
    names: tuple[str, ...] = ("ingest", "enrich", "sink"),
) -> dict[str, str]:
    """The processors, each on its own metrics port, once ready; returns name -> /readyz URL."""
    ready_urls = {}
    for name in names:
        address = f"127.0.0.1:{free_port()}"
        env = {
            **base_env(cwd),
            "TICKSTREAM_KAFKA_BROKERS": settings.brokers,
            "TICKSTREAM_MONGODB_URI": settings.mongodb_uri,
            "RUST_LOG": "info",
        }
        argv = [str(settings.binary), name, "--topology", str(topology), "--metrics-addr", address]
        processes.start(name, argv, env=env, cwd=cwd)
        ready_urls[name] = f"http://{address}/readyz"
    for name, url in ready_urls.items():
        wait_until(
            lambda: http_status(url) == 200,
            START_TIMEOUT,
            f"{name} ready ({url})",
            check=processes.assert_running,
        )
    return ready_urls


class ReferenceProducer:
    """kafka-python's KafkaProducer as the reference uses it: no key, json.dumps values."""

    def __init__(self, brokers: str, topic: str) -> None:
        self.topic = topic
        self.producer = KafkaProducer(
            bootstrap_servers=brokers.split(","), client_id="reference-producer"
        )

    def send_price_and_malformed(self) -> None:
        price = {"symbol": "BTCUSDT", "price": PRODUCER_PRICE}
        self.producer.send(self.topic, json.dumps(price).encode())
        self.producer.send(self.topic, MALFORMED)
        self.producer.flush(timeout=30)

    def close(self) -> None:
        self.producer.close()


# --- what a plain kafka-python consumer must read ------------------------------------------


def enough_records(layout: Layout, topic: str) -> int:
    if topic == layout.derived["jumps"]:
        return 2
    if topic == layout.dead_letter:
        return 1
    return 5


def consume_everything(brokers: str, layout: Layout) -> dict[str, Consumed]:
    """Every produced topic, one consumer each (so a failure names its topic), all within
    DATA_TIMEOUT; each topic gets at least a few seconds."""
    deadline = time.monotonic() + DATA_TIMEOUT
    results = {}
    for topic in layout.produced_topics():
        want = enough_records(layout, topic)
        budget = max(deadline - time.monotonic(), 5.0)
        results[topic] = consume(brokers, topic, lambda rs: len(rs) >= want, budget)
    return results


def assert_every_topic_readable(layout: Layout, consumed: dict[str, Consumed]) -> None:
    problems = []
    for topic, result in consumed.items():
        want = enough_records(layout, topic)
        if result.error is not None:
            problems.append(f"{topic}: the plain kafka-python consumer failed: {result.error}")
        elif len(result.records) < want:
            problems.append(f"{topic}: {len(result.records)} records, expected at least {want}")
        else:
            undecodable = []
            for record in result.records:
                try:
                    json.loads(record.value)
                except ValueError:
                    undecodable.append(record.value[:80])
            if undecodable:
                problems.append(f"{topic}: values that are not JSON: {undecodable[:3]}")
    assert not problems, (
        "a consumer written for the reference (plain `pip install kafka-python`, no lz4/snappy/"
        "zstd) cannot read what tickstream produces:\n  " + "\n  ".join(problems)
    )


def assert_raw_records(layout: Layout, consumed: dict[str, Consumed], binance: FakeBinance) -> None:
    """Ingest's records are the reference producer's, byte for byte what json.dumps writes
    (seed.toml's raw_format = "reference"), with prices the fake Binance sent."""
    for symbol, topic in layout.raw.items():
        sent = binance.sent_prices(symbol) | ({PRODUCER_PRICE} if symbol == "BTCUSDT" else set())
        for record in consumed[topic].records:
            if record.value == MALFORMED:
                continue
            value = json.loads(record.value)
            assert set(value) == {"symbol", "price"}, (
                f"{topic}: the seed layout's raw records are the reference's {{symbol, price}}, "
                f"got {value}"
            )
            assert value["symbol"] == symbol, f"{topic}: {value}"
            assert value["price"] in sent, f"{topic}: price {value['price']} was never sent"
            assert record.value == json.dumps(value).encode(), (
                f"{topic}: {record.value!r} is not what the reference's json.dumps writes"
            )


def assert_derived_records(
    layout: Layout, consumed: dict[str, Consumed], binance: FakeBinance
) -> None:
    for kind in ("moving_average", "volatility"):
        for event in consumed[layout.derived[kind]].values():
            sent = binance.sent_prices(event["symbol"]) | {PRODUCER_PRICE}
            assert event["symbol"] in layout.symbols, f"{kind}: {event}"
            assert event["count"] == LAST_N, f"{kind}: the seed window is the last {LAST_N}: {event}"
            mean = event["mean"]
            assert min(sent) <= mean <= max(sent), f"{kind}: mean outside the prices sent: {event}"
            if kind == "volatility":
                assert event["stddev"] >= 0, event
    for jump in consumed[layout.derived["jumps"]].values():
        sent = binance.sent_prices(jump["symbol"]) | {PRODUCER_PRICE}
        assert {jump["from"], jump["to"]} <= sent, f"jump between prices never sent: {jump}"
        assert abs(jump["change_pct"]) > JUMP_THRESHOLD_PCT, f"a jump below the threshold: {jump}"


def assert_dead_letter(layout: Layout, consumed: dict[str, Consumed]) -> None:
    records = consumed[layout.dead_letter].records
    values = [r.value for r in records]
    assert MALFORMED in values, (
        f"{layout.dead_letter} lacks the malformed record's original bytes: {values}"
    )
    record = next(r for r in records if r.value == MALFORMED)
    headers = {k: v.decode() for k, v in record.headers}
    code = headers.get("tickstream.error.code")
    assert code == "missing_field", f"the dead letter's reason is in its headers: {headers}"


# --- the reference's three queries (pymongo) ------------------------------------------------


def latest_price(db: Any, coin: str) -> float | None:
    doc = db[coin].find_one(sort=[("_id", pymongo.DESCENDING)])
    return None if doc is None else doc["price"]


def stats_of_last(db: Any, coin: str, n: int) -> dict[str, float]:
    prices = [d["price"] for d in db[coin].find().sort("_id", pymongo.DESCENDING).limit(n)]
    return {
        "min": min(prices),
        "max": max(prices),
        "avg": sum(prices) / len(prices),
        "count": len(prices),
    }


def jumps_in_last(
    db: Any, coin: str, n: int = 100, threshold_pct: float = JUMP_THRESHOLD_PCT
) -> list[tuple[float, float]]:
    prices = [d["price"] for d in db[coin].find().sort("_id", pymongo.DESCENDING).limit(n)][::-1]
    return [(a, b) for a, b in zip(prices, prices[1:]) if abs(b - a) / a * 100 > threshold_pct]


def assert_reference_queries(db: Any, layout: Layout, binance: FakeBinance) -> None:
    for symbol, coin in layout.prices.items():
        sent = binance.sent_prices(symbol) | ({PRODUCER_PRICE} if symbol == "BTCUSDT" else set())
        newest_by_ts = db[coin].find_one(sort=[("ts", pymongo.DESCENDING)])
        latest = latest_price(db, coin)
        assert latest in sent, f"fx.{coin}: the latest price {latest} was never sent"
        assert latest == newest_by_ts["price"], (
            f"fx.{coin}: sorting by _id (the reference's 'latest') gives {latest}, "
            f"the newest document by ts has {newest_by_ts['price']}"
        )
        stats = stats_of_last(db, coin, LAST_N)
        assert stats["count"] == LAST_N, f"fx.{coin}: {stats}"
        in_range = min(sent) <= stats["min"] <= stats["avg"] <= stats["max"] <= max(sent)
        assert in_range, f"fx.{coin}: the last {LAST_N} prices' stats are off: {stats}"
    btc = layout.prices["BTCUSDT"]
    jumps = jumps_in_last(db, btc)
    assert jumps, f"the reference's jump query finds no 2 % jump among fx.{btc}'s last 100 prices"
    stored = {
        (j["from"], j["to"]) for j in db[layout.analytics["jumps"]].find({"symbol": "BTCUSDT"})
    }
    missed = [j for j in jumps if j not in stored]
    assert not missed, (
        f"jumps the reference's query finds among fx.{btc}'s last 100 prices (by _id, i.e. event "
        f"time) that enrich never emitted: {missed}; fx.jumps has {sorted(stored)}. The "
        f"reference producer's keyless record ({PRODUCER_PRICE}) was not processed in "
        "timestamp order."
        if any(PRODUCER_PRICE in j for j in missed)
        else f"jumps the reference's query finds in fx.{btc} but fx.jumps lacks: {missed}"
    )


def wait_for_documents(db: Any, layout: Layout, check: Any) -> None:
    def filled() -> bool:
        return all(db[c].count_documents({}) >= LAST_N + 5 for c in layout.prices.values()) and all(
            db[c].count_documents({}) >= 1 for c in layout.analytics.values()
        )

    wait_until(
        filled,
        DATA_TIMEOUT,
        f"prices and analytics in MongoDB database {layout.database}",
        check=check,
    )


# --- the test --------------------------------------------------------------------------------


@pytest.fixture
def clean_seed_layout(settings: Settings, kafka: str, mongo: pymongo.MongoClient) -> Layout:
    layout = Layout.read(settings.root / "topologies/seed.toml")
    reset_kafka(kafka, layout.produced_topics(), layout.application_id)
    mongo.drop_database(layout.database)
    return layout


def test_reference_clients_read_and_query_the_seed_layout(
    settings: Settings,
    mongo: pymongo.MongoClient,
    processes: ProcessSet,
    clean_seed_layout: Layout,
    tmp_path: Path,
) -> None:
    layout = clean_seed_layout
    work = tmp_path / "work"  # the processors' cwd: no ./.env of the checkout is read
    work.mkdir()
    producer = ReferenceProducer(settings.brokers, layout.raw["BTCUSDT"])
    # The reference producer's price lands just before a tick of the fake's high phase, so in
    # event-time order it sits between two prices 3 % above it: two jumps, which the
    # reference's jump query (over fx.btc by _id) and enrich (fx.jumps) must both see.
    hooks = {PRODUCE_BEFORE_ANSWER: producer.send_price_and_malformed}
    try:
        with FakeBinance(before_answer=hooks) as binance:
            topology = seed_topology_for_test(
                settings.root / "topologies/seed.toml", tmp_path, binance.base_url
            )
            create_topics(settings, topology, layout, work)
            start_pipeline(settings, processes, topology, work)
            assert binance.hooks_run.wait(DATA_TIMEOUT), "the fake Binance was never asked enough"

            consumed = consume_everything(settings.brokers, layout)
            processes.assert_running()
            wait_for_documents(mongo[layout.database], layout, processes.assert_running)
            statuses = processes.stop_all()
    finally:
        producer.close()
    assert_stopped_cleanly(statuses, processes)
    assert binance.paths, "ingest never asked the fake Binance"

    assert_every_topic_readable(layout, consumed)
    assert_raw_records(layout, consumed, binance)
    assert_derived_records(layout, consumed, binance)
    assert_dead_letter(layout, consumed)
    assert_reference_queries(mongo[layout.database], layout, binance)


def test_reference_consumer_reads_a_busy_pipeline(
    settings: Settings,
    processes: ProcessSet,
    clean_seed_layout: Layout,
    tmp_path: Path,
) -> None:
    layout = clean_seed_layout
    work = tmp_path / "work"
    work.mkdir()
    topology = burst_topology_for_test(settings.root / "topologies/seed.toml", tmp_path)
    create_topics(settings, topology, layout, work)
    start_pipeline(settings, processes, topology, work, names=("ingest", "enrich"))

    deadline = time.monotonic() + DATA_TIMEOUT
    consumed = {}
    for topic in [*layout.raw.values(), *layout.derived.values()]:
        want = BURST_RECORDS if topic in layout.raw.values() else 1
        budget = max(deadline - time.monotonic(), 5.0)
        consumed[topic] = consume(settings.brokers, topic, lambda rs: len(rs) >= want, budget)
        if consumed[topic].error is None and len(consumed[topic].records) < want:
            processes.assert_running()
    statuses = processes.stop_all()
    assert_stopped_cleanly(statuses, processes)

    problems = [f"{t}: {c.error}" for t, c in consumed.items() if c.error is not None]
    problems += [
        f"{t}: only {len(c.records)} records within {DATA_TIMEOUT:g} s, expected {BURST_RECORDS}"
        for t, c in consumed.items()
        if c.error is None and t in layout.raw.values() and len(c.records) < BURST_RECORDS
    ]
    assert not problems, (
        "under load, a plain kafka-python consumer (the reference's; no lz4/snappy/zstd) "
        "cannot read what tickstream produces:\n  " + "\n  ".join(problems)
    )
    for topic, result in consumed.items():
        assert all(isinstance(v, dict) for v in result.values()), f"{topic}: not JSON objects"


TAPE = "tests/data/binance-btcusdt-trades-20240808T2354Z.csv"
TRADES = 5  # the tape's first trades, as a user's producer would write them
BAD_QTY = b'{"symbol": "BTCUSDT", "price": 61837.63, "qty": -0.02}'


def test_trades_with_a_quantity_are_stored_and_a_bad_quantity_is_dead_lettered(
    settings: Settings,
    mongo: pymongo.MongoClient,
    processes: ProcessSet,
    clean_seed_layout: Layout,
    tmp_path: Path,
) -> None:
    """Real recorded trades (tests/data), written by kafka-python with json.dumps and a `qty`,
    through the sink into MongoDB: pymongo reads each quantity back; a negative quantity goes
    to the dead-letter topic with its bytes and reason, read by a plain kafka-python consumer."""
    layout = clean_seed_layout
    work = tmp_path / "work"
    work.mkdir()
    topology = burst_topology_for_test(settings.root / "topologies/seed.toml", tmp_path)
    create_topics(settings, topology, layout, work)
    start_pipeline(settings, processes, topology, work, names=("sink",))

    lines = (settings.root / TAPE).read_text().splitlines()[1 : TRADES + 1]
    trades = [
        {"symbol": "BTCUSDT", "price": float(p), "ts": int(t), "qty": float(q)}
        for _, t, p, q in (line.split(",") for line in lines)
    ]
    producer = KafkaProducer(bootstrap_servers=settings.brokers.split(","))
    try:
        for trade in trades:
            producer.send(layout.raw["BTCUSDT"], json.dumps(trade).encode())
        producer.send(layout.raw["BTCUSDT"], BAD_QTY)
        producer.flush(timeout=30)
    finally:
        producer.close()

    collection = mongo[layout.database][layout.prices["BTCUSDT"]]
    wait_until(
        lambda: collection.count_documents({}) >= TRADES,
        DATA_TIMEOUT,
        f"{TRADES} trades in {layout.database}.{layout.prices['BTCUSDT']}",
        check=processes.assert_running,
    )
    dead = consume(
        settings.brokers,
        layout.dead_letter,
        lambda rs: any(r.value == BAD_QTY for r in rs),
        DATA_TIMEOUT,
    )
    statuses = processes.stop_all()
    assert_stopped_cleanly(statuses, processes)

    def epoch_ms(date: Any) -> int:
        # BSON dates come back as UTC datetimes (naive unless the client is tz-aware).
        return calendar.timegm(date.utctimetuple()) * 1000 + date.microsecond // 1000

    stored = sorted(
        (epoch_ms(d["ts"]), d["price"], d["qty"])
        for d in collection.find({}, {"_id": 0, "ts": 1, "price": 1, "qty": 1})
    )
    wanted = sorted((t["ts"], t["price"], t["qty"]) for t in trades)
    assert stored == wanted, stored
    assert dead.error is None, dead.error
    record = next((r for r in dead.records if r.value == BAD_QTY), None)
    assert record is not None, f"{layout.dead_letter} lacks the bad quantity's original bytes"
    headers = {k: v.decode() for k, v in record.headers}
    assert headers.get("tickstream.error.code") == "invalid_value", headers
