"""Ingestion benchmark: how fast events are stored, against the floor of the same stack storing nothing.

    .venv/bin/python bench/ingest.py            # full run (~2 minutes)
    .venv/bin/python bench/ingest.py --quick    # smoke run (~15-25 seconds)
    .venv/bin/python bench/ingest.py --profile  # full run, then where the time goes (py-spy, ~3 minutes)

Creates a fresh Postgres database `personalization_bench`, migrates it, creates a source, starts
gunicorn on a free 127.0.0.1 port and drives it with wrk (Lua scripts in bench/wrk/) in three
phases, each after a warm-up and each bounded by a request budget and a time limit:

  floor   POST /bench/floor   same DRF view stack, body parsing and key check; stores nothing
  single  POST /v1/track      one Segment track call per request
  batch   POST /v1/batch      100 calls per request

Then it checks that every event answered 2xx is in Postgres exactly once, and prints the figures
next to the goals. Exits 1 if that check fails (missed performance goals do not fail the run),
2 if the benchmark could not run. See bench/README.md.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WRK_DIR = ROOT / "bench" / "wrk"
HOST = "127.0.0.1"
DB_NAME = "personalization_bench"
ADMIN_DSN = "postgres://postgres@127.0.0.1:5432/postgres"
DATABASE_URL = f"postgres://postgres@127.0.0.1:5432/{DB_NAME}"
REDIS_URL = "redis://127.0.0.1:6379/14"
VISITOR_POOL = 5_000
POOL_ID = "6f1d2c3b-0000-4000-8000-"  # anonymous ids of the pool (bench/wrk/event.lua)
BATCH_SIZE = 100

GOAL_SINGLE_VS_FLOOR = 0.50
GOAL_SINGLE_P99_MS = 50.0
GOAL_BATCH_EVENTS_PER_S = 20_000


# ---- plans ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Budget:
    """A phase stops at whichever comes first: `requests` sent (all threads) or `seconds` elapsed."""

    requests: int
    seconds: float


@dataclass(frozen=True)
class Plan:
    name: str
    floor: Budget
    single: Budget
    batch: Budget
    warm_floor: Budget
    warm_single: Budget
    warm_batch: Budget
    profile_seconds: float


FULL = Plan(
    name="full",
    floor=Budget(40_000, 15),
    single=Budget(20_000, 20),
    batch=Budget(1_000, 20),
    warm_floor=Budget(1_000, 3),
    warm_single=Budget(500, 3),
    warm_batch=Budget(16, 3),
    profile_seconds=15,
)
QUICK = Plan(
    name="quick",
    floor=Budget(4_000, 2),
    single=Budget(1_000, 2),
    batch=Budget(40, 1.5),
    warm_floor=Budget(200, 0.5),
    warm_single=Budget(100, 0.5),
    warm_batch=Budget(8, 0.5),
    profile_seconds=5,
)


@dataclass(frozen=True)
class Server:
    """One gunicorn configuration; the same one serves every phase of a run.

    The default won against sync workers (5) and gthread 3×4 on this 2-core machine: keep-alive
    spares a TCP handshake per request and a worker is not pinned by an idle connection."""

    worker_class: str = "gthread"
    workers: int = 2 * (os.cpu_count() or 1) + 1
    threads: int = 2

    def argv(self, gunicorn: str, port: int, app: str = "personalization.wsgi") -> list[str]:
        argv = [
            gunicorn,
            app,
            "--bind",
            f"{HOST}:{port}",
            "--workers",
            str(self.workers),
            "--worker-class",
            self.worker_class,
            "--timeout",
            "60",
            "--graceful-timeout",
            "5",
            "--backlog",
            "2048",
            "--log-level",
            "warning",
        ]
        if self.worker_class == "gthread":
            argv += ["--threads", str(self.threads)]
        return argv

    def describe(self) -> str:
        threads = f" --threads {self.threads}" if self.worker_class == "gthread" else ""
        return f"gunicorn personalization.wsgi --workers {self.workers} --worker-class {self.worker_class}{threads}"


# ---- results -------------------------------------------------------------------------------------


@dataclass
class PhaseResult:
    name: str
    label: str
    prefix: str
    stores: bool
    events_per_request: int
    data: dict = field(default_factory=dict)
    ended_by: str = ""

    def __getitem__(self, key):
        return self.data[key]

    @property
    def elapsed(self) -> float:
        return self.data["elapsed_s"] or 1e-9

    @property
    def req_per_s(self) -> float:
        return self.data["answered"] / self.elapsed

    @property
    def events_per_s(self) -> float:
        return self.data["ok_events"] / self.elapsed

    @property
    def in_flight(self) -> int:
        """Real requests sent but never answered (connection failed, or the hard cap hit)."""
        return max(0, self.data["sent"] - self.data["answered"])


class BenchError(Exception):
    """The benchmark could not run (not a failed check)."""


# ---- processes -----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def bench_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DATABASE_URL=DATABASE_URL,
        REDIS_URL=REDIS_URL,
        BENCH_FLOOR_ENABLED="true",
        DEBUG="false",
        LOG_LEVEL="WARNING",
        DJANGO_SETTINGS_MODULE="personalization.settings",
        OPENBLAS_NUM_THREADS="1",
        PYTHONUNBUFFERED="1",
    )
    return env


def stop_process(proc: subprocess.Popen | None, *, sig: int = signal.SIGTERM, grace: float = 15.0) -> None:
    """Stop a process we started in its own session: `sig` to it, then SIGKILL to its group."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(sig)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


def venv_tool(name: str) -> str:
    for candidate in (Path(sys.executable).parent / name, ROOT / ".venv" / "bin" / name):
        if candidate.exists():
            return str(candidate)
    found = shutil.which(name)
    if not found:
        raise BenchError(f"{name} not found (install it into .venv)")
    return found


def manage(*args: str, timeout: float = 300) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=bench_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if done.returncode != 0:
        raise BenchError(f"manage.py {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


# ---- database ------------------------------------------------------------------------------------


def psycopg():
    try:
        import psycopg2
    except ImportError:
        raise BenchError("psycopg2 is missing: run with the project's .venv/bin/python") from None
    return psycopg2


def database_create() -> None:
    conn = psycopg().connect(ADMIN_DSN, connect_timeout=5)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
            cur.execute(f"CREATE DATABASE {DB_NAME}")
    finally:
        conn.close()


def redis_flush() -> None:
    try:
        import redis
    except ImportError:
        return
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=5)
    client.flushdb()
    client.close()


def stored_counts() -> dict:
    conn = psycopg().connect(DATABASE_URL, connect_timeout=5)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*), count(DISTINCT message_id), count(DISTINCT profile_id) FROM tracking_event")
            total, distinct, profiles_used = cur.fetchone()
            cur.execute("SELECT split_part(message_id, ':', 1), count(*) FROM tracking_event GROUP BY 1")
            by_prefix = dict(cur.fetchall())
            cur.execute("SELECT count(*), coalesce(sum(event_count), 0) FROM tracking_profile")
            profiles, profile_events = cur.fetchone()
            cur.execute("SELECT coalesce(sum(count), 0) FROM tracking_profileeventstat")
            (stat_events,) = cur.fetchone()
            cur.execute(
                "SELECT count(*) FROM tracking_identity WHERE kind = 'anonymous' AND value LIKE %s", [POOL_ID + "%"]
            )
            (anonymous_ids,) = cur.fetchone()
            cur.execute("SELECT count(*) FROM tracking_profilemerge")
            (merges,) = cur.fetchone()
            cur.execute(
                "SELECT deadlocks, xact_commit, xact_rollback FROM pg_stat_database WHERE datname = %s", [DB_NAME]
            )
            deadlocks, commits, rollbacks = cur.fetchone()
    finally:
        conn.close()
    return {
        "total": total,
        "distinct": distinct,
        "by_prefix": by_prefix,
        "profiles": profiles,
        "profiles_used": profiles_used,
        "profile_events": int(profile_events),
        "stat_events": int(stat_events),
        "anonymous_ids": anonymous_ids,
        "merges": merges,
        "deadlocks": deadlocks,
        "commits": commits,
        "rollbacks": rollbacks,
    }


# ---- gunicorn ------------------------------------------------------------------------------------


class GunicornServer:
    def __init__(self, config: Server, workdir: Path, *, app: str = "personalization.wsgi", extra_env=None):
        self.config = config
        self.port = free_port()
        self.error_log = workdir / f"gunicorn-{self.port}.log"
        self.app = app
        self.extra_env = extra_env or {}
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> None:
        argv = self.config.argv(venv_tool("gunicorn"), self.port, app=self.app)
        with self.error_log.open("ab") as log:  # gunicorn's and Django's logs (WARNING and up)
            self.proc = subprocess.Popen(
                argv,
                cwd=ROOT,
                env={**bench_env(), **self.extra_env},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"gunicorn exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        raise BenchError(f"gunicorn did not answer /healthz within 60 s:\n{self.log_tail()}")

    def stop(self) -> None:
        stop_process(self.proc)

    def log_count(self, text: str) -> int:
        try:
            return self.error_log.read_text(errors="replace").count(text)
        except OSError:
            return 0

    def exceptions(self) -> Counter:
        """Exception lines of the tracebacks the server logged, e.g. `...OperationalError: deadlock detected`."""
        try:
            text = self.error_log.read_text(errors="replace")
        except OSError:
            return Counter()
        return Counter(re.findall(r"^([\w.]+(?:Error|Exception|Exit|Interrupt)\w*: .{0,120})$", text, re.MULTILINE))

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.error_log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no gunicorn log)"


# ---- wrk -----------------------------------------------------------------------------------------


def wrk_phase(
    *,
    server: GunicornServer,
    script: str,
    name: str,
    label: str,
    prefix: str,
    budget: Budget,
    write_key: str,
    connections: int,
    workdir: Path,
    stores: bool = True,
    events_per_request: int = 1,
    verbose: bool = False,
    fresh: bool = False,
    rate: float = 0.0,
) -> PhaseResult:
    """Run one wrk phase to its budget or soft deadline; SIGINT wrk once every thread is done.

    One connection per wrk thread, so that each thread pairs its answers with its requests.
    `rate`: requests per second over all connections, on a schedule (0: each connection sends
    again as soon as it is answered)."""
    threads = connections
    per_thread = max(1, -(-budget.requests // threads))
    hard = int(budget.seconds + 15)
    marker = workdir / f"{prefix}.done-"
    auth = base64.b64encode(f"{write_key}:".encode()).decode()
    argv = [
        "wrk",
        "-t",
        str(threads),
        "-c",
        str(connections),
        "-d",
        f"{hard}s",
        "--timeout",
        "2s",  # only wrk's own histogram (sized by it) and its "timeout" count; latencies are measured in Lua
        "--latency",
        "-s",
        str(WRK_DIR / script),
        "-H",
        f"Authorization: Basic {auth}",
        "-H",
        "Content-Type: application/json",
        server.url + "/",
        "--",
        f"budget={per_thread}",
        f"soft={budget.seconds}",
        f"prefix={prefix}",
        f"marker={marker}",
        f"pool={VISITOR_POOL}",
        f"batch={BATCH_SIZE}",
        f"fresh={int(fresh)}",
        f"rate={rate / threads:.6f}",
    ]
    out_path = workdir / f"{prefix}.wrk.txt"
    with out_path.open("w") as out:
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        ended_by = "hard cap (-d)"
        try:
            while True:
                if proc.poll() is not None:
                    break
                if all((workdir / f"{marker.name}{i}").exists() for i in range(1, threads + 1)):
                    ended_by = "budget"
                    proc.send_signal(signal.SIGINT)
                    break
                time.sleep(0.05)
            proc.wait(timeout=hard + 30)
        finally:
            stop_process(proc, sig=signal.SIGINT, grace=10)
    text = out_path.read_text(errors="replace")
    if verbose:
        print(text)
    line = next((ln for ln in text.splitlines() if ln.startswith("PZBENCH ")), None)
    if line is None:
        raise BenchError(f"wrk ({name}) printed no summary:\n{text}")
    data = json.loads(line[len("PZBENCH ") :])
    result = PhaseResult(name, label, prefix, stores, events_per_request, data)
    if ended_by == "budget":
        ended_by = "request budget" if data["sent"] >= per_thread * threads else "time limit"
    result.ended_by = ended_by
    return result


# ---- profiling -----------------------------------------------------------------------------------

FRAME = re.compile(r"^(?P<func>.+?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")

# Leaf frames that mean "waiting on Postgres" (psycopg2 is C, so its callers are the leaves).
DB_LEAVES = {
    ("_execute", "django/db/backends/utils.py"),
    ("_execute_with_wrappers", "django/db/backends/utils.py"),
    ("execute", "django/db/backends/utils.py"),
    ("_commit", "django/db/backends/base/base.py"),
    ("is_usable", "django/db/backends/postgresql/base.py"),
    ("get_new_connection", "django/db/backends/postgresql/base.py"),
}
# Request handling, as opposed to a worker waiting for a connection.
REQUEST_FRAMES = {("handle", "gunicorn/workers/sync.py"), ("handle", "gunicorn/workers/gthread.py")}


def _frame(text: str) -> tuple[str, str, str]:
    """(function, file, qualified name) of a py-spy frame such as `SyncWorker.handle (gunicorn/workers/sync.py:141)`."""
    match = FRAME.match(text)
    if not match:
        return text, "", text
    qualified, file = match["func"], _short(match["file"])
    return qualified.rsplit(".", 1)[-1], file, qualified


def _short(file: str) -> str:
    for marker in ("site-packages/", str(ROOT) + "/", "/lib/python3.11/", "/lib/python3/"):
        if marker in file:
            return file.split(marker, 1)[1].lstrip("/")
    return file


_PROJECT_FILES: dict[str, bool] = {}


def _is_project(file: str) -> bool:
    if file not in _PROJECT_FILES:
        _PROJECT_FILES[file] = bool(file) and not file.startswith("/") and (ROOT / file).is_file()
    return _PROJECT_FILES[file]


def profile_report(raw_path: Path, title: str, top: int = 15) -> str:
    """Where the time goes, from py-spy raw (collapsed) stacks of request handling.

    Steps: each sample goes to its deepest project frame and the call that frame was making (so
    `_aggregates_apply -> QuerySet.bulk_update` is the ORM work of that one call, database wait
    included). Then the leaves (self time) and project functions by inclusive time."""
    samples: list[tuple[list[tuple[str, str, str]], int]] = []
    idle = 0
    for line in raw_path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [_frame(f) for f in stack.split(";") if not f.startswith("process ")]
        if not any((func, file) in REQUEST_FRAMES for func, file, _ in frames):
            idle += int(count)  # waiting for a connection, or the arbiter
            continue
        samples.append((frames, int(count)))
    total = sum(count for _, count in samples)
    lines = [
        f"{title}: {total:,} samples inside request handling, {idle:,} idle samples left out "
        f"(py-spy, wall clock: waiting on Postgres included)"
    ]
    if not total:
        return "\n".join([*lines, "  (no samples: did the load reach the profiled workers?)"])
    steps: Counter = Counter()
    steps_db: Counter = Counter()
    self_time: Counter = Counter()
    inclusive: Counter = Counter()
    db_total = 0
    for frames, count in samples:
        leaf_func, leaf_file, leaf_name = frames[-1]
        is_db = (leaf_func, leaf_file) in DB_LEAVES
        deepest = max((i for i, (_, file, _) in enumerate(frames) if _is_project(file)), default=None)
        if deepest is None:
            request_at = next(i for i, (f, file, _) in enumerate(frames) if (f, file) in REQUEST_FRAMES)
            step = "gunicorn: " + (frames[request_at + 1][2] if request_at + 1 < len(frames) else "handle")
        else:
            below = [name for _, _, name in frames[deepest + 1 :] if not name.endswith("manager_method")]
            callee = below[0] if below else "(own code)"
            step = f"{frames[deepest][2]} -> {callee}"
        steps[step] += count
        self_time[f"{leaf_name} ({leaf_file})"] += count
        if is_db:
            steps_db[step] += count
            db_total += count
        seen = set()
        for _, file, qualified in frames:
            key = f"{qualified} ({file})"
            if key not in seen and _is_project(file):
                seen.add(key)
                inclusive[key] += count

    def pct(n: int) -> str:
        return f"{100.0 * n / total:5.1f}%"

    lines.append(f"  waiting on Postgres (leaf in cursor.execute, commit, connection check): {pct(db_total)}")
    heading = "where the time goes (deepest project frame -> the call it makes)"
    lines.append(f"  {heading:<78} {'share':>6}  {'in DB':>6}")
    for step, count in steps.most_common(top + 5):
        lines.append(f"    {step[:76]:<76} {pct(count)}  {pct(steps_db[step])}")
    lines.append(f"  top {top} functions by self time (leaf frame)")
    for key, count in self_time.most_common(top):
        lines.append(f"    {pct(count)}  {key}")
    lines.append(f"  top {top} project functions by total time (inclusive)")
    for key, count in inclusive.most_common(top):
        lines.append(f"    {pct(count)}  {key}")
    return "\n".join(lines)


def pyspy_record(pid: int, seconds: float, out: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [
            venv_tool("py-spy"),
            "record",
            "--pid",
            str(pid),
            "--subprocesses",
            "--idle",
            "--nonblocking",
            "--rate",
            "100",
            "--duration",
            str(int(seconds)),
            "--format",
            "raw",
            "--output",
            str(out),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


# cProfile fallback: gunicorn loads `bench.ingest:profiled_application()` instead of the plain app.
def profiled_application():
    import cProfile

    from personalization.wsgi import application

    profiler = cProfile.Profile()
    out = os.environ["PZ_BENCH_CPROFILE"] + f".{os.getpid()}"
    state = {"last": time.monotonic()}

    def app(environ, start_response):
        profiler.enable()
        try:
            return list(application(environ, start_response))
        finally:
            profiler.disable()
            if time.monotonic() - state["last"] > 1.0:
                profiler.dump_stats(out)
                state["last"] = time.monotonic()

    return app


def cprofile_report(paths: list[Path], title: str, top: int = 20) -> str:
    import io
    import pstats

    existing = [str(p) for p in paths if p.exists()]
    if not existing:
        return f"{title}: no cProfile output"
    buffer = io.StringIO()
    stats = pstats.Stats(*existing, stream=buffer)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(r"/work/|personalization|tracking", top)
    return f"{title} (cProfile, CPU time only)\n{buffer.getvalue()}"


# SQL statements per request, counted in-process with Django's test client against the bench database.
QUERY_PROBE = r"""
import json, sys
import django
django.setup()
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

write_key, prefix = sys.argv[1], sys.argv[2]
def event(n, visitor):
    return {
        "type": "track", "event": "Product Viewed", "anonymousId": f"probe-visitor-{visitor}",
        "messageId": f"{prefix}:0:{n}",
        "properties": {"product_id": "sku-0001", "sku": "sku-0001", "category": "Shoes", "price": 19.9,
                       "currency": "USD", "quantity": 1, "position": 1, "url": "https://shop.example/p/sku-0001"},
        "context": {"page": {"path": "/p/sku-0001", "referrer": "https://www.google.com/", "search": "",
                             "title": "Shoes", "url": "https://shop.example/p/sku-0001"},
                    "userAgent": "Mozilla/5.0 (X11; Linux x86_64; rv:127.0) Gecko/20100101 Firefox/127.0",
                    "locale": "en-US", "library": {"name": "analytics.js", "version": "5.2.0"}},
    }
import base64
auth = "Basic " + base64.b64encode(f"{write_key}:".encode()).decode()
client = Client(HTTP_AUTHORIZATION=auth)
out = []
cases = [
    ("single, new visitor", "/v1/track", lambda: event(1, "a")),
    ("single, same visitor again", "/v1/track", lambda: event(2, "a")),
    ("batch of 100, 100 new visitors", "/v1/batch", lambda: {"batch": [event(100 + i, i) for i in range(100)]}),
    ("batch of 100, the same 100 visitors", "/v1/batch", lambda: {"batch": [event(300 + i, i) for i in range(100)]}),
]
for label, path, body in cases:
    with CaptureQueriesContext(connection) as ctx:
        answer = client.post(path, json.dumps(body()), content_type="application/json")
    out.append({"label": label, "status": answer.status_code,
                "events": len(body()["batch"]) if path == "/v1/batch" else 1,
                "queries": [q["sql"][:4000] + (" FOR UPDATE" if "FOR UPDATE" in q["sql"] else "")
                            for q in ctx.captured_queries]})
print("PZQUERIES " + json.dumps(out))
"""


def query_probe(run: Run) -> str:
    """SQL statements that one single event and one batch cost (their events are counted too)."""
    done = subprocess.run(
        [sys.executable, "-c", QUERY_PROBE, run.write_key, "probe"],
        cwd=ROOT,
        env=bench_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("PZQUERIES ")), None)
    if line is None:
        return f"SQL statements per request: probe failed\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    lines = [
        "SQL statements per request (Django test client, in-process, same database; not counted: the "
        "`SELECT 1` of CONN_HEALTH_CHECKS when a request reuses a connection)"
    ]
    for case in json.loads(line[len("PZQUERIES ") :]):
        if 200 <= case["status"] < 300:
            run.probe_events += case["events"]
        kinds = Counter(_statement_kind(q) for q in case["queries"])
        summary = ", ".join(f"{n}× {k}" for k, n in kinds.most_common())
        lines.append(f"  {case['label']:<38} HTTP {case['status']}  {len(case['queries']):>3} statements: {summary}")
    return "\n".join(lines)


def _statement_kind(sql: str) -> str:
    words = sql.split()
    head = " ".join(words[:3]).replace('"', "")
    for prefix in ("INSERT INTO", "UPDATE", "DELETE FROM"):
        if head.startswith(prefix):
            table = words[2 if prefix != "UPDATE" else 1].strip('"')
            return f"{prefix.split()[0]} {table}"
    if head.startswith("SELECT"):
        match = re.search(r'FROM "?(\w+)"?', sql)
        tail = " FOR UPDATE" if "FOR UPDATE" in sql else ""
        return f"SELECT {match.group(1) if match else '…'}{tail}"
    return head[:30]


# ---- the run -------------------------------------------------------------------------------------


@dataclass
class Run:
    args: argparse.Namespace
    plan: Plan
    config: Server
    workdir: Path
    write_key: str = ""
    phases: list[PhaseResult] = field(default_factory=list)
    profiles: list[str] = field(default_factory=list)
    server_log: dict = field(default_factory=dict)
    probe_events: int = 0
    seeded_events: int = 0
    load: list[float] = field(default_factory=list)

    def phase(
        self,
        server,
        script,
        name,
        label,
        prefix,
        budget,
        *,
        stores=True,
        events_per_request=1,
        connections=0,
        fresh=False,
        rate=0.0,
    ):
        result = wrk_phase(
            fresh=fresh,
            rate=rate,
            server=server,
            script=script,
            name=name,
            label=label,
            prefix=prefix,
            budget=budget,
            write_key=self.write_key,
            connections=connections or self.args.connections,
            workdir=self.workdir,
            stores=stores,
            events_per_request=events_per_request,
            verbose=self.args.verbose,
        )
        self.phases.append(result)
        if not self.args.quiet:
            print(
                f"  {name:<15} {result['answered']:>8,} answered in {result.elapsed:6.2f} s "
                f"({result.req_per_s:8.1f} req/s, p99 {result['latency_ms']['p99']:7.1f} ms), "
                f"ended by {result.ended_by}",
                flush=True,
            )
        return result


def seed_pool(run: Run, server: GunicornServer) -> None:
    """One event for every visitor of the pool, before the measured phases: the single-event phase
    then measures returning visitors (the common case on a live site), and `single, new` measures
    first visits apart. Sent in batches of 100; counted in the stored check."""
    auth = base64.b64encode(f"{run.write_key}:".encode()).decode()
    started = time.monotonic()
    for first in range(1, VISITOR_POOL + 1, 100):
        batch = [
            {
                "type": "track",
                "event": "Product Viewed",
                "anonymousId": f"{POOL_ID}{n:012d}",
                "messageId": f"seed:{n}",
                "properties": {"sku": "sku-0001", "price": 10},
            }
            for n in range(first, min(first + 100, VISITOR_POOL + 1))
        ]
        request = urllib.request.Request(
            server.url + "/v1/batch",
            data=json.dumps({"batch": batch}).encode(),
            headers={"Authorization": f"Basic {auth}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            if answer.status != 200:
                raise SystemExit(f"seeding the visitor pool failed: HTTP {answer.status}")
        run.seeded_events += len(batch)
    if not run.args.quiet:
        print(f"  seeded {VISITOR_POOL:,} visitors in {time.monotonic() - started:.1f} s (not measured)", flush=True)


def setup(run: Run) -> None:
    database_create()
    redis_flush()
    manage("migrate", "--noinput")
    created = json.loads(manage("create_source", "bench", "--regime", "opt-out", "--json").strip().splitlines()[-1])
    run.write_key = created["write_key"]


def measure(run: Run) -> None:
    plan = run.plan
    server = GunicornServer(run.config, run.workdir)
    try:
        server.start()
        run.phase(server, "floor.lua", "floor warm-up", "", "floor.warm", plan.warm_floor, stores=False)
        run.phase(server, "floor.lua", "floor", "POST /bench/floor", "floor", plan.floor, stores=False)
        seed_pool(run, server)
        run.phase(server, "track.lua", "single warm-up", "", "single.warm", plan.warm_single)
        run.phase(server, "track.lua", "single", "POST /v1/track", "single", plan.single)
        run.phase(server, "track.lua", "single, new", "POST /v1/track (new)", "single.new", plan.single, fresh=True)
        batch = f"POST /v1/batch ×{BATCH_SIZE}"
        n = BATCH_SIZE
        run.phase(server, "batch.lua", "batch warm-up", "", "batch.warm", plan.warm_batch, events_per_request=n)
        run.phase(server, "batch.lua", "batch", batch, "batch", plan.batch, events_per_request=n)
        if run.args.profile and run.args.profiler == "py-spy":
            profile_pyspy(run, server)
        if run.args.profile:
            run.profiles.insert(0, query_probe(run))
    finally:
        server.stop()
        run.server_log = {
            "retries": server.log_count("ingest retry"),
            "errors": server.log_count("Traceback"),
            "timeouts": server.log_count("WORKER TIMEOUT"),
            "exceptions": server.exceptions(),
        }
    if run.args.profile and run.args.profiler == "cprofile":
        profile_cprofile(run)


PROFILED_PHASES = (
    # script, name, prefix, events per request, connections (0: the run's), title
    ("track.lua", "single (profiled)", "single.profile", 1, 0, "single-event path (POST /v1/track)"),
    ("batch.lua", "batch (profiled)", "batch.profile", BATCH_SIZE, 0, f"batch path (POST /v1/batch ×{BATCH_SIZE})"),
    (
        "batch.lua",
        "batch, 1 conn",
        "batch1.profile",
        BATCH_SIZE,
        1,
        "batch path, one connection (no lock contention between batches)",
    ),
)


def profile_pyspy(run: Run, server: GunicornServer) -> None:
    """Sample every gunicorn worker with py-spy while the single and batch phases run again."""
    seconds = run.plan.profile_seconds
    for script, name, prefix, events, connections, title in PROFILED_PHASES:
        raw = run.workdir / f"{prefix}.pyspy.txt"
        spy = pyspy_record(server.proc.pid, seconds + 2, raw)
        time.sleep(1.0)
        if spy.poll() is not None:
            output = spy.stdout.read() if spy.stdout else ""
            print(f"  py-spy could not attach ({output.strip()[:300]}); falling back to cProfile", flush=True)
            run.args.profiler = "cprofile"
            return
        budget = Budget(10**9, seconds)
        phase = run.phase(server, script, name, "", prefix, budget, events_per_request=events, connections=connections)
        try:
            output, _ = spy.communicate(timeout=seconds + 30)
        finally:
            stop_process(spy, sig=signal.SIGINT)
        if not raw.exists():
            print(f"  py-spy wrote no profile ({(output or '').strip()[:300]}); falling back to cProfile", flush=True)
            run.args.profiler = "cprofile"
            return
        heading = f"{title}, {phase.req_per_s:,.1f} req/s, p50 {phase['latency_ms']['p50']:.1f} ms while profiled"
        run.profiles.append(profile_report(raw, heading))


def profile_cprofile(run: Run) -> None:
    """Fallback when py-spy cannot attach: one sync worker with cProfile around each request."""
    seconds = run.plan.profile_seconds
    for script, name, prefix, events, _, title in PROFILED_PHASES[:2]:
        name = name.replace("profiled", "cProfile")
        prefix = prefix.replace(".profile", ".cprofile")  # a fresh message-id prefix
        stem = run.workdir / f"{prefix}.pstats"
        server = GunicornServer(
            Server("sync", 1, 1),
            run.workdir,
            app="bench.ingest:profiled_application()",
            extra_env={"PZ_BENCH_CPROFILE": str(stem), "PYTHONDONTWRITEBYTECODE": "1"},
        )
        try:
            server.start()
            run.phase(server, script, name, "", prefix, Budget(10**9, seconds), events_per_request=events)
        finally:
            server.stop()
        time.sleep(0.5)
        run.profiles.append(cprofile_report(sorted(run.workdir.glob(stem.name + ".[0-9]*")), title))


# ---- report --------------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def report(run: Run, counts: dict) -> bool:
    by_name = {p.name: p for p in run.phases}
    floor, single, batch = by_name["floor"], by_name["single"], by_name["batch"]
    new = by_name.get("single, new")
    out = []
    out.append("")
    out.append(f"Ingestion benchmark ({run.plan.name} run) — {os.cpu_count()} cores, load from wrk on {HOST}")
    out.append(f"  server: {run.config.describe()}")
    out.append(
        "  machine load average (1 min) before/after: "
        + " / ".join(f"{x:.2f}" for x in run.load)
        + ("   (other processes were busy: figures are noisy)" if max(run.load) > 1.0 else "")
    )
    out.append(
        f"  load:   wrk -t{run.args.connections} -c{run.args.connections} (one connection per thread), "
        f"visitors drawn from a pool of {VISITOR_POOL:,} (seeded first), or new; batches of {BATCH_SIZE}"
    )
    out.append("")
    header = (
        f"  {'phase':<11} {'endpoint':<24} {'requests':>9} {'secs':>6} {'req/s':>9} {'events/s':>10} "
        f"{'p50 ms':>8} {'p99 ms':>8} {'2xx':>8} {'non-2xx':>8}  ended by"
    )
    out.append(header)
    out.append("  " + "-" * (len(header) - 2))
    for phase in (p for p in (floor, single, new, batch) if p is not None):
        lat = phase["latency_ms"]
        events = f"{phase.events_per_s:10,.0f}" if phase.stores else f"{'(none)':>10}"
        out.append(
            f"  {phase.name:<11} {phase.label:<24} {phase['answered']:>9,} {phase.elapsed:6.1f} "
            f"{phase.req_per_s:9,.1f} {events} {lat['p50']:8.2f} {lat['p99']:8.2f} "
            f"{phase['ok']:>8,} {phase['bad']:>8,}  {phase.ended_by}"
        )
    ratio = single.req_per_s / floor.req_per_s if floor.req_per_s else 0.0
    out.append("")
    out.append(
        f"  single-event / floor: {ratio:.2f} ({single.req_per_s:,.1f} / {floor.req_per_s:,.1f} req/s; "
        "returning visitors, the goal's measure)"
    )
    if new is not None and floor.req_per_s:
        out.append(
            f"  single-event, new visitors / floor: {new.req_per_s / floor.req_per_s:.2f} "
            f"({new.req_per_s:,.1f} req/s, p99 {new['latency_ms']['p99']:.1f} ms)"
        )
    out.append("")

    stored_phases = [p for p in run.phases if p.stores]
    answered_events = sum(p["ok_events"] for p in stored_phases) + run.probe_events + run.seeded_events
    in_flight_events = sum(p.in_flight * p.events_per_request for p in stored_phases)
    accepted = sum(p["accepted"] for p in stored_phases) + run.probe_events + run.seeded_events
    duplicates_reported = sum(p["duplicates"] for p in stored_phases)
    rejected = sum(p["rejected"] for p in stored_phases)
    total, distinct = counts["total"], counts["distinct"]
    if in_flight_events:
        stored_ok = answered_events <= total <= answered_events + in_flight_events
    else:
        stored_ok = total == answered_events
    counts_ok = (
        stored_ok
        and distinct == total
        and accepted == answered_events
        and duplicates_reported == 0
        and rejected == 0
        and counts["profile_events"] == total
        and counts["stat_events"] == total
    )

    out.append("  goals")
    out.append(
        f"    single-event >= {GOAL_SINGLE_VS_FLOOR:.0%} of floor req/s      {ratio:>10.0%}   "
        f"{verdict(ratio >= GOAL_SINGLE_VS_FLOOR)}"
    )
    p99 = single["latency_ms"]["p99"]
    out.append(
        f"    single-event p99 <= {GOAL_SINGLE_P99_MS:.0f} ms              {p99:>7.1f} ms   "
        f"{verdict(p99 <= GOAL_SINGLE_P99_MS)}"
    )
    out.append(
        f"    batched >= {GOAL_BATCH_EVENTS_PER_S:,} events/s stored        {batch.events_per_s:>10,.0f}   "
        f"{verdict(batch.events_per_s >= GOAL_BATCH_EVENTS_PER_S)}"
    )
    out.append(f"    nothing lost or duplicated                {'':>10}   {'met' if counts_ok else 'FAILED'}")
    out.append("")
    out.append("  count check (all storing phases, warm-ups included)")
    per_phase = ", ".join(
        f"{p.prefix} {counts['by_prefix'].get(p.prefix, 0):,}/{p['ok_events']:,}" for p in stored_phases
    )
    if run.seeded_events:
        per_phase += f", seed {counts['by_prefix'].get('seed', 0):,}/{run.seeded_events:,}"
    if run.probe_events:
        per_phase += f", probe {counts['by_prefix'].get('probe', 0):,}/{run.probe_events:,}"
    exact = "" if not in_flight_events else f" (+ up to {in_flight_events:,} in flight at the hard cap)"
    out.append(
        f"    events in Postgres {total:,} {'==' if total == answered_events else '!='} "
        f"events answered 2xx {answered_events:,}{exact}   {'ok' if stored_ok else 'FAILED'}"
    )
    out.append(f"    per phase, stored/answered: {per_phase}")
    out.append(
        f"    distinct message ids {distinct:,} of {total:,}   {'ok' if distinct == total else 'FAILED: duplicates'}"
    )
    said_ok = accepted == answered_events and not duplicates_reported and not rejected
    out.append(
        f"    server said accepted {accepted:,}, duplicates {duplicates_reported:,}, responses with rejections "
        f"{rejected:,}   {'ok' if said_ok else 'FAILED'}"
    )
    out.append(
        f"    aggregates: sum(profile.event_count) {counts['profile_events']:,}, sum(profile_event_stat.count) "
        f"{counts['stat_events']:,}   "
        f"{'ok' if counts['profile_events'] == total and counts['stat_events'] == total else 'FAILED'}"
    )
    out.append(
        f"    profiles {counts['profiles']:,} (with events {counts['profiles_used']:,}), visitors seen "
        f"{counts['anonymous_ids']:,} of the pool of {VISITOR_POOL:,}, profiles merged away {counts['merges']:,}"
    )
    log = run.server_log
    out.append(
        f"    server: deadlocks {counts['deadlocks']:,} (pg_stat_database), "
        f"ingest retries logged {log.get('retries', 0):,}, tracebacks {log.get('errors', 0):,}, "
        f"worker timeouts {log.get('timeouts', 0):,}; "
        f"transactions {counts['commits']:,} committed, {counts['rollbacks']:,} rolled back"
    )
    for line, n in log.get("exceptions", Counter()).most_common(5):
        out.append(f"    server exception ×{n}: {line}")
    bad = [p for p in run.phases if p["bad"] or p["lost"] or any(p["errors"][k] for k in ("connect", "read", "write"))]
    for phase in bad:
        sample = phase["bad_sample"]
        errors = ", ".join(f"{k} {phase['errors'][k]}" for k in ("connect", "read", "write"))
        out.append(
            f"    note: {phase.name}: {phase['bad']} non-2xx, {phase['lost']} lost, socket errors {errors}; {sample}"
        )
    print("\n".join(out))
    for section in run.profiles:
        print()
        print(section)
    return counts_ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run, ~15-25 seconds")
    parser.add_argument("--profile", action="store_true", help="then profile the single and batch paths")
    parser.add_argument("--profiler", choices=["py-spy", "cprofile"], default="py-spy")
    parser.add_argument("--worker-class", choices=["sync", "gthread"], default=Server.worker_class)
    parser.add_argument("--workers", type=int, default=Server.workers)
    parser.add_argument("--threads", type=int, default=Server.threads, help="threads per worker (gthread)")
    parser.add_argument("--connections", type=int, default=8, help="wrk connections (all phases)")
    parser.add_argument("--verbose", action="store_true", help="print wrk's own output")
    parser.add_argument("--quiet", action="store_true", help="only the final report")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (wrk output, raw profiles)")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    has_pyspy = shutil.which("py-spy") or Path(sys.executable).with_name("py-spy").exists()
    if args.profile and args.profiler == "py-spy" and not has_pyspy:
        print("py-spy not found: .venv/bin/pip install py-spy (or use --profiler cprofile)", file=sys.stderr)
        return 2

    def terminate(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    run = Run(
        args=args,
        plan=QUICK if args.quick else FULL,
        config=Server(args.worker_class, args.workers, args.threads),
        workdir=Path(tempfile.mkdtemp(prefix="pz-bench-")),
    )
    started = time.monotonic()
    try:
        if not args.quiet:
            print(f"Setting up {DB_NAME} (migrate, create_source) ...", flush=True)
        run.load.append(os.getloadavg()[0])
        setup(run)
        if not args.quiet:
            print(f"Running {run.plan.name} benchmark against {run.config.describe()} ...", flush=True)
        measure(run)
        run.load.append(os.getloadavg()[0])
        ok = report(run, stored_counts())
    except BenchError as exc:
        print(f"benchmark could not run: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        if args.keep:
            print(f"  work directory kept: {run.workdir}")
        else:
            shutil.rmtree(run.workdir, ignore_errors=True)
    print(f"\n  ({time.monotonic() - started:.0f} s in all; database {DB_NAME} kept for inspection)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
