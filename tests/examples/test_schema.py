"""The config's JSON Schema: examples/gateway.schema.json is what `smgate config schema` prints, every
example validates against it, and the README's config reference links the examples and the schema."""

from __future__ import annotations

import json

import jsonschema  # type: ignore[import-untyped]
import pytest
import yaml

from tests.conftest import REPO
from tests.examples.conftest import EXAMPLES, run

CONFIGS = sorted(path.name for path in EXAMPLES.glob("*.yaml"))


def test_committed_schema_is_the_generated_one():
    generated = run("smgate", "config", "schema")
    assert generated.returncode == 0, generated.stderr
    committed = (EXAMPLES / "gateway.schema.json").read_text(encoding="utf-8")
    assert json.loads(committed) == json.loads(generated.stdout), (
        "examples/gateway.schema.json is stale: smgate config schema > examples/gateway.schema.json"
    )


@pytest.mark.parametrize("name", CONFIGS)
def test_example_validates_against_the_schema(name):
    schema = json.loads((EXAMPLES / "gateway.schema.json").read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    text = (EXAMPLES / name).read_text(encoding="utf-8")
    assert text.startswith("# yaml-language-server: $schema=gateway.schema.json\n")
    jsonschema.Draft202012Validator(schema).validate(yaml.safe_load(text))


def test_schema_rejects_what_config_check_rejects():
    schema = json.loads((EXAMPLES / "gateway.schema.json").read_text(encoding="utf-8"))
    doc = yaml.safe_load((EXAMPLES / "tcp-database.yaml").read_text(encoding="utf-8"))
    doc["listeners"][0]["tls"]["client_auth"] = "sometimes"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(schema).validate(doc)


def test_readme_config_reference_links_examples_and_schema():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "(examples/gateway.schema.json)" in readme
    for name in [*CONFIGS, "make-pki.sh"]:
        assert f"(examples/{name})" in readme, name
