"""Deployment files read as the tools that consume them would: manifests, the ConfigMap's config laid
out on the Deployment's mounts, the Containerfile and the systemd unit."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO
from tests.examples.conftest import example_pki  # noqa: F401  (the PKI made by examples/make-pki.sh)

DEPLOY = REPO / "deploy"
KUBERNETES = DEPLOY / "kubernetes"

#: What the Secret's keys hold in the test: files of examples/make-pki.sh (the collector CA is any CA).
SECRET_SOURCES = {"audit_collector_ca.pem": "tls_root.pem"}


def manifests() -> list[tuple[str, dict[str, Any]]]:
    """(file name, document) for every document of every manifest."""
    found = []
    for path in sorted(KUBERNETES.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if document:
                found.append((path.name, document))
    return found


def manifest(kind: str) -> dict[str, Any]:
    (document,) = [doc for _name, doc in manifests() if doc["kind"] == kind]
    return document


def container() -> dict[str, Any]:
    (gateway,) = manifest("Deployment")["spec"]["template"]["spec"]["containers"]
    result: dict[str, Any] = gateway
    return result


def configmap_config() -> str:
    text: str = manifest("ConfigMap")["data"]["gateway.yaml"]
    return text


def configmap_document() -> dict[str, Any]:
    """The ConfigMap's config as data (its files exist only in the pod)."""
    document: dict[str, Any] = yaml.safe_load(configmap_config())
    return document


def mount_paths() -> dict[str, str]:
    """volume name -> mountPath of the gateway container."""
    return {mount["name"]: mount["mountPath"] for mount in container()["volumeMounts"]}


@pytest.fixture
def laid_out_config(example_pki: Path, tmp_path: Path) -> Path:  # noqa: F811
    """The ConfigMap's gateway.yaml with every mount of the Deployment made a directory under tmp_path:
    the Secret's keys as files (from the example PKI), the writable volumes empty."""
    root = tmp_path / "pod"
    mounts = mount_paths()
    secret_dir = root / mounts["tls"].lstrip("/")
    secret_dir.mkdir(parents=True)
    for key in manifest("Secret")["stringData"]:
        shutil.copyfile(example_pki / SECRET_SOURCES.get(key, key), secret_dir / key)
    pattern = "|".join(re.escape(mount) for mount in sorted(mounts.values(), key=len, reverse=True))
    text = re.sub(
        rf"(?<![\w/])({pattern})(?=/)",
        lambda match: str(root / match.group(1).lstrip("/")),
        configmap_config(),
    )
    config_dir = root / mounts["config"].lstrip("/")
    config_dir.mkdir(parents=True)
    for name in ("state", "tmp"):
        (root / mounts[name].lstrip("/")).mkdir(parents=True, exist_ok=True)
    path = config_dir / "gateway.yaml"
    path.write_text(text, encoding="utf-8")
    return path
