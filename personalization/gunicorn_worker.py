"""Gunicorn's threaded worker, which hands kept-alive connections back when it has more than it can serve.

A gunicorn worker process keeps each connection it accepted until the client closes it. A client
that holds a few keep-alive connections (a reverse proxy's upstream pool, a site's server-side
renderer with a keep-alive agent, a load generator) finds them spread over the worker processes
by the accept race at connect time, and for good: eight connections over two workers often split
7/1 or 8/0, and then one process queues requests while the other idles.

This worker counts the requests it holds (running or waiting for a thread). When a request finds
more of them than the worker has threads, it is answered with `Connection: close`, so the
client's next request comes on a new connection. That connection goes to the worker whose main
thread accepts first: one with threads to spare is idle in its poll, while a busy one's main
thread waits for the interpreter lock, so connections move to where there is room. Once every
worker holds what it can serve, nothing more is closed.

A connection is handed back only after it has carried GUNICORN_REBALANCE_AFTER requests (default
20; 0 turns this off), so that on a server where every worker is busy, new connections cost at
most one request in that many.

The worker also shortens the interpreter's switch interval (GUNICORN_SWITCH_INTERVAL_MS, default
1 ms; Python's is 5 ms). A request thread whose database or Redis answer has arrived waits for
the interpreter lock until the thread holding it lets go, and a thread busy in Python lets go
only after the switch interval: a recompute-on-read makes several such round trips, and with
5 ms each its latency tail grew to 50-200 ms in the serving benchmark (26-35 ms with 1 ms).
"""

from __future__ import annotations

import os
import sys

from gunicorn.workers.gthread import ThreadWorker as GunicornThreadWorker

DEFAULT_REBALANCE_AFTER = 20
DEFAULT_SWITCH_INTERVAL_MS = 1.0


def _setting(name: str, default, cast, valid, rule: str):
    """A number from the environment, `default` when unset; ValueError naming it when not `valid`."""
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    number = cast(value)
    if not valid(number):
        raise ValueError(f"{name} must be {rule}, not {value}")
    return number


def rebalance_after() -> int:
    """GUNICORN_REBALANCE_AFTER from the environment, DEFAULT_REBALANCE_AFTER when unset."""
    return _setting("GUNICORN_REBALANCE_AFTER", DEFAULT_REBALANCE_AFTER, int, lambda n: n >= 0, "0 (off) or more")


def switch_interval_ms() -> float:
    """GUNICORN_SWITCH_INTERVAL_MS from the environment, DEFAULT_SWITCH_INTERVAL_MS when unset."""
    return _setting("GUNICORN_SWITCH_INTERVAL_MS", DEFAULT_SWITCH_INTERVAL_MS, float, lambda n: n > 0, "more than 0")


class ThreadWorker(GunicornThreadWorker):
    """gunicorn's `gthread` worker; closes a kept-alive connection when it holds more requests than threads."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.held = 0  # requests submitted to the thread pool and not finished (main thread only)

    def init_process(self):
        self.rebalance_after = rebalance_after()
        sys.setswitchinterval(switch_interval_ms() / 1000)
        super().init_process()

    def enqueue_req(self, conn):
        self.held += 1
        super().enqueue_req(conn)

    def finish_request(self, conn, fs):
        self.held -= 1
        super().finish_request(conn, fs)

    def handle_request(self, req, conn):
        if self.rebalance_after:
            carried = getattr(conn, "carried", 0) + 1
            conn.carried = carried
            if carried >= self.rebalance_after and self.held > self.cfg.threads:
                # Answered with "Connection: close", then closed: gunicorn's own path for a
                # client that asked to close.
                req.must_close = True
        return super().handle_request(req, conn)
