"""Ray actors that own supernet replicas, and the fitness backend that runs EvNAS generations on them.

Each :class:`SupernetActor` holds one :class:`~evoray.evolution.supernet_fitness.SupernetTrainer` on one device (its
GPU when the cluster has GPUs, else CPU threads). A fleet of K actors trains data-parallel: every actor computes its
shards of each global batch and the gradients are summed over the actors with ``torch.distributed`` (gloo on CPU,
NCCL on GPUs) before every step, so the replicas stay identical. Fitness is sharded across the actors by individual.
If an actor dies (its node is removed, say), the fleet is rebuilt from the last state it was given and the work
since then runs again; the search logic above it never sees Ray.
"""

from __future__ import annotations

import datetime
import socket
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np
import ray
import torch
from torch import Tensor, nn

from evoray.distributed.cluster import placement, require_cpus, threads_of, worker_device
from evoray.evolution.config import EvolveConfig
from evoray.evolution.fitness import FitnessBackend
from evoray.evolution.individual import Individual
from evoray.evolution.supernet_fitness import SupernetTrainer
from evoray.runtime import autotuner_on, set_determinism

Alphas = dict[str, np.ndarray]
T = TypeVar("T")


@ray.remote
class SupernetActor:
    """One supernet replica on one device."""

    def __init__(
        self,
        trainer_kwargs: dict[str, Any],
        rank: int,
        world: int,
        threads: int,
        deterministic: bool = False,
        autotune: bool = False,
    ) -> None:
        torch.set_num_threads(threads)
        set_determinism(deterministic, autotune)  # runtime.deterministic and .autotune, set by the driver for itself
        self.device = worker_device()
        self.trainer = SupernetTrainer(**trainer_kwargs, device=self.device, rank=rank, world=world)
        self.rank, self.world = rank, world

    def address(self) -> tuple[str, int]:
        """This actor's node address and a free port on it, for the process group's rendezvous."""
        with socket.socket() as s:
            s.bind(("", 0))
            port = int(s.getsockname()[1])
        return ray.util.get_node_ip_address(), port

    def where(self) -> dict[str, Any]:
        return {
            "node": ray.get_runtime_context().get_node_id(),
            "device": str(self.device),
            "rank": self.rank,
            "cuda_devices": torch.cuda.device_count(),
            "deterministic": torch.are_deterministic_algorithms_enabled(),
            "autotune": autotuner_on(),
        }

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
        self.trainer.gatherer = _all_gather

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


def _all_gather(t: Tensor) -> Tensor:
    """Every replica's ``t`` (all of one shape), stacked in rank order."""
    out = [torch.empty_like(t) for _ in range(torch.distributed.get_world_size())]
    torch.distributed.all_gather(out, t.contiguous())
    return torch.stack(out)


# What a lost actor or node raises: the actor's death, a result lost with its node before the driver held it, or a
# collective that a dead peer broke (torch.distributed raises RuntimeError; an actor's own RuntimeError, a bug or an
# out-of-memory error, looks the same, and :meth:`SupernetFleet._lost` tells them apart).
_FAILURES = (ray.exceptions.RayActorError, ray.exceptions.ObjectLostError, RuntimeError)
# How long the actors have to answer after one of them raised: a dead actor's call fails at once (and a node that
# stops answering is declared dead well within this), while a live one may be busy in a collective that the
# failing actor will never join (a group timeout away).
PROBE_S = 60.0


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
    """The driver's handle on K supernet actors, rebuilt after failures from the last state it holds."""

    def __init__(self, cfg: EvolveConfig) -> None:
        self.cfg = cfg
        self.kwargs = cfg.trainer_kwargs()
        self.restarts = 0
        self.actors: list[Any] = []
        self._state: dict[str, Any] | None = None
        self._start()

    def _start(self) -> None:
        world = self.cfg.distributed.num_actors
        require_cpus(self.cfg.resources, world, f"distributed.num_actors={world}")
        res = placement(self.cfg.resources)
        self.actors = [
            SupernetActor.options(**res, scheduling_strategy="SPREAD").remote(  # type: ignore[attr-defined]
                self.kwargs,
                rank,
                world,
                threads_of(self.cfg.resources),
                self.cfg.runtime.deterministic,
                self.cfg.runtime.autotunes(SupernetTrainer.autotune),
            )
            for rank in range(world)
        ]
        host, port = ray.get(self.actors[0].address.remote())
        ray.get([a.init_group.remote(host, port, self.cfg.distributed.group_timeout_s) for a in self.actors])
        if self._state is not None:
            ray.get([a.load_state_dict.remote(self._state) for a in self.actors])

    def _rebuild(self, err: Exception) -> None:
        """Replace every actor after ``err`` and give the new ones the last state; a replacement that fails as
        well (another node lost while the fleet starts) counts as one more failure and is replaced in turn."""
        while True:
            self.restarts += 1
            if self.restarts > self.cfg.distributed.max_restarts:
                raise FleetError(f"supernet actors failed {self.restarts} times; last error: {err}") from err
            for a in self.actors:
                ray.kill(a, no_restart=True)
            try:
                self._start()
                return
            except _FAILURES as again:
                err = again

    def _retrying(self, work: Callable[[], T]) -> T:
        """``work`` on the actors, run again on a rebuilt fleet after an actor or node failure."""
        while True:
            try:
                if self._state is None:  # the state to rebuild from if this work fails (lost: the seed's state)
                    self._fetch_state()
                return work()
            except _FAILURES as err:
                if isinstance(err, FleetError) or not self._lost(err):
                    raise
                self._rebuild(err)

    def _lost(self, err: Exception) -> bool:
        """Whether ``err`` means an actor or its node was lost. Ray's own errors do (a dead actor, a lost result);
        an error that an actor's code raised does only where some actor of the fleet no longer answers (a collective
        that a lost peer broke). Otherwise it is the code's own (a bug, out of memory), which a rebuilt fleet would
        only raise again: it is raised at once, not retried ``distributed.max_restarts`` times."""
        if not isinstance(err, ray.exceptions.RayTaskError):
            return True
        probes = [a.where.remote() for a in self.actors]
        ready, _ = ray.wait(probes, num_returns=len(probes), timeout=PROBE_S)
        for ref in ready:
            try:
                ray.get(ref)
            except (ray.exceptions.RayActorError, ray.exceptions.ObjectLostError):
                return True
        return False

    def placements(self) -> list[dict[str, Any]]:
        return ray.get([a.where.remote() for a in self.actors])  # type: ignore[no-any-return]

    def _fetch_state(self) -> dict[str, Any]:
        state: dict[str, Any] = ray.get(self.actors[0].state_dict.remote())
        self._state = state
        return state

    def state_dict(self) -> dict[str, Any]:
        """The replicas' shared state (they are identical; actor 0's is taken). An actor lost while it is fetched
        is replaced like any other failure: the rebuilt fleet starts from the state the last training pass left,
        which is this state, since a fitness pass changes no weight or statistic (on a space with RobustDARTS' noise
        op it draws from the torch generator, whose state then comes from before the pass)."""
        return self._retrying(self._fetch_state)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._state = state
        ray.get([a.load_state_dict.remote(state) for a in self.actors])

    def train(self, population: Sequence[Alphas], generation: int) -> dict[str, float]:
        """One pass over the training data, data-parallel; then the new state is the point to rebuild from."""

        def work() -> dict[str, float]:
            stats = _get_all([a.train_generation.remote(population, generation) for a in self.actors])
            self._fetch_state()  # lost before the state is held: the whole pass runs again from the last one
            return {"train_loss": float(np.mean([s["train_loss"] for s in stats]))}

        return self._retrying(work)

    def fitness(self, population: Sequence[Alphas], generation: int, keys: Sequence[int]) -> list[float]:
        """Every individual's fitness, the population split over the actors."""

        def work() -> list[float]:
            k = len(self.actors)
            chunks = [list(range(i, len(population), k)) for i in range(k)]
            refs = [
                a.fitness.remote([population[j] for j in idx], generation, [keys[j] for j in idx])
                for a, idx in zip(self.actors, chunks)
                if idx
            ]
            out = [0.0] * len(population)
            for idx, vals in zip([c for c in chunks if c], _get_all(refs)):
                for j, v in zip(idx, vals):
                    out[j] = v
            return out

        return self._retrying(work)

    def shutdown(self) -> None:
        for a in self.actors:
            ray.kill(a, no_restart=True)
        self.actors = []


class FleetError(RuntimeError):
    """The fleet failed more often than ``distributed.max_restarts`` allows."""


class FleetBackend(FitnessBackend):
    """The EvNAS shared supernet on a fleet of Ray actors (data-parallel training, sharded fitness)."""

    def __init__(self, cfg: EvolveConfig) -> None:
        self.fleet = SupernetFleet(cfg)

    def train_generation(self, individuals: list[Individual], generation: int) -> dict[str, float]:
        return self.fleet.train([i.alphas for i in individuals], generation)

    def evaluate(self, individuals: list[Individual], generation: int = 0) -> list[float]:
        return self.fleet.fitness([i.alphas for i in individuals], generation, [i.id for i in individuals])

    def state_dict(self) -> dict[str, Any]:
        return self.fleet.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.fleet.load_state_dict(state)

    def supernet_state(self) -> dict[str, Any] | None:
        return dict(self.fleet.state_dict()["net"])

    def close(self) -> None:
        self.fleet.shutdown()
