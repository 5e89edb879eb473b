"""The node agent's configuration: which nodes it registers and how it reaches the API server."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

GPU_RESOURCE = "nvidia.com/gpu"


@dataclass(frozen=True)
class NodeSpec:
    name: str
    cpu: str = "4"
    memory: str = "16Gi"
    pods: int = 110
    gpus: int = 0
    labels: dict[str, str] = field(default_factory=dict)
    taints: list[dict[str, str]] = field(default_factory=list)


CPU_NODE = NodeSpec(
    name="transkube-cpu-0",
    labels={"node.kubernetes.io/instance-type": "transkube.dev-cpu", "transkube.dev/pool": "cpu"},
)
# Labelled the way NVIDIA's GPU feature discovery labels a real GPU node, with the taint that GPU
# node pools usually carry so that only pods tolerating it land there.
GPU_NODE = NodeSpec(
    name="transkube-gpu-0",
    cpu="8",
    memory="32Gi",
    gpus=1,
    labels={
        "node.kubernetes.io/instance-type": "transkube.dev-gpu",
        "nvidia.com/gpu.present": "true",
        "nvidia.com/gpu.count": "1",
        "nvidia.com/gpu.product": "NVIDIA-L4",
        "nvidia.com/gpu.memory": "23034",
        "nvidia.com/gpu.family": "ada-lovelace",
        "transkube.dev/pool": "gpu",
    },
    taints=[{"key": GPU_RESOURCE, "value": "present", "effect": "NoSchedule"}],
)
DEFAULT_NODES: tuple[NodeSpec, ...] = (CPU_NODE, GPU_NODE)


@dataclass
class AgentConfig:
    state_dir: str
    server: str
    api_port: int
    ca_file: str
    kubeconfigs: dict[str, str]
    nodes: list[NodeSpec]
    kubelet_port: int
    kubelet_cert: str
    kubelet_key: str
    cluster_id: str
    kubernetes_version: str

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, path: Path) -> AgentConfig:
        raw: dict[str, Any] = json.loads(path.read_text())
        raw["nodes"] = [NodeSpec(**n) for n in raw["nodes"]]
        return cls(**raw)
