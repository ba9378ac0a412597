"""The longer schemathesis campaign against ``iris-serve`` as a real process (``make fuzz``).

    .venv/bin/python bench/fuzz_live.py [--seconds 300] [--max-examples 300] [--seed 1]
                                         [--workers 1] [--report-dir DIR] [--exclude-checks NAMES]

It starts ``iris-serve`` on a free port of 127.0.0.1 with a fresh data directory and a token
of its own, then runs schemathesis's ``st run`` (in this process) against the server's
/openapi.json with that token: every phase (examples, coverage, fuzzing, stateful) and every
check, for at most ``--seconds``. The rules are tests/test_fuzz.py's: a schema-valid request
may be refused only for a rule JSON Schema cannot state, with its documented status and a
detail naming the rule (``positive_data_acceptance`` is replaced by a check that allows
exactly that). Training jobs the fuzzer starts never activate and are cancelled at once.

Afterwards the server must still be running, answer /predict with the model it served before,
have no job left running and no traceback in its log. The exit status is 0 only when
schemathesis found nothing and the server was unharmed; JUnit and NDJSON reports and the
server log are left in the report directory.
"""

from __future__ import annotations

import argparse
import contextlib
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import schemathesis
from schemathesis.cli import schemathesis as st

from harness.fuzz import json_or_none, pin_stored_version, refusal_explained
from harness.servers import ServerProcess

PROBE = {
    "instances": [
        {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2},
        {"sepal_length": 6.7, "sepal_width": 3.0, "petal_length": 5.2, "petal_width": 2.3},
    ]
}
# Set once the server is up; read by the hooks below.
LIVE: dict[str, Any] = {}


@schemathesis.check
def positive_data_acceptance_unless_unstatable(ctx: Any, response: Any, case: Any) -> Any:
    """schemathesis's positive_data_acceptance, but a refusal naming an unstatable rule passes."""
    if refusal_explained(case.operation.label, response.status_code, json_or_none(response)):
        return None
    return schemathesis.checks.positive_data_acceptance(ctx, response, case)


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    """Valid cases name the stored version, and a training job never activates its model."""
    if case.meta is None or case.meta.generation.mode.is_negative:
        return
    pin_stored_version(case, LIVE["version"])
    if case.operation.label == "POST /train" and isinstance(case.body, dict):
        case.body["activate"] = False


@schemathesis.hook
def after_call(context: Any, case: Any, response: Any) -> None:
    """Cancel a job the fuzzer started, so the next one may start."""
    if case.operation.label == "POST /train" and response.status_code == 202:
        job_id = response.json()["job_id"]
        LIVE["jobs"] += 1
        with httpx.Client(base_url=LIVE["url"], timeout=10.0) as http:
            http.post(f"/train/{job_id}/cancel", headers=LIVE["auth"])


# Schema-valid requests that a rule JSON Schema cannot state refuses (as many labels as
# instances, a tensor's shape against its data, the IRIS_MAX_* limits) count as accepted
# with that status, on those operations only; tests/test_fuzz.py checks their details too.
_ACCEPTED = '["2xx", "3xx", "401", "403", "404", "409", "429", "5xx", "%s"]'
UNSTATABLE_STATUSES = "".join(
    f'[[operations]]\ninclude-name = "{name}"\n'
    f"checks.positive_data_acceptance.expected-statuses = {_ACCEPTED % status}\n"
    for name, status in [
        ("POST /predict", 422),
        ("POST /gradients", 422),
        ("POST /train", 422),
        ("GET /models/{version}/regions", 422),
        ("POST /v2/models/{model_name}/infer", 400),
        ("POST /v2/models/{model_name}/versions/{model_version}/infer", 400),
    ]
)


def st_run(config: Path, arguments: list[str]) -> int:
    """``st run`` in this process (so the check and hooks above apply); its exit status."""
    try:
        st.main(
            args=[f"--config-file={config}", "run", *arguments],
            prog_name="st",
            standalone_mode=False,
        )
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return 0


def predict(http: httpx.Client) -> httpx.Response:
    return http.post("/predict", json=PROBE)


def unharmed(server: ServerProcess, before: httpx.Response) -> list[str]:
    """What is wrong with the server after the campaign (nothing: an empty list)."""
    problems = []
    if server.proc is None or server.proc.poll() is not None:
        return ["iris-serve is no longer running"]
    with server.client() as http:
        after = predict(http)
        if after.status_code != 200 or after.content != before.content:
            problems.append(f"/predict answers differently: {after.status_code} {after.text[:300]}")
        deadline = time.monotonic() + 15.0
        while True:
            jobs = http.get("/train", params={"limit": 1000}).json()["jobs"]
            active = [j["job_id"] for j in jobs if j["status"] in ("queued", "running")]
            if not active or time.monotonic() > deadline:
                break
            for job_id in active:
                http.post(f"/train/{job_id}/cancel", headers=server.auth())
            time.sleep(0.2)
        if active:
            problems.append(f"jobs still running 15 s after the campaign: {active}")
    log = server.log()
    for marker in ("Traceback", "Exception in ASGI application", "unexpected error"):
        if marker in log:
            problems.append(f"the server log has {marker!r}")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=300, help="time budget of st run")
    parser.add_argument("--max-examples", type=int, default=300, help="per operation")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", type=int, default=1, help="iris-serve workers")
    parser.add_argument("--report-dir", type=Path, default=None)
    parser.add_argument(
        "--exclude-checks",
        default="",
        help="comma-separated checks to leave out (none by default)",
    )
    args = parser.parse_args()

    report_dir = args.report_dir or Path(tempfile.mkdtemp(prefix="iris-fuzz-"))
    report_dir.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(24)
    env = {
        "IRIS_API_TOKEN": token,
        "IRIS_WORKERS": str(args.workers),
        "IRIS_MAX_TRAIN_ROWS": "200",  # jobs stay small even before they are cancelled
        "IRIS_LOG_LEVEL": "warning",
    }
    with tempfile.TemporaryDirectory(prefix="iris-fuzz-data-") as data_dir:
        server = ServerProcess(Path(data_dir), report_dir / "server.log", env)
        server.start()
        try:
            with server.client() as http:
                before = predict(http)
                before.raise_for_status()
            LIVE.update(
                url=server.url,
                auth=server.auth(),
                version=before.json()["model_version"],
                jobs=0,
            )
            config = report_dir / "schemathesis.toml"
            config.write_text(
                '[parameters]\n"path.model_name" = "iris"\n'
                f'[cache]\ndirectory = "{report_dir / "cache"}"\n'  # not ./.schemathesis
                + UNSTATABLE_STATUSES
            )
            started = time.monotonic()
            status = st_run(
                config,
                [
                    f"{server.url}/openapi.json",
                    f"--header=Authorization: Bearer {token}",
                    "--checks=all",
                    *([f"--exclude-checks={args.exclude_checks}"] if args.exclude_checks else []),
                    "--phases=examples,coverage,fuzzing,stateful",
                    f"--max-examples={args.max_examples}",
                    f"--max-time={args.seconds}",
                    f"--seed={args.seed}",
                    "--generation-database=none",
                    "--continue-on-failure",
                    "--report=junit,ndjson",
                    f"--report-dir={report_dir}",
                ],
            )
            elapsed = time.monotonic() - started
            problems = unharmed(server, before)
        finally:
            server.stop()
    print(f"\nfuzz_live: st run exit {status} after {elapsed:.0f} s; {LIVE['jobs']} jobs started")
    print(f"fuzz_live: reports and the server log in {report_dir}")
    for problem in problems:
        print(f"fuzz_live: SERVER HARMED: {problem}")
    if not problems:
        print("fuzz_live: the server still serves the same model; no traceback in its log")
    return status or (1 if problems else 0)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
    sys.exit(130)
