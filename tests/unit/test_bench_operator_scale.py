"""The pure helpers of bench/operator_scale.py: Prometheus text parsing, counter deltas, breakdowns, percentiles.
No cluster: the bench's cluster steps are exercised by running it."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "operator_scale.py"


def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_operator_scale", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


bench = load()

APISERVER = """\
# HELP apiserver_request_total [STABLE] Counter of apiserver requests
# TYPE apiserver_request_total counter
apiserver_request_total{code="200",component="apiserver",dry_run="",group="batch",resource="jobs",scope="namespace",\
subresource="",verb="LIST",version="v1"} 40
apiserver_request_total{code="200",component="apiserver",dry_run="",group="batch",resource="jobs",scope="namespace",\
subresource="",verb="LIST",version="v1"} 2
apiserver_request_total{code="201",component="apiserver",dry_run="",group="batch",resource="jobs",scope="namespace",\
subresource="",verb="POST",version="v1"} 7
apiserver_request_total{code="200",component="apiserver",dry_run="",group="media.transkube.dev",\
resource="transcodejobs",scope="namespace",subresource="status",verb="PATCH",version="v1alpha1"} 1.5e+01
apiserver_request_total{code="200",component="",dry_run="",group="",resource="",scope="",subresource="/healthz",\
verb="GET",version=""} 3
process_resident_memory_bytes 1.2582912e+08
weird_metric{msg="a \\"quoted\\" value, with = and }"} NaN
not a sample line
"""


def test_parse_prometheus_reads_names_labels_and_values() -> None:
    samples = bench.parse_prometheus(APISERVER)
    names = [n for n, _, _ in samples]
    assert names.count("apiserver_request_total") == 5
    assert ("process_resident_memory_bytes", {}, 125829120.0) in samples
    _, labels, value = next(s for s in samples if s[0] == "weird_metric")
    assert labels == {"msg": 'a "quoted" value, with = and }'}
    assert math.isnan(value)
    status = next(s for s in samples if s[1].get("subresource") == "status")
    assert status[2] == 15.0 and status[1]["verb"] == "PATCH"


def test_parse_prometheus_accepts_timestamps_and_skips_garbage() -> None:
    samples = bench.parse_prometheus("a_total 3 1700000000000\n# comment\nb_total{x=\"1\"} oops\n\nc 1\n")
    assert samples == [("a_total", {}, 3.0), ("c", {}, 1.0)]


def test_counters_sum_by_verb_and_resource_with_subresources_and_urls() -> None:
    got = bench.counters(bench.parse_prometheus(APISERVER), "apiserver_request_total")
    assert got == {"LIST jobs": 42.0, "POST jobs": 7.0, "PATCH transcodejobs/status": 15.0, "GET url:/healthz": 3.0}
    by_code = bench.counters(bench.parse_prometheus(APISERVER), "apiserver_request_total", ("verb", "code"))
    assert by_code["LIST 200"] == 42.0


def test_metric_value_sums_or_says_absent() -> None:
    samples = bench.parse_prometheus(APISERVER)
    assert bench.metric_value(samples, "process_resident_memory_bytes") == 125829120.0
    assert bench.metric_value(samples, "transkube_operator_api_requests_total") is None


def test_delta_keeps_growth_only() -> None:
    before = {"LIST jobs": 10.0, "GET pods": 5.0, "PATCH x": 9.0}
    after = {"LIST jobs": 25.0, "GET pods": 5.0, "PATCH x": 3.0, "POST jobs": 2.0}  # PATCH x: a counter reset
    assert bench.delta(before, after) == {"LIST jobs": 15.0, "POST jobs": 2.0}


def test_breakdown_orders_divides_and_folds_the_tail() -> None:
    counts = {"a": 10.0, "b": 30.0, "c": 20.0, "d": 4.0, "e": 6.0}
    assert bench.breakdown(counts, divisor=2, top=2) == [("b", 15.0), ("c", 10.0), ("(other)", 10.0)]
    assert bench.breakdown(counts, top=10) == [("b", 30.0), ("c", 20.0), ("a", 10.0), ("e", 6.0), ("d", 4.0)]
    assert bench.breakdown({"y": 1.0, "x": 1.0}) == [("x", 1.0), ("y", 1.0)]  # ties by name
    assert bench.breakdown({}) == []


def test_percentile_interpolates() -> None:
    values = list(range(1, 101))  # 1..100
    assert bench.percentile(values, 50) == pytest.approx(50.5)
    assert bench.percentile(values, 99) == pytest.approx(99.01)
    assert bench.percentile(values, 0) == 1 and bench.percentile(values, 100) == 100
    assert bench.percentile([7.0], 99) == 7.0
    assert bench.percentile([3.0, 1.0, 2.0], 50) == 2.0  # unsorted input
    assert math.isnan(bench.percentile([], 50))


def test_pcts_summary() -> None:
    got = bench.pcts([1.0, 2.0, 3.0, 4.0])
    assert got["n"] == 4 and got["max"] == 4.0 and got["p50"] == pytest.approx(2.5)
    assert math.isnan(bench.pcts([])["p99"])


def test_raw_template_drops_what_ties_a_job_to_its_transcodejob() -> None:
    worker = {"metadata": {"name": "tj-cpu", "namespace": "x", "uid": "u", "labels": {"a": "b"},
                           "ownerReferences": [{"uid": "o"}]},
              "spec": {"suspend": False, "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "u"}},
                       "template": {"metadata": {"labels": {"batch.kubernetes.io/controller-uid": "u",
                                                            "controller-uid": "u", "job-name": "tj-cpu",
                                                            "keep": "me"}},
                                    "spec": {"containers": [{"name": "worker"}]}}},
              "status": {"active": 1}}
    job = bench.raw_template(worker)
    assert job["apiVersion"] == "batch/v1" and job["kind"] == "Job" and "status" not in job
    assert job["metadata"] == {"name": "", "namespace": bench.RAW_NS, "labels": {bench.RAW_LABEL: "true"}}
    assert job["spec"]["suspend"] is True and "selector" not in job["spec"]
    assert job["spec"]["template"]["metadata"]["labels"] == {"keep": "me", bench.RAW_LABEL: "true"}
    assert worker["spec"]["suspend"] is False  # the input is not modified
