"""EvNAS fitness on a shared one-shot supernet: weights trained round-robin by the population, fitness measured on
the shared weights (Sinha & Chen, 2021, https://arxiv.org/abs/2012.06400).

One generation: one pass over the training split in which step ``s`` trains the shared weights with individual
``s mod P`` (its alphas decoded to a one-hot genotype that the supernet passes through softmax); then every
individual's fitness is its top-1 accuracy on the validation split. The weights are inherited across generations.
No Ray here: :class:`SupernetTrainer` is the whole algorithm on one device, and the Ray actors wrap it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from evoray.data import DataConfig, DataSplits, build_data
from evoray.errors import ConfigError
from evoray.evolution.fitness import BACKENDS, FitnessBackend, FitnessConfig
from evoray.evolution.individual import Individual
from evoray.nn.grouped import GroupNoise
from evoray.nn.supernet import SupernetConfig, build_supernet
from evoray.nn.weighting import EdgeWeights, decode_one_hot
from evoray.optim import OptimConfig, build_schedule, build_sgd, clip_gradients, step_schedule_first
from evoray.runtime import autocast, reuse_freed_memory
from evoray.spaces import get_space

Alphas = dict[str, np.ndarray]


class SupernetTrainer:
    """One supernet replica on one device: trains the shared weights and measures the fitness of individuals.

    The global batch is processed as ``shards`` interleaved shards (examples ``i::shards``), each with its own
    BatchNorm batch statistics. With ``world`` replicas, replica ``rank`` computes shards ``rank, rank + world, ...``
    and the caller sums the gradients over the replicas between :meth:`compute_grads` and :meth:`apply_grads`; so
    the result depends on ``shards`` but not on how many replicas share them.
    """

    # cuDNN's autotuner under runtime.autotune=auto, as the original EvNAS (train_search.py) sets it
    autotune: ClassVar[bool] = False

    def __init__(
        self,
        net_cfg: SupernetConfig,
        optim_cfg: OptimConfig,
        fitness_cfg: FitnessConfig,
        data_cfg: DataConfig,
        generations: int,
        seed: int,
        device: torch.device,
        precision: str = "fp32",
        channels_last: bool = False,
        shards: int = 1,
        rank: int = 0,
        world: int = 1,
        reuse_memory: bool = True,
    ) -> None:
        if reuse_memory:  # this process's allocator (the trainer may live in a Ray actor of its own)
            reuse_freed_memory()
        if shards % world:
            raise ConfigError(f"{shards} batch shards cannot be split evenly over {world} replicas")
        self.space = get_space(net_cfg.space)
        self.device, self.precision, self.rank, self.world = device, precision, rank, world
        self.my_shards = list(range(rank, shards, world))
        self.shards = shards
        self.fitness_cfg = fitness_cfg
        self.data: DataSplits = build_data(data_cfg, seed=seed, split="search")
        if fitness_cfg.batch_size:  # the validation half's sources serve only the fitness here
            for source in (self.data.valid, self.data.arch):
                assert source is not None
                source.batch_size = fitness_cfg.batch_size
        torch.manual_seed(seed)  # the same initial weights on every replica
        net = build_supernet(net_cfg, self.data.num_classes, self.data.in_channels).to(device)
        # ops that draw random numbers (RobustDARTS' noise) draw them from (seed, generation, step, shard) or
        # (seed, generation, individual): the same numbers however the shards and individuals are spread over
        # replicas, and after a resume
        self.seed = seed
        self.random_ops = any(isinstance(m, GroupNoise) for m in net.modules())
        self.fmt = torch.channels_last if channels_last else torch.contiguous_format
        self.net = net.to(memory_format=self.fmt)
        for alpha in self.net.arch_parameters():
            alpha.requires_grad_(False)  # EvNAS does not train the alphas
        self.params = list(self.net.weight_parameters())
        o = optim_cfg
        self.optim_cfg = o
        self.optimizer = build_sgd(self.params, o)
        self.scheduler = build_schedule(self.optimizer, o, generations)
        self.generation = 0
        # Sums gradients over the replicas (set by the distributed layer); None for a single replica.
        self.grad_reducer: Callable[[list[nn.Parameter]], None] | None = None
        # Stacks a (my shards, n) tensor of every replica, rank by rank (set by the distributed layer); None: one.
        self.gatherer: Callable[[Tensor], Tensor] | None = None
        self.bn = _RunningStats(self.net) if shards > 1 else None

    # -- decoding ---------------------------------------------------------------------------------------------
    def decode(self, alphas: Alphas) -> dict[str, EdgeWeights]:
        """The EvNAS edge weights of an individual: softmax of the one-hot of its derived genotype."""
        out = {}
        for ct in self.space.cell_types:
            a = torch.tensor(np.asarray(alphas[ct]), dtype=torch.float32)
            assert tuple(a.shape) == self.space.alpha_shape(ct), f"{ct} alphas {tuple(a.shape)}"
            out[ct] = EdgeWeights(F.softmax(decode_one_hot(a, self.space, ct), dim=-1).to(self.device))
        return out

    # -- training ---------------------------------------------------------------------------------------------
    def steps_per_generation(self) -> int:
        return len(self.data.train)

    def seed_draws(self, *key: int) -> None:
        """Seed torch's generator from the run's seed and ``key``, where the supernet has random ops."""
        if self.random_ops:
            torch.manual_seed(int(np.random.SeedSequence([self.seed, *key]).generate_state(1)[0]))

    def compute_grads(self, x: Tensor, y: Tensor, weights: dict[str, EdgeWeights], key: tuple[int, ...] = ()) -> float:
        """Forward and backward on this replica's shards of the global batch ``(x, y)``; gradients are scaled so
        that summing them over the replicas gives the gradient of the global batch's mean loss. Returns the summed
        loss of this replica's shards. ``key`` (generation, step) names the batch's random draws."""
        self.net.train()
        self.optimizer.zero_grad(set_to_none=not self.optim_cfg.keep_zero_grads)
        total = 0.0
        if self.bn is not None:
            self.bn.begin()
        for s in self.my_shards:
            if self.bn is not None:
                self.bn.begin_shard()
            self.seed_draws(0, *key, s)
            xs = x[s :: self.shards].to(self.device, non_blocking=True).to(memory_format=self.fmt)
            ys = y[s :: self.shards].to(self.device, non_blocking=True)
            with autocast(self.device, self.precision):
                logits = self.net(xs, weights)
            loss_sum = F.cross_entropy(logits.float(), ys, reduction="sum")
            (loss_sum / y.shape[0]).backward()
            total += float(loss_sum.item())
            if self.bn is not None:
                self.bn.end_shard()
        return total

    def merge_running_stats(self) -> None:
        """With several shards: the BatchNorm running statistics every shard's batch moves, applied in shard order on
        every replica (each replica ran only its own shards), as one replica running them all does."""
        if self.bn is None:
            return
        mine = self.bn.terms()  # (my shards, n)
        every = self.gatherer(mine) if self.gatherer is not None else mine[None]  # (world, my shards, n)
        by_shard = every.transpose(0, 1).reshape(self.shards, -1)  # shard s = rank + j * world: row j * world + rank
        self.bn.apply(by_shard)

    def apply_grads(self) -> None:
        clip_gradients(self.params, self.optim_cfg.grad_clip)
        self.optimizer.step()

    def batches(self, generation: int) -> Any:
        self.data.train.set_epoch(generation)
        return iter(self.data.train)

    def train_generation(self, population: Sequence[Alphas], generation: int) -> dict[str, float]:
        """One pass over the training split; step s trains with individual s mod P. Returns this replica's mean
        training loss over its shards."""
        decoded = [self.decode(a) for a in population]
        if self.optim_cfg.lr_step_at_start:  # the schedule's step before the generation (EvNAS' code: after it)
            step_schedule_first(self.scheduler)
        loss_sum, n = 0.0, 0
        for step, (x, y) in enumerate(self.batches(generation)):
            loss_sum += self.compute_grads(x, y, decoded[step % len(decoded)], (generation, step))
            if self.grad_reducer is not None:
                self.grad_reducer(self.params)
            self.merge_running_stats()
            self.apply_grads()
            n += y.shape[0]
        self.end_generation()
        return {"train_loss": loss_sum / max(n * len(self.my_shards) / self.shards, 1)}

    def end_generation(self) -> None:
        if not self.optim_cfg.lr_step_at_start:
            self.scheduler.step()
        self.generation += 1

    # -- fitness ----------------------------------------------------------------------------------------------
    def fitness(self, population: Sequence[Alphas], generation: int, keys: Sequence[int] | None = None) -> list[float]:
        """Top-1 validation accuracy (%) of every individual on the shared weights. As the original's sampler does,
        each individual reads its own shuffle (and, with ``augment``, its own augmentation) of the validation half,
        drawn from (generation, its key): the individuals' ids (default: 0, 1, ... in order)."""
        source = self.data.arch if self.fitness_cfg.augment else self.data.valid
        assert source is not None
        bn_train = self.fitness_cfg.bn_mode == "train"
        state = {k: v.clone() for k, v in self.net.state_dict().items() if "running_" in k or "num_batches" in k}
        out = []
        for alphas, key in zip(population, keys or range(len(population)), strict=True):
            weights = self.decode(alphas)
            self.net.train(bn_train)
            source.set_epoch(generation, key)
            self.seed_draws(1, generation, key)
            correct, total = 0, 0
            with torch.inference_mode():
                for b, (x, y) in enumerate(source):
                    if self.fitness_cfg.max_batches and b >= self.fitness_cfg.max_batches:
                        break
                    x = x.to(self.device, non_blocking=True).to(memory_format=self.fmt)
                    y = y.to(self.device, non_blocking=True)
                    with autocast(self.device, self.precision):
                        logits = self.net(x, weights)
                    correct += int((logits.argmax(1) == y).sum())
                    total += int(y.shape[0])
            out.append(100.0 * correct / max(total, 1))
        if bn_train:  # fitness must not move the running statistics that training accumulated
            self.net.load_state_dict(state, strict=False)
        self.net.train()
        return out

    # -- checkpoints ------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "net": self.net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "generation": self.generation,
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.generation = int(state["generation"])
        torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") is not None and self.device.type == "cuda":  # absent in older checkpoints
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)


class _RunningStats:
    """The running statistics of a network's BatchNorms, moved shard by shard in a form that replicas can merge: each
    shard's batch leaves its own term ``momentum * batch statistic`` (the buffers zeroed before the shard runs), and
    the statistics become ``s <- (1 - momentum) * s + term`` over the shards in order. The same arithmetic whichever
    replica ran which shard, so any number of replicas gives the same statistics."""

    def __init__(self, net: nn.Module) -> None:
        bns = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
        self.bns = bns
        self.buffers: list[Tensor] = []
        keep: list[Tensor] = []
        for m in bns:
            assert m.momentum is not None, "a cumulative-average BatchNorm cannot be merged by shards"
            for b in (m.running_mean, m.running_var):
                assert b is not None
                self.buffers.append(b)
                keep.append(torch.full((b.numel(),), 1.0 - float(m.momentum), dtype=b.dtype, device=b.device))
        self.keep = torch.cat(keep) if keep else torch.zeros(0)
        self.tracked = [m.num_batches_tracked for m in bns if m.num_batches_tracked is not None]
        self.start = torch.zeros(0)
        self.counts: list[Tensor] = []
        self.rows: list[Tensor] = []

    def _flat(self) -> Tensor:
        return torch.cat([b.detach().flatten() for b in self.buffers]) if self.buffers else torch.zeros(0)

    def begin(self) -> None:
        self.start = self._flat()
        self.counts = [t.clone() for t in self.tracked]
        self.rows = []

    def begin_shard(self) -> None:
        torch._foreach_zero_(self.buffers)

    def end_shard(self) -> None:
        self.rows.append(self._flat())

    def terms(self) -> Tensor:
        return torch.stack(self.rows) if self.rows else torch.zeros(0, self.keep.numel())

    def apply(self, by_shard: Tensor) -> None:
        s = self.start
        for term in by_shard:
            s = torch.addcmul(term, self.keep, s)
        if self.buffers:
            parts = s.split([b.numel() for b in self.buffers])
            torch._foreach_copy_(self.buffers, [p.view_as(b) for p, b in zip(parts, self.buffers)])
        for t, c in zip(self.tracked, self.counts):
            t.copy_(c + by_shard.shape[0])


@BACKENDS.register("supernet")
class SupernetBackend(FitnessBackend):
    """EvNAS fitness on a shared supernet in this process (the Ray fleet is the distributed form)."""

    def __init__(self, trainer: SupernetTrainer) -> None:
        self.trainer = trainer

    def train_generation(self, individuals: list[Individual], generation: int) -> dict[str, float]:
        return self.trainer.train_generation([i.alphas for i in individuals], generation)

    def evaluate(self, individuals: list[Individual], generation: int = 0) -> list[float]:
        return self.trainer.fitness([i.alphas for i in individuals], generation, [i.id for i in individuals])

    def state_dict(self) -> dict[str, Any]:
        return self.trainer.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.trainer.load_state_dict(state)

    def supernet_state(self) -> dict[str, Any] | None:
        return {k: v.detach().cpu() for k, v in self.trainer.net.state_dict().items()}
