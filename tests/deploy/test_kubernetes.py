"""deploy/kubernetes/: every manifest validates offline against the Kubernetes schema (the
kubernetes-validate package ships the JSON schemas), the pieces agree with each other and with the
gateway's config, and the ConfigMap's config passes `smgate config check` on the Deployment's mounts."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import tomllib
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import SchemaNotFoundError, ValidationError, latest_version

from tests.conftest import REPO
from tests.deploy.conftest import (
    DEPLOY,
    configmap_config,
    configmap_document,
    container,
    manifest,
    manifests,
    mount_paths,
)
from tests.examples.conftest import run
from tests.gateway.process import serve
from tests.ports import free_ports

#: The oldest Kubernetes the manifests are meant for, and the newest the package knows.
VERSIONS = ("1.29", latest_version())


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No network: validation must use only the schemas inside the package."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("network access during validation")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(("name", "document"), manifests(), ids=[f"{n}:{d['kind']}" for n, d in manifests()])
def test_manifest_validates_strictly(offline, name: str, document: dict[str, Any], version: str) -> None:
    try:
        kubernetes_validate.validate(document, version, strict=True)
    except SchemaNotFoundError as exc:
        pytest.fail(f"{name}: {exc.message}")
    except ValidationError as exc:
        pytest.fail(f"{name}: {'.'.join(map(str, exc.path))}: {exc.message}")


def test_all_the_kinds_are_there() -> None:
    kinds = sorted(document["kind"] for _name, document in manifests())
    assert kinds == ["ConfigMap", "Deployment", "Namespace", "PodDisruptionBudget", "Secret", "Service"]


def test_strict_validation_catches_a_misspelt_field(offline) -> None:
    deployment = manifest("Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["exec"]["comand"] = ["true"]
    with pytest.raises(ValidationError):
        kubernetes_validate.validate(deployment, latest_version(), strict=True)


def test_deployment_runs_replicas_non_root_read_only() -> None:
    deployment = manifest("Deployment")
    assert deployment["spec"]["replicas"] >= 2
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    security = container()["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert volumes["config"]["configMap"]["name"] == manifest("ConfigMap")["metadata"]["name"]
    assert volumes["tls"]["secret"]["secretName"] == manifest("Secret")["metadata"]["name"]
    mounts = {m["name"]: m for m in container()["volumeMounts"]}
    assert mounts["config"]["readOnly"] and mounts["tls"]["readOnly"]
    sinks = configmap_document()["audit"]["sinks"]
    writable = [m["mountPath"] for m in mounts.values() if not m.get("readOnly")]
    (audit_dir,) = [sink["directory"] for sink in sinks if sink["type"] == "file"]
    assert any(audit_dir.startswith(path + "/") for path in writable), "the audit directory must be writable"


def test_probes_and_graceful_stop_match_the_config() -> None:
    config = configmap_document()
    probe = container()["readinessProbe"]["exec"]["command"]
    assert f"http://127.0.0.1:{config['admin']['port']}/ready" in probe[-1]
    pre_stop = container()["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    grace = manifest("Deployment")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    # preStop runs first, then SIGTERM: drain, then the audit trail's flush, all inside the grace period.
    assert grace >= int(pre_stop[1]) + config["drain_timeout"] + config["audit"]["shutdown_timeout"]
    ports = {p["name"]: p["containerPort"] for p in container()["ports"]}
    assert sorted(ports.values()) == sorted(listener["port"] for listener in config["listeners"])


def test_service_and_disruption_budget_select_the_pods() -> None:
    pod_labels = manifest("Deployment")["spec"]["template"]["metadata"]["labels"]
    service = manifest("Service")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    container_ports = {p["name"] for p in container()["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= container_ports
    budget = manifest("PodDisruptionBudget")
    assert budget["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert budget["spec"]["maxUnavailable"] < manifest("Deployment")["spec"]["replicas"]


def test_secret_holds_exactly_the_files_the_config_names() -> None:
    secret_mount = mount_paths()["tls"]
    named = set(re.findall(rf"{re.escape(secret_mount)}/([\w.-]+)", configmap_config()))
    assert set(manifest("Secret")["stringData"]) == named


def test_configmap_config_passes_config_check(laid_out_config) -> None:
    result = run("smgate", "config", "check", laid_out_config)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == ""


def test_readiness_probe_command_reads_ready_from_a_running_gateway(laid_out_config) -> None:
    """The pod's own probe command, pointed at a gateway serving the ConfigMap's config."""
    listener_port, admin_port = free_ports(2)
    doc = yaml.safe_load(laid_out_config.read_text())
    doc["listeners"][0]["port"] = listener_port
    doc["admin"]["port"] = admin_port
    local = laid_out_config.with_name("local.yaml")
    local.write_text(yaml.safe_dump(doc, sort_keys=False))
    probe = list(container()["readinessProbe"]["exec"]["command"])
    probe[0] = sys.executable
    probe[-1] = probe[-1].replace(":9901/", f":{admin_port}/")
    assert subprocess.run(probe, capture_output=True, timeout=30).returncode != 0  # nothing listening yet
    gateway = serve(local)
    try:
        ready = subprocess.run(probe, capture_output=True, text=True, timeout=30)
        assert ready.returncode == 0, ready.stderr
    finally:
        assert gateway.stop() == 0, gateway.output()


def containerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) of deploy/Containerfile, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", (DEPLOY / "Containerfile").read_text(encoding="utf-8"))
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def test_containerfile_agrees_with_the_deployment_and_the_package() -> None:
    instructions = containerfile()
    final = instructions[max(i for i, (op, _) in enumerate(instructions) if op == "FROM") :]
    values = {op: args for op, args in final}
    security = manifest("Deployment")["spec"]["template"]["spec"]["securityContext"]
    assert values["USER"] == f"{security['runAsUser']}:{security['runAsGroup']}"
    assert values["STOPSIGNAL"] == "SIGTERM"
    assert yaml.safe_load(values["ENTRYPOINT"]) == ["smgate"]
    command = yaml.safe_load(values["CMD"])
    assert command == container()["args"]
    config_file = command[-1]
    assert config_file == f"{mount_paths()['config']}/gateway.yaml"
    assert config_file.rsplit("/", 1)[1] in manifest("ConfigMap")["data"]
    exposed = {int(port) for port in values["EXPOSE"].split()}
    assert exposed == {p["containerPort"] for p in container()["ports"]}
    copied = {args.split()[0] for op, args in instructions if op == "COPY" and "--from" not in args}
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    packages = {
        pattern.rstrip("*") for pattern in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    }
    assert packages <= copied, "the image must contain every package pyproject installs"
    for name in copied - {"pyproject.toml"}:
        assert (REPO / name).exists(), name
