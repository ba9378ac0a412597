"""The Kubernetes manifests under deploy/kubernetes, checked offline.

Each kustomization is rendered with ``kubectl kustomize`` and every object it yields is
validated against the Kubernetes OpenAPI schemas that the kubernetes-validate package ships,
in strict mode (an unknown field is an error, as is a kind with no schema). The schemas are
those of Kubernetes 1.30, the oldest release the manifests support (the preStop ``sleep``
action is on by default from 1.30), and of the newest release the package ships.

A schema cannot see what the manifests promise beyond shape: three replicas that never drop
below three during a rollout, the probes on the right paths, the pause before SIGTERM, the
locked-down pods, references that point at something. :func:`promise_problems` checks those,
and ``test_each_promise_check_can_fail`` breaks each promise once to show its check reports it.
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.programs import require
from service.config import Settings

ROOT = Path(__file__).resolve().parents[1]
KUBERNETES = ROOT / "deploy" / "kubernetes"
OVERLAY = Path("overlays") / "postgres-statefulset"
KUSTOMIZATIONS = {"base": Path("base"), "postgres-statefulset": OVERLAY}
# The oldest Kubernetes the manifests are for, and the newest kubernetes-validate knows.
KUBERNETES_VERSIONS = ("1.30", "1.37")
APP = "iris"
PRE_STOP_SECONDS_MIN = 3
RENDER_SECONDS = 60

Obj = dict[str, Any]


# -- rendering and schema validation -----------------------------------------------------------


def render(directory: Path) -> list[Obj]:
    """``kubectl kustomize directory`` as a list of objects; a failure raises with its stderr."""
    kubectl = require("kubectl")
    result = subprocess.run(
        [kubectl, "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=RENDER_SECONDS,
        check=False,
    )
    if result.returncode != 0:
        raise RenderError(f"kubectl kustomize {directory} failed: {result.stderr.strip()}")
    return [obj for obj in yaml.safe_load_all(result.stdout) if obj]


class RenderError(RuntimeError):
    """kustomize refused a kustomization."""


def schema_problems(objects: list[Obj], version: str) -> list[str]:
    """Every object checked against the strict schema of Kubernetes ``version``."""
    import kubernetes_validate
    from kubernetes_validate.utils import SchemaNotFoundError

    problems = []
    for obj in objects:
        name = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            where = ".".join(str(part) for part in error.path) or "(top level)"
            problems.append(f"{name}: {where}: {error.message}")
        except SchemaNotFoundError as error:
            problems.append(f"{name}: {error.message}")
    return problems


def copy_tree(into: Path, with_secrets: bool = True) -> Path:
    """A copy of deploy/kubernetes; ``with_secrets`` fills secrets.env from the example."""
    tree = into / "kubernetes"
    shutil.copytree(KUBERNETES, tree, ignore=shutil.ignore_patterns("secrets.env"))
    if with_secrets:
        for example in tree.rglob("secrets.env.example"):
            shutil.copyfile(example, example.with_name("secrets.env"))
    return tree


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Obj]]:
    tree = copy_tree(tmp_path_factory.mktemp("deploy"))
    return {name: render(tree / path) for name, path in KUSTOMIZATIONS.items()}


# -- what a schema cannot see ------------------------------------------------------------------


def find(objects: list[Obj], kind: str, name: str | None = None) -> list[Obj]:
    return [
        obj
        for obj in objects
        if obj.get("kind") == kind and (name is None or obj["metadata"].get("name") == name)
    ]


def workloads(objects: list[Obj]) -> list[Obj]:
    return [obj for obj in objects if obj.get("kind") in {"Deployment", "StatefulSet"}]


def selects(selector: dict[str, str] | None, labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in (selector or {}).items())


def env_value(container: Obj, name: str) -> Obj | None:
    return next((e for e in container.get("env", []) if e["name"] == name), None)


def documented_secret_keys() -> dict[str, set[str]]:
    """The keys of the Secrets that deploy/README.md tells a user to create by hand."""
    text = (ROOT / "deploy" / "README.md").read_text()
    keys: dict[str, set[str]] = {}
    for command in re.findall(r"kubectl create secret generic (.*?)(?:\n\n|```)", text, re.S):
        name = command.split()[0]
        keys.setdefault(name, set()).update(re.findall(r"--from-literal=([\w.-]+)=", command))
    return keys


def server_problems(objects: list[Obj]) -> list[str]:
    """The iris Deployment keeps the issue's promises."""
    deployments = find(objects, "Deployment", APP)
    if len(deployments) != 1:
        return [f"want one Deployment named {APP}, found {len(deployments)}"]
    deployment = deployments[0]
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    problems = []
    if spec.get("replicas") != 3:
        problems.append(f"Deployment replicas is {spec.get('replicas')}, want 3")
    rolling = spec.get("strategy", {})
    if rolling.get("type") != "RollingUpdate" or rolling.get("rollingUpdate", {}).get(
        "maxUnavailable"
    ) not in (0, "0%"):
        problems.append(f"want a rolling update with maxUnavailable 0, got {rolling}")
    if pod.get("automountServiceAccountToken") is not False:
        problems.append("the pod mounts a service account token")
    if pod.get("enableServiceLinks") is not False:
        problems.append("service links are on: the Service named iris would set IRIS_PORT")
    if not pod.get("topologySpreadConstraints") and not pod.get("affinity", {}).get(
        "podAntiAffinity"
    ):
        problems.append("the pods are not spread across nodes")
    containers = [c for c in pod["containers"] if c["name"] == APP]
    if len(containers) != 1:
        return [*problems, f"want one container named {APP} in the Deployment"]
    container = containers[0]
    got = container.get("livenessProbe", {}).get("httpGet", {}).get("path")
    if got != "/healthz":
        problems.append(f"livenessProbe is on {got}, want an httpGet on /healthz")
    # readiness over gRPC's health service: SERVING exactly when GET /readyz is 200
    ready = container.get("readinessProbe", {}).get("grpc", {})
    grpc_port = env_value(container, "IRIS_GRPC_PORT")
    if not grpc_port or ready.get("port") != int(grpc_port["value"]) or ready.get("service"):
        problems.append(
            f"readinessProbe is {container.get('readinessProbe')}, want a grpc probe on "
            f"IRIS_GRPC_PORT ({grpc_port}) for the server's health"
        )
    ports = {p.get("name"): p.get("containerPort") for p in container.get("ports", [])}
    if grpc_port and ports.get("grpc") != int(grpc_port["value"]):
        problems.append(f"the container's ports {ports} do not name IRIS_GRPC_PORT as grpc")
    pre_stop = container.get("lifecycle", {}).get("preStop", {})
    pause = pre_stop.get("sleep", {}).get("seconds")
    if pause is None and "sleep" in " ".join(pre_stop.get("exec", {}).get("command", [])):
        pause = int(pre_stop["exec"]["command"][-1])
    if pause is None or pause < PRE_STOP_SECONDS_MIN:
        problems.append(
            f"want a preStop pause of at least {PRE_STOP_SECONDS_MIN} s, got {pre_stop}"
        )
    graceful = env_value(container, "IRIS_GRACEFUL_SHUTDOWN_SECONDS")
    drain = float(graceful["value"]) if graceful else Settings().graceful_shutdown_seconds
    grace = pod.get("terminationGracePeriodSeconds", 30)
    if pause is not None and grace <= pause + drain:
        problems.append(
            f"terminationGracePeriodSeconds {grace} leaves no time to exit after the preStop "
            f"pause ({pause} s) and the drain ({drain:g} s)"
        )
    wanted_env = {"IRIS_HOST": "0.0.0.0", "IRIS_WORKERS": "1"}
    for name, want in wanted_env.items():
        got = (env_value(container, name) or {}).get("value")
        if got != want:
            problems.append(f"{name} is {got!r}, want {want!r}")
    for name in ("IRIS_API_TOKEN", "IRIS_DATABASE_URL"):
        entry = env_value(container, name)
        if entry is None:
            problems.append(f"{name} is not set")
        elif "value" in entry and "$(" not in str(entry["value"]):
            problems.append(f"{name} is written into the manifest instead of a Secret")
    known = {f"IRIS_{field.upper()}" for field in Settings.model_fields} | {"IRIS_DATABASE_URL"}
    for entry in container.get("env", []):
        if entry["name"].startswith("IRIS_") and entry["name"] not in known:
            problems.append(f"{entry['name']} is no setting of the service")
    data_volume = next(
        (m["name"] for m in container.get("volumeMounts", []) if m["mountPath"] == "/data"), None
    )
    volume = next((v for v in pod.get("volumes", []) if v["name"] == data_volume), None)
    if volume is None or "emptyDir" not in volume:
        problems.append("/data is not an emptyDir volume")
    ports = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
    if 8000 not in ports.values():
        problems.append(f"the container does not expose the image's port 8000: {ports}")
    return problems


def security_problems(objects: list[Obj]) -> list[str]:
    """Every container of every workload is locked down and has requests and limits."""
    problems = []
    for workload in workloads(objects):
        pod = workload["spec"]["template"]["spec"]
        where = f"{workload['kind']}/{workload['metadata']['name']}"
        pod_security = pod.get("securityContext", {})
        if pod_security.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            problems.append(f"{where}: no RuntimeDefault seccomp profile")
        if pod.get("automountServiceAccountToken") is not False:
            problems.append(f"{where}: mounts a service account token")
        mounted = {v["name"] for v in pod.get("volumes", [])} | {
            t["metadata"]["name"] for t in workload["spec"].get("volumeClaimTemplates", [])
        }
        for container in pod.get("initContainers", []) + pod["containers"]:
            name = f"{where} container {container['name']}"
            security = container.get("securityContext", {})
            # A container's own setting overrides the pod's.
            if security.get("runAsNonRoot", pod_security.get("runAsNonRoot")) is not True:
                problems.append(f"{name}: runAsNonRoot is not set")
            if security.get("runAsUser", pod_security.get("runAsUser")) == 0:
                problems.append(f"{name}: runs as uid 0")
            if security.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{name}: the root file system is writable")
            if security.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{name}: privilege escalation is allowed")
            if "ALL" not in security.get("capabilities", {}).get("drop", []):
                problems.append(f"{name}: capabilities are not all dropped")
            if security.get("capabilities", {}).get("add"):
                problems.append(f"{name}: adds capabilities")
            resources = container.get("resources", {})
            for kind in ("requests", "limits"):
                missing = {"cpu", "memory"} - set(resources.get(kind, {}))
                if missing:
                    problems.append(f"{name}: no {kind} for {', '.join(sorted(missing))}")
            for mount in container.get("volumeMounts", []):
                if mount["name"] not in mounted:
                    problems.append(f"{name}: mounts {mount['name']}, which is no volume")
    return problems


def reference_problems(objects: list[Obj], external_secrets: dict[str, set[str]]) -> list[str]:
    """Secrets, Services, the autoscaler and the disruption budget point at what exists."""
    problems = []
    secrets = {
        s["metadata"]["name"]: set(s.get("data", {})) | set(s.get("stringData", {}))
        for s in find(objects, "Secret")
    }
    secrets = {**external_secrets, **secrets}
    templates = {
        f"{w['kind']}/{w['metadata']['name']}": w["spec"]["template"] for w in workloads(objects)
    }
    for where, template in templates.items():
        labels = template["metadata"].get("labels", {})
        for container in template["spec"]["containers"]:
            defined: set[str] = set()
            for entry in container.get("env", []):
                ref = entry.get("valueFrom", {}).get("secretKeyRef")
                if ref and ref["key"] not in secrets.get(ref["name"], set()):
                    problems.append(
                        f"{where}: {entry['name']} reads key {ref['key']} of Secret "
                        f"{ref['name']}, which has {sorted(secrets.get(ref['name'], set()))}"
                    )
                for used in re.findall(r"\$\((\w+)\)", str(entry.get("value", ""))):
                    if used not in defined:
                        problems.append(f"{where}: {entry['name']} uses $({used}) before it is set")
                defined.add(entry["name"])
        workload = next(w for w in workloads(objects) if where.endswith(w["metadata"]["name"]))
        if not selects(workload["spec"]["selector"].get("matchLabels"), labels):
            problems.append(f"{where}: its selector does not match its own pods")
    for service in find(objects, "Service"):
        name = f"Service/{service['metadata']['name']}"
        targets = [
            t
            for t in templates.values()
            if selects(service["spec"].get("selector"), t["metadata"].get("labels", {}))
        ]
        if not targets:
            problems.append(f"{name}: selects no pods")
            continue
        ports = [
            (p.get("name"), p["containerPort"])
            for t in targets
            for c in t["spec"]["containers"]
            for p in c.get("ports", [])
        ]
        for port in service["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            if not any(target in (name_, number) for name_, number in ports):
                problems.append(f"{name}: targetPort {target} is no container port {ports}")
    for stateful in find(objects, "StatefulSet"):
        governing = find(objects, "Service", stateful["spec"].get("serviceName"))
        if not governing or governing[0]["spec"].get("clusterIP") != "None":
            problems.append(f"StatefulSet/{stateful['metadata']['name']}: no headless Service")
    deployments = {d["metadata"]["name"]: d for d in find(objects, "Deployment")}
    for hpa in find(objects, "HorizontalPodAutoscaler"):
        target = hpa["spec"]["scaleTargetRef"]
        deployment = deployments.get(target["name"]) if target["kind"] == "Deployment" else None
        if deployment is None:
            problems.append(f"HorizontalPodAutoscaler targets {target}, which is not rendered")
            continue
        metrics = [m.get("resource", {}).get("name") for m in hpa["spec"].get("metrics", [])]
        if "cpu" not in metrics:
            problems.append(f"HorizontalPodAutoscaler scales on {metrics}, not on cpu")
        if hpa["spec"].get("minReplicas", 1) < deployment["spec"].get("replicas", 1):
            problems.append("HorizontalPodAutoscaler may scale below the Deployment's replicas")
    for pdb in find(objects, "PodDisruptionBudget"):
        selector = pdb["spec"]["selector"].get("matchLabels")
        matched = [
            d
            for d in deployments.values()
            if selects(selector, d["spec"]["template"]["metadata"].get("labels", {}))
        ]
        if not matched:
            problems.append(f"PodDisruptionBudget/{pdb['metadata']['name']}: selects no pods")
            continue
        replicas = matched[0]["spec"].get("replicas", 1)
        floor = pdb["spec"].get("minAvailable")
        if floor is None or not 0 < floor < replicas:
            problems.append(
                f"PodDisruptionBudget minAvailable {floor}: want at least 1 and below {replicas}"
            )
    return problems


def promise_problems(objects: list[Obj], external_secrets: dict[str, set[str]]) -> list[str]:
    return (
        server_problems(objects)
        + security_problems(objects)
        + reference_problems(objects, external_secrets)
    )


def external_secrets_for(name: str) -> dict[str, set[str]]:
    """The base expects its Secret made by hand (as deploy/README.md says); the overlay makes it."""
    return documented_secret_keys() if name == "base" else {}


# -- tests -------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("name", list(KUSTOMIZATIONS))
def test_every_rendered_object_passes_the_strict_schema(
    rendered: dict[str, list[Obj]], name: str, version: str
) -> None:
    objects = rendered[name]
    kinds = {obj["kind"] for obj in objects}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"} <= kinds
    assert schema_problems(objects, version) == []


def test_the_overlay_adds_postgres_and_the_secret(rendered: dict[str, list[Obj]]) -> None:
    objects = rendered["postgres-statefulset"]
    assert [s["metadata"]["name"] for s in find(objects, "StatefulSet")] == ["postgres"]
    assert len(find(objects, "Secret")) == 1
    assert find(rendered["base"], "Secret") == [], "the base must hold no Secret"


@pytest.mark.parametrize("name", list(KUSTOMIZATIONS))
def test_the_manifests_keep_their_promises(rendered: dict[str, list[Obj]], name: str) -> None:
    assert promise_problems(rendered[name], external_secrets_for(name)) == []


def test_the_readme_documents_the_secret_the_base_reads() -> None:
    assert documented_secret_keys() == {APP: {"api-token", "database-url"}}


def iris_container(objects: list[Obj]) -> Obj:
    container: Obj = find(objects, "Deployment", APP)[0]["spec"]["template"]["spec"]["containers"][
        0
    ]
    return container


def iris_pod(objects: list[Obj]) -> Obj:
    pod: Obj = find(objects, "Deployment", APP)[0]["spec"]["template"]["spec"]
    return pod


def set_env(name: str, value: str) -> Callable[[list[Obj]], None]:
    def mutate(objects: list[Obj]) -> None:
        env_value(iris_container(objects), name)["value"] = value  # type: ignore[index]

    return mutate


def set_secret_key(env_name: str, key: str) -> Callable[[list[Obj]], None]:
    def mutate(objects: list[Obj]) -> None:
        entry = env_value(iris_container(objects), env_name)
        entry["valueFrom"]["secretKeyRef"]["key"] = key  # type: ignore[index]

    return mutate


def swap_env_order(objects: list[Obj]) -> None:
    env = iris_container(objects)["env"]
    env.reverse()


def rename_secret_key(objects: list[Obj]) -> None:
    secret = find(objects, "Secret")[0]
    secret["data"]["api_token"] = secret["data"].pop("api-token")


def set_in(
    path: str, value: Any, kind: str = "Deployment", name: str = APP
) -> Callable[[list[Obj]], None]:
    """A mutation that sets ``path`` (dotted; digits index lists) in object ``kind/name``."""

    def mutate(objects: list[Obj]) -> None:
        node: Any = find(objects, kind, name)[0]
        *parents, last = path.split(".")
        for part in parents:
            node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
        if value is DELETE:
            del node[int(last) if last.isdigit() else last]
        else:
            node[int(last) if last.isdigit() else last] = value

    return mutate


DELETE = object()
C0 = "spec.template.spec.containers.0"
# (what is broken, the mutation, a fragment of the problem that must be reported)
BROKEN: list[tuple[str, Callable[[list[Obj]], None], str]] = [
    ("two replicas", set_in("spec.replicas", 2), "replicas is 2"),
    ("maxUnavailable 1", set_in("spec.strategy.rollingUpdate.maxUnavailable", 1), "maxUnavailable"),
    (
        "readiness on another port",
        set_in(f"{C0}.readinessProbe.grpc.port", 8000),
        "readinessProbe",
    ),
    ("no readiness probe", set_in(f"{C0}.readinessProbe", DELETE), "readinessProbe"),
    ("no liveness probe", set_in(f"{C0}.livenessProbe", DELETE), "livenessProbe"),
    ("no preStop", set_in(f"{C0}.lifecycle", DELETE), "preStop"),
    (
        "short grace period",
        set_in("spec.template.spec.terminationGracePeriodSeconds", 15),
        "terminationGracePeriodSeconds",
    ),
    ("root allowed", set_in(f"{C0}.securityContext.runAsNonRoot", False), "runAsNonRoot"),
    (
        "writable root",
        set_in(f"{C0}.securityContext.readOnlyRootFilesystem", False),
        "root file system",
    ),
    (
        "escalation",
        set_in(f"{C0}.securityContext.allowPrivilegeEscalation", True),
        "privilege escalation",
    ),
    ("capabilities kept", set_in(f"{C0}.securityContext.capabilities.drop", []), "capabilities"),
    ("no seccomp", set_in("spec.template.spec.securityContext.seccompProfile", DELETE), "seccomp"),
    (
        "token mounted",
        set_in("spec.template.spec.automountServiceAccountToken", True),
        "service account token",
    ),
    ("service links", set_in("spec.template.spec.enableServiceLinks", True), "service links"),
    ("no spread", set_in("spec.template.spec.topologySpreadConstraints", DELETE), "spread"),
    (
        "/data on the root fs",
        set_in("spec.template.spec.volumes.0", {"name": "data", "hostPath": {"path": "/srv"}}),
        "/data is not an emptyDir",
    ),
    ("no cpu limit", set_in(f"{C0}.resources.limits.cpu", DELETE), "no limits for cpu"),
    ("no requests", set_in(f"{C0}.resources.requests", DELETE), "no requests for cpu, memory"),
    ("two workers", set_env("IRIS_WORKERS", "2"), "IRIS_WORKERS"),
    ("loopback host", set_env("IRIS_HOST", "127.0.0.1"), "IRIS_HOST"),
    ("misspelt setting", set_in(f"{C0}.env.0.name", "IRIS_HOSTNAME"), "no setting"),
    (
        "token in the manifest",
        set_in(f"{C0}.env", [{"name": "IRIS_API_TOKEN", "value": "x"}]),
        "instead of a Secret",
    ),
    ("missing secret key", set_secret_key("IRIS_DATABASE_URL", "token"), "reads key token"),
    ("mount of no volume", set_in(f"{C0}.volumeMounts.1.name", "scratch"), "which is no volume"),
    ("selector off its pods", set_in("spec.selector.matchLabels.app", "x"), "own pods"),
    (
        "Service selects nothing",
        set_in("spec.selector", {"app": "nothing"}, "Service"),
        "selects no pods",
    ),
    (
        "Service to a wrong port",
        set_in("spec.ports.0.targetPort", 8080, "Service"),
        "targetPort 8080",
    ),
    (
        "HPA on another name",
        set_in("spec.scaleTargetRef.name", "web", "HorizontalPodAutoscaler"),
        "not rendered",
    ),
    ("HPA below 3", set_in("spec.minReplicas", 1, "HorizontalPodAutoscaler"), "below"),
    (
        "HPA on memory",
        set_in("spec.metrics.0.resource.name", "memory", "HorizontalPodAutoscaler"),
        "not on cpu",
    ),
    (
        "PDB selects nothing",
        set_in("spec.selector.matchLabels", {"app": "x"}, "PodDisruptionBudget"),
        "selects no pods",
    ),
    ("PDB blocks drains", set_in("spec.minAvailable", 3, "PodDisruptionBudget"), "minAvailable 3"),
]
BROKEN_OVERLAY: list[tuple[str, Callable[[list[Obj]], None], str]] = [
    ("secret key renamed", rename_secret_key, "reads key api-token"),
    ("$(VAR) before VAR", swap_env_order, "before it is set"),
    (
        "StatefulSet without a headless Service",
        set_in("spec.clusterIP", "10.0.0.9", "Service", "postgres"),
        "no headless Service",
    ),
]


@pytest.mark.parametrize(
    ("name", "mutate", "expected"),
    [pytest.param("base", m, e, id=what) for what, m, e in BROKEN]
    + [pytest.param("postgres-statefulset", m, e, id=what) for what, m, e in BROKEN_OVERLAY],
)
def test_each_promise_check_can_fail(
    rendered: dict[str, list[Obj]],
    name: str,
    mutate: Callable[[list[Obj]], None],
    expected: str,
) -> None:
    objects = copy.deepcopy(rendered[name])
    mutate(objects)
    problems = promise_problems(objects, external_secrets_for(name))
    assert any(expected in problem for problem in problems), problems


def break_file(tree: Path, relative: str, old: str, new: str) -> None:
    path = tree / relative
    text = path.read_text()
    assert old in text, f"{old!r} not in {relative}"
    path.write_text(text.replace(old, new, 1))


@pytest.mark.parametrize(
    ("relative", "edit", "expected"),
    [
        pytest.param(
            "base/deployment.yaml",
            ("              path: /healthz", "              paht: /healthz"),
            "Additional properties are not allowed ('paht' was unexpected)",
            id="unknown-field",
        ),
        pytest.param(
            "base/deployment.yaml",
            ("  replicas: 3", "  replicas: three"),
            "spec.replicas: 'three' is not of type",
            id="wrong-type",
        ),
        pytest.param(
            "base/pdb.yaml",
            ("apiVersion: policy/v1", "apiVersion: policy/v1beta3"),
            "Couldn't find schema for kind PodDisruptionBudget",
            id="unknown-api-version",
        ),
        pytest.param(
            "base/hpa.yaml",
            ("  minReplicas: 3", "  minReplicas: 3\n  maxReplica: 10"),
            "'maxReplica' was unexpected",
            id="misspelt-top-level-field",
        ),
    ],
)
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_a_broken_manifest_fails_schema_validation(
    tmp_path: Path, relative: str, edit: tuple[str, str], expected: str, version: str
) -> None:
    tree = copy_tree(tmp_path)
    break_file(tree, relative, *edit)
    problems = schema_problems(render(tree / "base"), version)
    assert any(expected in problem for problem in problems), problems


def test_the_overlay_needs_its_secrets_file(tmp_path: Path) -> None:
    """No secret is defaulted: without secrets.env the overlay does not render at all."""
    tree = copy_tree(tmp_path, with_secrets=False)
    with pytest.raises(RenderError, match=r"secrets\.env"):
        render(tree / OVERLAY)


def test_no_secrets_file_is_tracked() -> None:
    tracked = subprocess.run(
        ["git", "ls-files", "deploy"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    if tracked.returncode != 0:
        pytest.skip(f"not a git checkout: {tracked.stderr.strip()}")
    assert not [f for f in tracked.stdout.split() if f.endswith((".env", "secrets.env"))]


def iter_examples() -> Iterator[Path]:
    yield from KUBERNETES.rglob("*.env.example")


def test_the_example_secrets_hold_only_placeholders() -> None:
    examples = list(iter_examples())
    assert examples
    for example in examples:
        for line in example.read_text().splitlines():
            if line and not line.startswith("#"):
                assert line.split("=", 1)[1].startswith("REPLACE_WITH_"), line
