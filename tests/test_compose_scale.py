"""deploy/compose.scale.yaml and deploy/haproxy/haproxy.cfg, checked without a Docker engine.

The compose file is validated by a compose client's ``config`` (Docker's ``docker compose``
where it works, else Debian's ``docker-compose``, which checks against the Compose
Specification schema with no engine). HAProxy parses the load balancer's configuration with
``haproxy -c``. What neither sees is checked on the parsed files: the shape the issue asks
for (PostgreSQL with a volume and a health check, replicas that can scale, HAProxy that finds
them through Docker's DNS and checks /readyz) and that the shipped HAProxy policy is the one
the multi-replica tests run (harness/haproxy.py).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from harness.haproxy import check_config, config_text
from harness.programs import require

pytestmark = pytest.mark.haproxy

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "deploy" / "compose.scale.yaml"
HAPROXY_CFG = ROOT / "deploy" / "haproxy" / "haproxy.cfg"
ENV = {"IRIS_API_TOKEN": "test-token", "POSTGRES_PASSWORD": "0123abcd"}
MIN_SLOTS = 3


def compose_command() -> list[str]:
    """A compose client that can run ``config`` here: docker compose v2, or docker-compose."""
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run(
            [docker, "compose", "version"], capture_output=True, text=True, check=False
        )
        if probe.returncode == 0:
            return [docker, "compose"]
    return [require("docker-compose")]


def compose_config(path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ENV and not k.startswith("IRIS_")}
    return subprocess.run(
        [*compose_command(), "--project-directory", str(path.parent), "-f", str(path), "config"],
        capture_output=True,
        text=True,
        env={**clean, **env},
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def test_a_compose_client_accepts_the_file() -> None:
    result = compose_config(COMPOSE, ENV)
    assert result.returncode == 0, result.stderr
    rendered = yaml.safe_load(result.stdout)
    assert set(rendered["services"]) == {"postgres", "iris", "haproxy"}
    assert rendered["services"]["iris"]["environment"]["IRIS_DATABASE_URL"] == (
        "postgresql://iris:0123abcd@postgres:5432/iris"
    )


def test_the_compose_check_rejects_a_broken_file(tmp_path: Path) -> None:
    broken = tmp_path / "compose.scale.yaml"
    broken.write_text(COMPOSE.read_text().replace("  iris:\n", "  iris:\n    scale_to: 3\n", 1))
    result = compose_config(broken, ENV)
    assert result.returncode != 0
    assert "scale_to" in result.stderr + result.stdout


@pytest.mark.parametrize("missing", sorted(ENV))
def test_the_secrets_must_be_given(missing: str) -> None:
    result = compose_config(COMPOSE, {k: v for k, v in ENV.items() if k != missing})
    assert result.returncode != 0
    assert missing in result.stderr + result.stdout


def test_postgres_keeps_its_data_in_a_named_volume_and_reports_health(
    compose: dict[str, Any],
) -> None:
    postgres = compose["services"]["postgres"]
    assert postgres["image"].split(":")[0] == "postgres"
    volume, _, target = postgres["volumes"][0].partition(":")
    assert target == "/var/lib/postgresql/data"
    assert volume in compose["volumes"]
    assert "pg_isready" in postgres["healthcheck"]["test"]


def test_the_replicas_can_scale_and_share_the_database(compose: dict[str, Any]) -> None:
    iris = compose["services"]["iris"]
    postgres = compose["services"]["postgres"]
    # A published port or a fixed container name would stop --scale iris=3.
    assert "ports" not in iris
    assert "container_name" not in iris
    assert iris["depends_on"]["postgres"]["condition"] == "service_healthy"
    environment = iris["environment"]
    assert environment["IRIS_WORKERS"] == "1"
    assert "${IRIS_API_TOKEN:?" in environment["IRIS_API_TOKEN"]
    url = urlsplit(environment["IRIS_DATABASE_URL"].replace("${POSTGRES_PASSWORD:?", "{"))
    assert url.scheme == "postgresql"
    assert url.hostname == "postgres"
    assert url.username == postgres["environment"]["POSTGRES_USER"]
    assert url.path == "/" + postgres["environment"]["POSTGRES_DB"]
    assert "8000" in [str(port) for port in iris["expose"]]
    # Nothing of value on the replica: read-only, with scratch space in memory.
    assert iris["read_only"] is True
    assert {"/data", "/tmp"} <= set(iris["tmpfs"])


def test_haproxy_is_the_only_published_port_on_loopback(compose: dict[str, Any]) -> None:
    haproxy = compose["services"]["haproxy"]
    assert haproxy["image"].split(":")[0] == "haproxy"
    published = [name for name, service in compose["services"].items() if service.get("ports")]
    assert published == ["haproxy"]
    http, grpc = haproxy["ports"]
    assert http.startswith("${IRIS_PUBLISH:-127.0.0.1:8000}:")
    assert grpc.startswith("${IRIS_PUBLISH_GRPC:-127.0.0.1:8001}:")
    text = HAPROXY_CFG.read_text()
    assert re.search(rf"^\s*bind :{int(http.rsplit(':', 1)[1])}\s*$", text, re.M)
    assert re.search(rf"^\s*bind :{int(grpc.rsplit(':', 1)[1])} proto h2\s*$", text, re.M)
    source, target, *_ = haproxy["volumes"][0].split(":")
    assert (COMPOSE.parent / source).resolve() == HAPROXY_CFG
    assert target == "/usr/local/etc/haproxy/haproxy.cfg"


def test_haproxy_accepts_the_shipped_configuration() -> None:
    check_config(HAPROXY_CFG)


def test_haproxy_finds_the_replicas_through_docker_dns() -> None:
    text = HAPROXY_CFG.read_text()
    assert re.search(
        r"^resolvers docker\n(?:    .*\n)*?    nameserver \w+ 127\.0\.0\.11:53$", text, re.M
    )
    template = re.search(r"^\s*server-template (\w+) (\d+) iris:8000 (.*)$", text, re.M)
    assert template, "no server-template for iris:8000"
    options = template.group(3).split()
    assert int(template.group(2)) >= MIN_SLOTS
    assert "check" in options
    assert options[options.index("resolvers") + 1] == "docker"
    assert options[options.index("init-addr") + 1] == "none"


def policy(text: str) -> list[str]:
    """The lines that decide health checks, retries and buffering, in order."""
    keys = (
        "option http-buffer-request",
        "retries",
        "option redispatch",
        "retry-on",
        "acl pure_post",
        "http-request disable-l7-retry",
        "balance",
        "http-reuse",
        "option httpchk",
        "http-check",
    )
    lines = [line.strip() for line in text.splitlines()]
    return [line for line in lines if line.startswith(keys)]


def test_the_shipped_policy_is_the_tested_one() -> None:
    tested = config_text(
        [8001, 8002, 8003], 8000, Path("/tmp/stats.sock"), grpc=(8010, [8011, 8012, 8013])
    )
    assert policy(HAPROXY_CFG.read_text()) == policy(tested)
    assert "http-check send meth GET uri /readyz" in " ".join(policy(tested))
