"""Benchmarks of the REST shim on the local cluster (no operator needed: the CRD and one TranscodeJob).

  get  GET one job through the shim (watch-fed cache) vs a direct Kubernetes API GET of the same CR, same
       run, same client library, alternating blocks; prints mean/p50/p99 of each and the ratios.
  sse  N concurrent Server-Sent Events clients on one job: the shim's RSS before and with them connected, the
       count of upstream watches (from /metrics), and how long one status change takes to reach all N.

The shim runs as its own process (`transkube-shim serve`), so its RSS is its own.

    .venv/bin/python bench/shim_bench.py [get|sse|all] [--requests 3000] [--clients 1000]
    (TRANSKUBE_CLUSTER_DIR=DIR reuses a running cluster; otherwise one is started in a temp dir)
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from contextlib import ExitStack
from pathlib import Path

import aiohttp
import yaml
from transkube_api import crdgen
from transkube_dev import procs
from transkube_dev.cluster import ClusterState, LocalCluster
from transkube_dev.kube import ApiError, Kube
from transkube_shim.auth import new_key, secret_entry

REPO = Path(__file__).resolve().parents[1]
PLURAL_PATH = "/apis/media.transkube.dev/v1alpha1/namespaces/{ns}/transcodejobs"


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def summary(name: str, seconds: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in seconds]
    out = {"mean": statistics.fmean(ms), "p50": percentile(ms, 50), "p99": percentile(ms, 99)}
    print(f"  {name:<22} n={len(ms):<5} mean={out['mean']:.3f} ms  p50={out['p50']:.3f} ms  "
          f"p99={out['p99']:.3f} ms")
    return out


def kube_ssl(kubeconfig: str) -> tuple[str, ssl.SSLContext]:
    cfg = yaml.safe_load(Path(kubeconfig).read_text())
    cluster, user = cfg["clusters"][0]["cluster"], cfg["users"][0]["user"]
    tmp = Path(tempfile.mkdtemp(prefix="shim-bench-"))
    for key, name, src in (("certificate-authority-data", "ca.crt", cluster),
                           ("client-certificate-data", "tls.crt", user), ("client-key-data", "tls.key", user)):
        (tmp / name).write_bytes(base64.b64decode(src[key]))
    ctx = ssl.create_default_context(cafile=str(tmp / "ca.crt"))
    ctx.load_cert_chain(str(tmp / "tls.crt"), str(tmp / "tls.key"))
    return str(cluster["server"]).rstrip("/"), ctx


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return float("nan")


def prepare(kube: Kube) -> tuple[str, str, str]:
    """CRD, a tenant namespace, its API key, one suspended TranscodeJob. -> (namespace, job name, key)."""
    try:
        kube.create("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crdgen.crd())
    except ApiError as exc:
        if exc.status != 409:
            raise
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            kube.get(PLURAL_PATH.format(ns="default"))
            break
        except ApiError:
            time.sleep(0.2)
    ns = f"bench-{uuid.uuid4().hex[:6]}"
    for name in (ns, "transkube-shim-bench"):
        try:
            kube.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        except ApiError as exc:
            if exc.status != 409:
                raise
    _, key = new_key()
    key_id, entry = secret_entry(key, ns, "bench")
    data = {key_id: base64.b64encode(entry.encode()).decode()}
    try:
        kube.create("/api/v1/namespaces/transkube-shim-bench/secrets",
                    {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "keys"}, "data": data})
    except ApiError as exc:
        if exc.status != 409:
            raise
        kube.merge_patch("/api/v1/namespaces/transkube-shim-bench/secrets/keys", {"data": data})
    job = {"apiVersion": "media.transkube.dev/v1alpha1", "kind": "TranscodeJob", "metadata": {"name": "bench"},
           "spec": {"input": {"uri": "s3://transkube/in.mp4"}, "suspend": True,
                    "outputs": [{"name": "web", "uri": "s3://transkube/out.mp4", "container": "mp4"}]}}
    kube.create(PLURAL_PATH.format(ns=ns), job)
    return ns, "bench", key


def start_shim(state: ClusterState, clients: int) -> tuple[subprocess.Popen[bytes], str]:
    port = procs.free_port()
    assert state.s3 is not None
    env = {**os.environ, "KUBECONFIG": state.kubeconfig, "TRANSKUBE_SHIM_HOST": "127.0.0.1",
           "TRANSKUBE_SHIM_PORT": str(port), "TRANSKUBE_SHIM_AUTH_NAMESPACE": "transkube-shim-bench",
           "TRANSKUBE_SHIM_API_KEYS_SECRET": "keys", "TRANSKUBE_SHIM_DEFAULT_TIER": "bench",
           "TRANSKUBE_SHIM_TIERS": json.dumps({"bench": {"rate_per_second": 1e9, "burst": 10**9,
                                                         "max_concurrent_jobs": 10, "max_jobs_per_day": 100}}),
           "TRANSKUBE_SHIM_SSE_MAX_PER_JOB": str(clients + 10), "TRANSKUBE_S3_ENDPOINT": state.s3.endpoint,
           "AWS_ACCESS_KEY_ID": state.s3.access_key, "AWS_SECRET_ACCESS_KEY": state.s3.secret_key}
    shim = REPO / ".venv" / "bin" / "transkube-shim"
    proc = subprocess.Popen([str(shim), "serve", "--log-level", "WARNING"], env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=5) as resp:  # noqa: S310 (loopback http)
                if resp.status == 200:
                    return proc, url
        except OSError:
            pass
        time.sleep(0.3)
    proc.terminate()
    raise SystemExit("the shim did not become ready")


async def bench_get(shim_url: str, kubeconfig: str, ns: str, name: str, key: str, n: int) -> None:
    server, ctx = kube_ssl(kubeconfig)
    shim_times: list[float] = []
    kube_times: list[float] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as shim_s, \
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1, ssl=ctx)) as kube_s:
        targets = ((shim_s, f"{shim_url}/api/v1/jobs/{name}", {"X-API-Key": key}, shim_times),
                   (kube_s, f"{server}{PLURAL_PATH.format(ns=ns)}/{name}", {"Accept": "application/json"},
                    kube_times))
        for session, url, headers, _ in targets:  # warm up connections and caches
            for _ in range(50):
                async with session.get(url, headers=headers) as r:
                    await r.read()
        block = 100
        for i in range(0, n, block):
            order = targets if (i // block) % 2 == 0 else tuple(reversed(targets))
            for session, url, headers, sink in order:
                for _ in range(min(block, n - i)):
                    t0 = time.perf_counter()
                    async with session.get(url, headers=headers) as r:
                        await r.read()
                        assert r.status == 200, r.status
                    sink.append(time.perf_counter() - t0)
    print(f"GET one job, sequential keep-alive requests, {n} each, interleaved in blocks of {block}:")
    s = summary("shim (cache)", shim_times)
    k = summary("kube-apiserver direct", kube_times)
    print(f"  ratio shim/direct: mean {s['mean'] / k['mean']:.2f}x, p99 {s['p99'] / k['p99']:.2f}x")


async def bench_sse(shim_url: str, pid: int, kube: Kube, ns: str, name: str, key: str, clients: int) -> None:
    rss_before = rss_kib(pid)
    received = asyncio.Event()
    got: list[float] = []
    connected = 0
    all_connected = asyncio.Event()
    sent_at: list[float] = []

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal connected
        async with session.get(f"{shim_url}/api/v1/jobs/{name}/events", headers={"X-API-Key": key},
                               timeout=aiohttp.ClientTimeout(total=None, sock_read=120)) as r:
            assert r.status == 200, await r.text()
            saw_state = False
            async for line in r.content:
                if line.startswith(b"event: state") and not saw_state:
                    saw_state = True
                    connected += 1
                    if connected == clients:
                        all_connected.set()
                elif line.startswith(b"event: cancelled"):
                    got.append(time.perf_counter())
                    if len(got) == clients:
                        received.set()
                    return

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        tasks = [asyncio.create_task(client(session)) for _ in range(clients)]
        t0 = time.perf_counter()
        await asyncio.wait_for(all_connected.wait(), 120)
        connect_s = time.perf_counter() - t0
        await asyncio.sleep(1)
        rss_with = rss_kib(pid)
        async with session.get(f"{shim_url}/metrics") as r:
            text = await r.text()
        watches = metric(text, "transkube_shim_upstream_watches")
        streams = metric(text, "transkube_shim_sse_connections")
        sent_at.append(time.perf_counter())
        await asyncio.to_thread(kube.merge_patch, f"{PLURAL_PATH.format(ns=ns)}/{name}", {"spec": {"cancel": True}})
        # no operator runs here: write the phase as the operator would, through the status subresource
        await asyncio.to_thread(kube.merge_patch, f"{PLURAL_PATH.format(ns=ns)}/{name}/status",
                                {"status": {"phase": "Cancelled"}})
        await asyncio.wait_for(received.wait(), 120)
        await asyncio.gather(*tasks)
    fan_out = [g - sent_at[0] for g in got]
    print(f"{clients} concurrent SSE clients on one job:")
    print(f"  all connected (state event received) in {connect_s:.2f} s")
    print(f"  shim RSS: {rss_before / 1024:.1f} MiB idle -> {rss_with / 1024:.1f} MiB with {int(streams)} streams "
          f"(+{(rss_with - rss_before) / clients:.1f} KiB per stream)")
    print(f"  upstream watches open: {int(watches)}")
    print(f"  one status change (2 API writes) to all {clients} clients: p50 {percentile(fan_out, 50) * 1000:.0f} ms, "
          f"last {max(fan_out) * 1000:.0f} ms")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", nargs="?", default="all", choices=("get", "sse", "all"))
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--clients", type=int, default=1000)
    args = parser.parse_args(argv)
    with ExitStack() as stack:
        reuse = os.environ.get("TRANSKUBE_CLUSTER_DIR")
        if reuse:
            state = ClusterState.load(Path(reuse))
        else:
            local = LocalCluster(Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="shim-bench-"))))
            state = local.up()
            stack.callback(local.down)
        kube = Kube.from_kubeconfig(state.kubeconfig)
        ns, name, key = prepare(kube)
        stack.callback(lambda: kube.delete(f"/api/v1/namespaces/{ns}"))
        proc, url = start_shim(state, args.clients)
        stack.callback(proc.wait, 30)
        stack.callback(proc.terminate)
        if args.which in ("get", "all"):
            asyncio.run(bench_get(url, state.kubeconfig, ns, name, key, args.requests))
        if args.which in ("sse", "all"):
            asyncio.run(bench_sse(url, proc.pid, kube, ns, name, key, args.clients))
    return 0


if __name__ == "__main__":
    sys.exit(main())
