"""Benchmark of experiments: the assignment API through gunicorn against the bare DRF floor, and the
results refresh of a large experiment, incremental against a full recompute.

    .venv/bin/python bench/experiments.py            # full run (1,000,000 units, 5,000,000 events)
    .venv/bin/python bench/experiments.py --quick    # smoke run (100,000 units, 500,000 events)

Needs Postgres on 127.0.0.1:5432 (user postgres, trust), Redis on 127.0.0.1:6379 and `wrk`
(`apt-get install wrk`). It drops and creates its own database `personalization_bench_experiments`
and uses Redis db 13; the database is kept afterwards for inspection.

1. Assignment API. gunicorn (gthread, 5 workers x 2 threads, as bench/ingest.py found best on two
   cores) serves both phases, driven by wrk with the same connections for the same time:
   - floor: `POST /bench/floor`, the same DRF stack and write-key check, storing nothing;
   - assignments: `GET /api/v1/assignments?anonymous_id=` of returning visitors (a pool of 5,000
     already assigned), four running experiments (two sharing a layer, one targeted);
   - assignments, new: visitors never seen before (profile, assignments and exposures created).
   Goal: p99 <= 10 ms and >= 60% of the floor's requests/s for returning visitors.
2. Results refresh. 1,000,000 exposed units and 5,000,000 events (loaded with COPY), three metrics
   (conversion, revenue, count) with CUPED. A full recompute from all events, then 10,000 new events
   and the incremental roll-up that folds them in; then a second full recompute to check that both
   paths give the same sums. Goal: incremental <= 2 s, full <= 60 s.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
sys.path.insert(0, str(ROOT))

from bench import ingest  # noqa: E402 - the foundation benchmark's gunicorn server and process helpers

DB_NAME = "personalization_bench_experiments"
ADMIN_DSN = "postgres://postgres@127.0.0.1:5432/postgres"
DATABASE_URL = f"postgres://postgres@127.0.0.1:5432/{DB_NAME}"
REDIS_URL = "redis://127.0.0.1:6379/13"
POOL = 5_000
POOL_PREFIX = "bench-visitor-"
GOAL_P99_MS = 10.0
GOAL_RATIO = 0.60
GOAL_INCREMENTAL_S = 2.0
GOAL_FULL_S = 60.0

WRK_SCRIPT = r"""
-- GET /api/v1/assignments of a random pool visitor, or of a visitor never seen (fresh=1).
local counter = 0
local fresh = os.getenv("PZ_FRESH") == "1"
local pool = tonumber(os.getenv("PZ_POOL") or "5000")
local prefix = os.getenv("PZ_PREFIX") or "v-"
local run = os.getenv("PZ_RUN") or "0"
local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end

function init(args)
  math.randomseed(os.time() * 1000 + (tid or 0))
end

function request()
  counter = counter + 1
  local id
  if fresh then
    id = string.format("fresh-%s-%d-%d", run, tid or 0, counter)
  else
    id = prefix .. tostring(math.random(0, pool - 1))
  end
  return wrk.format("GET", "/api/v1/assignments?anonymous_id=" .. id)
end
"""

FLOOR_SCRIPT = r"""
wrk.method = "POST"
wrk.body = '{"type": "page_view", "anonymous_id": "floor", "message_id": "floor"}'
wrk.headers["Content-Type"] = "application/json"
"""


class BenchError(Exception):
    pass


def env() -> dict[str, str]:
    values = dict(os.environ)
    values.update(
        DATABASE_URL=DATABASE_URL,
        REDIS_URL=REDIS_URL,
        BENCH_FLOOR_ENABLED="true",
        DEBUG="false",
        LOG_LEVEL="WARNING",
        DJANGO_SETTINGS_MODULE="personalization.settings",
        OPENBLAS_NUM_THREADS="1",
        EXPERIMENTS_ROLLUP_LAG_SECONDS="0",
        CACHE_KEY_PREFIX="pzbenchexp",
    )
    return values


def manage(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env(), capture_output=True, text=True, timeout=600
    )
    if done.returncode != 0:
        raise BenchError(f"manage.py {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def database_create() -> None:
    import psycopg2

    conn = psycopg2.connect(ADMIN_DSN, connect_timeout=5)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
            cur.execute(f"CREATE DATABASE {DB_NAME}")
    finally:
        conn.close()
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_timeout=5)
    client.flushdb()
    client.close()


def django_setup() -> None:
    os.environ.update(env())
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


# ---- 1. assignment API ----------------------------------------------------------------------------


UNIT = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _ms(text: str) -> float:
    match = re.match(r"([\d.]+)(us|ms|s)", text)
    if not match:
        raise BenchError(f"cannot read latency {text!r}")
    return float(match.group(1)) * UNIT[match.group(2)]


def wrk(url: str, script: Path, *, key: str, seconds: int, connections: int, extra_env: dict | None = None) -> dict:
    argv = [
        "wrk",
        "-t",
        "2",
        "-c",
        str(connections),
        "-d",
        f"{seconds}s",
        "--timeout",
        "5s",
        "--latency",
        "-s",
        str(script),
        "-H",
        f"X-Write-Key: {key}",
        url,
    ]
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=seconds + 60, env={**os.environ, **(extra_env or {})}
    )
    text = done.stdout + done.stderr
    if done.returncode != 0:
        raise BenchError(f"wrk failed:\n{text}")
    percentiles = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)\s*$", text, re.MULTILINE))
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    total = re.search(r"(\d+) requests in", text)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    errors = re.search(r"Socket errors: (.*)$", text, re.MULTILINE)
    if not rps or "50" not in percentiles or "99" not in percentiles:
        raise BenchError(f"wrk printed no figures:\n{text}")
    return {
        "rps": float(rps.group(1)),
        "p50": _ms(percentiles["50"]),
        "p99": _ms(percentiles["99"]),
        "requests": int(total.group(1)) if total else 0,
        "non_2xx": int(bad.group(1)) if bad else 0,
        "socket_errors": errors.group(1).strip() if errors else "",
    }


def api_setup() -> str:
    """A source with four running experiments and a pool of returning visitors, each already assigned."""
    from django.db import connection

    from experiments.services.assignment import Context, visitor_assignments
    from experiments.services.experiments import VariantIn, experiment_save, experiment_start, metric_create
    from tracking.services.sources import source_create

    source = source_create(name="bench", consent_regime="opt_out")
    metric_create(source=source, key="purchase", kind="conversion", event_types=["purchase"])
    ab = [VariantIn("control", is_control=True), VariantIn("treatment", payload={"color": "green"})]
    reco = [
        VariantIn("control", is_control=True, payload={"recommender_config": "popular"}),
        VariantIn("als", payload={"recommender_config": "als"}),
    ]
    for key, variants, extra in (
        ("reco", reco, {}),
        ("hero", ab, {"layer": "home", "traffic": 0.5}),
        ("banner", ab, {"layer": "home", "traffic": 0.5}),
        ("mobile-only", ab, {"targeting": {"device_type": ["mobile"]}}),
    ):
        experiment = experiment_save(
            source=source, experiment=None, data={"key": key, "primary_metric": "purchase", **extra}, variants=variants
        )
        experiment_start(experiment=experiment)
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO tracking_profile (uuid, traits, first_seen_at, last_seen_at, event_count, session_count, "
            "purchase_count, revenue, last_device_type, last_os, last_browser, last_country, last_traffic_source, "
            "created_at) SELECT gen_random_uuid(), '{}', now(), now(), 0, 0, 0, 0, "
            "CASE WHEN i %% 2 = 0 THEN 'mobile' ELSE 'desktop' END, '', '', 'FR', '', now() "
            "FROM generate_series(0, %s - 1) AS i",
            [POOL],
        )
        cursor.execute(
            "INSERT INTO tracking_identity (profile_id, kind, value, key_id, created_at) "
            "SELECT p.id, 'anonymous', %s || (row_number() OVER (ORDER BY p.id) - 1), '', now() "
            "FROM tracking_profile p",
            [POOL_PREFIX],
        )
    for i in range(POOL):
        visitor_assignments(source=source, anonymous_id=f"{POOL_PREFIX}{i}", context=Context(), expose=True)
    return source.write_key


def bench_api(args, workdir: Path) -> dict:
    key = api_setup()
    script = workdir / "assignments.lua"
    script.write_text(WRK_SCRIPT)
    floor = workdir / "floor.lua"
    floor.write_text(FLOOR_SCRIPT)
    server = ingest.GunicornServer(ingest.Server(workers=args.workers, threads=args.threads), workdir, extra_env=env())
    server.start()
    try:
        pool_env = {"PZ_POOL": str(POOL), "PZ_PREFIX": POOL_PREFIX}
        wrk(server.url + "/bench/floor", floor, key=key, seconds=3, connections=args.connections)  # warm-up
        wrk(server.url, script, key=key, seconds=3, connections=args.connections, extra_env=pool_env)
        results = {
            "floor": wrk(
                server.url + "/bench/floor", floor, key=key, seconds=args.seconds, connections=args.connections
            ),
            "returning": wrk(
                server.url, script, key=key, seconds=args.seconds, connections=args.connections, extra_env=pool_env
            ),
            "new": wrk(
                server.url,
                script,
                key=key,
                seconds=args.seconds,
                connections=args.connections,
                extra_env={"PZ_FRESH": "1", "PZ_RUN": str(int(time.time()))},
            ),
        }
    finally:
        server.stop()
    from experiments.models import Assignment, Exposure

    results["assignments_stored"] = Assignment.objects.count()
    results["exposures_stored"] = Exposure.objects.count()
    return results


# ---- 2. results refresh ---------------------------------------------------------------------------


def _copy_events(cursor, *, source_id: int, profile_lo: int, units: int, events: int, prefix: str, rng, now) -> None:
    """COPY `events` events of random units (75% views, 17% add-to-cart, 8% purchases with a value over
    the last three weeks), generated with numpy in chunks."""
    import numpy as np

    columns = (
        "source_id, profile_id, message_id, kind, type, anonymous_id, user_hash, timestamp, received_at, "
        "properties, context, value, device_type, os, browser, country, traffic_source"
    )
    types = ["product_view", "add_to_cart", "purchase"]
    chunk = 250_000
    epoch = np.datetime64(int(now.timestamp()), "s")
    for start in range(0, events, chunk):
        n = min(chunk, events - start)
        profile = (rng.integers(0, units, n) + profile_lo).tolist()
        kind = rng.choice(3, n, p=[0.75, 0.17, 0.08]).tolist()
        stamps = np.datetime_as_string(epoch - rng.integers(60, 21 * 86400, n).astype("timedelta64[s]")).tolist()
        value = np.round(rng.gamma(2.0, 25.0, n), 2).tolist()
        lines = [
            f"{source_id}\t{profile[i]}\t{prefix}{start + i}\ttrack\t{types[kind[i]]}\t\t\t{stamps[i]}+00\t"
            f"{stamps[i]}+00\t{{}}\t{{}}\t{value[i] if kind[i] == 2 else NULL}\t\t\t\t\t\n"
            for i in range(n)
        ]
        cursor.copy_expert(f"COPY tracking_event ({columns}) FROM STDIN", io.StringIO("".join(lines)))


NULL = "\\N"


def bench_results(args) -> dict:
    import numpy as np
    from django.db import connection, transaction
    from django.utils import timezone

    from experiments.models import VariantMetricStats
    from experiments.selectors import experiment_results
    from experiments.services.experiments import VariantIn, experiment_save, experiment_start, metric_create
    from experiments.services.rollup import STAT_FIELDS, experiment_recompute, experiment_rollup
    from tracking.services.sources import source_create

    rng = np.random.default_rng(1)
    now = timezone.now()
    source = source_create(name="bench-results", consent_regime="opt_out")
    metric_create(source=source, key="buy", kind="conversion", event_types=["purchase"], window_days=14)
    metric_create(source=source, key="revenue", kind="revenue", event_types=["purchase"], window_days=14)
    metric_create(source=source, key="carts", kind="count", event_types=["add_to_cart"], window_days=14)
    experiment = experiment_save(
        source=source,
        experiment=None,
        data={"key": "big", "primary_metric": "buy", "secondary_metrics": ["revenue", "carts"], "cuped_days": 7},
        variants=[VariantIn("control", is_control=True), VariantIn("treatment")],
    )
    experiment_start(experiment=experiment)
    variants = {v.key: v.pk for v in experiment.variants.all()}
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT coalesce(max(id), 0) + 1 FROM tracking_profile")
        (profile_lo,) = cursor.fetchone()
        cursor.execute(
            "INSERT INTO tracking_profile (uuid, traits, first_seen_at, last_seen_at, event_count, session_count, "
            "purchase_count, revenue, last_device_type, last_os, last_browser, last_country, last_traffic_source, "
            "created_at) SELECT gen_random_uuid(), '{}', now(), now(), 0, 0, 0, 0, '', '', '', '', '', now() "
            "FROM generate_series(1, %s)",
            [args.units],
        )
        cursor.execute("SELECT min(id) FROM tracking_profile WHERE id >= %s", [profile_lo])
        (profile_lo,) = cursor.fetchone()
        cursor.execute(
            "INSERT INTO experiments_exposure (experiment_id, profile_id, variant_id, exposed_at, needs_rollup) "
            "SELECT %s, p.id, CASE WHEN random() < 0.5 THEN %s ELSE %s END, "
            "now() - (random() * interval '14 days') - interval '1 hour', false "
            "FROM tracking_profile p WHERE p.id >= %s",
            [experiment.pk, variants["control"], variants["treatment"], profile_lo],
        )
    timings["load units"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL synchronous_commit = off")
        _copy_events(
            cursor.cursor,
            source_id=source.pk,
            profile_lo=profile_lo,
            units=args.units,
            events=args.events,
            prefix="bulk-",
            rng=rng,
            now=now,
        )
    timings["COPY events"] = time.perf_counter() - t0
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")

    t0 = time.perf_counter()
    experiment_recompute(experiment_id=experiment.pk)
    timings["full recompute"] = time.perf_counter() - t0

    with transaction.atomic(), connection.cursor() as cursor:
        _copy_events(
            cursor.cursor,
            source_id=source.pk,
            profile_lo=profile_lo,
            units=args.units,
            events=10_000,
            prefix="new-",
            rng=rng,
            now=timezone.now(),
        )
    t0 = time.perf_counter()
    rolled = experiment_rollup(experiment_id=experiment.pk)
    timings["incremental (10,000 new events)"] = time.perf_counter() - t0

    def sums() -> dict:
        rows = VariantMetricStats.objects.filter(experiment=experiment).select_related("variant", "metric")
        return {(r.variant.key, r.metric.key): tuple(getattr(r, f) for f in STAT_FIELDS) for r in rows}

    incremental = sums()
    t0 = time.perf_counter()
    experiment.refresh_from_db()
    results = experiment_results(experiment=experiment)
    timings["results from the sums"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    experiment_recompute(experiment_id=experiment.pk)
    timings["full recompute, again"] = time.perf_counter() - t0
    return {
        "timings": timings,
        "units_touched": rolled.units_touched,
        "agree": sums() == incremental,
        "units": results["units"],
        "verdict": (results["analysis"] or {}).get("verdict"),
    }


# ---- report ---------------------------------------------------------------------------------------


def ok(flag: bool) -> str:
    return "MET" if flag else "MISSED"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100,000 units, 500,000 events, 8 s phases")
    parser.add_argument("--units", type=int, default=None)
    parser.add_argument("--events", type=int, default=None)
    parser.add_argument("--seconds", type=int, default=None, help="seconds per API phase (default 20; quick 8)")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2 * (os.cpu_count() or 1) + 1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-api", action="store_true")
    parser.add_argument("--skip-results", action="store_true")
    args = parser.parse_args(argv)
    args.units = args.units or (100_000 if args.quick else 1_000_000)
    args.events = args.events or (500_000 if args.quick else 5_000_000)
    args.seconds = args.seconds or (8 if args.quick else 20)

    database_create()
    manage("migrate", "--no-input")
    django_setup()
    met = True
    with tempfile.TemporaryDirectory(prefix="pz-bench-exp-") as tmp:
        if not args.skip_api:
            api = bench_api(args, Path(tmp))
            floor, returning, new = api["floor"], api["returning"], api["new"]
            ratio = returning["rps"] / floor["rps"] if floor["rps"] else 0.0
            print(
                f"Assignment API through gunicorn (gthread {args.workers}x{args.threads}), wrk 2 threads "
                f"x {args.connections} connections, {args.seconds} s per phase"
            )
            print(f"{'phase':<28}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'requests':>10}{'non-2xx':>9}")
            for name, row in (
                ("floor (POST /bench/floor)", floor),
                ("assignments, returning", returning),
                ("assignments, new visitor", new),
            ):
                print(
                    f"{name:<28}{row['rps']:>10.0f}{row['p50']:>10.2f}{row['p99']:>10.2f}"
                    f"{row['requests']:>10}{row['non_2xx']:>9}"
                    + (f"  socket errors: {row['socket_errors']}" if row["socket_errors"] else "")
                )
            print(f"assignments stored: {api['assignments_stored']}, exposures stored: {api['exposures_stored']}")
            p99_ok = returning["p99"] <= GOAL_P99_MS
            ratio_ok = ratio >= GOAL_RATIO
            print(f"returning p99 {returning['p99']:.2f} ms (goal <= {GOAL_P99_MS:.0f} ms): {ok(p99_ok)}")
            print(f"returning / floor throughput {ratio:.0%} (goal >= {GOAL_RATIO:.0%}): {ok(ratio_ok)}")
            met &= p99_ok and ratio_ok and returning["non_2xx"] == 0
        if not args.skip_results:
            res = bench_results(args)
            print()
            print(f"Results refresh: {args.units:,} exposed units, {args.events:,} events, 3 metrics, CUPED 7 days")
            for name, seconds in res["timings"].items():
                print(f"  {name:<34}{seconds:>9.2f} s")
            inc = res["timings"]["incremental (10,000 new events)"]
            full = res["timings"]["full recompute"]
            print(f"  units touched by the roll-up: {res['units_touched']:,}; units per variant: {res['units']}")
            print(f"  incremental sums equal a full recompute: {'yes' if res['agree'] else 'NO'}")
            print(f"  incremental {inc:.2f} s (goal <= {GOAL_INCREMENTAL_S:.0f} s): {ok(inc <= GOAL_INCREMENTAL_S)}")
            print(f"  full recompute {full:.2f} s (goal <= {GOAL_FULL_S:.0f} s): {ok(full <= GOAL_FULL_S)}")
            print(f"  speed-up incremental vs full: {full / inc:.0f}x" if inc else "")
            print(f"  verdict: {res['verdict']}")
            met &= inc <= GOAL_INCREMENTAL_S and full <= GOAL_FULL_S and res["agree"]
    print()
    print("all goals met" if met else "some goals missed")
    return 0 if met else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        sys.exit(2)
