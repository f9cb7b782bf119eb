"""Candles against pandas: a real Binance trade tape (tests/data), written by kafka-python the way
a user's producer would, through the real `tickstream enrich` on the real broker; every candle
read back by a plain kafka-python consumer equals what pandas computes from the same trades with
`resample(interval, closed="left", label="left")` — open, high, low, close, count, Σ qty and
Σ price·qty / Σ qty, to 1e-9 — for intervals with trades only, each candle once. The last
candles close on idle (the tape ends), so the test also waits for those. The moving averages of
the default 20-trade window carry the VWAP pandas' `rolling(20)` gives, and the event times of
the window's first and last trade.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import pandas as pd
from kafka import KafkaProducer

from support import (
    ProcessSet,
    Settings,
    assert_stopped_cleanly,
    base_env,
    consume,
    free_port,
    http_status,
    wait_until,
)

TAPE = "tests/data/binance-btcusdt-trades-20240808T2354Z.csv"
INTERVALS = {"1s": "1s", "10s": "10s", "1m": "1min"}  # tickstream label -> pandas rule
TIMEOUT = 120.0


def topology(path: Path, name: str) -> Path:
    candles = "".join(
        f'[[candles]]\ninterval = "{label}"\ngrace = "0s"\nclose_idle_after = "2s"\n'
        for label in INTERVALS
    )
    path.write_text(
        f"""application_id = "{name}"
symbols = ["BTCUSDT"]
[topics]
raw = "{name}.raw"
moving_average = "{name}.ma"
volatility = "{name}.vol"
jumps = "{name}.jumps"
candles = "{name}.candles"
dead_letter = "{name}.dlq"
partitions = 1
{candles}
[processing]
state_dir = "state"
"""
    )
    return path


def pandas_candles(trades: pd.DataFrame) -> pd.DataFrame:
    """Every interval's candles as pandas computes them, intervals with trades only."""
    frames = []
    for label, rule in INTERVALS.items():
        resampled = trades.resample(rule, closed="left", label="left")
        frame = pd.DataFrame(
            {
                "open": resampled["price"].first(),
                "high": resampled["price"].max(),
                "low": resampled["price"].min(),
                "close": resampled["price"].last(),
                "trades": resampled["price"].count(),
                "volume": resampled["qty"].sum(),
                "notional": resampled["notional"].sum(),
            }
        )
        frame = frame[frame["trades"] > 0]
        frame["vwap"] = frame["notional"] / frame["volume"]
        frame["interval"] = label
        frame["start"] = frame.index.astype("int64") // 1_000_000
        frames.append(frame.reset_index(drop=True))
    return pd.concat(frames, ignore_index=True)


def test_candles_of_a_real_tape_equal_pandas_resample(
    settings: Settings, kafka: str, processes: ProcessSet, tmp_path: Path
) -> None:
    name = f"compat-candles-{uuid.uuid4().hex[:8]}"
    work = tmp_path / "work"
    work.mkdir()
    path = topology(tmp_path / "candles.toml", name)
    env = {**base_env(work), "TICKSTREAM_KAFKA_BROKERS": settings.brokers, "RUST_LOG": "info"}
    created = subprocess.run(
        [str(settings.binary), "topics", "create", "--topology", str(path)],
        env=env, cwd=work, capture_output=True, text=True, timeout=60,
    )
    assert created.returncode == 0, created.stdout + created.stderr

    tape = pd.read_csv(settings.root / TAPE)
    producer = KafkaProducer(bootstrap_servers=settings.brokers.split(","))
    try:
        for row in tape.itertuples():
            trade = {"symbol": "BTCUSDT", "price": row.price, "ts": row.time_ms, "qty": row.qty}
            producer.send(f"{name}.raw", json.dumps(trade).encode(), key=b"BTCUSDT")
        producer.flush(timeout=60)
    finally:
        producer.close()

    trades = pd.DataFrame(
        {
            "price": tape["price"].to_numpy(),
            "qty": tape["qty"].to_numpy(),
            "notional": (tape["price"] * tape["qty"]).to_numpy(),
        },
        index=pd.to_datetime(tape["time_ms"], unit="ms"),
    )
    want = pandas_candles(trades)
    assert len(want) > 700, f"{len(want)} candles: the tape spans ~11 minutes"

    address = f"127.0.0.1:{free_port()}"
    argv = [str(settings.binary), "enrich", "--topology", str(path), "--metrics-addr", address]
    processes.start("enrich", argv, env=env, cwd=work)
    wait_until(
        lambda: http_status(f"http://{address}/readyz") == 200,
        60,
        "enrich ready",
        check=processes.assert_running,
    )
    got = consume(settings.brokers, f"{name}.candles", lambda rs: len(rs) >= len(want), TIMEOUT)
    assert got.error is None, got.error
    rolling = len(tape) - 19  # a moving average per trade once the 20-trade window is full
    averages = consume(settings.brokers, f"{name}.ma", lambda rs: len(rs) >= rolling, TIMEOUT)
    assert averages.error is None, averages.error
    statuses = processes.stop_all()
    assert_stopped_cleanly(statuses, processes)

    candles = pd.DataFrame(got.values())
    assert len(candles) == len(want), f"{len(candles)} candles, pandas has {len(want)}"
    assert not candles.duplicated(["interval", "start"]).any(), "each candle once"
    merged = want.merge(candles, on=["interval", "start"], suffixes=("_pandas", ""))
    assert len(merged) == len(want), "the same intervals and starts as pandas"
    assert (merged["trades"] == merged["trades_pandas"]).all()
    for field in ("open", "high", "low", "close", "volume", "vwap"):
        expected, actual = merged[f"{field}_pandas"], merged[field]
        error = ((actual - expected).abs() / expected.abs()).max()
        assert error <= 1e-9, f"{field}: relative error {error:.3g}"
    # The 20-trade window's VWAP and bounds, trade by trade, against pandas' rolling sums.
    ma = pd.DataFrame(averages.values())
    assert len(ma) == rolling, f"{len(ma)} moving averages, {rolling} full windows"
    window = pd.DataFrame(
        {
            "vwap": tape["price"].mul(tape["qty"]).rolling(20).sum() / tape["qty"].rolling(20).sum(),
            "first_ts": tape["time_ms"].shift(19),
            "last_ts": tape["time_ms"],
        }
    ).iloc[19:]
    expected_vwap = window["vwap"].to_numpy()
    error = (abs(ma["vwap"].to_numpy() - expected_vwap) / expected_vwap).max()
    assert error <= 1e-9, f"vwap: relative error {error:.3g}"
    assert (ma["first_ts"].to_numpy() == window["first_ts"].to_numpy()).all()
    assert (ma["last_ts"].to_numpy() == window["last_ts"].to_numpy()).all()
    # Bounds: every candle covers [start, start + interval) and its trades' times within it.
    lengths = {"1s": 1_000, "10s": 10_000, "1m": 60_000}
    assert (candles["end"] - candles["start"] == candles["interval"].map(lengths)).all()
    assert (candles["first_ts"] >= candles["start"]).all()
    assert (candles["last_ts"] < candles["end"]).all()
