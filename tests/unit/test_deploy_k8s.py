"""deploy/k8s: valid Kubernetes (kubernetes-validate, strict, offline) and in agreement with corral.

Why kustomize and not Helm: a Helm chart is templates that only ``helm template`` renders, and
no helm binary is available offline here; a kustomize base and overlays made of complete
manifests (no patches) validate file by file, and ``kubectl apply -k`` uses them as they are.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from corral.cli import app
from corral.config.models import RegistrySection, RouterSection
from corral.router.config import RouterSettings, keys_env
from corral.sitter.openapi import openapi_document
from deploy_support import DEPLOY, option, parse_corral

K8S = DEPLOY / "k8s"
# The oldest Kubernetes still in its providers' support windows, and the newest the bundled
# schemas know: both must accept every manifest.
K8S_VERSIONS = ("1.30.0", "1.37.0")
MIN_MODEL_LOAD_S = 20 * 60  # a GPU backend's startup probe allows at least this long


def _manifests() -> list[tuple[Path, dict[str, Any]]]:
    docs = []
    for path in sorted(K8S.rglob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        docs += [(path, doc) for doc in yaml.safe_load_all(path.read_text()) if doc]
    return docs


MANIFESTS = _manifests()


def _named(kind: str, name: str) -> dict[str, Any]:
    found = [d for _, d in MANIFESTS if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} manifests"
    return found[0]


def _container(deployment: str) -> dict[str, Any]:
    containers = _named("Deployment", deployment)["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def _port(container: dict[str, Any], ref: int | str) -> int:
    """A probe's ``port`` (a number, or the name of one of the container's ports)."""
    if isinstance(ref, int):
        return ref
    return next(p["containerPort"] for p in container["ports"] if p["name"] == ref)


def _envvar(command: str, param: str) -> str:
    """The environment variable a corral CLI option reads (``envvar=`` on its typer option)."""
    import typer.main

    group = typer.main.get_command(app)
    cmd = group.commands[command]  # type: ignore[attr-defined]
    return next(p.envvar for p in cmd.params if p.name == param)


def test_every_manifest_is_found() -> None:
    kinds = sorted({d["kind"] for _, d in MANIFESTS})
    assert kinds == [
        "Deployment", "HorizontalPodAutoscaler", "Namespace", "PodDisruptionBudget", "Service",
    ]  # fmt: skip
    names = {d["metadata"]["name"] for _, d in MANIFESTS if d["kind"] == "Deployment"}
    assert names == {"redis", "registry", "router", "mock", "qwen"}


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_manifests_validate(version: str) -> None:
    for path, doc in MANIFESTS:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{path.relative_to(K8S)} {doc['kind']}/{doc['metadata']['name']}: {exc.message}")


def test_kustomizations_reference_what_exists() -> None:
    for kfile in K8S.rglob("kustomization.yaml"):
        doc = yaml.safe_load(kfile.read_text())
        assert doc["kind"] == "Kustomization"
        for res in doc["resources"]:
            target = kfile.parent / res
            assert target.is_file() or (target / "kustomization.yaml").is_file(), f"{kfile}: {res}"
        images = {i["name"] for i in doc.get("images", [])}
        used = {
            c["image"]
            for path, d in MANIFESTS
            if d["kind"] == "Deployment" and kfile.parent in path.parents
            for c in d["spec"]["template"]["spec"]["containers"]
        }
        assert images <= used | {"corral"}, f"{kfile}: images {images - used} used nowhere"


def test_control_plane_agrees_with_corrals_defaults() -> None:
    registry_port, router_port = RegistrySection().port, RouterSection().port
    for name, command, port in (("registry", "registry", registry_port), ("router", "router", router_port)):
        c = _container(name)
        cmd, params = parse_corral(c["args"])
        assert cmd == command and params["port"] == port and params["host"] == "0.0.0.0"
        for probe in ("readinessProbe", "livenessProbe"):
            assert c[probe]["httpGet"]["path"] == "/health"
            assert _port(c, c[probe]["httpGet"]["port"]) == port
        service = _named("Service", name)["spec"]["ports"][0]
        assert service["port"] == port and _port(c, service["targetPort"]) == port
    assert parse_corral(_container("router")["args"])[1]["registry_url"] == f"http://registry:{registry_port}"
    env = {e["name"] for e in _container("router")["env"]}
    assert keys_env(RouterSettings()) in env  # the variable read when api_keys_env is unset
    assert _envvar("registry", "token") in {e["name"] for e in _container("registry")["env"]}


def test_router_scaling_and_disruption_budget() -> None:
    router = _named("Deployment", "router")
    labels = router["spec"]["template"]["metadata"]["labels"]
    hpa = _named("HorizontalPodAutoscaler", "router")["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "router"}
    assert 1 <= hpa["minReplicas"] < hpa["maxReplicas"]
    assert _container("router")["resources"]["requests"]["cpu"]  # an HPA on CPU needs a request
    pdb = _named("PodDisruptionBudget", "router")["spec"]
    assert pdb["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["minAvailable"] < hpa["minReplicas"]  # a node drain can always evict one


@pytest.mark.parametrize("deployment", ["mock", "qwen"])
def test_sitter_pods_agree_with_the_sitter(deployment: str) -> None:
    pod = _named("Deployment", deployment)["spec"]["template"]["spec"]
    c = _container(deployment)
    cmd, params = parse_corral(c["args"])
    assert cmd == "sit" and params["host"] == "0.0.0.0"
    port = params["port"]
    assert _port(c, "backend") == port and _port(c, "sitter") == port + 1  # the sitter is on port+1
    sitter_paths = set(openapi_document()["paths"])
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        get = c[probe]["httpGet"]
        assert _port(c, get["port"]) == port + 1, probe
        assert get["path"] in sitter_paths, f"{probe}: {get['path']} is not a sitter route"
    assert c["startupProbe"]["httpGet"]["path"] == c["readinessProbe"]["httpGet"]["path"] == "/health"
    # The sitter registers the pod IP: --advertise-host from the downward API.
    assert params["advertise_host"] == "$(POD_IP)"
    pod_ip = next(e for e in c["env"] if e["name"] == "POD_IP")
    assert pod_ip["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert params["registry_url"] == f"http://registry:{RegistrySection().port}"
    assert _envvar("sit", "registry_token") in {e["name"] for e in c["env"]}
    state = option(c["args"], "--state-dir")
    assert state and any(state.startswith(m["mountPath"]) for m in c["volumeMounts"])
    assert pod["terminationGracePeriodSeconds"] >= 30


def test_gpu_template() -> None:
    c = _container("qwen")
    pod = _named("Deployment", "qwen")["spec"]["template"]["spec"]
    _, params = parse_corral(c["args"])
    assert params["service_type"] == "vllm" and params["path"]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    startup = c["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= MIN_MODEL_LOAD_S
    pre_stop = c["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    drain = float(option(c["args"], "--drain-timeout-s") or 0)
    assert drain >= 60  # the sitter lets vLLM finish its requests on SIGTERM
    assert pod["terminationGracePeriodSeconds"] >= int(pre_stop[1]) + drain + 10  # + engine stop
    strategy = _named("Deployment", "qwen")["spec"]["strategy"]["rollingUpdate"]
    assert strategy["maxSurge"] == 0  # never two pods on one GPU set
