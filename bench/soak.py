"""Bounded soak of ``iris-serve``: `make soak` (``python bench/soak.py``).

The scenario and what PASS needs are described in harness/soak.py, which tests/test_soak.py
runs with smaller figures. Exit status 1 on FAIL.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from harness.servers import uptime
from harness.soak import SoakConfig, render, run_soak


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="load duration (default 60)")
    parser.add_argument("--connections", type=int, default=32, help="keep-alive connections")
    parser.add_argument("--retrains", type=int, default=10, help="training jobs during the run")
    parser.add_argument("--activations", type=int, default=10, help="activations during the run")
    parser.add_argument(
        "--workers", type=int, action="append", help="IRIS_WORKERS (repeatable; default 1 and 2)"
    )
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds before the RSS baseline")
    parser.add_argument("--load-processes", type=int, default=1, help="load-generator processes")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    config = SoakConfig(
        seconds=args.seconds,
        connections=args.connections,
        retrains=args.retrains,
        activations=args.activations,
        warmup=args.warmup,
        load_processes=args.load_processes,
    )
    print(f"soak of iris-serve on 127.0.0.1; {os.cpu_count()} CPUs; {uptime()}", flush=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="iris-soak-") as workdir:
        for workers in args.workers or [1, 2]:
            result = run_soak(workers, config, Path(workdir))
            results.append(result)
            print(render(result), flush=True)
    print(f"after: {uptime()}")
    passed = all(r["passed"] for r in results)
    print("soak:", "PASS" if passed else "FAIL")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
