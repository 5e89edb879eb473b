"""The operator passes the input limits from its own environment to every worker Job."""

from __future__ import annotations

import pytest
from transkube_api.constants import LIMIT_DEFAULTS
from transkube_api.models import TranscodeJobSpec
from transkube_operator.config import OperatorConfig
from transkube_operator.jobspec import Owner, build_job

SPEC = TranscodeJobSpec.model_validate({"input": {"uri": "s3://media/in.mp4"}, "outputs": [
    {"name": "hls", "type": "hls", "uri": "s3://media/hls/"}]})


def worker_env(cfg: OperatorConfig) -> dict[str, str]:
    job = build_job(Owner("movie", "media", "uid-1"), SPEC, cfg, "cpu")
    return {e["name"]: e["value"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_limits_default_and_reach_the_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    env = worker_env(OperatorConfig())
    assert {k: int(env[k]) for k in LIMIT_DEFAULTS} == LIMIT_DEFAULTS
    assert LIMIT_DEFAULTS["TRANSKUBE_MAX_PIXELS"] == 7680 * 4320
    assert LIMIT_DEFAULTS["TRANSKUBE_MAX_DURATION_SECONDS"] == 86400
    monkeypatch.setenv("TRANSKUBE_MAX_STREAMS", "4")
    monkeypatch.setenv("TRANSKUBE_MAX_INPUT_BYTES", "1000000")
    env = worker_env(OperatorConfig.from_env())
    assert (env["TRANSKUBE_MAX_STREAMS"], env["TRANSKUBE_MAX_INPUT_BYTES"]) == ("4", "1000000")


def test_the_worker_gets_the_media_spec() -> None:
    spec = TranscodeJobSpec.model_validate_json(worker_env(OperatorConfig())["TRANSKUBE_SPEC"])
    assert spec.outputs[0].type == "hls" and spec.outputs[0].uri == "s3://media/hls/"
