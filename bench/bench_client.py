"""The client's two figures: how fast ``iris --help`` starts, and split /predict throughput.

1. ``iris --help``: wall time of the console script (median of N runs) and the import time
   of ``iris_client.cli`` (``python -X importtime``). Target: under 0.3 s.
2. ``IrisClient.predict`` of a large input, split by the server's ``max_instances``, sent
   with 1, 2 and 4 requests in flight, against ``iris-serve`` with 1 and 2 workers on
   127.0.0.1. Rounds are interleaved; figures are medians with [min-max]. The client's
   default concurrency is chosen by this measurement.

    python bench/bench_client.py            # about a minute
    python bench/bench_client.py --quick    # a smoke run
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from iris_client import IrisClient

from harness.servers import ServerProcess


def iris_script() -> list[str]:
    script = Path(sys.executable).with_name("iris")
    return [str(script)] if script.exists() else [sys.executable, "-m", "iris_client"]


def timed(command: list[str]) -> tuple[float, float]:
    """Wall time and CPU time (user + system) of one run of ``command``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def help_figures(runs: int) -> None:
    """Wall time moves with the machine's load; CPU time is what the command itself costs."""
    command = [*iris_script(), "--help"]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)  # warm the file cache
    runs_help = [timed(command) for _ in range(runs)]
    runs_bare = [timed([sys.executable, "-c", "pass"]) for _ in range(runs)]
    imports = []
    for _ in range(max(3, runs // 4)):
        out = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", "import iris_client.cli"],
            check=True,
            capture_output=True,
            text=True,
        ).stderr
        total = [int(m) for m in re.findall(r"\|\s+(\d+) \| client\.cli$", out, re.M)]
        imports.append(total[-1] / 1e6 if total else float("nan"))
    load = os.getloadavg()[0]
    print(f"`{' '.join(Path(c).name for c in command)}`, {runs} runs, load average {load:.1f}:")
    print(f"  wall time         median {fmt([w for w, _ in runs_help])} s  (target < 0.3 s)")
    print(f"  CPU time          median {fmt([c for _, c in runs_help])} s  (user + system)")
    print(f"  import iris_client.cli median {fmt(imports)} s  (python -X importtime)")
    print(
        f"  bare interpreter  median {fmt([w for w, _ in runs_bare])} s wall, "
        f"{fmt([c for _, c in runs_bare])} s CPU  (python -c pass)"
    )


def fmt(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} [{min(values):.3f}-{max(values):.3f}]"


def predict_figures(rows: int, rounds: int, max_instances: int) -> None:
    rng = np.random.default_rng(0)
    data = rng.uniform(0.5, 8.0, size=(rows, 4)).round(2)
    concurrencies = [1, 2, 4]
    print(
        f"\npredict {rows:,} rows, IRIS_MAX_INSTANCES={max_instances:,} "
        f"({-(-rows // max_instances)} requests), {rounds} interleaved rounds:"
    )
    for workers in (1, 2):
        with tempfile.TemporaryDirectory() as tmp:
            env = {
                "IRIS_WORKERS": str(workers),
                "IRIS_MAX_INSTANCES": str(max_instances),
                "IRIS_LOG_LEVEL": "warning",
            }
            server = ServerProcess(Path(tmp) / "data", Path(tmp) / "server.log", env)
            server.start()
            try:
                seconds: dict[int, list[float]] = {c: [] for c in concurrencies}
                with IrisClient(server.url) as iris:
                    iris.predict(data[:10])  # connect, read limits
                    for _ in range(rounds):
                        for c in concurrencies:
                            started = time.perf_counter()
                            answer = iris.predict(data, concurrency=c)
                            seconds[c].append(time.perf_counter() - started)
                            assert len(answer) == rows
            finally:
                server.stop()
        base = statistics.median(seconds[1])
        for c in concurrencies:
            median = statistics.median(seconds[c])
            print(
                f"  {workers} worker(s), concurrency {c}: {fmt(seconds[c])} s, "
                f"{rows / median:,.0f} rows/s, {base / median:.2f}x sequential"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    print(
        f"python {platform.python_version()}, {os.cpu_count()} CPUs, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
    )
    help_figures(5 if args.quick else 20)
    rounds = 2 if args.quick else 5
    predict_figures(100_000, rounds, 10_000)
    predict_figures(100_000, rounds, 1_000)


if __name__ == "__main__":
    main()
