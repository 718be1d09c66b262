"""Offline checks of deploy/: the kustomize renderings validate against the Kubernetes schemas (and
subsets of the CRDs), their settings agree with each other and with the server, the ConfigMap TOML is
accepted by a real ``heie serve``, and the Dockerfiles lint clean and build the way CI does."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any, Iterator

import jsonschema
import kubernetes_validate
import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[1]
REPO = DEPLOY.parent
K8S = DEPLOY / "k8s"
sys.path.insert(0, str(REPO / "tests" / "python"))
import heie_process  # noqa: E402  (tests/python/heie_process.py: the one server-process helper)
KUBERNETES_VERSION = "1.37.0"
CRD_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): "scaledobject.json",
    ("monitoring.coreos.com/v1", "PodMonitor"): "podmonitor.json",
}
COMPONENTS = ["monitoring", "keda", "hpa", "tls"]


def _tool(name: str) -> str:
    """A tool installed by deploy/tests/requirements.txt (next to this Python, or on PATH)."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is missing: pip install -r deploy/tests/requirements.txt (.ci/setup does)")
    return found


def _render(kustomization_dir: Path) -> list[dict[str, Any]]:
    out = subprocess.run([_tool("kubectl"), "kustomize", str(kustomization_dir)], capture_output=True, text=True)
    assert out.returncode == 0, f"kustomize build {kustomization_dir} failed:\n{out.stderr}"
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def _with_component(tmp: Path, component: str) -> Path:
    """A throw-away kustomization: the base plus one component (each component must render on its own)."""
    folder = tmp / f"base-with-{component}"
    folder.mkdir()
    (folder / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        # kustomize takes only relative paths to other kustomizations.
        f"resources:\n  - {os.path.relpath(K8S / 'base', folder)}\n"
        f"components:\n  - {os.path.relpath(K8S / 'components' / component, folder)}\n"
    )
    return folder


@pytest.fixture(scope="module")
def renderings(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    tmp = tmp_path_factory.mktemp("kustomize")
    result = {"base": _render(K8S / "base"), "overlays/gpu": _render(K8S / "overlays" / "gpu")}
    for component in COMPONENTS:
        result[f"base+{component}"] = _render(_with_component(tmp, component))
    return result


def _one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def _toml_of(docs: list[dict[str, Any]]) -> dict[str, Any]:
    config = _one(docs, "ConfigMap")
    return tomllib.loads(config["data"]["heie.toml"])


def test_every_rendering_validates_against_the_schemas(renderings: dict[str, list[dict[str, Any]]]) -> None:
    seen_crds = set()
    for name, docs in renderings.items():
        for doc in docs:
            key = (doc["apiVersion"], doc["kind"])
            if key in CRD_SCHEMAS:
                schema = json.loads((Path(__file__).parent / "crd-schemas" / CRD_SCHEMAS[key]).read_text())
                jsonschema.validate(doc, schema)
                seen_crds.add(key)
            else:
                # strict: unknown fields (a misspelt key, a field of another API version) fail too.
                kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    assert seen_crds == set(CRD_SCHEMAS), "every CRD schema was used by some rendering"


def test_a_misspelt_field_is_caught() -> None:
    """The validation above can fail: a typo in a probe and in a ScaledObject are both refused."""
    deployment = yaml.safe_load((K8S / "base" / "deployment.yaml").read_text())
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["grcp"] = {"port": 50051}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)
    scaled = yaml.safe_load((K8S / "components" / "keda" / "scaledobject.yaml").read_text())
    scaled["spec"]["maxReplicas"] = 8
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(scaled, json.loads((Path(__file__).parent / "crd-schemas" / "scaledobject.json").read_text()))


def test_deployments_drain_before_the_kubelet_kills(renderings: dict[str, list[dict[str, Any]]]) -> None:
    for name, docs in renderings.items():
        config = _toml_of(docs)
        pod = _one(docs, "Deployment", "heie")["spec"]["template"]["spec"]
        drain = config.get("drain-delay", 0.0) + config.get("shutdown-grace", 10.0)
        assert pod["terminationGracePeriodSeconds"] > drain, f"{name}: grace period must exceed {drain} s"
        assert config["drain-delay"] >= 2 * pod["containers"][0]["readinessProbe"]["periodSeconds"], (
            f"{name}: readiness must see NOT_SERVING at least twice before the server stops accepting"
        )


def test_probes_point_at_the_health_endpoint(renderings: dict[str, list[dict[str, Any]]]) -> None:
    for name, docs in renderings.items():
        container = _one(docs, "Deployment", "heie")["spec"]["template"]["spec"]["containers"][0]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            spec = container[probe]
            if "grpc" in spec:  # grpc.health.v1 on the gRPC port (plaintext only)
                assert spec["grpc"]["port"] == ports["grpc"], f"{name} {probe}"
                assert not any(e["name"] == "HEIE_TLS_CERT" for e in container.get("env", [])), (
                    f"{name}: Kubernetes gRPC probes cannot speak TLS"
                )
            else:  # the HTTP edge's /healthz
                assert spec["httpGet"]["path"] == "/healthz" and spec["httpGet"]["port"] in ports, f"{name} {probe}"
                # With TLS the --http port serves HTTPS too (the same certificate): a plain probe would fail.
                tls = any(e["name"] == "HEIE_TLS_CERT" for e in container.get("env", []))
                assert spec["httpGet"].get("scheme", "HTTP") == ("HTTPS" if tls else "HTTP"), f"{name} {probe}"
                assert not (tls and any(e["name"] == "HEIE_TLS_CLIENT_CA" for e in container["env"])), (
                    f"{name}: the kubelet has no client certificate for an mTLS probe"
                )
                assert any(e["name"] == "HEIE_HTTP" and e["value"].endswith(f":{ports['http']}") for e in container["env"])


def test_services_select_the_pods(renderings: dict[str, list[dict[str, Any]]]) -> None:
    for name, docs in renderings.items():
        labels = _one(docs, "Deployment", "heie")["spec"]["template"]["metadata"]["labels"]
        regular, headless = _one(docs, "Service", "heie"), _one(docs, "Service", "heie-headless")
        assert headless["spec"]["clusterIP"] == "None" and regular["spec"].get("clusterIP") != "None"
        for service in (regular, headless):
            assert service["spec"]["selector"].items() <= labels.items(), f"{name}: {service['metadata']['name']}"
            assert any(p["targetPort"] == "grpc" for p in service["spec"]["ports"])


def test_autoscalers_use_the_servers_queue_gauge(renderings: dict[str, list[dict[str, Any]]]) -> None:
    exported = (REPO / "server" / "src" / "serving" / "metrics.rs").read_text()
    assert '"heie_queue_depth", "gauge"' in exported, "the server exports the queue-depth gauge under this name"
    scaled = _one(renderings["base+keda"], "ScaledObject")
    assert scaled["spec"]["scaleTargetRef"]["name"] == "heie"
    assert re.search(r"\bheie_queue_depth\b", scaled["spec"]["triggers"][0]["metadata"]["query"])
    hpa = _one(renderings["base+hpa"], "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "heie"
    assert hpa["spec"]["metrics"][0]["pods"]["metric"]["name"] == "heie_queue_depth"
    monitor = _one(renderings["base+monitoring"], "PodMonitor")
    pod_labels = _one(renderings["base+monitoring"], "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert monitor["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"


def test_gpu_overlay_asks_for_a_gpu_and_the_cuda_image(renderings: dict[str, list[dict[str, Any]]]) -> None:
    docs = renderings["overlays/gpu"]
    container = _one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["image"].endswith(":cuda")
    assert _toml_of(docs)["n-gpu-layers"] == -1
    assert {d["kind"] for d in docs} >= {"ScaledObject", "PodMonitor"}


def test_secrets_are_referenced_never_committed(renderings: dict[str, list[dict[str, Any]]]) -> None:
    for name, docs in renderings.items():
        assert not [d for d in docs if d["kind"] == "Secret"], f"{name} must not carry key material"
        volumes = {v["name"]: v for v in _one(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]}
        assert volumes["api-keys"]["secret"]["secretName"] == "heie-api-keys"
        assert _toml_of(docs)["api-key-file"].startswith("/etc/heie/keys/")
    tls_volumes = {v["name"]: v for v in _one(renderings["base+tls"], "Deployment")["spec"]["template"]["spec"]["volumes"]}
    assert tls_volumes["tls"]["secret"]["secretName"] == "heie-tls"


@pytest.mark.parametrize("rendering", ["base", "overlays/gpu"])
def test_the_configmap_toml_starts_a_real_server(
    rendering: str, renderings: dict[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    """`heie serve --config` accepts the ConfigMap as rendered (unknown keys are refused by the server),
    serves, and drains on SIGTERM; only the key file's path is moved into this test's folder."""
    text = _one(renderings[rendering], "ConfigMap")["data"]["heie.toml"]
    keys = tmp_path / "api-keys"
    keys.write_text("test-key-0123456789\n")
    keys.chmod(0o600)
    config = tmp_path / "heie.toml"
    config.write_text(text.replace(_toml_of(renderings[rendering])["api-key-file"], str(keys)))
    args = ["--config", str(config), "--addr", "127.0.0.1:0", *heie_process.fixture_model_args(),
            "--threads", "1", "--max-tiles", "1", "--max-tokens", "8", "--drain-delay", "0", "--shutdown-grace", "1"]
    try:
        served = heie_process.start_serve(args, tmp_path / "serve.log")
    except RuntimeError as err:
        pytest.fail(f"heie serve refused the {rendering} config: {err}")
    assert served.stop(signal.SIGTERM, timeout=30) == 0


def test_dockerfiles_lint_clean_and_build_like_ci() -> None:
    setup = (REPO / ".ci" / "setup").read_text()
    assert 'setup-build"' in setup, ".ci/setup installs the build tools through .ci/setup-build"
    for name in ("Dockerfile", "Dockerfile.cuda"):
        dockerfile = DEPLOY / name
        out = subprocess.run([_tool("hadolint"), "--failure-threshold", "info", str(dockerfile)], capture_output=True, text=True)
        assert out.returncode == 0, f"hadolint {name}:\n{out.stdout}{out.stderr}"
        text = dockerfile.read_text()
        assert "RUN bash .ci/setup-build" in text and "cargo build --release --locked" in text, name
        assert re.search(r"^USER 10001$", text, re.M), f"{name} runs as a non-root user"
        assert 'ENTRYPOINT ["heie", "serve"]' in text and "EXPOSE 50051" in text
    assert "--features cuda" in (DEPLOY / "Dockerfile.cuda").read_text()
    assert (DEPLOY / "Dockerfile.dockerignore").exists() and (DEPLOY / "Dockerfile.cuda.dockerignore").exists()
