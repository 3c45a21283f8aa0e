"""Serving benchmark: recommendations through gunicorn on loopback, next to the bare DRF endpoint.

    .venv/bin/python bench/recommenders_serving.py            # full run (~3-4 minutes, half of it preparing)
    .venv/bin/python bench/recommenders_serving.py --quick    # smoke run (~1 minute)

Reuses the ingestion benchmark's pieces (bench/ingest.py: gunicorn, the wrk driver with request
budgets and soft deadlines, bench/wrk/common.lua) on a database of its own,
`personalization_bench_serving`, and Redis db 12:

1. a synthetic catalogue (2,000 items in 8 categories) and visitors who each favour a category
   (~10 product views, some add-to-carts) are sent through the ingestion API;
2. the default configuration is trained through the pipeline's service (extract, fit, evaluate,
   promote, publish the top-N lists of active visitors to Redis);
3. half the visitors then send one more event each, so their lists are older than their events;
4. three endpoints, each after a warm-up, each twice: flat out (`--connections` connections, each
   sending again as soon as it is answered: the throughput), then paced at half that throughput
   (requests on a fixed schedule, each timed from when it was due: the latency a site sees
   when the servers are not saturated; at saturation p99 only measures the queue of 8 requests).
   The floor's and the cached lists' throughputs, whose ratio is a goal, are measured in SLICES
   alternating slices of each (floor, cached, floor, ...): this machine's speed drifts by tens of
   percent over seconds, and measured one after the other the two endpoints met different
   machines. The report gives each slice pair's ratio too:

   floor       POST /bench/floor                      the same DRF stack and key check, nothing else
   cached      GET /api/v1/recommendations (pool A)   visitors whose published list is fresh
   recompute   GET /api/v1/recommendations (pool B)   visitors with newer events: recomputed on read
                                                      (each visitor asked once, so every request
                                                      recomputes; the list is re-cached after)

The server is gunicorn as the container runs it (`docker/gunicorn.conf.py`: 2 threaded workers x 4
threads, each worker recycled after 100,000-150,000 requests; `--max-requests N` sets another
bound, 0 none; a busy worker hands kept-alive connections back, `--rebalance-after 0` keeps them
where they were accepted), one BLAS/OpenMP thread per process, with one Celery worker beside it writing the buffered
served-list log in bulk (`recommenders.served_flush`), as a deployment runs it. After the phases
the buffer is flushed and every answered list must have its row.

Every answer's `strategy` is counted, so the report shows that the cached phase was served from
the cache and the recompute phase recomputed. Exits 1 when a phase did not exercise its path,
had errors or lost served-list rows (missed performance goals do not fail the run), 2 when the
benchmark could not run.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import ingest  # noqa: E402 - the foundation benchmark's processes, wrk driver and phases
from bench.watch import MachineWatch  # noqa: E402
from personalization.gunicorn_worker import DEFAULT_REBALANCE_AFTER  # noqa: E402

ingest.DB_NAME = "personalization_bench_serving"
ingest.DATABASE_URL = f"postgres://postgres@127.0.0.1:5432/{ingest.DB_NAME}"
ingest.REDIS_URL = "redis://127.0.0.1:6379/12"  # a db of its own: other benchmarks flush theirs

GOAL_CACHED_P99_MS = 15.0
GOAL_CACHED_VS_FLOOR = 0.60
GOAL_RECOMPUTE_P99_MS = 50.0
# Latency is measured at this share of each endpoint's own flat-out throughput: p99 at saturation only
# says how long the queue of `--connections` requests is.
PACED_SHARE = 0.5
# The floor's and the cached lists' throughputs are measured in this many alternating slices each.
SLICES = 6
CATEGORIES = ["shoes", "jackets", "bags", "accessories", "shirts", "trousers", "outdoor", "kids"]
POOL_A = "bench-cached-"
POOL_B = "bench-stale-"


@dataclass(frozen=True)
class Plan:
    name: str
    items: int
    pool_a: int
    pool_b: int
    floor: ingest.Budget
    cached: ingest.Budget
    recompute: ingest.Budget
    warm: ingest.Budget
    paced_seconds: float


FULL = Plan(
    name="full",
    items=2000,
    pool_a=4000,
    pool_b=8000,
    floor=ingest.Budget(30_000, 12),
    cached=ingest.Budget(30_000, 15),
    recompute=ingest.Budget(5_000, 15),
    warm=ingest.Budget(1_000, 8),
    paced_seconds=10,
)
QUICK = Plan(
    name="quick",
    items=2000,
    pool_a=1000,
    pool_b=2000,
    floor=ingest.Budget(3_000, 3),
    cached=ingest.Budget(3_000, 3),
    recompute=ingest.Budget(1_000, 3),
    warm=ingest.Budget(400, 5),
    paced_seconds=3,
)

PRODUCTION_CONF = ROOT / "docker" / "gunicorn.conf.py"


@dataclass(frozen=True)
class ProductionServer(ingest.Server):
    """gunicorn as the container runs it: `docker/gunicorn.conf.py` (2 threaded workers x 4 threads that
    hand kept-alive connections back when busy, workers recycled every 100,000-150,000 requests, the
    access log written) with its defaults, only bound to loopback. `--workers` / `--threads` /
    `--rebalance-after` set WEB_CONCURRENCY / GUNICORN_THREADS / GUNICORN_REBALANCE_AFTER as an operator would."""

    def argv(self, gunicorn: str, port: int, app: str = "personalization.wsgi") -> list[str]:
        return [gunicorn, app, "--config", str(PRODUCTION_CONF), "--bind", f"{ingest.HOST}:{port}"]

    max_requests: int | None = None  # None: the configuration's default
    rebalance_after: int | None = None  # None: the configuration's default

    def env(self) -> dict[str, str]:
        env = {"WEB_CONCURRENCY": str(self.workers), "GUNICORN_THREADS": str(self.threads)}
        if self.max_requests is not None:
            env["GUNICORN_MAX_REQUESTS"] = str(self.max_requests)
        if self.rebalance_after is not None:
            env["GUNICORN_REBALANCE_AFTER"] = str(self.rebalance_after)
        return env

    def describe(self) -> str:
        recycle = "100,000+ (default)" if self.max_requests is None else f"{self.max_requests}"
        rebalance = (
            f"{DEFAULT_REBALANCE_AFTER} (default)" if self.rebalance_after is None else f"{self.rebalance_after}"
        )
        return (
            f"gunicorn personalization.wsgi --config docker/gunicorn.conf.py (WEB_CONCURRENCY={self.workers}, "
            f"GUNICORN_THREADS={self.threads}, GUNICORN_REBALANCE_AFTER={rebalance}, "
            f"GUNICORN_MAX_REQUESTS={recycle}, access log on)"
        )


def celery_worker(workdir: Path, env: dict[str, str]):
    """One Celery worker (what a deployment runs next to the web processes), so the served-list log's
    bulk writes (`recommenders.served_flush`, queued by the requests) cost the machine what they
    cost in production while the phases run."""
    import subprocess

    log = (workdir / "celery.log").open("ab")
    return subprocess.Popen(
        [
            ingest.venv_tool("celery"),
            "-A",
            "personalization",
            "worker",
            "--pool",
            "solo",
            "--loglevel",
            "WARNING",
            "--include",
            "recommenders.serving.served",
        ],
        cwd=ROOT,
        env={**ingest.bench_env(), **env},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


# A Lua script per phase, written into the run's directory: common.lua does the budgets, timing
# and summary; this adds the request and counts the `strategy` of each answer.
LUA = """
dofile("{common}")
local visitors_base, stride, pool, prefix, mode = {base}, {stride}, {pool}, "{prefix}", "{mode}"
pz_strategies = {{}}
function pz_request(seq)
  local index
  if mode == "once" then
    index = visitors_base + (pz_tid - 1) * stride + seq
  else
    index = math.random(pool) - 1
  end
  return wrk.format("GET", string.format("/api/v1/recommendations?anonymous_id=%s%06d&n=10", prefix, index), nil, nil)
end
local base_response = response
function response(status, headers, body)
  if body then
    local strategy = body:match('"strategy":"(%a+)"')
    if strategy then pz_strategies[strategy] = (pz_strategies[strategy] or 0) + 1 end
  end
  base_response(status, headers, body)
end
local base_setup = setup
local all_threads = {{}}
function setup(thread)
  table.insert(all_threads, thread)
  base_setup(thread)
end
local base_done = done
function done(summary, latency, requests)
  base_done(summary, latency, requests)
  local total = {{}}
  for _, thread in ipairs(all_threads) do
    for name, count in pairs(thread:get("pz_strategies") or {{}}) do total[name] = (total[name] or 0) + count end
  end
  local parts = {{}}
  for name, count in pairs(total) do table.insert(parts, string.format('"%s": %d', name, count)) end
  io.write("PZSTRAT {{" .. table.concat(parts, ", ") .. "}}\\n")
end
"""


def lua_script(workdir: Path, name: str, *, prefix: str, pool: int, mode: str, base: int = 0, stride: int = 0) -> Path:
    path = workdir / f"{name}.lua"
    path.write_text(
        LUA.format(common=ingest.WRK_DIR / "common.lua", base=base, stride=stride, pool=pool, prefix=prefix, mode=mode)
    )
    return path


def strategies(workdir: Path, prefix: str) -> dict[str, int]:
    path = workdir / f"{prefix}.wrk.txt"
    if not path.exists():
        return {}
    text = path.read_text(errors="replace")
    line = next((ln for ln in text.splitlines() if ln.startswith("PZSTRAT ")), None)
    return json.loads(line[len("PZSTRAT ") :]) if line else {}


def merge_parts(name: str, label: str, parts: list) -> ingest.PhaseResult:
    """One endpoint's slices as one phase: requests and time summed; the latencies flat out are the
    median slice's p50 and the worst slice's p99 (no goal reads them: the paced phases measure latency)."""
    data = {
        "answered": sum(p["answered"] for p in parts),
        "sent": sum(p["sent"] for p in parts),
        "bad": sum(p["bad"] for p in parts),
        "elapsed_s": sum(p.elapsed for p in parts),
        "latency_ms": {
            "p50": sorted(p["latency_ms"]["p50"] for p in parts)[len(parts) // 2],
            "p99": max(p["latency_ms"]["p99"] for p in parts),
        },
    }
    merged = ingest.PhaseResult(name, label, name, False, 1, data)
    merged.ended_by = ", ".join(sorted({p.ended_by for p in parts}))
    return merged


# ---- where the machine's CPU goes during a phase ----------------------------------------------------

CPU_GROUPS = ("gunicorn", "wrk", "redis", "postgres", "celery")


def _cpu_group(pid: str) -> str:
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
    if comm.startswith("redis"):
        return "redis"
    if comm.startswith("postgres") or "postgres:" in cmdline:
        return "postgres"
    if comm == "wrk":
        return "wrk"
    if "gunicorn" in cmdline:
        return "gunicorn"
    if "celery" in cmdline:
        return "celery"
    return "other"


def cpu_seconds() -> dict[str, float]:
    """CPU seconds (user + system) each group of processes has used so far; `total` is the whole
    machine's (/proc/stat), so `other` is everything else the machine did meanwhile."""
    tick = os.sysconf("SC_CLK_TCK")
    out = dict.fromkeys((*CPU_GROUPS, "other"), 0.0)
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        group = _cpu_group(pid)
        if group and group != "other":
            # utime + stime, and cutime + cstime: children that exited and were waited for (a
            # recycled gunicorn worker counts in its master's)
            out[group] += sum(int(v) for v in fields[11:15]) / tick
    # wrk runs as this process's child and is gone by the end of its phase: its CPU is in this
    # process's children's (the only children that end while the phases run).
    finished = resource.getrusage(resource.RUSAGE_CHILDREN)
    out["wrk"] += finished.ru_utime + finished.ru_stime
    cpu = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    busy = sum(int(v) for i, v in enumerate(cpu) if i not in (3, 4))  # all but idle and iowait
    out["total"] = busy / tick
    return out


def cpu_per_request(before: dict[str, float], after: dict[str, float], requests: int) -> dict[str, float]:
    """Milliseconds of CPU per answered request, per group."""
    used = {k: after[k] - before.get(k, 0.0) for k in after}
    used["other"] = max(0.0, used["total"] - sum(used[g] for g in CPU_GROUPS))
    return {k: 1000 * v / max(requests, 1) for k, v in used.items()}


# ---- data ------------------------------------------------------------------------------------------


def post(server, path: str, body: dict, write_key: str) -> dict:
    request = urllib.request.Request(
        server.url + path,
        data=json.dumps(body).encode(),
        headers={"X-Write-Key": write_key, "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=60) as answer:
        return json.loads(answer.read() or b"{}")


def catalogue(plan: Plan) -> list[dict]:
    return [
        {
            "external_id": f"sku-{i:05d}",
            "title": f"{CATEGORIES[i % len(CATEGORIES)].title()} item {i}",
            "categories": [CATEGORIES[i % len(CATEGORIES)]],
            "tags": [random.Random(i).choice(["sale", "new", "eco", "classic"])],
            "price": round(5 + (i % 97) * 1.5, 2),
        }
        for i in range(plan.items)
    ]


def visitor_events(plan: Plan, rng: random.Random) -> list[dict]:
    """Each visitor favours one category (80% of their views), items drawn Zipf-like within it."""
    by_category = {c: [i for i in range(plan.items) if i % len(CATEGORIES) == k] for k, c in enumerate(CATEGORIES)}
    now = datetime.now(UTC)
    events = []
    for prefix, size in ((POOL_A, plan.pool_a), (POOL_B, plan.pool_b)):
        for v in range(size):
            anonymous_id = f"{prefix}{v:06d}"
            taste = CATEGORIES[rng.randrange(len(CATEGORIES))]
            for n in range(rng.randint(6, 14)):
                category = taste if rng.random() < 0.8 else rng.choice(CATEGORIES)
                pool = by_category[category]
                item = pool[min(int(rng.paretovariate(1.2)) - 1, len(pool) - 1)]
                kind = "add_to_cart" if rng.random() < 0.15 else "product_view"
                at = now - timedelta(days=5) + timedelta(minutes=n * 7 + v % 3000)
                events.append(
                    {
                        "type": kind,
                        "anonymous_id": anonymous_id,
                        "message_id": f"seed:{anonymous_id}:{n}",
                        "timestamp": at.isoformat(),
                        "properties": {"item_id": f"sku-{item:05d}"},
                        "context": {
                            "userAgent": "Mozilla/5.0 (X11; Linux x86_64; rv:127.0) Gecko/20100101 Firefox/127.0"
                        },
                    }
                )
    return events


def setup(run) -> None:
    """A fresh database and Redis db, migrated, with a source (consent regime opt-out)."""
    ingest.database_create()
    ingest.redis_flush()
    # System checks may query tables that do not exist yet (unfold's check of action permissions).
    ingest.manage("migrate", "--noinput", "--skip-checks")
    created = ingest.manage("create_source", "bench", "--regime", "opt-out", "--json")
    run.write_key = json.loads(created.strip().splitlines()[-1])["write_key"]


def manage_shell(code: str, timeout: float = 900) -> str:
    return ingest.manage("shell", "-c", code, timeout=timeout)


def prepare(run, plan: Plan, server, workdir: Path) -> dict:
    """Catalogue, events, training and publish, then newer events for pool B. Not measured."""
    started = time.monotonic()
    items = catalogue(plan)
    items_json = workdir / "items.json"
    items_json.write_text(json.dumps(items))
    manage_shell(
        "import json; from recommenders.services.catalogue import items_upsert; "
        f"items_upsert(items=json.load(open({str(items_json)!r})))"
    )
    rng = random.Random(42)
    events = visitor_events(plan, rng)
    for start in range(0, len(events), 1000):
        answer = post(server, "/api/v1/events", {"events": events[start : start + 1000]}, run.write_key)
        if answer.get("accepted", 0) + answer.get("duplicates", 0) != len(events[start : start + 1000]):
            raise ingest.BenchError(f"seeding events failed: {str(answer)[:300]}")
    seeded = time.monotonic()
    out = manage_shell(
        "from recommenders.services.configs import config_default_ensure; "
        "from recommenders.services.training import model_train; "
        "from recommenders.models import ModelVersion; import json; "
        "c = config_default_ensure(); r = model_train(config_id=c.pk); "
        "v = ModelVersion.objects.get(config=c, version=r.version); "
        "print('PZTRAIN ' + json.dumps({'status': r.status, 'reason': r.reason, 'version': r.version, "
        "'algorithm': v.algorithm, 'timings': v.timings, 'users': v.matrix_stats.get('users'), "
        "'items': v.matrix_stats.get('items')}))"
    )
    line = next((ln for ln in out.splitlines() if ln.startswith("PZTRAIN ")), None)
    if line is None:
        raise ingest.BenchError(f"training printed nothing:\n{out[-2000:]}")
    trained = json.loads(line[len("PZTRAIN ") :])
    if trained["status"] != "live":
        raise ingest.BenchError(f"training did not go live: {trained}")
    time.sleep(1.1)  # newer events arrive strictly after the publish
    now = datetime.now(UTC)
    newer = [
        {
            "type": "product_view",
            "anonymous_id": f"{POOL_B}{v:06d}",
            "message_id": f"newer:{v}",
            "timestamp": now.isoformat(),
            "properties": {"item_id": f"sku-{rng.randrange(plan.items):05d}"},
        }
        for v in range(plan.pool_b)
    ]
    for start in range(0, len(newer), 1000):
        post(server, "/api/v1/events", {"events": newer[start : start + 1000]}, run.write_key)
    return {
        **trained,
        "events": len(events) + len(newer),
        "seed_s": seeded - started,
        "train_s": time.monotonic() - seeded,
    }


# ---- the run ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run")
    parser.add_argument("--connections", type=int, default=8, help="wrk connections (all phases)")
    parser.add_argument("--workers", type=int, default=2, help="WEB_CONCURRENCY (production default 2)")
    parser.add_argument("--threads", type=int, default=4, help="GUNICORN_THREADS (production default 4)")
    parser.add_argument(
        "--max-requests",
        type=int,
        default=None,
        help="GUNICORN_MAX_REQUESTS (default: the configuration's, 100,000 plus up to 50%% jitter; a worker is "
        "recycled, and boots again, that often)",
    )
    parser.add_argument(
        "--rebalance-after",
        type=int,
        default=None,
        help="GUNICORN_REBALANCE_AFTER (default: the configuration's; 0: connections stay with the worker "
        "that accepted them, as in gunicorn's own gthread worker)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument(
        "--profile", action="store_true", help="after the phases, where a cached answer's time goes (py-spy)"
    )
    args = parser.parse_args(argv)
    args.verbose, args.quiet = False, False
    args.profiler = "py-spy"
    plan = QUICK if args.quick else FULL
    if shutil.which("wrk") is None:
        print("wrk is needed (apt-get install wrk)", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="pzbench-serving-"))
    config = ProductionServer(
        worker_class="gthread",
        workers=args.workers,
        threads=args.threads,
        max_requests=args.max_requests,
        rebalance_after=args.rebalance_after,
    )
    run = ingest.Run(args=args, plan=None, config=config, workdir=workdir)  # type: ignore[arg-type]
    media = workdir / "media"
    server = worker = None
    try:
        setup(run)
        os.environ["MEDIA_ROOT"] = str(media)  # artifacts of this run, read by every gunicorn worker
        # One thread per numeric library in each web process: OpenMP (implicit's ALS) would otherwise
        # spin threads per request on a machine whose cores the workers already share.
        process_env = {"MEDIA_ROOT": str(media), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        server = ingest.GunicornServer(config, workdir, extra_env={**process_env, **config.env()})
        server.start()
        worker = celery_worker(workdir, process_env)
        print(f"preparing: {plan.items:,} items, {plan.pool_a + plan.pool_b:,} visitors ...", flush=True)
        prepared = prepare(run, plan, server, workdir)
        print(
            f"  seeded {prepared['events']:,} events in {prepared['seed_s']:.1f} s; trained "
            f"{prepared['algorithm']} v{prepared['version']} ({prepared['users']:,} users x {prepared['items']:,} "
            f"items) and published in {prepared['train_s']:.1f} s",
            flush=True,
        )
        floor_lua = "floor.lua"
        cached_lua = lua_script(workdir, "cached", prefix=POOL_A, pool=plan.pool_a, mode="random")
        threads = args.connections
        warm_stride = -(-plan.warm.requests // threads) + 1
        warm_lua = lua_script(
            workdir, "recompute-warm", prefix=POOL_B, pool=plan.pool_b, mode="once", stride=warm_stride
        )
        base = warm_stride * threads
        # Pool B after the warm-up: the throughput phase's share, then the paced phase's (each visitor
        # is asked once, so every answer recomputes).
        throughput_share = min(plan.recompute.requests, (plan.pool_b - base) * 2 // 3)
        stride = throughput_share // threads
        recompute_budget = ingest.Budget(stride * threads - threads, plan.recompute.seconds)
        recompute_lua = lua_script(
            workdir, "recompute", prefix=POOL_B, pool=plan.pool_b, mode="once", base=base - 1, stride=stride
        )
        paced_base = base + stride * threads
        paced_stride = (plan.pool_b - paced_base) // threads
        paced_recompute_lua = lua_script(
            workdir, "recompute-paced", prefix=POOL_B, pool=plan.pool_b, mode="once", base=paced_base - 1,
            stride=paced_stride,
        )  # fmt: skip
        cpu: dict[str, dict[str, float]] = {}
        paced: dict[str, ingest.PhaseResult] = {}
        machine: dict[str, dict] = {}
        slices: dict[str, list] = {}

        def paced_after(name: str, label: str, script: str, result, *, room: int | None = None) -> None:
            """Latency paced at PACED_SHARE of the throughput measured."""
            rate = max(1.0, result.req_per_s * PACED_SHARE)
            requests = int(rate * plan.paced_seconds)
            if room is not None:
                requests = min(requests, room)
            with MachineWatch(workdir, f"{name}.paced") as watch:
                paced[name] = run.phase(
                    server, paced_script.get(name, script), f"{name} paced", label, f"{name}.paced",
                    ingest.Budget(requests, plan.paced_seconds), stores=False, rate=rate,
                )  # fmt: skip
            machine[name] = watch.result

        def measured(name: str, label: str, script: str, budget: ingest.Budget, *, room: int | None = None):
            """Throughput (closed loop), then latency paced at PACED_SHARE of that throughput."""
            before = cpu_seconds()
            result = run.phase(server, script, name, label, name, budget, stores=False)
            cpu[name] = cpu_per_request(before, cpu_seconds(), result["answered"])
            paced_after(name, label, script, result, room=room)
            return result

        def alternating(endpoints: list[tuple[str, str, str, ingest.Budget]]) -> list:
            """Throughput of endpoints in alternating slices (SLICES of each, same share of their budget):
            the machine's speed drifts over seconds, and each endpoint then samples the same drift."""
            parts: dict[str, list] = {name: [] for name, *_ in endpoints}
            used: dict[str, dict[str, float]] = {name: {} for name, *_ in endpoints}
            for index in range(SLICES):
                for name, label, script, budget in endpoints:
                    before = cpu_seconds()
                    part = run.phase(
                        server, script, f"{name} {index + 1}/{SLICES}", label, f"{name}.{index}",
                        ingest.Budget(budget.requests // SLICES, budget.seconds / SLICES), stores=False,
                    )  # fmt: skip
                    after = cpu_seconds()
                    for key, value in after.items():
                        used[name][key] = used[name].get(key, 0.0) + value - before.get(key, 0.0)
                    parts[name].append(part)
            results = []
            for name, label, _, _ in endpoints:
                merged = merge_parts(name, label, parts[name])
                cpu[name] = cpu_per_request({}, used[name], merged["answered"])
                slices[name] = parts[name]
                results.append(merged)
            return results

        paced_script = {"recompute": str(paced_recompute_lua)}
        run.phase(server, floor_lua, "floor warm-up", "", "floor.warm", plan.warm, stores=False)
        cached_warm = run.phase(server, str(cached_lua), "cached warm-up", "", "cached.warm", plan.warm, stores=False)
        floor, cached = alternating(
            [
                ("floor", "POST /bench/floor", floor_lua, plan.floor),
                ("cached", "GET /recommendations", str(cached_lua), plan.cached),
            ]
        )
        paced_after("floor", "POST /bench/floor", floor_lua, floor)
        paced_after("cached", "GET /recommendations", str(cached_lua), cached)
        recompute_warm = run.phase(
            server, str(warm_lua), "recompute warm-up", "", "recompute.warm", plan.warm, stores=False
        )
        recompute = measured(
            "recompute", "GET /recommendations", str(recompute_lua), recompute_budget,
            room=paced_stride * threads - threads,
        )  # fmt: skip
        if args.profile:
            profiled = profile_cached(run, server, str(cached_lua), workdir)
        ingest.stop_process(worker)
        worker = None
        logged = {
            **served_rows(),
            "warm": cached_warm["answered"] + recompute_warm["answered"],
            "paced": paced["cached"]["answered"] + paced["recompute"]["answered"],
        }
    except ingest.BenchError as error:
        print(f"benchmark could not run: {error}", file=sys.stderr)
        return 2
    finally:
        if server is not None:
            server.stop()
        ingest.stop_process(worker)
    served = {}
    for name in ("cached", "recompute"):
        counts = strategies(workdir, name)
        prefixes = [f"{name}.paced"] + [f"{name}.{i}" for i in range(SLICES) if name == "cached"]
        for strategy, count in [item for prefix in prefixes for item in strategies(workdir, prefix).items()]:
            counts[strategy] = counts.get(strategy, 0) + count
        served[name] = counts
    ok = report(
        plan, config, args, prepared, floor, cached, recompute, served, server, logged, cpu, paced, slices, machine
    )
    if args.profile:
        print("\n" + profiled, flush=True)
    if args.keep:
        print(f"  work directory kept: {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if ok else 1


def profile_cached(run, server, script: str, workdir: Path, seconds: int = 10) -> str:
    """The cached phase once more with py-spy sampling every worker (wall clock, waits included)."""
    raw = workdir / "cached.pyspy.txt"
    spy = ingest.pyspy_record(server.proc.pid, seconds + 2, raw)
    time.sleep(1.0)
    if spy.poll() is not None:
        return f"py-spy could not attach: {(spy.stdout.read() if spy.stdout else '').strip()[:300]}"
    phase = run.phase(
        server, script, "cached (profiled)", "", "cached.profile", ingest.Budget(10**9, seconds), stores=False
    )
    try:
        spy.communicate(timeout=seconds + 30)
    finally:
        ingest.stop_process(spy)
    if not raw.exists():
        return "py-spy wrote no profile"
    title = f"cached answers, {phase.req_per_s:,.1f} req/s while profiled"
    return ingest.profile_report(raw, title, top=25)


def served_rows() -> dict:
    """Flush what is still buffered (the worker is stopped), then count the served lists stored."""
    out = manage_shell(
        "import json; from recommenders.serving.served import served_flush, served_pending; "
        "from recommenders.models import RecommendationServed; served_flush(); "
        "print('PZSERVED ' + json.dumps({'rows': RecommendationServed.objects.count(), 'pending': served_pending()}))"
    )
    line = next((ln for ln in out.splitlines() if ln.startswith("PZSERVED ")), None)
    return json.loads(line[len("PZSERVED ") :]) if line else {"rows": -1, "pending": -1}


def report(
    plan, config, args, prepared, floor, cached, recompute, served, server, logged, cpu, paced, slices, machine
) -> bool:
    def verdict(met: bool) -> str:
        return "met" if met else "MISSED"

    lines = [
        "",
        f"Serving benchmark ({plan.name} run) — {os.cpu_count()} cores, load from wrk on {ingest.HOST}",
        f"  server: {config.describe()}",
        f"  machine load average (1 min) at the end: {os.getloadavg()[0]:.2f}"
        + ("   (other processes were busy: figures are noisy)" if os.getloadavg()[0] > 1.0 else ""),
        f"  load:   wrk -t{args.connections} -c{args.connections}, GET /api/v1/recommendations?anonymous_id=..&n=10 "
        "with the write key",
        f"  model:  {prepared['algorithm']} v{prepared['version']}, {prepared['users']:,} users x "
        f"{prepared['items']:,} items, top-N lists published to Redis",
        "",
    ]
    header = (
        f"  {'phase':<10} {'load':<16} {'endpoint':<22} {'requests':>9} {'secs':>6} {'req/s':>9} {'p50 ms':>8} "
        f"{'p99 ms':>8} {'non-2xx':>8}"
    )
    lines += [header, "  " + "-" * (len(header) - 2)]
    for phase, name in ((floor, "floor"), (cached, "cached"), (recompute, "recompute")):
        for result, load in ((phase, f"{args.connections} conns, flat out"), (paced[name], "paced, 1/2 of it")):
            lat = result["latency_ms"]
            lines.append(
                f"  {name:<10} {load:<16} {phase.label:<22} {result['answered']:>9,} {result.elapsed:6.1f} "
                f"{result.req_per_s:9,.1f} {lat['p50']:8.2f} {lat['p99']:8.2f} {result['bad']:>8,}"
            )
    lines.append(
        "  served as: "
        + "; ".join(
            f"{name} " + ", ".join(f"{k} {v:,}" for k, v in sorted(served.get(name, {}).items()))
            for name in ("cached", "recompute")
        )
    )
    lines += [
        "",
        "  CPU per answered request, ms, flat out (all processes of each kind; other = the rest of the machine)",
    ]
    columns = (*CPU_GROUPS, "other", "total")
    lines.append("  " + f"{'phase':<10}" + "".join(f"{g:>10}" for g in columns))
    for name in ("floor", "cached", "recompute"):
        row = cpu.get(name, {})
        lines.append("  " + f"{name:<10}" + "".join(f"{row.get(g, 0.0):10.3f}" for g in columns))
    lines += [
        "",
        "  the machine during each paced phase: a bystander on each core waking every 1 ms (how late), steal, and",
        "  CPU pressure (share of the time some runnable task waited for a core)",
        f"  {'phase':<10} {'p99 ms':>8} {'p99.9 ms':>9} {'max ms':>8} {'>=5 ms':>7} {'in them':>9} {'steal':>7} "
        f"{'pressure':>9}   {'phase p99':>10}",
    ]
    for name in ("floor", "cached", "recompute"):
        seen = machine.get(name)
        if not seen:
            continue
        pressure = "n/a" if seen["pressure_pct"] is None else f"{seen['pressure_pct']:.0f}%"
        lines.append(
            f"  {name:<10} {seen['late_p99_ms']:8.2f} {seen['late_p999_ms']:9.2f} {seen['late_max_ms']:8.2f} "
            f"{seen['stalls']:>7,} {seen['stalled_ms']:7.0f} ms {seen['steal_pct']:6.1f}% {pressure:>9}   "
            f"{paced[name]['latency_ms']['p99']:7.2f} ms"
        )
    ratio = cached.req_per_s / floor.req_per_s if floor.req_per_s else 0.0
    cached_p99, recompute_p99 = paced["cached"]["latency_ms"]["p99"], paced["recompute"]["latency_ms"]["p99"]
    pairs = [c.req_per_s / f.req_per_s for f, c in zip(slices["floor"], slices["cached"], strict=True) if f.req_per_s]
    lines += [
        "",
        f"  cached / floor throughput (flat out, {SLICES} alternating slices of each): {ratio:.2f} "
        f"({cached.req_per_s:,.1f} / {floor.req_per_s:,.1f} req/s); slice by slice: "
        + " ".join(f"{r:.2f}" for r in pairs),
        "",
        f"  goals (latency paced at {PACED_SHARE:.0%} of each endpoint's own flat-out throughput, every request timed "
        "from its scheduled send)",
        f"    cached p99 <= {GOAL_CACHED_P99_MS:.0f} ms: {cached_p99:.2f} ms at {paced['cached'].req_per_s:,.0f} req/s "
        f"— {verdict(cached_p99 <= GOAL_CACHED_P99_MS)}",
        f"    cached >= {GOAL_CACHED_VS_FLOOR:.0%} of the bare endpoint: {ratio:.0%} — "
        f"{verdict(ratio >= GOAL_CACHED_VS_FLOOR)}",
        f"    recompute-on-read p99 <= {GOAL_RECOMPUTE_P99_MS:.0f} ms: {recompute_p99:.2f} ms at "
        f"{paced['recompute'].req_per_s:,.0f} req/s — {verdict(recompute_p99 <= GOAL_RECOMPUTE_P99_MS)}",
    ]
    cached_paths = served.get("cached", {})
    recompute_paths = served.get("recompute", {})
    paths_ok = (
        cached_paths.get("cached", 0) == sum(cached_paths.values()) > 0
        and recompute_paths.get("recomputed", 0) == sum(recompute_paths.values()) > 0
    )
    bad = sum(r["bad"] for r in (floor, cached, recompute, *paced.values()))
    errors_ok = not bad and not server.log_count("Traceback")
    # Every list answered has its row (the warm-ups' too); a few more when wrk stopped at a deadline
    # with answers in flight. None may be missing or left in the buffer.
    answered = cached["answered"] + recompute["answered"] + logged["warm"] + logged["paced"]
    logged_ok = logged["rows"] >= answered and logged["pending"] == 0
    lines += [
        f"  paths exercised (every cached answer from the cache, every recompute answer recomputed): "
        f"{'yes' if paths_ok else 'NO'}",
        f"  errors (non-2xx, server tracebacks): {'none' if errors_ok else 'YES, see the gunicorn log'}",
        f"  served lists logged (buffered, flushed by the worker): {logged['rows']:,} rows for {answered:,} answers, "
        f"{logged['pending']} left in the buffer — {'ok' if logged_ok else 'ROWS MISSING'}",
    ]
    print("\n".join(lines), flush=True)
    return paths_ok and errors_ok and logged_ok


if __name__ == "__main__":
    sys.exit(main())
