"""Every manifest in examples/ applies with kubectl and succeeds, once its S3 URIs point at generated media and a
fresh output prefix (the only substitution); the examples are copy-pasteable documentation that cannot rot."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from .media_fixtures import BUCKET, make_media, upload

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_media(tmp_path_factory)


def retarget(doc: dict[str, Any], input_uri: str, mark_uri: str) -> dict[str, Any]:
    """The example with our input, our watermark and outputs under a fresh prefix (file names kept)."""
    prefix = f"s3://{BUCKET}/examples/{uuid.uuid4().hex}/"
    spec = doc["spec"]
    spec["input"]["uri"] = input_uri
    for out in spec["outputs"]:
        tail = out["uri"].rstrip("/").rsplit("/", 1)[1]
        out["uri"] = prefix + tail + ("/" if out["uri"].endswith("/") else "")
        mark = (out.get("filters") or {}).get("watermark")
        if mark:
            mark["uri"] = mark_uri
    return doc


def test_there_is_an_example_per_output_kind() -> None:
    kinds: set[str] = set()
    for path in EXAMPLES:
        for out in yaml.safe_load(path.read_text())["spec"]["outputs"]:
            kinds.add(out.get("type", "file"))
            kinds |= {f"container:{out['container']}"} if "container" in out else set()
            kinds |= set(out.get("filters") or {}) | ({"trim"} if "trim" in out else set())
    assert {"file", "hls", "dash", "thumbnails", "sprite", "poster", "container:m4a", "container:mp3",
            "container:ogg", "container:flac", "trim", "watermark", "aspect", "denoise", "deinterlace"} <= kinds


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_applies_and_succeeds(path: Path, tj_namespace: str, s3: Any, media: dict[str, Path],
                                      kubectl: Callable[..., Any]) -> None:
    doc = retarget(yaml.safe_load(path.read_text()), upload(s3, media["av"]), upload(s3, media["mark"]))
    name = doc["metadata"]["name"]
    applied = kubectl("apply", "-n", tj_namespace, "-f", "-", input=json.dumps(doc), check=False)
    assert applied.returncode == 0, applied.stderr
    waited = kubectl("wait", "-n", tj_namespace, "--for=jsonpath={.status.phase}=Succeeded", f"tj/{name}",
                     "--timeout=240s", check=False)
    if waited.returncode != 0:
        status = kubectl("get", "-n", tj_namespace, f"tj/{name}", "-o", "jsonpath={.status}", check=False).stdout
        pytest.fail(f"{path.name} did not succeed: {status}")
    status = json.loads(kubectl("get", "-n", tj_namespace, f"tj/{name}", "-o", "json").stdout)["status"]
    assert {o["name"] for o in status["outputs"]} == {o["name"] for o in doc["spec"]["outputs"]}
