"""An evolve run: the generation loop of :func:`~evoray.evolution.search.run_evolution` with the hooks that archive,
checkpoint and report each generation into the run directory, and resume from the last checkpoint.

Ray-free: the caller builds the fitness backend (in-process here, :func:`build_backend`; on Ray actors in
``evoray.distributed``) and hands it in. After every generation the run writes its archive, curves and a checkpoint
(the strategy's state and the run's history as JSON; the backend's tensors read back with ``weights_only``), so a
resumed run gives the results of an uninterrupted one.
"""

from __future__ import annotations

import io
import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from evoray.config import config_to_dict
from evoray.errors import ConfigError
from evoray.evolution.config import EvolveConfig
from evoray.evolution.fitness import BACKENDS, FitnessBackend
from evoray.evolution.individual import Alphas, Individual, from_record, genotype_of
from evoray.evolution.search import run_evolution
from evoray.evolution.strategies import build_strategy
from evoray.evolution.supernet_fitness import SupernetBackend, SupernetTrainer
from evoray.profiling import genotype_params_m
from evoray.report import draw_genotype, plot_fitness
from evoray.runs import RunDir, individual_row, read_archive, row_alphas, write_archive
from evoray.runs.archive import ARCHIVE
from evoray.runs.curves import write_curves
from evoray.runs.directory import atomic_write
from evoray.runs.reader import CURVES, SUPERNET
from evoray.runtime import seed_everything
from evoray.spaces import Genotype, SearchSpace, get_space, parse_genotype
from evoray.spaces.published import published_genotype, published_names

Log = Callable[[str], None]
OUTPUTS = (ARCHIVE, CURVES, "best.json", SUPERNET, "fitness.png", "tensorboard")  # what a generation loop writes


# -- fitness backends ------------------------------------------------------------------------------------------------


def build_backend(cfg: EvolveConfig, device: torch.device) -> FitnessBackend:
    """The in-process fitness backend of ``cfg``: the EvNAS supernet on ``device``, or a table."""
    f = cfg.fitness
    if f.backend == "supernet":
        return SupernetBackend(SupernetTrainer(**cfg.trainer_kwargs(), device=device))
    return BACKENDS.get(f.backend)(table=f.table, metric=f.metric, report=f.report, arch_column=f.arch_column)


# -- initial populations -----------------------------------------------------------------------------------------


def initial_alphas(spec: str, space: SearchSpace, limit: int, rng: np.random.Generator) -> list[Alphas]:
    """Alphas that seed the first generation: from a run directory or archive file (the fittest of its last
    generation) or from published genotype names (comma-separated; alphas whose derived genotype is that one)."""
    if not spec:
        return []
    path = Path(spec)
    if path.exists():
        rows = [r for r in read_archive(path) if r.get("space") in (None, space.name)]
        if not rows:
            raise ConfigError(f"population {spec!r} holds no individuals of search space {space.name}")
        last = max(r["generation"] for r in rows)
        rows = sorted((r for r in rows if r["generation"] == last), key=lambda r: -_rank(r["fitness"]))
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
        genotype = published_genotype(name)
        alphas = alphas_for(space, genotype, rng)
        if genotype_of(space, alphas) != genotype:
            raise ConfigError(
                f"initial_population {name!r} cannot be an individual of search space {space.name}: no alphas derive "
                "it (a DARTS-family individual keeps the two strongest edges of each node and never none; this "
                "genotype has none ops or other edges); seed with another genotype"
            )
        out.append(alphas)
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


# -- the run ----------------------------------------------------------------------------------------------------


def run_evolve(
    cfg: EvolveConfig, run: RunDir, backend: FitnessBackend, log: Log = print, seeds: list[Alphas] | None = None
) -> dict[str, Any]:
    """Run (or, if ``run`` holds a checkpoint, continue) the search of ``cfg`` in ``run`` on ``backend``; returns
    the summary written to ``best.json``. ``seeds``: the initial individuals (default: ``cfg.initial_population``)."""
    space = get_space(cfg.supernet.space)
    seed_everything(cfg.seed)
    rng = np.random.default_rng(np.random.SeedSequence(cfg.seed).spawn(1)[0])
    checkpoint = run.load_checkpoint()
    if checkpoint is not None:  # it holds the population (and the rng): their source is not read again
        seeds = []
    elif seeds is None:
        seeds = initial_alphas(cfg.initial_population, space, cfg.evolution.population, rng)
    strategy = build_strategy(cfg.evolution, space, rng, seeds)
    rows: list[dict[str, Any]] = []
    history: list[dict[str, float]] = []
    if checkpoint is not None:
        state, tensors = checkpoint
        try:
            strategy.load_state_dict(state["strategy"])
            backend.load_state_dict(tensors["backend"])
            torch.set_rng_state(tensors["torch_rng"])
            if tensors.get("cuda_rng") is not None and torch.cuda.is_available():  # absent in older checkpoints
                torch.cuda.set_rng_state_all(tensors["cuda_rng"])
            history = list(state["history"])
        except (KeyError, TypeError, ValueError, RuntimeError) as err:
            reason = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:200]
            raise ConfigError(f"checkpoint of {str(run.path)!r} does not fit this run ({reason})") from None
        rows = _archived_rows(run.path, strategy.generation)
        log(f"resuming {run.path} at generation {strategy.generation}")
    elif run.resumed:  # killed before its first checkpoint: start over cleanly
        run.refuse_lost_checkpoint()
        clear_outputs(run.path)
    run.start(
        config_to_dict(cfg),
        cfg.seed,
        {"space": space.name, "method": cfg.evolution.strategy, "fitness": cfg.fitness.backend},
    )
    writer = _tensorboard(run.path / "tensorboard", strategy.generation)
    g_total = strategy.planned_generations
    log(
        f"evolve: {cfg.evolution.strategy} on {space.name}, population {cfg.evolution.population}, {g_total} "
        f"generations, fitness {cfg.fitness.backend} -> {run.path}"
    )
    t_last = time.perf_counter()

    def on_generation(g: int, individuals: list[Individual], stats: dict[str, float]) -> None:
        nonlocal t_last
        for ind in individuals:
            params = genotype_params_m(ind.genotype, cfg.params_channels, cfg.params_layers)
            rows.append(
                individual_row(
                    g, ind.id, ind.parents, ind.origin, ind.genotype, ind.fitness, params, ind.alphas, space.name,
                    cfg.evolution.strategy, "", cfg.seed,
                )
            )  # fmt: skip
        stats = {**stats, "time_s": time.perf_counter() - t_last}
        t_last = time.perf_counter()
        history.append(stats)
        write_archive(run.path / ARCHIVE, rows)
        write_curves(run.path / CURVES, history)
        run.save_checkpoint(
            {"generation": g, "strategy": strategy.state_dict(), "history": history},
            {"backend": backend.state_dict(), "torch_rng": torch.get_rng_state(), "cuda_rng": _cuda_rng()},
        )
        for key in ("best", "mean", "worst"):
            writer.add_scalar(f"fitness/{key}", stats[key], g)
        for key in ("train_loss", "time_s", "evaluations"):
            if key in stats:
                writer.add_scalar(key, stats[key], g)
        writer.flush()
        run.update(progress={"generation": g + 1, "of": g_total, "evaluations": strategy.evaluations})
        eta = stats["time_s"] * max(g_total - g - 1, 0)
        log(
            f"generation {g + 1}/{g_total}: best {stats['best']:.2f} mean {stats['mean']:.2f} "
            f"({stats['time_s']:.1f} s/generation, ETA {eta:.0f} s)"
        )

    try:
        if not strategy.done:
            run_evolution(strategy, backend, on_generation)
        if not rows:
            raise RuntimeError("the search ended without evaluating any individual")
        best = _best(rows, strategy.best, cfg.fitness.backend == "supernet")
        report = backend.report(best)
        supernet = backend.supernet_state()
    finally:
        writer.close()
        backend.close()
    params = genotype_params_m(best.genotype, cfg.params_channels, cfg.params_layers)
    result = {
        "genotype": best.genotype,
        "fitness": best.fitness,
        "id": best.id,
        "generation": best.generation,
        "params_m": params,
        "evaluations": strategy.evaluations,
        **report,
        "out_dir": str(run.path),
    }
    run.write_json("best.json", result)
    if supernet is not None:
        buf = io.BytesIO()
        torch.save(supernet, buf)
        atomic_write(run.path / SUPERNET, buf.getvalue())
    plot_fitness(history, run.path / "fitness.png", f"{cfg.evolution.strategy} on {space.name}")
    draw_genotype(parse_genotype(best.genotype), run.path)
    run.finish({k: result[k] for k in ("genotype", "fitness", "params_m", "evaluations", *report)})
    log(f"best: {best.genotype} (fitness {best.fitness:.2f}) -> {run.path / 'best.json'}")
    return result


def _cuda_rng() -> list[torch.Tensor] | None:
    """The GPU generators' states (drop path draws its masks there) when this process has used CUDA: a driver whose
    supernet trains on Ray actors, or on the CPU, has none to save (and starts no CUDA context for them)."""
    return torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None


def _best(rows: list[dict[str, Any]], answer: Individual | None, supernet: bool) -> Individual:
    """The run's answer: the strategy's (EvNAS: the best of the final generation on the final shared weights), or,
    for a table's fixed fitness, the best individual ever evaluated."""
    if supernet and answer is not None:
        return answer
    if not supernet:
        return from_record(max(rows, key=lambda r: _rank(r["fitness"])))
    last = max(r["generation"] for r in rows)
    return from_record(max((r for r in rows if r["generation"] == last), key=lambda r: _rank(r["fitness"])))


def _rank(fitness: float | None) -> float:
    """A fitness to take the best by: unscored (None) and missing (NaN, a table's gap) below every score."""
    return -math.inf if fitness is None or not math.isfinite(fitness) else float(fitness)


def _archived_rows(path: Path, generations: int) -> list[dict[str, Any]]:
    """The archive's individuals of the ``generations`` a checkpoint has done (the archive is written before each
    checkpoint, so it holds them all); an archive that lacks any is refused: the run would go on without them."""
    rows = [r for r in read_archive(path) if r["generation"] < generations] if (path / ARCHIVE).is_file() else []
    missing = sorted(set(range(generations)) - {int(r["generation"]) for r in rows})
    if missing:
        what = "is gone" if not (path / ARCHIVE).is_file() else f"lacks generations {_spans(missing)}"
        raise ConfigError(
            f"--resume {str(path)!r}: its checkpoint has done {generations} generations but {ARCHIVE} {what}; "
            "restore the archive, or start afresh with --overwrite"
        )
    return rows


def _spans(numbers: list[int]) -> str:
    """``[0, 1, 2, 5]`` as ``0-2, 5``."""
    out: list[str] = []
    start = prev = numbers[0]
    for n in [*numbers[1:], None]:
        if n is not None and n == prev + 1:
            prev = n
            continue
        out.append(str(start) if start == prev else f"{start}-{prev}")
        if n is not None:
            start = prev = n
    return ", ".join(out)


def clear_outputs(path: Path) -> None:
    """Remove what an earlier attempt's generation loop wrote (a run killed before its first checkpoint)."""
    for name in OUTPUTS:
        target = path / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()


def _tensorboard(path: Path, start: int) -> Any:
    from tensorboardX import SummaryWriter

    return SummaryWriter(str(path), purge_step=start if start > 0 else None)
