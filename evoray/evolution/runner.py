"""An evolve run: config, fitness backend, generation loop, archive, checkpoints, plots and resume.

The search itself (strategies, operators) is Ray-free; a supernet backend runs in-process (``num_actors: 0``) or on a
fleet of Ray actors (``evoray.distributed``), imported only then. After every generation the run writes its archive
and a checkpoint (population, strategy and generator states, supernet weights and optimiser) atomically, so
``--resume`` continues to exactly the results of an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from evoray.archive import individual_row, read_archive, row_alphas, write_archive
from evoray.config import config_to_dict, load_config, save_config
from evoray.data import DataConfig
from evoray.distributed.config import DistributedConfig
from evoray.errors import ConfigError
from evoray.evolution.fitness import BACKENDS, FitnessBackend
from evoray.evolution.individual import Alphas, Individual
from evoray.evolution.strategies import STRATEGIES, EvolutionConfig
from evoray.evolution.supernet_fitness import SupernetBackend, SupernetFitnessConfig, SupernetTrainer
from evoray.nn.supernet import SupernetConfig
from evoray.optim import OptimConfig
from evoray.profiling import genotype_params_m
from evoray.report import draw_genotype, plot_fitness
from evoray.runtime import RuntimeConfig, apply_runtime, seed_everything
from evoray.spaces import Genotype, SearchSpace, get_space, parse_genotype
from evoray.spaces.published import published_genotype, published_names

Log = Callable[[str], None]


@dataclass
class FitnessConfig:
    backend: str = "supernet"  # supernet (EvNAS shared weights) | tabular (a benchmark table) | nats-bench
    table: str = ""  # tabular: CSV or Parquet file with an arch column and metric columns
    metric: str = "cifar10_valid_12ep"  # tabular: the column maximised
    report: str = "cifar10_test_12ep"  # tabular: a column reported for the best individual ("" = none)
    arch_column: str = "arch"  # tabular: the column of NAS-Bench-201 arch strings
    bn_mode: str = field(default="train", metadata={"choices": ("train", "eval")})  # supernet: BN during fitness
    max_batches: int = field(default=0, metadata={"min": 0})  # supernet: validation batches per fitness (0 = all)
    augment: bool = False  # supernet: score on the validation half augmented as in training (the original EvNAS)
    batch_size: int = field(default=0, metadata={"min": 0})  # supernet: fitness batch (0 = data.batch_size)


@dataclass
class EvolveConfig:
    """An EvNAS search. Defaults are the paper's CIFAR-10 settings."""

    seed: int = 0  # the root of every random generator of the run
    name: str = ""  # run name: the output goes to populations/<name> unless --out is given
    evolution: EvolutionConfig = field(default_factory=EvolutionConfig)
    supernet: SupernetConfig = field(default_factory=SupernetConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    fitness: FitnessConfig = field(default_factory=FitnessConfig)
    data: DataConfig = field(default_factory=lambda: DataConfig(dataset="cifar10", root="data/cifar10"))
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    initial_population: str = ""  # seed the first generation: an archive / run directory, or published names (a,b)
    params_channels: int = field(default=36, metadata={"min": 2})  # archive's params_m: evaluation network C
    params_layers: int = field(default=20, metadata={"min": 1})  # and cells (NB201: N is taken as 5)

    def validate(self) -> None:
        if self.fitness.backend not in BACKENDS:
            raise ConfigError(f"unknown fitness backend {self.fitness.backend!r}; valid: {', '.join(BACKENDS.names())}")
        if self.fitness.backend == "supernet":
            self.data.require_validation_half("the EvNAS fitness")
        if self.fitness.backend == "supernet" and self.distributed.num_actors > 0:
            shards = self.distributed.batch_shards or self.distributed.num_actors
            if shards % self.distributed.num_actors:
                raise ConfigError(
                    f"distributed.batch_shards={shards} must be a multiple of num_actors={self.distributed.num_actors}"
                )


# -- fitness backends ------------------------------------------------------------------------------------------


class RaySupernet(FitnessBackend):
    """The EvNAS shared supernet on a fleet of Ray actors (data-parallel training, sharded fitness)."""

    def __init__(self, cfg: EvolveConfig) -> None:
        from evoray.distributed.actors import SupernetFleet

        d = cfg.distributed
        self.fleet = SupernetFleet(
            d,
            cfg.supernet,
            cfg.optim,
            supernet_fitness_config(cfg),
            cfg.data,
            cfg.evolution.generations,
            cfg.seed,
            cfg.runtime.precision,
            cfg.runtime.channels_last,
            shards=d.batch_shards or d.num_actors,
        )
        self._fitness: list[float] = []

    def train_generation(self, individuals: list[Individual], generation: int) -> dict[str, float]:
        stats, self._fitness = self.fleet.generation(
            [i.alphas for i in individuals], generation, [i.id for i in individuals]
        )
        return stats

    def evaluate(self, individuals: list[Individual], generation: int = 0) -> list[float]:
        assert len(self._fitness) == len(individuals), "train_generation measures the fitness on the fleet"
        return list(self._fitness)

    def state_dict(self) -> dict[str, Any]:
        return self.fleet.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.fleet.load_state_dict(state)

    def close(self) -> None:
        self.fleet.shutdown()


def supernet_fitness_config(cfg: EvolveConfig) -> SupernetFitnessConfig:
    """The supernet backend's share of ``cfg.fitness``."""
    f = cfg.fitness
    return SupernetFitnessConfig(
        bn_mode=f.bn_mode, max_batches=f.max_batches, batch_size=f.batch_size, augment=f.augment
    )


def make_backend(cfg: EvolveConfig, device: torch.device) -> FitnessBackend:
    f = cfg.fitness
    if f.backend == "supernet":
        if cfg.distributed.num_actors > 0:
            return RaySupernet(cfg)
        trainer = SupernetTrainer(
            cfg.supernet,
            cfg.optim,
            supernet_fitness_config(cfg),
            cfg.data,
            cfg.evolution.generations,
            cfg.seed,
            device,
            cfg.runtime.precision,
            cfg.runtime.channels_last,
            shards=cfg.distributed.batch_shards or 1,
        )
        return SupernetBackend(trainer)
    return BACKENDS.get(f.backend)(table=f.table, metric=f.metric, report=f.report, arch_column=f.arch_column)


# -- initial populations -----------------------------------------------------------------------------------------


def initial_alphas(spec: str, space: SearchSpace, limit: int, rng: np.random.Generator) -> list[Alphas]:
    """Alphas that seed the first generation: from a run directory / archive file (the fittest of its last
    generation) or from published genotype names (comma-separated; alphas whose derived genotype is that one)."""
    if not spec:
        return []
    path = Path(spec)
    if path.exists():
        rows = [r for r in read_archive(path) if r.get("space") in (None, space.name)]
        if not rows:
            raise ConfigError(f"population {spec!r} holds no individuals of search space {space.name}")
        last = max(r["generation"] for r in rows)
        rows = sorted((r for r in rows if r["generation"] == last), key=lambda r: -(r["fitness"] or -1e9))
        out = [row_alphas(r) for r in rows[:limit]]
        for a in out:
            if set(a) != set(space.cell_types) or any(a[ct].shape != space.alpha_shape(ct) for ct in a):
                raise ConfigError(f"population {spec!r} holds alphas of another search space than {space.name}")
        return out
    out = []
    for name in [n.strip() for n in spec.split(",") if n.strip()]:
        if name not in published_names():
            raise ConfigError(
                f"initial_population {name!r} is neither a path nor a published genotype; "
                f"published: {', '.join(published_names())}"
            )
        out.append(alphas_for(space, published_genotype(name), rng))
    return out[:limit]


def alphas_for(space: SearchSpace, genotype: Genotype, rng: np.random.Generator) -> Alphas:
    """U(0, 0.1) alphas in which the genotype's (edge, op) pairs stand out, the first edge of a node the most, so
    that the derived genotype is ``genotype`` itself, edge order included."""
    out = {}
    for ct in space.cell_types:
        space.check_cell(ct, genotype.cell(ct).nodes)
        a = 0.1 * rng.random(space.alpha_shape(ct))
        for i, node in enumerate(genotype.cell(ct).nodes):
            for rank, (op, j) in enumerate(node):
                e = space.edge_index(space.num_inputs + i, j)
                a[e, space.edge_ops(ct, e).index(op)] = 4.0 - 0.5 * rank
        out[ct] = a.astype(np.float32)
    return out


# -- the run ------------------------------------------------------------------------------------------------------


def _config_hash(cfg: EvolveConfig) -> str:
    return hashlib.sha256(json.dumps(config_to_dict(cfg), sort_keys=True).encode()).hexdigest()[:16]


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _load_checkpoint(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"no checkpoint at {str(path)!r}; --resume needs a run directory that holds checkpoint.pt")
    try:
        state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        raise ConfigError(f"checkpoint {str(path)!r} is corrupt or unreadable ({type(err).__name__})") from None
    if not isinstance(state, dict) or "generation" not in state or "population" not in state:
        raise ConfigError(f"checkpoint {str(path)!r} is not an evoray evolve checkpoint")
    return state


def _stats(generation: int, population: list[Individual]) -> dict[str, float]:
    f = np.array([ind.fitness for ind in population], dtype=np.float64)
    return {"generation": generation, "best": float(f.max()), "mean": float(f.mean()), "worst": float(f.min())}


def _ensure_ray(address: str) -> None:
    import ray

    if not ray.is_initialized():
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        # "local" starts a fresh Ray even when a cluster started earlier left its address behind
        ray.init(address=address or "local", include_dashboard=False, log_to_driver=False)


def run_evolve(
    cfg: EvolveConfig | None,
    out_dir: Path | None = None,
    resume: bool = False,
    address: str | None = None,
    log: Log = print,
    overrides: list[str] | None = None,
) -> dict[str, Any]:
    """Run (or resume) an evolve search; returns the summary written to ``best.json``."""
    if resume:
        assert out_dir is not None
        if not (out_dir / "config.yaml").is_file():
            raise ConfigError(f"--resume {str(out_dir)!r}: no config.yaml there; it is not an evolve run directory")
        saved = load_config(EvolveConfig, out_dir / "config.yaml")
        if cfg is not None and _config_hash(cfg) != _config_hash(saved):
            diff = _diff_keys(config_to_dict(cfg), config_to_dict(saved))
            raise ConfigError(
                f"--resume {str(out_dir)!r} was made by a different config (differs at {', '.join(diff)})"
            )
        cfg = load_config(EvolveConfig, out_dir / "config.yaml", overrides or [])
        if _config_hash(cfg) != _config_hash(saved):
            raise ConfigError("--set cannot change the config of a run being resumed")
        checkpoint: dict[str, Any] | None = _load_checkpoint(out_dir / "checkpoint.pt")
    else:
        assert cfg is not None
        checkpoint = None
    if address:
        cfg.distributed.address = address
    space = get_space(cfg.supernet.space)
    if out_dir is None:
        name = cfg.name or f"{space.name}-{cfg.evolution.strategy}-s{cfg.seed}-{time.strftime('%Y%m%d-%H%M%S')}"
        out_dir = Path("populations") / name
    device = apply_runtime(cfg.runtime)
    seed_everything(cfg.seed)
    seeds = np.random.SeedSequence(cfg.seed)
    rng = np.random.default_rng(seeds.spawn(1)[0])
    if cfg.fitness.backend == "supernet" and cfg.distributed.num_actors > 0:
        _ensure_ray(cfg.distributed.address)
    backend = make_backend(cfg, device)
    strategy = STRATEGIES.get(cfg.evolution.strategy)(
        cfg.evolution, space, rng, initial_alphas(cfg.initial_population, space, cfg.evolution.population, rng)
    )
    rows: list[dict[str, Any]] = []
    history: list[dict[str, float]] = []
    out_dir.mkdir(parents=True, exist_ok=True)  # only once the input has proved good: a bad run leaves no directory
    if checkpoint is None:
        save_config(cfg, out_dir / "config.yaml")
        population, start = strategy.initial(), 0
    else:
        start = int(checkpoint["generation"]) + 1
        population = [Individual(**d) for d in checkpoint["population"]]
        archived = [r for r in read_archive(out_dir) if r["generation"] < start] if start > 0 else []
        rows = archived
        everyone = [_row_individual(r) for r in rows]
        strategy.load_state_dict(checkpoint["strategy"], everyone)
        backend.load_state_dict(checkpoint["backend"])
        history = list(checkpoint["history"])
        torch.set_rng_state(checkpoint["torch_rng"])
        log(f"resuming {out_dir} at generation {start}")
    writer = _tensorboard(out_dir / "tensorboard")
    budget = cfg.evolution.max_evaluations
    log(
        f"evolve: {cfg.evolution.strategy} on {space.name}, population {cfg.evolution.population}, "
        f"{cfg.evolution.generations} generations, fitness {cfg.fitness.backend} -> {out_dir}"
    )
    best: Individual | None = None
    try:
        for g in range(start, cfg.evolution.generations):
            t0 = time.perf_counter()
            train_stats = backend.train_generation(population, g)
            t1 = time.perf_counter()
            fitness = backend.evaluate(population, g)
            t2 = time.perf_counter()
            population = [ind.with_fitness(f) for ind, f in zip(population, fitness)]
            for ind in population:
                rows.append(
                    individual_row(
                        g,
                        ind.id,
                        ind.parents,
                        ind.origin,
                        ind.genotype,
                        ind.fitness,
                        genotype_params_m(ind.genotype, cfg.params_channels, cfg.params_layers),
                        ind.alphas,
                        space.name,
                    )
                )
            write_archive(out_dir / "archive.parquet", rows)
            stats = {**_stats(g, population), **train_stats}
            stats["train_s"] = float(train_stats.get("train_s", t1 - t0))
            stats["fitness_s"] = float(train_stats.get("fitness_s", t2 - t1))
            stop = bool(budget) and getattr(backend, "evaluations", 0) >= budget
            last = g == cfg.evolution.generations - 1 or stop
            nxt = [] if last else strategy.next_generation(population, g + 1)
            stats["time_s"] = time.perf_counter() - t0
            history.append(stats)
            _save_checkpoint(
                out_dir / "checkpoint.pt",
                {
                    "generation": g,
                    "population": [_individual_dict(i) for i in nxt],
                    "strategy": strategy.state_dict(),
                    "backend": backend.state_dict(),
                    "history": history,
                    "torch_rng": torch.get_rng_state(),
                    "config_hash": _config_hash(cfg),
                },
            )
            for key in ("best", "mean", "worst", "train_loss", "time_s"):
                if key in stats:
                    writer.add_scalar(f"fitness/{key}" if key in ("best", "mean", "worst") else key, stats[key], g)
            eta = stats["time_s"] * (cfg.evolution.generations - g - 1)
            log(
                f"generation {g + 1}/{cfg.evolution.generations}: best {stats['best']:.2f} mean {stats['mean']:.2f} "
                f"({stats['time_s']:.1f} s/generation, ETA {eta:.0f} s)"
            )
            best = max(population, key=lambda i: i.fitness or -1e9)
            if stop:
                log(f"budget of {budget} distinct evaluations reached")
                break
            population = nxt
    finally:
        writer.close()
        backend.close()
    if best is None:  # resumed after the last generation
        last_gen = max(r["generation"] for r in rows)
        best = max((_row_individual(r) for r in rows if r["generation"] == last_gen), key=lambda i: i.fitness or -1e9)
    if cfg.fitness.backend != "supernet":  # table fitness is comparable across generations
        best = max((_row_individual(r) for r in rows), key=lambda i: i.fitness or -1e9)
    result = {
        "genotype": best.genotype,
        "fitness": best.fitness,
        "id": best.id,
        "generation": best.generation,
        "params_m": genotype_params_m(best.genotype, cfg.params_channels, cfg.params_layers),
        **backend.report(best),
        "out_dir": str(out_dir),
    }
    (out_dir / "best.json").write_text(json.dumps(result, indent=1))
    plot_fitness(history, out_dir / "fitness.png", f"{cfg.evolution.strategy} on {space.name}")
    draw_genotype(parse_genotype(best.genotype), out_dir)
    log(f"best: {best.genotype} (fitness {best.fitness:.2f}) -> {out_dir / 'best.json'}")
    return result


def _individual_dict(ind: Individual) -> dict[str, Any]:
    return {
        "id": ind.id,
        "generation": ind.generation,
        "alphas": ind.alphas,
        "parents": tuple(ind.parents),
        "origin": ind.origin,
        "genotype": ind.genotype,
        "fitness": ind.fitness,
    }


def _row_individual(row: dict[str, Any]) -> Individual:
    return Individual(
        int(row["id"]),
        int(row["generation"]),
        row_alphas(row),
        tuple(row["parents"]),
        row["origin"],
        row["genotype"],
        row["fitness"],
    )


def _diff_keys(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _diff_keys(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.append(f"{prefix}{k}")
    return out


def _tensorboard(path: Path) -> Any:
    try:
        from tensorboardX import SummaryWriter

        return SummaryWriter(str(path))
    except ImportError:  # tensorboardX comes with ray[tune]; without it, scalars are only in the archive
        return _NoWriter()


class _NoWriter:
    def add_scalar(self, *args: Any) -> None:
        return None

    def close(self) -> None:
        return None
