"""How a run uses Ray: actors, their resources, failure handling. Importing this does not import Ray."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class DistributedConfig:
    num_actors: int = field(default=1, metadata={"min": 0})  # supernet replicas on Ray actors; 0 = in-process, no Ray
    threads_per_actor: int = field(default=1, metadata={"min": 0})  # torch threads (and CPUs reserved) per CPU actor
    gpus_per_actor: float = -1.0  # -1: one GPU per actor when the cluster has GPUs, else none
    batch_shards: int = field(default=0, metadata={"min": 0})  # BN shards of each batch; 0 = num_actors (>= 1)
    max_restarts: int = field(default=3, metadata={"min": 0})  # fleet rebuilds after actor failures
    group_timeout_s: int = field(default=600, metadata={"min": 10})  # collective timeout (a dead peer's limit)
    address: str = ""  # Ray cluster to join ("auto", "host:port", "ray://..."); "" starts a local Ray
