"""The web worker (`personalization.gunicorn_worker.ThreadWorker`) under a real gunicorn.

The application is a plain WSGI function that answers with its process id after waiting for a
while (`?ms=`), so that requests overlap; the clients are `http.client` connections kept alive
across requests, as a proxy's upstream pool keeps them.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import parse_qs

import pytest

from personalization.gunicorn_worker import rebalance_after, switch_interval_ms

ROOT = Path(__file__).resolve().parent.parent


def app(environ, start_response):
    """Waits `ms` milliseconds (the interpreter lock released, as on a database call), answers its pid."""
    query = parse_qs(environ.get("QUERY_STRING", ""))
    if "switch" in query:
        body = repr(sys.getswitchinterval()).encode()
    else:
        time.sleep(int(query.get("ms", ["0"])[0]) / 1000)
        body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    def __init__(self, *, workers: int, threads: int, after: int, env: dict | None = None):
        self.port = _free_port()
        env = {**os.environ, "GUNICORN_REBALANCE_AFTER": str(after), **(env or {})}
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "gunicorn", "tests.test_gunicorn_worker:app",
                "--worker-class", "personalization.gunicorn_worker.ThreadWorker",
                "--workers", str(workers), "--threads", str(threads), "--keep-alive", "30",
                "--bind", f"127.0.0.1:{self.port}", "--log-level", "warning",
            ],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        self.wait_for_pids(workers)

    def pids(self) -> set[int]:
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True).stdout
        return {int(pid) for pid in out.split()}

    def wait_for_pids(self, count: int) -> set[int]:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.proc.stderr.read().decode()
            pids = self.pids()
            if len(pids) == count and all(self.answers(pid) for pid in pids):
                return pids
            time.sleep(0.05)
        raise AssertionError(f"gunicorn did not run {count} workers")

    def answers(self, pid: int) -> bool:
        """The worker has booted: it has opened its listening socket's poller."""
        try:
            return any("eventpoll" in os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd"))
        except OSError:
            return False

    def connection(self) -> http.client.HTTPConnection:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        conn.connect()
        return conn

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def gunicorn():
    started: list[Server] = []

    def start(**kwargs) -> Server:
        server = Server(**kwargs)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def ask(conn: http.client.HTTPConnection, ms: int) -> tuple[int, bool]:
    """One request on a kept-alive connection: (pid that answered, whether it said Connection: close).
    After a close, http.client opens a new connection for the next request."""
    conn.request("GET", f"/?ms={ms}")
    answer = conn.getresponse()
    pid = int(answer.read())
    assert answer.status == 200
    return pid, (answer.getheader("Connection") or "").lower() == "close"


def drive(conns: list[http.client.HTTPConnection], requests: int, ms: int) -> list[list[tuple[int, bool]]]:
    """Each connection sends `requests` requests, one after another, all connections at once."""
    out: list[list[tuple[int, bool]]] = [[] for _ in conns]

    def client(index: int) -> None:
        for _ in range(requests):
            out[index].append(ask(conns[index], ms))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(conns))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert all(len(answers) == requests for answers in out)
    return out


def test_a_worker_with_threads_to_spare_keeps_its_connections(gunicorn):
    server = gunicorn(workers=1, threads=2, after=3)
    conns = [server.connection() for _ in range(2)]
    answers = drive(conns, requests=10, ms=20)
    assert not any(closed for one in answers for _, closed in one)


def test_a_busy_worker_closes_connections_that_carried_enough(gunicorn):
    server = gunicorn(workers=1, threads=1, after=3)
    conns = [server.connection() for _ in range(3)]
    answers = drive(conns, requests=8, ms=20)
    for one in answers:
        closed_at = [i for i, (_, closed) in enumerate(one) if closed]
        assert closed_at, "three connections on one thread: each is handed back"
        assert closed_at[0] >= 2, "not before it carried 3 requests"


def test_off_never_closes(gunicorn):
    server = gunicorn(workers=1, threads=1, after=0)
    answers = drive([server.connection() for _ in range(3)], requests=8, ms=20)
    assert not any(closed for one in answers for _, closed in one)


@pytest.mark.parametrize("after", [5, 0])
def test_connections_move_to_a_worker_with_room(gunicorn, after):
    """Four connections opened while one worker runs; a second worker starts (SIGTTIN). With the bound,
    the busy first worker hands connections back and they reach the new one; without it, they never do."""
    server = gunicorn(workers=1, threads=2, after=after)
    (first,) = server.pids()
    conns = [server.connection() for _ in range(4)]
    assert {ask(conn, 0)[0] for conn in conns} == {first}
    server.proc.send_signal(signal.SIGTTIN)
    (second,) = server.wait_for_pids(2) - {first}
    answers = drive(conns, requests=40, ms=10)
    late = [pid for one in answers for pid, _ in one[-20:]]
    if after:
        assert late.count(second) >= 8, f"the new worker answered {late.count(second)} of the last 80"
    else:
        assert set(late) == {first}


def test_the_bound_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv("GUNICORN_REBALANCE_AFTER", raising=False)
    assert rebalance_after() == 20
    monkeypatch.setenv("GUNICORN_REBALANCE_AFTER", "0")
    assert rebalance_after() == 0
    monkeypatch.setenv("GUNICORN_REBALANCE_AFTER", "-1")
    with pytest.raises(ValueError, match="GUNICORN_REBALANCE_AFTER"):
        rebalance_after()


@pytest.mark.parametrize(("setting", "interval"), [(None, 0.001), ("2.5", 0.0025)])
def test_request_threads_switch_every_millisecond(gunicorn, setting, interval):
    server = gunicorn(workers=1, threads=2, after=20, env={"GUNICORN_SWITCH_INTERVAL_MS": setting or ""})
    conn = server.connection()
    conn.request("GET", "/?switch=1")
    assert float(conn.getresponse().read()) == pytest.approx(interval)


def test_the_switch_interval_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv("GUNICORN_SWITCH_INTERVAL_MS", raising=False)
    assert switch_interval_ms() == 1.0
    monkeypatch.setenv("GUNICORN_SWITCH_INTERVAL_MS", "0.5")
    assert switch_interval_ms() == 0.5
    for bad in ("0", "-1"):
        monkeypatch.setenv("GUNICORN_SWITCH_INTERVAL_MS", bad)
        with pytest.raises(ValueError, match="GUNICORN_SWITCH_INTERVAL_MS"):
            switch_interval_ms()


def test_the_container_config_selects_it(monkeypatch):
    import runpy

    monkeypatch.delenv("GUNICORN_THREADS", raising=False)
    conf = runpy.run_path(str(ROOT / "docker" / "gunicorn.conf.py"))
    assert conf["worker_class"] == "personalization.gunicorn_worker.ThreadWorker"
    monkeypatch.setenv("GUNICORN_THREADS", "1")
    assert "worker_class" not in runpy.run_path(str(ROOT / "docker" / "gunicorn.conf.py"))
