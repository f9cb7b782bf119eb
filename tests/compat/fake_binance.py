"""A tiny stand-in for Binance's REST API: `GET /api/v3/ticker/price?symbols=[...]` answered
like Binance does (a JSON list of `{"symbol", "price"}` with the price as a string, and the
`X-MBX-USED-WEIGHT-1M` header), with prices that move on every request and jump by 3 % every
fifth request, so jump events (above the 2 % threshold) are certain.
"""

from __future__ import annotations

import json
import threading
from collections import defaultdict
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

BASE_PRICES = {"BTCUSDT": 67250.0, "ETHUSDT": 3100.25, "SOLUSDT": 150.125}
JUMP_EVERY = 5  # requests between 3 % jumps (up, then back down)
JUMP_FACTOR = 1.03
WEIGHT_PER_REQUEST = 4  # Binance's weight of ticker/price with `symbols`


def price_text(symbol: str, request: int) -> str:
    """The price of `symbol` in answer number `request` (0-based), as Binance writes it."""
    base = BASE_PRICES.get(symbol, 100.0)
    level = JUMP_FACTOR if (request // JUMP_EVERY) % 2 else 1.0
    return f"{base * level * (1 + 0.0001 * (request % JUMP_EVERY)):.8f}"


class FakeBinance:
    """Serves on 127.0.0.1 (a free port) from a thread; `with FakeBinance() as binance:`.
    `before_answer` maps an answer number to something to do (once) just before sending it:
    a test can place an event between two ticks."""

    def __init__(self, before_answer: Mapping[int, Callable[[], None]] | None = None) -> None:
        self._before_answer = dict(before_answer or {})
        self.hooks_run = threading.Event() if self._before_answer else None
        self._lock = threading.Lock()
        self.requests = 0
        self.paths: list[str] = []
        self.sent: dict[str, list[float]] = defaultdict(list)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def sent_prices(self, symbol: str) -> set[float]:
        with self._lock:
            return set(self.sent[symbol])

    def __enter__(self) -> FakeBinance:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def _answer(self, path: str) -> tuple[int, dict[str, str], bytes]:
        url = urlsplit(path)
        if url.path != "/api/v3/ticker/price" or "symbols" not in parse_qs(url.query):
            body = {
                "code": -1100,
                "msg": f"the fake Binance only answers ticker/price?symbols=, not {path}",
            }
            return 400, {}, json.dumps(body).encode()
        symbols = json.loads(parse_qs(url.query)["symbols"][0])
        with self._lock:
            n = self.requests
            self.requests += 1
            self.paths.append(path)
            answer = [{"symbol": s, "price": price_text(s, n)} for s in symbols]
            for entry in answer:
                self.sent[entry["symbol"]].append(float(entry["price"]))
            hook = self._before_answer.pop(n, None)
            if hook is not None:
                hook()
                if not self._before_answer:
                    self.hooks_run.set()
        headers = {"X-MBX-USED-WEIGHT-1M": str(min(WEIGHT_PER_REQUEST * (n + 1), 1000))}
        return 200, headers, json.dumps(answer, separators=(",", ":")).encode()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                status, headers, body = fake._answer(self.path)
                self.send_response(status)
                self.send_header("Content-Type", "application/json;charset=UTF-8")
                self.send_header("Content-Length", str(len(body)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: object) -> None:
                pass  # quiet: the test reports what matters

        return Handler
