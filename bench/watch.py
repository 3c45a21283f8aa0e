"""What the machine itself did during a benchmark phase, measured beside the processes under test.

A latency percentile taken on a shared two-core virtual machine mixes two things: how long the
server took, and whether the machine was there to run it. This module measures the second, so
that a report can tell them apart:

- a bystander process pinned to each core sleeps for 1 ms, over and over, and records how late
  each wake-up comes. An ordinary process that sleeps is woken ahead of busy ones, so on a machine
  that is merely loaded it is late by a fraction of a millisecond; when a core is taken away (the
  hypervisor runs something else on it, or the kernel holds it) every thread on that core waits,
  and the bystander sees the whole wait;
- steal time (`/proc/stat`): time the hypervisor says it gave this machine's cores to others;
- CPU pressure (`/proc/pressure/cpu`, "some"): share of the time some runnable task here waited
  for a core.

    with MachineWatch(workdir, "cached.paced") as watch:
        ...  # the phase
    watch.result  # {"wakes": ..., "late_p99_ms": ..., "late_max_ms": ..., "stalls_5ms": ..., ...}

Run as a script, it is one bystander: `python bench/watch.py --cpu N --out FILE` until SIGINT.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

PERIOD_S = 0.001
STALL_MS = 5.0  # a wake-up this late is a stall: the core was not there for 5 ms


def _steal_and_total() -> tuple[int, int]:
    """Steal and total jiffies over all cores so far."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (fields[7] if len(fields) > 7 else 0), sum(fields[:8])


def _pressure_us() -> int | None:
    """Microseconds during which some runnable task waited for a core (None without PSI)."""
    try:
        for line in Path("/proc/pressure/cpu").read_text().splitlines():
            if line.startswith("some "):
                return int(line.rsplit("total=", 1)[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


class MachineWatch:
    """Bystanders on every core plus steal and pressure, around one phase."""

    def __init__(self, workdir: Path, name: str):
        self.workdir, self.name = workdir, name
        self.procs: list[tuple[subprocess.Popen, Path]] = []
        self.result: dict = {}

    def __enter__(self) -> MachineWatch:
        for cpu in sorted(os.sched_getaffinity(0)):
            out = self.workdir / f"{self.name}.watch{cpu}.json"
            out.unlink(missing_ok=True)
            proc = subprocess.Popen(
                [sys.executable, __file__, "--cpu", str(cpu), "--out", str(out)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            self.procs.append((proc, out))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not all(out.with_suffix(".ready").exists() for _, out in self.procs):
            time.sleep(0.01)
        self.started = time.monotonic()
        self.steal0, self.total0 = _steal_and_total()
        self.pressure0 = _pressure_us()
        return self

    def __exit__(self, *exc) -> None:
        elapsed = time.monotonic() - self.started
        steal1, total1 = _steal_and_total()
        pressure1 = _pressure_us()
        late: list[float] = []
        wakes = 0
        for proc, _ in self.procs:
            proc.send_signal(signal.SIGINT)
        for proc, out in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            try:
                data = json.loads(out.read_text())
            except (OSError, ValueError):
                continue
            wakes += data["wakes"]
            late += data["late_ms"]
            out.with_suffix(".ready").unlink(missing_ok=True)
        # late_ms holds only wake-ups later than 0.5 ms; the others count as on time.
        late.sort(reverse=True)

        def quantile(q: float) -> float:
            rank = int(wakes * (1 - q))
            return late[rank] if rank < len(late) else 0.0

        ticks = max(1, total1 - self.total0)
        self.result = {
            "seconds": elapsed,
            "wakes": wakes,
            "late_p99_ms": quantile(0.99),
            "late_p999_ms": quantile(0.999),
            "late_max_ms": late[0] if late else 0.0,
            "stalls": sum(1 for v in late if v >= STALL_MS),
            "stalled_ms": sum(v for v in late if v >= STALL_MS),
            "steal_pct": 100 * (steal1 - self.steal0) / ticks,
            "pressure_pct": (
                100 * (pressure1 - self.pressure0) / 1e6 / max(elapsed, 1e-9)
                if pressure1 is not None and self.pressure0 is not None
                else None
            ),
        }


def bystander(cpu: int, out: Path) -> None:
    """Sleep PERIOD_S at a time on one core until SIGINT; write how late the wake-ups came."""
    os.sched_setaffinity(0, {cpu})
    stop = False

    def interrupted(signum, frame):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, interrupted)
    late_ms: list[float] = []
    wakes = 0
    out.with_suffix(".ready").touch()
    clock = time.perf_counter
    while not stop:
        due = clock() + PERIOD_S
        time.sleep(PERIOD_S)
        late = (clock() - due) * 1000
        wakes += 1
        if late > 0.5:
            late_ms.append(round(late, 3))
    out.write_text(json.dumps({"cpu": cpu, "wakes": wakes, "late_ms": late_ms}))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    options = parser.parse_args()
    bystander(options.cpu, options.out)
