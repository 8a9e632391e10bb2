"""Ray actors that own supernet replicas, and the driver-side fleet that runs EvNAS generations on them.

Each :class:`SupernetActor` holds one :class:`~evoray.evolution.supernet_fitness.SupernetTrainer` on one device (its
GPU when the cluster has GPUs, else CPU threads). A fleet of K actors trains data-parallel: every actor computes its
shards of each global batch and the gradients are summed over the actors with ``torch.distributed`` (gloo on CPU,
NCCL on GPUs) before every step, so the replicas stay identical. Fitness is sharded across the actors by individual.
If an actor dies (its node is removed, say), the fleet is rebuilt from the last state it was given and the
generation is run again; the search logic above it never sees Ray.
"""

from __future__ import annotations

import datetime
import socket
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import ray
import torch
from torch import nn

from evoray.data import DataConfig
from evoray.distributed.config import DistributedConfig
from evoray.evolution.supernet_fitness import SupernetFitnessConfig, SupernetTrainer
from evoray.nn.supernet import SupernetConfig
from evoray.optim import OptimConfig

Alphas = dict[str, np.ndarray]


@ray.remote
class SupernetActor:
    """One supernet replica on one device."""

    def __init__(self, trainer_kwargs: dict[str, Any], rank: int, world: int, threads: int) -> None:
        if threads > 0:
            torch.set_num_threads(threads)
        gpus = ray.get_gpu_ids()
        device = torch.device("cuda", 0) if gpus and torch.cuda.is_available() else torch.device("cpu")
        self.device = device
        self.trainer = SupernetTrainer(**trainer_kwargs, device=device, rank=rank, world=world)
        self.rank, self.world = rank, world

    def address(self) -> tuple[str, int]:
        """This actor's node address and a free port on it, for the process group's rendezvous."""
        with socket.socket() as s:
            s.bind(("", 0))
            port = int(s.getsockname()[1])
        return ray.util.get_node_ip_address(), port

    def where(self) -> dict[str, Any]:
        return {"node": ray.get_runtime_context().get_node_id(), "device": str(self.device), "rank": self.rank}

    def init_group(self, host: str, port: int, timeout_s: int) -> None:
        if self.world == 1:
            return
        backend = "nccl" if self.device.type == "cuda" else "gloo"
        torch.distributed.init_process_group(
            backend,
            init_method=f"tcp://{host}:{port}",
            rank=self.rank,
            world_size=self.world,
            timeout=datetime.timedelta(seconds=timeout_s),
        )
        self.trainer.grad_reducer = _all_reduce_grads

    def train_generation(self, population: Sequence[Alphas], generation: int) -> dict[str, float]:
        return self.trainer.train_generation(population, generation)

    def fitness(self, population: Sequence[Alphas], generation: int, keys: Sequence[int]) -> list[float]:
        return self.trainer.fitness(population, generation, keys)

    def state_dict(self) -> dict[str, Any]:
        return _to_cpu(self.trainer.state_dict())

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.trainer.load_state_dict(state)


def _all_reduce_grads(params: list[nn.Parameter]) -> None:
    """Sum the gradients of ``params`` over the process group, in one flat buffer."""
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.flatten() for g in grads])
    torch.distributed.all_reduce(flat)
    offset = 0
    for p, g in zip(params, grads):
        n = g.numel()
        p.grad = flat[offset : offset + n].view_as(g)
        offset += n


def _get_all(refs: list[Any]) -> list[Any]:
    """``ray.get`` of every ref, raising as soon as any one fails (a peer stuck in a collective never returns)."""
    pending = list(refs)
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        ray.get(ready[0])
    return ray.get(refs)  # type: ignore[no-any-return]


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_cpu(v) for v in obj]
    return obj


class SupernetFleet:
    """The driver's handle on K supernet actors: one EvNAS generation at a time, rebuilt after failures."""

    def __init__(
        self,
        fleet: DistributedConfig,
        net_cfg: SupernetConfig,
        optim_cfg: OptimConfig,
        fitness_cfg: SupernetFitnessConfig,
        data_cfg: DataConfig,
        generations: int,
        seed: int,
        precision: str = "fp32",
        channels_last: bool = False,
        shards: int = 1,
    ) -> None:
        self.cfg = fleet
        self.kwargs = {
            "net_cfg": net_cfg,
            "optim_cfg": optim_cfg,
            "fitness_cfg": fitness_cfg,
            "data_cfg": data_cfg,
            "generations": generations,
            "seed": seed,
            "precision": precision,
            "channels_last": channels_last,
            "shards": shards,
        }
        self.restarts = 0
        self.actors: list[Any] = []
        self._state: dict[str, Any] | None = None
        self._start()

    def _resources(self) -> dict[str, float]:
        gpus = self.cfg.gpus_per_actor
        if gpus < 0:
            gpus = 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
        cpus = float(max(self.cfg.threads_per_actor, 1)) if gpus == 0 else 1.0
        return {"num_cpus": cpus, "num_gpus": gpus}

    def _start(self) -> None:
        world = self.cfg.num_actors
        res = self._resources()
        self.actors = [
            SupernetActor.options(**res, scheduling_strategy="SPREAD").remote(  # type: ignore[attr-defined]
                self.kwargs, rank, world, self.cfg.threads_per_actor
            )
            for rank in range(world)
        ]
        host, port = ray.get(self.actors[0].address.remote())
        ray.get([a.init_group.remote(host, port, self.cfg.group_timeout_s) for a in self.actors])
        if self._state is not None:
            ray.get([a.load_state_dict.remote(self._state) for a in self.actors])

    def _rebuild(self, err: Exception) -> None:
        self.restarts += 1
        if self.restarts > self.cfg.max_restarts:
            raise RuntimeError(f"supernet actors failed {self.restarts} times; last error: {err}") from err
        for a in self.actors:
            ray.kill(a, no_restart=True)
        self._start()

    def placements(self) -> list[dict[str, Any]]:
        return ray.get([a.where.remote() for a in self.actors])  # type: ignore[no-any-return]

    def state_dict(self) -> dict[str, Any]:
        """The replicas' shared state (they are identical; actor 0's is taken)."""
        state: dict[str, Any] = ray.get(self.actors[0].state_dict.remote())
        self._state = state
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._state = state
        ray.get([a.load_state_dict.remote(state) for a in self.actors])

    def generation(
        self, population: Sequence[Alphas], generation: int, keys: Sequence[int]
    ) -> tuple[dict[str, float], list[float]]:
        """Train on one pass of the data, then measure every individual's fitness (``keys``: the individuals' ids,
        which choose their validation batches); retried after a failure."""
        if self._state is None:
            self.state_dict()  # the state to rebuild from if this generation fails
        while True:
            try:
                start = time.perf_counter()
                stats = _get_all([a.train_generation.remote(population, generation) for a in self.actors])
                mid = time.perf_counter()
                fitness = self._fitness(population, generation, keys)
                end = time.perf_counter()
                loss = float(np.mean([s["train_loss"] for s in stats]))
                self.state_dict()
                return {"train_loss": loss, "train_s": mid - start, "fitness_s": end - mid}, fitness
            except (ray.exceptions.RayActorError, ray.exceptions.ActorDiedError, RuntimeError) as err:
                if isinstance(err, RuntimeError) and "failed" in str(err) and "actors" in str(err):
                    raise
                self._rebuild(err)

    def _fitness(self, population: Sequence[Alphas], generation: int, keys: Sequence[int]) -> list[float]:
        k = len(self.actors)
        chunks = [list(range(i, len(population), k)) for i in range(k)]
        refs = [
            a.fitness.remote([population[j] for j in idx], generation, [keys[j] for j in idx])
            for a, idx in zip(self.actors, chunks)
            if idx
        ]
        results = _get_all(refs)
        out = [0.0] * len(population)
        for idx, vals in zip([c for c in chunks if c], results):
            for j, v in zip(idx, vals):
                out[j] = v
        return out

    def shutdown(self) -> None:
        for a in self.actors:
            ray.kill(a, no_restart=True)
        self.actors = []
