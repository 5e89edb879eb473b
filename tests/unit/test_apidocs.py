"""docs/api-reference.md is generated from the API models (hack/transkube_dev/apidocs.py) and stays in sync."""

from __future__ import annotations

from transkube_api.models import TranscodeJobSpec
from transkube_dev import apidocs


def test_api_reference_is_generated_from_the_models() -> None:
    assert apidocs.DOC_PATH.read_text() == apidocs.render(), \
        "run: PYTHONPATH=hack .venv/bin/python -m transkube_dev.apidocs --write"


def test_every_spec_field_is_documented_with_its_description() -> None:
    text = apidocs.render()
    for name, field in TranscodeJobSpec.model_fields.items():
        path = f"`spec.{field.alias or name}`"
        assert path in text, path
        row = next(line for line in text.splitlines() if line.startswith(f"| {path} |"))
        assert row.rstrip(" |").split("|")[-1].strip(), f"{path} has no description"
    assert "spec is immutable after creation, except suspend, cancel, priority" in text  # a CEL rule's message
