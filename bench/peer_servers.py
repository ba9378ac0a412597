"""The peers of ``bench/bench_http.py``: MLServer and KServe's model server, serving our weights.

Neither is a dependency of this project. Each gets a virtualenv of its own under the bench's
scratch directory (``bench/.scratch/`` by default, git-ignored), with one pinned release
installed by pip from the package index; the virtualenv is kept and reused by later runs (a
stamp file records what was installed and how long it took). Where the installation fails
(no index reachable, no wheel for this Python), the caller prints ``peers: skipped (reason)``
and goes on without them.

Both peers serve the same weights as the service under test (exported from its data
directory: ``weights.npz`` with W1 b1 W2 b2 mean std) through a small custom runtime in
``bench/peers/`` that computes the forward pass with NumPy (``bench/peers/iris_numpy.py``)
and answers the Open Inference Protocol request our ``/v2/models/iris/infer`` takes. Each
runs as one process, like the service's default of one worker:

- MLServer: ``mlserver start`` on a copy of ``bench/peers/mlserver_iris`` with
  ``parallel_workers`` 0 (inference in the server process; MLServer's default of 1 adds a
  worker process and a queue between the two); HTTP, gRPC and metrics on free ports of
  127.0.0.1 (MLServer always starts the gRPC and metrics servers; the launcher keeps the
  gRPC port, which ``bench_http.py --only grpc`` loads); everything else at MLServer's
  defaults (``debug`` true, so uvicorn's access log is on, as the service's is).
- KServe: ``bench/peers/kserve_iris.py`` (``kserve.ModelServer(...).start([model])``), one
  worker, gRPC off, everything else at KServe's defaults (uvicorn's access log and KServe's
  per-request latency log on).
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.servers import Launch, free_port

BENCH = Path(__file__).resolve().parent
PEERS_SOURCE = BENCH / "peers"
DEFAULT_SCRATCH = BENCH / ".scratch"
STAMP = ".bench-installed.json"
INSTALL_TIMEOUT_SECONDS = 900
REPORTED_PACKAGES = ("numpy", "fastapi", "starlette", "uvicorn", "uvloop", "httptools", "orjson")


class PeerUnavailableError(Exception):
    """A peer could not be installed or prepared; the message says why."""


@dataclass(frozen=True)
class Peer:
    """One peer server: what to install and how to start it on a port."""

    name: str
    package: str
    version: str
    ready_path: str = "/v2/health/ready"

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"

    @property
    def venv_name(self) -> str:
        return f"venv-{self.package}-{self.version}"


MLSERVER = Peer("MLServer", "mlserver", "1.7.1")
KSERVE = Peer("KServe", "kserve", "0.21.0")
PEERS = (MLSERVER, KSERVE)


@dataclass(frozen=True)
class Venv:
    """An installed peer virtualenv and what it cost."""

    peer: Peer
    path: Path
    install_seconds: float
    installed_now: bool
    size_bytes: int
    versions: dict[str, str]

    @property
    def bin(self) -> Path:
        return self.path / "bin"


def tree_bytes(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            file = Path(root) / name
            if not file.is_symlink():
                total += file.stat().st_size
    return total


def installed_versions(python: Path) -> dict[str, str]:
    """Versions of the peer and the packages that decide its speed, as the venv has them."""
    code = (
        "import importlib.metadata as m, json, sys\n"
        "found = {}\n"
        "for name in sys.argv[1:]:\n"
        "    try:\n"
        "        found[name] = m.version(name)\n"
        "    except m.PackageNotFoundError:\n"
        "        pass\n"
        "print(json.dumps(found))\n"
    )
    out = subprocess.run(
        [str(python), "-c", code, "mlserver", "kserve", *REPORTED_PACKAGES],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    found: dict[str, str] = json.loads(out.stdout)
    return found


def ensure_venv(peer: Peer, scratch: Path, log: Callable[[str], None] = print) -> Venv:
    """The peer's virtualenv under ``scratch``, created and pip-installed when missing."""
    path = scratch / peer.venv_name
    stamp = path / STAMP
    python = path / "bin" / "python"
    if stamp.is_file() and python.is_file():
        with_stamp = json.loads(stamp.read_text())
        if with_stamp.get("requirement") == peer.requirement:
            return Venv(
                peer,
                path,
                float(with_stamp["install_seconds"]),
                False,
                int(with_stamp["size_bytes"]),
                dict(with_stamp["versions"]),
            )
    shutil.rmtree(path, ignore_errors=True)
    scratch.mkdir(parents=True, exist_ok=True)
    log(f"  {peer.name}: installing {peer.requirement} into {path} (once; kept for later runs)")
    started = time.perf_counter()
    pip_log = scratch / f"{peer.venv_name}.pip.log"
    try:
        subprocess.run(
            [sys.executable, "-m", "venv", str(path)], check=True, capture_output=True, timeout=120
        )
        with open(pip_log, "wb") as out:
            done = subprocess.run(
                [
                    str(python),
                    "-m",
                    "pip",
                    "install",
                    "--disable-pip-version-check",
                    "--no-input",
                    peer.requirement,
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=INSTALL_TIMEOUT_SECONDS,
                check=False,
            )
        if done.returncode != 0:
            tail = pip_log.read_text(errors="replace").strip().splitlines()[-3:]
            raise PeerUnavailableError(
                f"pip install {peer.requirement} failed ({done.returncode}): "
                + " | ".join(line.strip() for line in tail)
            )
        versions = installed_versions(python)
    except (OSError, subprocess.SubprocessError) as error:
        shutil.rmtree(path, ignore_errors=True)
        raise PeerUnavailableError(f"installing {peer.requirement}: {error}") from None
    except PeerUnavailableError:
        shutil.rmtree(path, ignore_errors=True)
        raise
    seconds = time.perf_counter() - started
    size = tree_bytes(path)
    stamp.write_text(
        json.dumps(
            {
                "requirement": peer.requirement,
                "install_seconds": seconds,
                "size_bytes": size,
                "versions": versions,
            }
        )
    )
    return Venv(peer, path, seconds, True, size, versions)


def ensure_venvs(
    scratch: Path, log: Callable[[str], None] = print, peers: tuple[Peer, ...] = PEERS
) -> dict[str, Venv | PeerUnavailableError]:
    """The virtualenvs of ``peers`` (every peer by default), installed side by side where
    missing; failures as values."""
    found: dict[str, Venv | PeerUnavailableError] = {}
    with concurrent.futures.ThreadPoolExecutor(len(peers)) as pool:
        futures = {peer.name: pool.submit(ensure_venv, peer, scratch, log) for peer in peers}
        for name, future in futures.items():
            try:
                found[name] = future.result()
            except PeerUnavailableError as error:
                found[name] = error
    return found


def export_weights(data_dir: Path, destination: Path) -> str:
    """Write the active model of a service's data directory as ``weights.npz``; its version."""
    from model.persistence import ModelStore, weights_bytes

    stored = ModelStore(data_dir / "models").load_current()
    destination.parent.mkdir(parents=True, exist_ok=True)
    destination.write_bytes(weights_bytes(stored.model))
    return stored.version


def peer_env(extra: dict[str, str]) -> dict[str, str]:
    """The environment of a peer: ours less the service's settings and Python paths."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("IRIS_", "MLSERVER_", "VIRTUAL_ENV", "PYTHON"))
        and key != "PROMETHEUS_MULTIPROC_DIR"
    }
    return env | {"PYTHONPATH": str(PEERS_SOURCE), **extra}


class MLServerLaunch:
    """``mlserver start`` on a run directory, with the ports of one start: HTTP as given,
    gRPC and metrics on free ports. ``grpc_port`` is the gRPC port of the latest start (a
    start retried on another port chooses again)."""

    def __init__(self, venv: Venv, run_dir: Path) -> None:
        self.venv = venv
        self.run_dir = run_dir
        self.grpc_port: int | None = None

    def __call__(self, port: int) -> Launch:
        self.grpc_port = free_port()
        env = peer_env(
            {
                "MLSERVER_HTTP_PORT": str(port),
                "MLSERVER_GRPC_PORT": str(self.grpc_port),
                "MLSERVER_METRICS_PORT": str(free_port()),
            }
        )
        return Launch(
            [str(self.venv.bin / "mlserver"), "start", str(self.run_dir)], env, self.run_dir
        )


def mlserver_launcher(
    venv: Venv, weights: Path, run_dir: Path, parallel_workers: int = 0
) -> MLServerLaunch:
    """A copy of ``peers/mlserver_iris`` with the weights beside it; ports set per start.

    ``parallel_workers`` replaces the copy's setting (0: inference in the server process).
    The model answers ``ModelInfer`` over gRPC as over HTTP, under the name ``iris``: raw
    contents in (``raw_input_contents``), raw contents out (MLServer answers raw when asked
    raw), the same three outputs.
    """
    shutil.rmtree(run_dir, ignore_errors=True)
    shutil.copytree(PEERS_SOURCE / "mlserver_iris", run_dir)
    shutil.copyfile(weights, run_dir / "weights.npz")
    settings = json.loads((run_dir / "settings.json").read_text())
    settings["parallel_workers"] = parallel_workers
    (run_dir / "settings.json").write_text(json.dumps(settings, indent=2))
    return MLServerLaunch(venv, run_dir)


def kserve_launcher(venv: Venv, weights: Path, run_dir: Path) -> Callable[[int], Launch]:
    """``peers/kserve_iris.py`` in the KServe virtualenv; the HTTP port set per start."""
    run_dir.mkdir(parents=True, exist_ok=True)

    def launch(port: int) -> Launch:
        command = [
            str(venv.bin / "python"),
            str(PEERS_SOURCE / "kserve_iris.py"),
            "--weights",
            str(weights),
            "--model_name",
            "iris",
            "--http_port",
            str(port),
            "--workers",
            "1",
            "--enable_grpc",
            "false",
        ]
        return Launch(command, peer_env({}), run_dir)

    return launch


LAUNCHERS: dict[str, Callable[..., Callable[[int], Launch]]] = {
    MLSERVER.name: mlserver_launcher,
    KSERVE.name: kserve_launcher,
}


def describe(venv: Venv) -> dict[str, Any]:
    return {
        "requirement": venv.peer.requirement,
        "venv": str(venv.path),
        "install_seconds": round(venv.install_seconds, 1),
        "installed_now": venv.installed_now,
        "size_mib": round(venv.size_bytes / 2**20, 1),
        "versions": venv.versions,
    }
