"""Dev-only node agent: the kubelet stand-in for a machine without a container runtime.

It registers nodes (each with its own `system:node:<name>` identity, so the Node authorizer and
NodeRestriction admission apply), renews their leases, and runs the pods bound to them as local
process groups:

- argv is the container's command + args ($(VAR) expanded); the image is ignored;
- env comes from the spec, Secrets, ConfigMaps, the downward API and resource fields;
- volumes (emptyDir, projected service-account token + CA + namespace, secret, configMap,
  downwardAPI, hostPath) are materialised under the pod's directory and bind-mounted at their mount
  paths inside a private mount namespace, so in-cluster clients find
  /var/run/secrets/kubernetes.io/serviceaccount exactly where a real kubelet would put it;
- it writes real pod status (Running, then Succeeded/Failed with exit code, container states and the
  termination message), so the real Job controller does the rest;
- deleting a pod (or a Job that is suspended or deleted) kills its process groups;
- it serves /containerLogs so `kubectl logs` works.

Never part of the product.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import http.server
import json
import logging
import math
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import urllib3

from . import procs
from .kube import ApiError, Kube, Obj
from .nodeagent_config import GPU_RESOURCE, AgentConfig, NodeSpec

log = logging.getLogger("node-agent")

LEASE_NS = "kube-node-lease"
LEASE_SECONDS = 40
RENEW_EVERY = 10.0
STATUS_EVERY = 60.0
TOKEN_SECONDS = 3607
SA_MOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
RUNTIME = "transkube-agent"
# The API server is unreachable (e.g. restarting): like the kubelet, retry rather than give up on the pod.
UNREACHABLE = (urllib3.exceptions.HTTPError, OSError)
STATUS_RETRY_SECONDS = 1.0


def now_rfc3339() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# ---- pure helpers ------------------------------------------------------------------------------

_QUANTITY = re.compile(r"^([0-9.]+)([a-zA-Z]*)$")
_SUFFIX = {"": 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
           "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}


def parse_quantity(value: str | int | float) -> float:
    m = _QUANTITY.match(str(value))
    if not m or m.group(2) not in _SUFFIX:
        raise ValueError(f"bad quantity {value!r}")
    return float(m.group(1)) * _SUFFIX[m.group(2)]


_VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes $(VAR) expansion: known names are replaced, $$ escapes, unknown refs stay as written."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))

    return _VAR_REF.sub(sub, value)


class ConfigError(Exception):
    """A referenced Secret/ConfigMap/key is missing: the container waits, like CreateContainerConfigError."""


def field_ref(pod: Obj, path: str) -> str:
    meta, spec = pod["metadata"], pod["spec"]
    m = re.match(r"^metadata\.(labels|annotations)\['(.+)'\]$", path)
    if m:
        return str(meta.get(m.group(1), {}).get(m.group(2), ""))
    simple = {
        "metadata.name": meta.get("name"), "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"), "spec.nodeName": spec.get("nodeName"),
        "spec.serviceAccountName": spec.get("serviceAccountName"), "status.hostIP": "127.0.0.1",
        "status.hostIPs": "127.0.0.1", "status.podIP": "127.0.0.1", "status.podIPs": "127.0.0.1",
        "metadata.labels": "\n".join(f'{k}="{v}"' for k, v in sorted(meta.get("labels", {}).items())),
        "metadata.annotations": "\n".join(f'{k}="{v}"' for k, v in sorted(meta.get("annotations", {}).items())),
    }
    if path not in simple:
        raise ConfigError(f"unsupported fieldRef {path}")
    return str(simple[path] or "")


def resource_field_ref(pod: Obj, container_name: str | None, ref: Obj, node: NodeSpec) -> str:
    containers = pod["spec"]["containers"]
    c = next((x for x in containers if x["name"] == (ref.get("containerName") or container_name)), containers[0])
    kind, _, res = ref["resource"].partition(".")
    resources = c.get("resources", {})
    raw = resources.get(kind, {}).get(res)
    if raw is None and kind == "requests":
        raw = resources.get("limits", {}).get(res)
    if raw is None:  # limits default to the node's allocatable
        raw = node.cpu if res == "cpu" else node.memory if res == "memory" else "0"
    divisor = parse_quantity(ref.get("divisor") or "1") or 1.0  # the API server stores an unset divisor as "0"
    return str(math.ceil(parse_quantity(raw) / divisor))


# ---- running pods ------------------------------------------------------------------------------

@dataclass
class ContainerRun:
    name: str
    image: str
    spec: Obj
    dir: Path
    proc: subprocess.Popen[bytes] | None = None
    started_at: str | None = None
    finished_at: str | None = None
    exit_code: int | None = None
    restart_count: int = 0
    restart_at: float | None = None
    last_state: Obj = field(default_factory=dict)
    waiting: tuple[str, str] | None = None
    message: str = ""

    @property
    def log_path(self) -> Path:
        return self.dir / "log"

    @property
    def container_id(self) -> str:
        return f"{RUNTIME}://{self.dir.parent.parent.name}-{self.name}-{self.restart_count}"

    def status(self) -> Obj:
        state: Obj
        if self.waiting:
            state = {"waiting": {"reason": self.waiting[0], "message": self.waiting[1]}}
        elif self.exit_code is not None and self.restart_at is None:
            state = {"terminated": self.terminated()}
        elif self.proc is not None:
            state = {"running": {"startedAt": self.started_at}}
        else:
            state = {"waiting": {"reason": "ContainerCreating"}}
        running = "running" in state
        out: Obj = {
            "name": self.name, "image": self.image, "imageID": f"{RUNTIME}://{self.image}",
            "ready": running, "started": running, "restartCount": self.restart_count, "state": state,
        }
        if self.proc is not None or self.exit_code is not None:
            out["containerID"] = self.container_id
        if self.last_state:
            out["lastState"] = self.last_state
        return out

    def terminated(self) -> Obj:
        assert self.exit_code is not None
        return {
            "exitCode": self.exit_code,
            "reason": "Completed" if self.exit_code == 0 else "Error",
            "startedAt": self.started_at, "finishedAt": self.finished_at,
            "containerID": self.container_id, **({"message": self.message} if self.message else {}),
        }


@dataclass
class PodRun:
    uid: str
    namespace: str
    name: str
    node: str
    dir: Path
    pod: Obj
    containers: list[ContainerRun] = field(default_factory=list)
    start_time: str | None = None
    started_mono: float = 0.0
    phase: str = "Pending"
    terminating: bool = False
    finished: bool = False
    token_refresh_at: float = 0.0
    retry_config_at: float | None = None
    # The last status patch that did not reach the API server (phase, reason, message); the reaper sends it again.
    unsynced: tuple[str, str | None, str | None] | None = None
    unsynced_retry_at: float = 0.0
    lock: threading.RLock = field(default_factory=threading.RLock)

    @property
    def path(self) -> str:
        return f"/api/v1/namespaces/{self.namespace}/pods/{self.name}"


class NodeAgent:
    def __init__(self, config: AgentConfig):
        self.cfg = config
        self.state = Path(config.state_dir)
        self.kube = {name: Kube.from_kubeconfig(path) for name, path in config.kubeconfigs.items()}
        self.node_specs = {n.name: n for n in config.nodes}
        self.node_uids: dict[str, str] = {}
        self.runs: dict[str, PodRun] = {}
        self.runs_lock = threading.Lock()
        self.stopping = threading.Event()
        self.pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="pod")
        self.hack_dir = str(Path(__file__).resolve().parent.parent)
        # What pods run comes from here: the checkout (editable install) and the interpreter's prefix.
        self.keep_paths = sorted({str(Path(self.hack_dir).parent), sys.prefix, sys.base_prefix})

    # ---- nodes ---------------------------------------------------------------------------------
    def node_status(self, spec: NodeSpec) -> Obj:
        capacity = {"cpu": spec.cpu, "memory": spec.memory, "pods": str(spec.pods), "ephemeral-storage": "100Gi"}
        if spec.gpus:
            capacity[GPU_RESOURCE] = str(spec.gpus)
        now = now_rfc3339()

        def cond(kind: str, status: str, reason: str, message: str) -> Obj:
            return {"type": kind, "status": status, "reason": reason, "message": message,
                    "lastHeartbeatTime": now, "lastTransitionTime": now}

        uname = os.uname()
        return {
            "capacity": capacity, "allocatable": capacity,
            "conditions": [
                cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "node agent has sufficient memory"),
                cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "node agent has no disk pressure"),
                cond("PIDPressure", "False", "KubeletHasSufficientPID", "node agent has sufficient PID available"),
                cond("Ready", "True", "KubeletReady", "transkube dev node agent is posting ready status"),
            ],
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": spec.name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.cfg.kubelet_port}},
            "nodeInfo": {
                "machineID": spec.name, "systemUUID": spec.name, "bootID": self.cfg.cluster_id,
                "kernelVersion": uname.release, "osImage": "transkube dev node agent (processes, no containers)",
                "containerRuntimeVersion": f"{RUNTIME}://0.1.0", "kubeletVersion": self.cfg.kubernetes_version,
                "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": "amd64",
            },
        }

    def register(self, spec: NodeSpec) -> None:
        kube = self.kube[spec.name]
        labels = {"kubernetes.io/hostname": spec.name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
                  **spec.labels}
        body = {"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": spec.name, "labels": labels},
                "spec": {"taints": spec.taints} if spec.taints else {},
                "status": self.node_status(spec)}
        try:
            node = kube.create("/api/v1/nodes", body)
        except ApiError as e:
            if e.status != 409:
                raise
            node = kube.merge_patch(f"/api/v1/nodes/{spec.name}", {"metadata": {"labels": labels}})
        self.node_uids[spec.name] = node["metadata"]["uid"]
        kube.merge_patch(f"/api/v1/nodes/{spec.name}/status", {"status": self.node_status(spec)})
        log.info("registered node %s", spec.name)

    def renew_lease(self, name: str) -> None:
        kube = self.kube[name]
        path = f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NS}/leases/{name}"
        try:
            kube.merge_patch(path, {"spec": {"renewTime": now_micro(), "holderIdentity": name}})
        except ApiError as e:
            if e.status != 404:
                raise
            kube.create(f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NS}/leases", {
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": name, "namespace": LEASE_NS, "ownerReferences": [
                    {"apiVersion": "v1", "kind": "Node", "name": name, "uid": self.node_uids[name]}]},
                "spec": {"holderIdentity": name, "leaseDurationSeconds": LEASE_SECONDS, "renewTime": now_micro()},
            })

    def heartbeat_loop(self) -> None:
        last_status = time.monotonic()
        while not self.stopping.wait(RENEW_EVERY):
            for name, spec in self.node_specs.items():
                try:
                    self.renew_lease(name)
                    if time.monotonic() - last_status >= STATUS_EVERY:
                        self.kube[name].merge_patch(f"/api/v1/nodes/{name}/status", {"status": self.node_status(spec)})
                except Exception:
                    log.exception("heartbeat for %s failed", name)
            if time.monotonic() - last_status >= STATUS_EVERY:
                last_status = time.monotonic()

    # ---- watching pods -------------------------------------------------------------------------
    def watch_loop(self, node: str) -> None:
        kube = self.kube[node]
        selector = f"spec.nodeName={node}"
        while not self.stopping.is_set():
            try:
                listing = kube.get("/api/v1/pods", fieldSelector=selector)
                rv = listing["metadata"]["resourceVersion"]
                present = set()
                for pod in listing["items"]:
                    present.add(pod["metadata"]["uid"])
                    self.on_pod("ADDED", pod)
                with self.runs_lock:
                    gone = [r for r in self.runs.values() if r.node == node and r.uid not in present]
                for run in gone:
                    self.on_pod("DELETED", run.pod)
                while not self.stopping.is_set():
                    for event in kube.watch("/api/v1/pods", rv, fieldSelector=selector):
                        obj = event["object"]
                        if event["type"] == "ERROR":
                            raise ApiError(int(obj.get("code", 500)), json.dumps(obj), "WATCH", "/api/v1/pods")
                        rv = obj["metadata"]["resourceVersion"]
                        if event["type"] != "BOOKMARK":
                            self.on_pod(event["type"], obj)
            except Exception as exc:
                if not self.stopping.is_set():
                    log.warning("pod watch for %s restarting: %s", node, exc)
                    time.sleep(1)

    def on_pod(self, kind: str, pod: Obj) -> None:
        meta = pod["metadata"]
        uid = meta["uid"]
        with self.runs_lock:
            run = self.runs.get(uid)
            if run is None and kind != "DELETED" and not meta.get("deletionTimestamp") \
                    and pod.get("status", {}).get("phase") not in ("Succeeded", "Failed"):
                run = PodRun(uid=uid, namespace=meta["namespace"], name=meta["name"], node=pod["spec"]["nodeName"],
                             dir=self.state / "pods" / f"{meta['namespace']}_{meta['name']}_{uid}", pod=pod)
                self.runs[uid] = run
                self.pool.submit(self.guard, self.start_pod, run)
                return
        if run is not None:
            run.pod = pod
        if kind == "DELETED":
            if run is not None:
                self.pool.submit(self.guard, self.forget, run)
        elif meta.get("deletionTimestamp"):
            if run is not None:
                if not run.terminating:
                    run.terminating = True
                    self.pool.submit(self.guard, self.terminate, run)
            else:
                # Never ran here (or already finished before the agent started): let it go.
                self.pool.submit(self.guard, self.delete_now, pod)

    def guard(self, fn: Any, *args: Any) -> None:
        try:
            fn(*args)
        except Exception:
            log.exception("%s failed", getattr(fn, "__name__", fn))

    # ---- pod lifecycle -------------------------------------------------------------------------
    def start_pod(self, run: PodRun) -> None:
        with run.lock:
            if run.terminating or run.finished:
                return
            pod = run.pod
            spec = pod["spec"]
            for sub in ("volumes", "containers"):
                (run.dir / sub).mkdir(parents=True, exist_ok=True)
            unsupported = [c["name"] for c in spec.get("initContainers", []) or []]
            if unsupported:
                self.fail_pod(run, "UnsupportedByNodeAgent",
                              f"init containers are not supported by the dev node agent: {unsupported}")
                return
            run.containers = [
                ContainerRun(name=c["name"], image=c.get("image", ""), spec=c, dir=run.dir / "containers" / c["name"])
                for c in spec["containers"]
            ]
            try:
                volumes = self.materialise_volumes(run)
                envs = {c.name: self.container_env(run, c.spec) for c in run.containers}
            except (ConfigError, ApiError, *UNREACHABLE) as exc:
                # Like the kubelet, keep retrying: a missing Secret may appear later, the Node authorizer learns
                # of a pod's binding a moment after the pod reaches us, a restarting API server comes back.
                config_error = isinstance(exc, ConfigError)
                for c in run.containers:
                    c.waiting = ("CreateContainerConfigError" if config_error else "ContainerCreating", str(exc))
                run.retry_config_at = time.monotonic() + (3 if config_error else 0.5)
                self.patch_status(run, "Pending")
                return
            run.retry_config_at = None
            run.start_time = run.start_time or now_rfc3339()
            run.started_mono = time.monotonic()
            run.token_refresh_at = time.monotonic() + TOKEN_SECONDS * 0.8
            for c in run.containers:
                c.waiting = None
                self.spawn_container(run, c, volumes, envs[c.name])
            self.patch_status(run, "Running")
            log.info("started pod %s/%s on %s", run.namespace, run.name, run.node)

    def materialise_volumes(self, run: PodRun) -> dict[str, Path]:
        out: dict[str, Path] = {}
        for vol in run.pod["spec"].get("volumes", []) or []:
            name = vol["name"]
            target = run.dir / "volumes" / name
            if "hostPath" in vol:
                out[name] = Path(vol["hostPath"]["path"])
                continue
            target.mkdir(parents=True, exist_ok=True)
            target.chmod(0o777)
            if "emptyDir" in vol:
                pass
            elif "projected" in vol:
                for source in vol["projected"].get("sources", []):
                    self.write_source(run, target, source)
            elif "secret" in vol:
                self.write_source(run, target, {"secret": {"name": vol["secret"].get("secretName"), **vol["secret"]}})
            elif "configMap" in vol or "downwardAPI" in vol:
                self.write_source(run, target, vol)
            else:
                raise ConfigError(f"volume {name}: only emptyDir, projected, secret, configMap, downwardAPI and "
                                  "hostPath are supported by the dev node agent")
            out[name] = target
        return out

    def write_source(self, run: PodRun, target: Path, source: Obj) -> None:
        def put(rel: str, data: bytes) -> None:
            dest = target / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(dest.name + ".tmp")
            tmp.write_bytes(data)
            tmp.rename(dest)

        def keyed(kind: str, src: Obj) -> None:
            data = self.read_keyed(run, kind, src["name"], bool(src.get("optional")))
            if data is None:
                return
            items = src.get("items")
            pairs = [(i["key"], i["path"]) for i in items] if items else [(k, k) for k in data]
            for key, rel in pairs:
                if key not in data:
                    if src.get("optional"):
                        continue
                    raise ConfigError(f"{kind} {src['name']} has no key {key}")
                put(rel, data[key])

        if "serviceAccountToken" in source:
            sat = source["serviceAccountToken"]
            token = self.request_token(run, sat.get("audience"), int(sat.get("expirationSeconds", TOKEN_SECONDS)))
            put(sat["path"], token.encode())
        elif "configMap" in source:
            keyed("configmaps", source["configMap"])
        elif "secret" in source:
            keyed("secrets", source["secret"])
        elif "downwardAPI" in source:
            for item in source["downwardAPI"].get("items", []):
                if "fieldRef" in item:
                    value = field_ref(run.pod, item["fieldRef"]["fieldPath"])
                else:
                    node = self.node_specs[run.node]
                    value = resource_field_ref(run.pod, None, item["resourceFieldRef"], node)
                put(item["path"], value.encode())

    def read_keyed(self, run: PodRun, kind: str, name: str, optional: bool) -> dict[str, bytes] | None:
        try:
            obj = self.kube[run.node].get(f"/api/v1/namespaces/{run.namespace}/{kind}/{name}")
        except ApiError as e:
            if e.status == 404:
                if optional:
                    return None
                raise ConfigError(f'{kind[:-1]} "{name}" not found') from e
            raise
        data = {k: (base64.b64decode(v) if kind == "secrets" else v.encode()) for k, v in obj.get("data", {}).items()}
        if kind == "configmaps":
            data |= {k: base64.b64decode(v) for k, v in obj.get("binaryData", {}).items()}
        return data

    def request_token(self, run: PodRun, audience: str | None, seconds: int) -> str:
        sa = run.pod["spec"].get("serviceAccountName") or "default"
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {
            "audiences": [audience] if audience else [], "expirationSeconds": seconds,
            "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": run.name, "uid": run.uid}}}
        resp = self.kube[run.node].create(f"/api/v1/namespaces/{run.namespace}/serviceaccounts/{sa}/token", body)
        return str(resp["status"]["token"])

    def container_env(self, run: PodRun, c: Obj) -> dict[str, str]:
        pod = run.pod
        env: dict[str, str] = {}
        for src in c.get("envFrom", []) or []:
            kind = "configmaps" if "configMapRef" in src else "secrets"
            ref = src.get("configMapRef") or src.get("secretRef") or {}
            data = self.read_keyed(run, kind, ref["name"], bool(ref.get("optional"))) or {}
            for k, v in data.items():
                env[src.get("prefix", "") + k] = v.decode()
        for item in c.get("env", []) or []:
            name = item["name"]
            if "valueFrom" not in item:
                env[name] = expand(item.get("value", ""), env)
                continue
            vf = item["valueFrom"]
            if "fieldRef" in vf:
                env[name] = field_ref(pod, vf["fieldRef"]["fieldPath"])
            elif "resourceFieldRef" in vf:
                env[name] = resource_field_ref(pod, c["name"], vf["resourceFieldRef"], self.node_specs[run.node])
            else:
                kind = "configmaps" if "configMapKeyRef" in vf else "secrets"
                ref = vf.get("configMapKeyRef") or vf.get("secretKeyRef") or {}
                found = self.read_keyed(run, kind, ref["name"], bool(ref.get("optional")))
                if found is None or ref["key"] not in found:
                    if ref.get("optional"):
                        continue
                    raise ConfigError(f"couldn't find key {ref['key']} in {kind[:-1]} {run.namespace}/{ref['name']}")
                env[name] = found[ref["key"]].decode()
        return env

    def spawn_container(self, run: PodRun, c: ContainerRun, volumes: dict[str, Path], pod_env: dict[str, str]) -> None:
        c.dir.mkdir(parents=True, exist_ok=True)
        term_log = c.dir / "termination-log"
        term_log.write_text("")
        port = str(self.cfg.api_port)
        base = {
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"), "LANG": "C.UTF-8",
            "HOSTNAME": run.name, "HOME": "/tmp",
            "KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": port,
            "KUBERNETES_SERVICE_PORT_HTTPS": port, "KUBERNETES_PORT": f"tcp://127.0.0.1:{port}",
            "KUBERNETES_PORT_443_TCP": f"tcp://127.0.0.1:{port}", "KUBERNETES_PORT_443_TCP_ADDR": "127.0.0.1",
            "KUBERNETES_PORT_443_TCP_PORT": port, "KUBERNETES_PORT_443_TCP_PROTO": "tcp",
        }
        env = {**base, **pod_env, procs.CLUSTER_ID_ENV: self.cfg.cluster_id}
        argv = [expand(a, env) for a in (c.spec.get("command") or []) + (c.spec.get("args") or [])]
        mounts = []
        for vm in c.spec.get("volumeMounts", []) or []:
            if vm["name"] not in volumes:
                raise ConfigError(f"volumeMount {vm['name']} names no volume")
            source = volumes[vm["name"]] / vm.get("subPath", "")
            if vm.get("subPath"):
                source.mkdir(parents=True, exist_ok=True)
            mounts.append({"source": str(source), "target": vm["mountPath"], "readOnly": bool(vm.get("readOnly"))})
        mounts.append({"source": str(term_log),
                       "target": c.spec.get("terminationMessagePath") or "/dev/termination-log"})
        has_tmp = any(m["target"] == "/tmp" for m in mounts)
        if not has_tmp:
            env["HOME"] = str(c.dir)
        c.started_at = now_rfc3339()
        c.exit_code = None
        c.finished_at = None
        c.message = ""
        if not argv:
            c.exit_code, c.finished_at = 128, now_rfc3339()
            c.message = "the dev node agent ignores images, so the container must set command"
            return
        spec_file = c.dir / "spec.json"
        spec_file.write_text(json.dumps({"argv": argv, "env": env, "mounts": mounts,
                                         "cwd": c.spec.get("workingDir") or env["HOME"],
                                         "terminationLog": str(term_log), "hostname": run.name[:63],
                                         "keep": self.keep_paths}))
        init_env = {"PATH": env["PATH"], "PYTHONPATH": self.hack_dir, procs.CLUSTER_ID_ENV: self.cfg.cluster_id}
        with open(c.log_path, "ab") as out:
            c.proc = subprocess.Popen(
                ["unshare", "--mount", "--uts", "--propagation", "private",
                 sys.executable, "-m", "transkube_dev.podinit", str(spec_file)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=init_env,
                start_new_session=True,
            )
        (c.dir / "pid").write_text(str(c.proc.pid))

    def collect(self, c: ContainerRun) -> bool:
        """Records a finished container's exit; True if it just finished."""
        if c.proc is None or c.exit_code is not None:
            return False
        code = c.proc.poll()
        if code is None:
            return False
        # Reap anything the container left in its group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(c.proc.pid, signal.SIGKILL)
        c.exit_code = 128 - code if code < 0 else code
        c.finished_at = now_rfc3339()
        term = c.dir / "termination-log"
        message = term.read_text(errors="replace")[:4096] if term.exists() else ""
        if not message and c.exit_code != 0 and c.spec.get("terminationMessagePolicy") == "FallbackToLogsOnError":
            lines = c.log_path.read_text(errors="replace").splitlines()[-80:]
            message = "\n".join(lines)[-2048:]
        c.message = message
        return True

    def reap_loop(self) -> None:
        while not self.stopping.wait(0.2):
            with self.runs_lock:
                runs = list(self.runs.values())
            for run in runs:
                try:
                    self.reap(run)
                except Exception:
                    log.exception("reaping %s/%s failed", run.namespace, run.name)

    def reap(self, run: PodRun) -> None:
        # Never block the reaper on a pod that is busy terminating or starting.
        if not run.lock.acquire(blocking=False):
            return
        try:
            self._reap(run)
        finally:
            run.lock.release()

    def _reap(self, run: PodRun) -> None:
        if run.unsynced is not None and time.monotonic() >= run.unsynced_retry_at:
            self.patch_status(run, *run.unsynced)
        if run.finished or run.terminating:
            return
        if run.retry_config_at and time.monotonic() >= run.retry_config_at:
            run.retry_config_at = None
            self.pool.submit(self.guard, self.start_pod, run)
            return
        if not run.containers or any(c.proc is None and c.exit_code is None for c in run.containers):
            return
        deadline = run.pod["spec"].get("activeDeadlineSeconds")
        if deadline and time.monotonic() - run.started_mono > int(deadline):
            self.kill_containers(run, grace=0)
            self.fail_pod(run, "DeadlineExceeded",
                          f"Pod was active on the node longer than the specified deadline ({deadline}s)")
            return
        changed = False
        policy = run.pod["spec"].get("restartPolicy", "Always")
        for c in run.containers:
            if c.restart_at is not None and time.monotonic() >= c.restart_at:
                c.restart_at = None
                c.restart_count += 1
                self.spawn_container(run, c, self.materialise_volumes(run), self.container_env(run, c.spec))
                changed = True
            elif self.collect(c):
                changed = True
                if policy == "Always" or (policy == "OnFailure" and c.exit_code != 0):
                    c.last_state = {"terminated": c.terminated()}
                    c.restart_at = time.monotonic() + min(10.0, 1.0 * 2 ** min(c.restart_count, 4))
        if not changed:
            if time.monotonic() >= run.token_refresh_at:
                run.token_refresh_at = time.monotonic() + TOKEN_SECONDS * 0.8
                self.pool.submit(self.guard, self.materialise_volumes, run)
            return
        if all(c.exit_code is not None and c.restart_at is None for c in run.containers):
            phase = "Succeeded" if all(c.exit_code == 0 for c in run.containers) else "Failed"
            run.finished = True
            self.patch_status(run, phase)
            log.info("pod %s/%s %s", run.namespace, run.name, phase)
            self.cleanup_volumes(run)
        else:
            self.patch_status(run, "Running")

    def kill_containers(self, run: PodRun, grace: float) -> None:
        live = [c for c in run.containers if c.proc is not None and c.exit_code is None]
        for c in live:
            assert c.proc is not None
            with contextlib.suppress(ProcessLookupError):
                os.killpg(c.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(c.proc is not None and c.proc.poll() is None for c in live):
            time.sleep(0.05)
        for c in live:
            assert c.proc is not None
            with contextlib.suppress(ProcessLookupError):
                os.killpg(c.proc.pid, signal.SIGKILL)
            c.proc.wait()
            self.collect(c)
        for c in run.containers:
            c.restart_at = None

    def terminate(self, run: PodRun) -> None:
        """The pod got a deletionTimestamp: stop its processes within the grace period, then let it go."""
        pod = run.pod
        grace = pod["metadata"].get("deletionGracePeriodSeconds")
        if grace is None:
            grace = pod["spec"].get("terminationGracePeriodSeconds", 30)
        with run.lock:
            self.kill_containers(run, float(grace))
            if not run.finished:
                run.finished = True
                if run.containers and all(c.exit_code == 0 for c in run.containers):
                    self.patch_status(run, "Succeeded")
                else:
                    self.patch_status(run, "Failed")
            self.cleanup_volumes(run)
        self.delete_now(pod)

    def delete_now(self, pod: Obj) -> None:
        meta = pod["metadata"]
        with contextlib.suppress(ApiError):
            self.kube[pod["spec"]["nodeName"]].delete(
                f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}",
                {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0,
                 "preconditions": {"uid": meta["uid"]}})

    def forget(self, run: PodRun) -> None:
        with run.lock:
            run.terminating = True
            self.kill_containers(run, grace=0)
            self.cleanup_volumes(run)
        with self.runs_lock:
            self.runs.pop(run.uid, None)

    def cleanup_volumes(self, run: PodRun) -> None:
        # Logs stay for debugging; scratch data goes.
        shutil.rmtree(run.dir / "volumes", ignore_errors=True)

    def fail_pod(self, run: PodRun, reason: str, message: str) -> None:
        run.finished = True
        self.patch_status(run, "Failed", reason=reason, message=message)
        self.cleanup_volumes(run)

    def patch_status(self, run: PodRun, phase: str, reason: str | None = None, message: str | None = None) -> None:
        run.phase = phase
        now = now_rfc3339()
        running = phase == "Running"
        finished = phase in ("Succeeded", "Failed")
        ready_reason = None if running else ("PodCompleted" if finished else "ContainersNotReady")
        existing = {c["type"]: c for c in run.pod.get("status", {}).get("conditions", []) or []}

        def cond(kind: str, ok: bool, why: str | None = None) -> Obj:
            old = existing.get(kind)
            status = "True" if ok else "False"
            since = old["lastTransitionTime"] if old and old.get("status") == status else now
            out: Obj = {"type": kind, "status": status, "lastProbeTime": None, "lastTransitionTime": since}
            if why:
                out["reason"] = why
            return out

        conditions = [c for t, c in existing.items()
                      if t not in ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady")]
        conditions += [
            cond("PodReadyToStartContainers", phase != "Pending" or bool(run.containers)),
            cond("Initialized", True),
            cond("ContainersReady", running, ready_reason),
            cond("Ready", running, ready_reason),
        ]
        status: Obj = {
            "phase": phase, "hostIP": "127.0.0.1", "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}], "conditions": conditions,
            "containerStatuses": [c.status() for c in run.containers],
        }
        if run.start_time:
            status["startTime"] = run.start_time
        if reason:
            status["reason"] = reason
        if message:
            status["message"] = message
        try:
            run.pod = self.kube[run.node].merge_patch(f"{run.path}/status", {"status": status})
        except (ApiError, *UNREACHABLE) as exc:
            if isinstance(exc, ApiError) and exc.status == 404:
                run.unsynced = None  # the pod is gone: nobody to tell
                return
            # Not lost: a pod that finished while the API server was away (or still starting: 429, 5xx, an
            # authorizer not yet warm) must still be reported, so the reaper sends it again.
            if run.unsynced is None:
                log.warning("status of %s/%s (%s) not sent, will retry: %s", run.namespace, run.name, phase, exc)
            run.unsynced = (phase, reason, message)
            run.unsynced_retry_at = time.monotonic() + STATUS_RETRY_SECONDS
            return
        run.unsynced = None

    # ---- kubelet API (kubectl logs) ------------------------------------------------------------
    def find_container(self, namespace: str, pod: str, container: str) -> ContainerRun | None:
        with self.runs_lock:
            runs = list(self.runs.values())
        for run in runs:
            if run.namespace == namespace and run.name == pod:
                return next((c for c in run.containers if c.name == container or not container), None)
        # Finished pods the agent forgot still have logs on disk.
        for d in sorted((self.state / "pods").glob(f"{namespace}_{pod}_*"), key=lambda p: p.stat().st_mtime):
            cdir = d / "containers" / container
            if cdir.exists():
                return ContainerRun(name=container, image="", spec={}, dir=cdir, exit_code=0)
        return None

    def serve_kubelet_api(self) -> None:
        agent = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                log.debug("kubelet api: " + format, *args)

            def do_GET(self) -> None:
                url = urllib.parse.urlparse(self.path)
                query = urllib.parse.parse_qs(url.query)
                parts = url.path.strip("/").split("/")
                if url.path == "/healthz":
                    self.send_response(200)
                    self.end_headers()
                    self.wfile.write(b"ok")
                    return
                if len(parts) != 4 or parts[0] != "containerLogs":
                    self.send_error(404, "only /containerLogs is served by the dev node agent")
                    return
                c = agent.find_container(parts[1], parts[2], parts[3])
                if c is None or not c.log_path.exists():
                    self.send_error(404, f"no logs for {parts[1]}/{parts[2]}/{parts[3]}")
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                full = c.log_path.read_bytes()
                data = full
                tail = query.get("tailLines")
                if tail:
                    data = b"".join(data.splitlines(keepends=True)[-int(tail[0]):])
                limit = query.get("limitBytes")
                if limit:
                    data = data[: int(limit[0])]
                self.wfile.write(data)
                if query.get("follow", ["false"])[0] != "true":
                    return
                with open(c.log_path, "rb") as f:
                    f.seek(len(full))
                    while not agent.stopping.is_set():
                        chunk = f.read(65536)
                        if chunk:
                            self.wfile.write(chunk)
                            self.wfile.flush()
                        elif c.exit_code is not None and c.restart_at is None:
                            break
                        else:
                            time.sleep(0.2)

        server = http.server.ThreadingHTTPServer(("127.0.0.1", self.cfg.kubelet_port), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.cfg.kubelet_cert, self.cfg.kubelet_key)
        ctx.load_verify_locations(self.cfg.ca_file)
        ctx.verify_mode = ssl.CERT_REQUIRED  # only the API server's kubelet-client cert gets in
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
        server.daemon_threads = True
        server.serve_forever()

    # ---- main ----------------------------------------------------------------------------------
    def run(self) -> None:
        (self.state / "pods").mkdir(parents=True, exist_ok=True)
        for spec in self.node_specs.values():
            self.register(spec)
            self.renew_lease(spec.name)
        threads = [threading.Thread(target=self.heartbeat_loop, name="heartbeat", daemon=True),
                   threading.Thread(target=self.reap_loop, name="reaper", daemon=True),
                   threading.Thread(target=self.serve_kubelet_api, name="kubelet-api", daemon=True)]
        threads += [threading.Thread(target=self.watch_loop, args=(n,), name=f"watch-{n}", daemon=True)
                    for n in self.node_specs]
        for t in threads:
            t.start()
        self.stopping.wait()
        log.info("stopping: killing all pods")
        with self.runs_lock:
            runs = list(self.runs.values())
        for run in runs:
            with contextlib.suppress(Exception):
                self.kill_containers(run, grace=5)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(threadName)s %(message)s")
    agent = NodeAgent(AgentConfig.load(Path(sys.argv[1])))

    def stop(signum: int, _frame: Any) -> None:
        agent.stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    agent.run()


if __name__ == "__main__":
    main()
