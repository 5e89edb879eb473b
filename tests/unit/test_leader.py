"""Leader election decisions (leader.py), and the chart's defaults agreeing with the operator's."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from typing import Any

import pytest
import yaml
from transkube_dev import tools
from transkube_operator.config import LeaderElection, OperatorConfig
from transkube_operator.leader import (
    LeaseRecord,
    Observation,
    claimed,
    lease_manifest,
    may_acquire,
    must_fence,
    observe,
    released,
)

CHART = tools.REPO_DIR / "charts" / "transkube"
T0 = dt.datetime(2026, 1, 1, 12, 0, 0, tzinfo=dt.UTC)
HELD = LeaseRecord("a_1", 8, "2026-01-01T12:00:00.000000Z", "2026-01-01T12:00:00.000000Z", 3)


def test_a_free_missing_or_own_lease_may_be_taken_at_once() -> None:
    assert may_acquire(None, "b_1", 0.0)
    assert may_acquire(Observation(LeaseRecord("", 1, transitions=4), 100.0), "b_1", 100.0)
    assert may_acquire(Observation(HELD, 100.0), "a_1", 100.0)


def test_a_held_lease_expires_on_the_candidates_own_clock() -> None:
    obs = observe(None, HELD, now=100.0)
    assert not may_acquire(obs, "b_1", 107.9)
    assert may_acquire(obs, "b_1", 108.0)


def test_a_renewal_restarts_the_observed_clock_and_an_unchanged_record_does_not() -> None:
    first = observe(None, HELD, now=100.0)
    assert observe(first, HELD, now=105.0) is first  # same record: still observed since 100
    renewed = LeaseRecord(**{**HELD.__dict__, "renew_time": "2026-01-01T12:00:02.000000Z"})
    later = observe(first, renewed, now=106.0)
    assert later.observed_at == 106.0 and not may_acquire(later, "b_1", 113.0)


def test_clock_skew_cannot_shorten_a_lease() -> None:
    # renewTime written by a machine whose wall clock is an hour behind: still 8 s from when it was seen.
    skewed = LeaseRecord("a_1", 8, "2026-01-01T11:00:00.000000Z", "2026-01-01T11:00:00.000000Z", 0)
    obs = observe(None, skewed, now=50.0)
    assert not may_acquire(obs, "b_1", 57.0)


def test_claiming_from_another_holder_counts_a_transition_renewing_does_not() -> None:
    taken = claimed(HELD, "b_1", 8, T0)
    assert (taken.holder, taken.transitions, taken.duration_seconds) == ("b_1", 4, 8)
    assert taken.acquire_time == taken.renew_time == "2026-01-01T12:00:00.000000Z"
    renewed = claimed(taken, "b_1", 8, T0 + dt.timedelta(seconds=2))
    assert renewed.transitions == 4 and renewed.acquire_time == taken.acquire_time
    assert renewed.renew_time == "2026-01-01T12:00:02.000000Z"
    assert claimed(None, "a_1", 8, T0).transitions == 0


def test_release_empties_the_holder_and_keeps_the_count() -> None:
    out = released(HELD, T0)
    assert (out.holder, out.duration_seconds, out.transitions) == ("", 1, 3)
    assert may_acquire(observe(None, out, 0.0), "b_1", 0.0)


def test_fence_before_the_lease_can_expire() -> None:
    cfg = LeaderElection()
    assert not must_fence(None, 100.0, cfg.renew_deadline_seconds)
    assert not must_fence(100.0, 105.9, cfg.renew_deadline_seconds)
    assert must_fence(100.0, 106.0, cfg.renew_deadline_seconds)
    # The leader stops at renewDeadline after its last renewal was sent; a standby saw that renewal later,
    # and waits leaseDuration from then: there is always a gap.
    assert cfg.renew_deadline_seconds < cfg.lease_duration_seconds
    cfg.check()


@pytest.mark.parametrize("raw", [{"renewDeadlineSeconds": 9}, {"retryPeriodSeconds": 6}, {"retryPeriodSeconds": 0}])
def test_inconsistent_timings_are_refused(raw: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="leaseDurationSeconds"):
        LeaderElection.from_wire(raw).check()


def test_lease_manifest_carries_the_resource_version_for_optimistic_concurrency() -> None:
    body = lease_manifest("tk-operator", "ns", HELD, "42")
    assert body["metadata"] == {"name": "tk-operator", "namespace": "ns", "resourceVersion": "42"}
    assert body["spec"] == {"holderIdentity": "a_1", "leaseDurationSeconds": 8,
                            "acquireTime": HELD.acquire_time, "renewTime": HELD.renew_time, "leaseTransitions": 3}
    assert LeaseRecord.from_lease(body) == HELD


def rendered(*sets: str) -> list[dict[str, Any]]:
    _, helm = tools.ensure_kubectl_helm()
    out = subprocess.run([str(helm), "template", "rel", str(CHART), "--namespace", "tk-sys", *sets],
                         check=True, capture_output=True, text=True, timeout=120).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def test_lease_rbac_is_least_privilege() -> None:
    role = next(d for d in rendered() if d["kind"] == "Role" and d["metadata"]["name"] == "rel-operator-leader")
    assert role["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": ["rel-operator"],
         "verbs": ["get", "update"]}]


def test_one_replica_has_no_pdb_and_two_without_election_are_refused() -> None:
    assert not any(d["kind"] == "PodDisruptionBudget" and d["metadata"]["name"] == "rel-operator"
                   for d in rendered("--set", "operator.replicas=1"))
    _, helm = tools.ensure_kubectl_helm()
    for bad, named in [("operator.leaderElection.enabled=false", "leaderElection.enabled"),
                       ("operator.leaderElection.renewDeadlineSeconds=9", "renewDeadlineSeconds")]:
        result = subprocess.run([str(helm), "template", "rel", str(CHART), "--set", bad],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode != 0 and named in result.stderr


def test_chart_defaults_agree_with_the_operator() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())["operator"]["leaderElection"]
    base = LeaderElection()
    assert (values["enabled"], values["leaseDurationSeconds"], values["renewDeadlineSeconds"],
            values["retryPeriodSeconds"]) == (base.enabled, base.lease_duration_seconds,
                                              base.renew_deadline_seconds, base.retry_period_seconds)


def test_chart_renders_the_lease_settings_the_operator_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    docs = rendered("--show-only", "templates/operator-deployment.yaml")
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    pdb = next(d for d in rendered() if d["kind"] == "PodDisruptionBudget" and d["metadata"]["name"] == "rel-operator")
    assert pdb["spec"]["minAvailable"] == 1
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["TRANSKUBE_POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    monkeypatch.setenv("TRANSKUBE_LEADER_ELECTION", env["TRANSKUBE_LEADER_ELECTION"]["value"])
    got = OperatorConfig.from_env().leader_election
    assert got == LeaderElection(lease_name="rel-operator", lease_namespace="tk-sys")
    assert json.loads(env["TRANSKUBE_LEADER_ELECTION"]["value"])["leaseName"] == "rel-operator"
