"""A real Kubernetes control plane on loopback: etcd, kube-apiserver, kube-controller-manager,
kube-scheduler, our node agent (dev only) and a MinIO S3 server, all on random free ports.

`LocalCluster(dir).up()` starts everything and writes `dir/state.json` and `dir/kubeconfig`;
`LocalCluster(dir).down()` stops it from that state and checks that no process is left behind.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import shutil
import ssl
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from . import pki, procs, tools
from .nodeagent_config import DEFAULT_NODES, AgentConfig, NodeSpec

SERVICE_CIDR = "10.96.0.0/16"
SA_ISSUER = "https://kubernetes.default.svc.cluster.local"
DEFAULT_BUCKET = "transkube"
REGION = "us-east-1"


@dataclass
class S3Info:
    endpoint: str
    access_key: str
    secret_key: str
    bucket: str
    region: str = REGION


@dataclass
class ClusterState:
    id: str
    dir: str
    kubeconfig: str
    server: str
    ca_file: str
    ports: dict[str, int]
    pids: dict[str, int]
    s3: S3Info | None
    nodes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    @classmethod
    def load(cls, directory: Path) -> ClusterState:
        raw = json.loads((directory / "state.json").read_text())
        s3 = S3Info(**raw.pop("s3")) if raw.get("s3") else None
        raw.pop("s3", None)
        return cls(s3=s3, **raw)

    def save(self) -> None:
        path = Path(self.dir) / "state.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.rename(path)

    def env(self) -> dict[str, str]:
        """Environment a shell or test needs to use this cluster and its S3 server."""
        env = {"KUBECONFIG": self.kubeconfig, "TRANSKUBE_CLUSTER_DIR": self.dir}
        if self.s3:
            env |= {
                "AWS_ENDPOINT_URL_S3": self.s3.endpoint,
                "AWS_ACCESS_KEY_ID": self.s3.access_key,
                "AWS_SECRET_ACCESS_KEY": self.s3.secret_key,
                "AWS_DEFAULT_REGION": self.s3.region,
                "TRANSKUBE_S3_BUCKET": self.s3.bucket,
            }
        return env


def _log(message: str) -> None:
    print(f"[cluster] {message}", file=sys.stderr, flush=True)


def write_kubeconfig(path: Path, server: str, ca_pem: bytes, pair: pki.KeyPair, user: str) -> None:
    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "transkube-dev",
                      "cluster": {"server": server, "certificate-authority-data": b64(ca_pem)}}],
        "users": [{"name": user,
                   "user": {"client-certificate-data": b64(pair.cert_pem), "client-key-data": b64(pair.key_pem)}}],
        "contexts": [{"name": "transkube-dev",
                      "context": {"cluster": "transkube-dev", "user": user, "namespace": "default"}}],
        "current-context": "transkube-dev",
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)


def _wait(what: str, check: Callable[[], bool], timeout: float, proc_pid: int | None = None,
          log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if check():
                return
        if proc_pid is not None and not procs.alive(proc_pid):
            tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
            raise RuntimeError(f"{what} exited during start-up; log tail:\n{tail}")
        time.sleep(0.2)
    tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
    raise TimeoutError(f"{what} not ready after {timeout:.0f}s; log tail:\n{tail}")


def _http_ok(url: str, context: ssl.SSLContext | None = None, expect: bytes | None = None) -> bool:
    with urllib.request.urlopen(url, timeout=2, context=context) as resp:  # noqa: S310 (loopback URLs we built)
        body: bytes = resp.read()
        return bool(resp.status == 200 and (expect is None or expect in body))


class LocalCluster:
    def __init__(self, directory: Path, nodes: tuple[NodeSpec, ...] = DEFAULT_NODES, with_s3: bool = True):
        self.dir = directory.resolve()
        self.nodes = nodes
        self.with_s3 = with_s3

    # ---- start -------------------------------------------------------------------------------
    def up(self, start_timeout: float = 180.0) -> ClusterState:
        t0 = time.monotonic()
        if (self.dir / "state.json").exists():
            raise RuntimeError(f"{self.dir} already holds a cluster; run `down` first")
        bins = tools.ensure_all()
        t_tools = time.monotonic() - t0
        # A new cluster never inherits an old one's etcd or S3 data (its PKI and tokens are new too).
        if self.dir.exists():
            for child in self.dir.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()
        for sub in ("pki", "logs", "etcd", "kubeconfigs", "certs"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        cluster_id = uuid.uuid4().hex
        ports = {name: procs.free_port() for name in
                 ("etcd", "etcd_peer", "apiserver", "controller_manager", "scheduler", "s3", "kubelet")}
        server = f"https://127.0.0.1:{ports['apiserver']}"
        state = ClusterState(
            id=cluster_id, dir=str(self.dir), kubeconfig=str(self.dir / "kubeconfig"), server=server,
            ca_file=str(self.dir / "pki" / "ca.crt"), ports=ports, pids={}, s3=None,
            nodes=[n.name for n in self.nodes],
        )
        # Saved before anything starts, so `down` can clean up even after a failed start.
        state.save()
        try:
            self._start(state, bins, start_timeout)
        except BaseException:
            _log("start-up failed; stopping what was started")
            self.down()
            raise
        state.timings = {"tools_s": round(t_tools, 2), "start_s": round(time.monotonic() - t0 - t_tools, 2)}
        state.save()
        return state

    def _base_env(self, cluster_id: str) -> dict[str, str]:
        keep = ("PATH", "HOME", "LANG", "TMPDIR", "TRANSKUBE_CACHE", "XDG_CACHE_HOME")
        env = {k: os.environ[k] for k in keep if k in os.environ}
        env[procs.CLUSTER_ID_ENV] = cluster_id
        return env

    def _start(self, state: ClusterState, bins: tools.Tools, timeout: float) -> None:
        d, ports = self.dir, state.ports
        pki_dir, kc_dir, logs = d / "pki", d / "kubeconfigs", d / "logs"
        env = self._base_env(state.id)

        ca = pki.CertificateAuthority()
        ca_crt, ca_key = ca.pair.write(pki_dir, "ca")
        apiserver_crt, apiserver_key = ca.issue(
            "kube-apiserver", server=True,
            dns_names=("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
                       "kubernetes.default.svc.cluster.local"),
            ip_addresses=("127.0.0.1", "::1", "10.96.0.1"),
        ).write(pki_dir, "apiserver")
        kubelet_client_crt, kubelet_client_key = ca.issue(
            "kube-apiserver-kubelet-client", ("system:masters",), client=True,
        ).write(pki_dir, "apiserver-kubelet-client")
        sa_key, sa_pub = pki.service_account_signing_key()
        (pki_dir / "sa.key").write_bytes(sa_key)
        (pki_dir / "sa.pub").write_bytes(sa_pub)

        ca_pem = ca.pair.cert_pem
        write_kubeconfig(d / "kubeconfig", state.server, ca_pem,
                         ca.issue("transkube-admin", ("system:masters",), client=True), "admin")
        write_kubeconfig(kc_dir / "controller-manager", state.server, ca_pem,
                         ca.issue("system:kube-controller-manager", client=True), "controller-manager")
        write_kubeconfig(kc_dir / "scheduler", state.server, ca_pem,
                         ca.issue("system:kube-scheduler", client=True), "scheduler")
        for node in self.nodes:
            write_kubeconfig(kc_dir / f"node-{node.name}", state.server, ca_pem,
                             ca.issue(f"system:node:{node.name}", ("system:nodes",), client=True), node.name)
        kubelet_crt, kubelet_key = ca.issue(
            "transkube-node-agent", server=True, dns_names=("localhost",), ip_addresses=("127.0.0.1",)
        ).write(pki_dir, "kubelet")

        # etcd
        etcd_url = f"http://127.0.0.1:{ports['etcd']}"
        peer_url = f"http://127.0.0.1:{ports['etcd_peer']}"
        self._spawn(state, "etcd", [
            str(bins.etcd), "--name=default", f"--data-dir={d / 'etcd'}",
            f"--listen-client-urls={etcd_url}", f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls={peer_url}", f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=default={peer_url}", "--unsafe-no-fsync", "--log-level=warn",
        ], env)

        if self.with_s3:
            access_key = "tk" + secrets.token_hex(8)
            secret_key = secrets.token_urlsafe(30)
            s3_env = env | {"MINIO_ROOT_USER": access_key, "MINIO_ROOT_PASSWORD": secret_key,
                            "MINIO_BROWSER": "off", "MINIO_UPDATE": "off", "MINIO_CALLHOME_ENABLE": "off",
                            "MINIO_REGION": REGION}
            (d / "s3").mkdir(exist_ok=True)
            self._spawn(state, "s3", [
                str(bins.minio), "server", str(d / "s3"), "--address", f"127.0.0.1:{ports['s3']}", "--quiet",
            ], s3_env)
            state.s3 = S3Info(endpoint=f"http://127.0.0.1:{ports['s3']}", access_key=access_key,
                              secret_key=secret_key, bucket=DEFAULT_BUCKET)
            state.save()

        _wait("etcd", lambda: _http_ok(f"{etcd_url}/health", expect=b"true"), timeout,
              state.pids["etcd"], logs / "etcd.log")

        self._spawn(state, "kube-apiserver", [
            str(bins.kube_apiserver), f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={ports['apiserver']}",
            f"--tls-cert-file={apiserver_crt}", f"--tls-private-key-file={apiserver_key}",
            f"--client-ca-file={ca_crt}", f"--cert-dir={pki_dir}",
            f"--service-account-issuer={SA_ISSUER}", f"--service-account-key-file={pki_dir / 'sa.pub'}",
            f"--service-account-signing-key-file={pki_dir / 'sa.key'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NamespaceLifecycle,LimitRanger,ServiceAccount,NodeRestriction,"
            "PodSecurity,ResourceQuota,DefaultTolerationSeconds,Priority,MutatingAdmissionWebhook,"
            "ValidatingAdmissionWebhook,ValidatingAdmissionPolicy",
            "--allow-privileged=true",
            f"--kubelet-client-certificate={kubelet_client_crt}", f"--kubelet-client-key={kubelet_client_key}",
            f"--kubelet-certificate-authority={ca_crt}",
            "--kubelet-preferred-address-types=InternalIP",
            "--profiling=false", "--event-ttl=2h", "--v=1",
        ], env)
        admin_ctx = ssl.create_default_context(cafile=str(ca_crt))
        admin_kc = yaml.safe_load((d / "kubeconfig").read_text())["users"][0]["user"]
        admin_crt, admin_key = d / "pki" / "admin.crt", d / "pki" / "admin.key"
        admin_crt.write_bytes(base64.b64decode(admin_kc["client-certificate-data"]))
        admin_key.write_bytes(base64.b64decode(admin_kc["client-key-data"]))
        admin_key.chmod(0o600)
        admin_ctx.load_cert_chain(str(admin_crt), str(admin_key))
        _wait("kube-apiserver", lambda: _http_ok(f"{state.server}/readyz", admin_ctx), timeout,
              state.pids["kube-apiserver"], logs / "kube-apiserver.log")

        kcm_kc = kc_dir / "controller-manager"
        self._spawn(state, "kube-controller-manager", [
            str(bins.kube_controller_manager), f"--kubeconfig={kcm_kc}",
            f"--authentication-kubeconfig={kcm_kc}", f"--authorization-kubeconfig={kcm_kc}",
            "--bind-address=127.0.0.1", f"--secure-port={ports['controller_manager']}",
            f"--cert-dir={d / 'certs' / 'controller-manager'}", "--leader-elect=false",
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={pki_dir / 'sa.key'}", f"--root-ca-file={ca_crt}",
            f"--cluster-signing-cert-file={ca_crt}", f"--cluster-signing-key-file={ca_key}",
            "--controllers=*", f"--service-cluster-ip-range={SERVICE_CIDR}", "--v=1",
        ], env)
        sched_kc = kc_dir / "scheduler"
        self._spawn(state, "kube-scheduler", [
            str(bins.kube_scheduler), f"--kubeconfig={sched_kc}",
            f"--authentication-kubeconfig={sched_kc}", f"--authorization-kubeconfig={sched_kc}",
            "--bind-address=127.0.0.1", f"--secure-port={ports['scheduler']}",
            f"--cert-dir={d / 'certs' / 'scheduler'}", "--leader-elect=false", "--v=1",
        ], env)

        agent_cfg = AgentConfig(
            state_dir=str(d / "agent"), server=state.server, api_port=ports["apiserver"], ca_file=str(ca_crt),
            kubeconfigs={n.name: str(kc_dir / f"node-{n.name}") for n in self.nodes},
            nodes=list(self.nodes), kubelet_port=ports["kubelet"],
            kubelet_cert=str(kubelet_crt), kubelet_key=str(kubelet_key), cluster_id=state.id,
            kubernetes_version=_k8s_version(bins.kube_apiserver),
        )
        (d / "agent").mkdir(exist_ok=True)
        agent_cfg.save(d / "agent" / "config.json")
        agent_env = env | {"PYTHONPATH": str(tools.HACK_DIR), "PATH": _path_with_venv(env.get("PATH", ""))}
        self._spawn(state, "node-agent", [sys.executable, "-m", "transkube_dev.nodeagent",
                                          str(d / "agent" / "config.json")], agent_env)

        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE  # kcm/scheduler serve self-signed certs; we only ask /healthz
        _wait("kube-controller-manager",
              lambda: _http_ok(f"https://127.0.0.1:{ports['controller_manager']}/healthz", insecure), timeout,
              state.pids["kube-controller-manager"], logs / "kube-controller-manager.log")
        _wait("kube-scheduler", lambda: _http_ok(f"https://127.0.0.1:{ports['scheduler']}/healthz", insecure),
              timeout, state.pids["kube-scheduler"], logs / "kube-scheduler.log")

        def api_get(path: str) -> dict[str, Any]:
            with urllib.request.urlopen(f"{state.server}{path}", timeout=5, context=admin_ctx) as r:  # noqa: S310
                return dict(json.loads(r.read()))

        def nodes_ready() -> bool:
            items = api_get("/api/v1/nodes")["items"]
            ready = {
                n["metadata"]["name"] for n in items
                if any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"].get("conditions", []))
                and not any(t["key"] == "node.kubernetes.io/not-ready" for t in n["spec"].get("taints", []))
            }
            return ready >= {n.name for n in self.nodes}

        _wait("nodes Ready", nodes_ready, timeout, state.pids["node-agent"], logs / "node-agent.log")
        # Pods can only be admitted once the ServiceAccount controller made the default account.
        _wait("default ServiceAccount", lambda: bool(api_get("/api/v1/namespaces/default/serviceaccounts/default")),
              timeout)
        _wait("kube-root-ca.crt ConfigMap",
              lambda: bool(api_get("/api/v1/namespaces/default/configmaps/kube-root-ca.crt")), timeout)

        if state.s3:
            s3 = state.s3
            _wait("s3", lambda: _http_ok(f"{s3.endpoint}/minio/health/live"), timeout, state.pids["s3"],
                  logs / "s3.log")
            _create_bucket(s3)

    def _spawn(self, state: ClusterState, name: str, argv: list[str], env: dict[str, str]) -> None:
        proc = procs.spawn(argv, self.dir / "logs" / f"{name}.log", env)
        state.pids[name] = proc.pid
        state.save()
        # How to start it again (chaos tests stop and restart single components); private to this directory.
        launch = self.dir / "launch" / f"{name}.json"
        launch.parent.mkdir(mode=0o700, exist_ok=True)
        launch.write_text(json.dumps({"argv": argv, "env": env}))
        launch.chmod(0o600)

    # ---- chaos: one component down and up again ------------------------------------------------
    def stop_component(self, name: str, grace: float = 10.0) -> None:
        """Stop one running component (e.g. kube-apiserver, kube-controller-manager, s3) and wait until it is gone;
        grace=0 is a SIGKILL."""
        state = ClusterState.load(self.dir)
        pid = state.pids.get(name)
        if pid is None:
            raise KeyError(f"no component {name!r}; have {sorted(state.pids)}")
        procs.kill_group(pid, grace=grace)

    def start_component(self, name: str, timeout: float = 60.0) -> None:
        """Start a stopped component again with its original argv and environment, and wait until it is healthy."""
        state = ClusterState.load(self.dir)
        pid = state.pids.get(name)
        if pid and procs.alive(pid):
            raise RuntimeError(f"{name} is still running (pid {pid})")
        launch = json.loads((self.dir / "launch" / f"{name}.json").read_text())
        self._spawn(state, name, launch["argv"], launch["env"])
        check = self._health_check(state, name)
        if check is not None:
            _wait(name, check, timeout, state.pids[name], self.dir / "logs" / f"{name}.log")

    def _health_check(self, state: ClusterState, name: str) -> Callable[[], bool] | None:
        ports, d = state.ports, self.dir
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE
        if name == "kube-apiserver":
            admin = ssl.create_default_context(cafile=state.ca_file)
            admin.load_cert_chain(str(d / "pki" / "admin.crt"), str(d / "pki" / "admin.key"))
            return lambda: _http_ok(f"{state.server}/readyz", admin)
        if name == "kube-controller-manager":
            return lambda: _http_ok(f"https://127.0.0.1:{ports['controller_manager']}/healthz", insecure)
        if name == "kube-scheduler":
            return lambda: _http_ok(f"https://127.0.0.1:{ports['scheduler']}/healthz", insecure)
        if name == "etcd":
            return lambda: _http_ok(f"http://127.0.0.1:{ports['etcd']}/health", expect=b"true")
        if name == "s3" and state.s3:
            endpoint = state.s3.endpoint
            return lambda: _http_ok(f"{endpoint}/minio/health/live")
        return None

    # ---- stop --------------------------------------------------------------------------------
    def down(self) -> list[int]:
        """Stop every process of the cluster; returns PIDs that needed the final sweep (ideally none)."""
        try:
            state = ClusterState.load(self.dir)
        except FileNotFoundError:
            return []
        # Agent first, so it can stop its pods gracefully; then the control plane top-down.
        order = ["node-agent", "kube-scheduler", "kube-controller-manager", "kube-apiserver", "s3", "etcd"]
        for name in order + [n for n in state.pids if n not in order]:
            pid = state.pids.get(name)
            if pid and procs.alive(pid):
                procs.kill_group(pid, grace=15 if name == "node-agent" else 10)
        swept = procs.sweep(state.id)
        left = procs.tagged_pids(state.id)
        if left:
            raise RuntimeError(f"processes of cluster {state.id} survived down: {left}")
        (self.dir / "state.json").rename(self.dir / "state.stopped.json")
        return swept


def _create_bucket(s3: S3Info) -> None:
    import boto3

    client = boto3.client("s3", endpoint_url=s3.endpoint, aws_access_key_id=s3.access_key,
                          aws_secret_access_key=s3.secret_key, region_name=s3.region)
    with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
        client.create_bucket(Bucket=s3.bucket)


def _path_with_venv(path: str) -> str:
    """Pods run console scripts (transkube-worker, ...) from the interpreter's own bin dir."""
    venv_bin = str(Path(sys.executable).parent)
    return venv_bin + os.pathsep + path if venv_bin not in path.split(os.pathsep) else path


def _k8s_version(apiserver: Path) -> str:
    # .../k8s/v1.35.4-<pin>/bin/kube-apiserver
    return apiserver.parent.parent.name.split("-")[0]
