"""``evoray.evolve`` in-process: outputs, reproducibility in a fresh process, SIGKILL + resume, bad input."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from evoray.commands.evolve import evolve, main
from evoray.config import load_config
from evoray.errors import ConfigError
from evoray.evolution.config import EvolveConfig
from evoray.evolution.fitness import FitnessConfig
from evoray.evolution.supernet_fitness import SupernetTrainer
from evoray.spaces import get_space
from tests.conftest import shared_file

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "evolution.population=4",
    "evolution.generations=3",
    "evolution.tournament=2",
    "supernet.init_channels=4",
    "supernet.layers=3",
    "data.limit_train=192",
    "data.batch_size=32",
    "distributed.num_actors=0",
    "resources.cpus=1",
    "runtime.threads=1",
]


def tiny(*extra: str) -> EvolveConfig:
    return load_config(EvolveConfig, ROOT / "configs/evolve-default.yaml", [*TINY, *extra])


def _archive(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path / "archive.parquet").drop(columns=[])


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "evoray.evolve", *args]


def _sets(*extra: str) -> list[str]:
    out = []
    for s in [*TINY, *extra]:
        out += ["--set", s]
    return out


def test_run_writes_every_result(tmp_path) -> None:
    result = evolve(tiny(), tmp_path, log=lambda _: None)
    df = pd.read_parquet(tmp_path / "archive.parquet")
    assert len(df) == 4 * 3 and sorted(df.generation.unique()) == [0, 1, 2]
    assert {"generation", "id", "parents", "genotype", "fitness", "params_m", "alphas"} <= set(df.columns)
    assert df.fitness.between(0, 100).all() and (df.params_m > 0).all()
    assert len(df[df.generation == 2].alphas.iloc[0]) == 2  # normal and reduce
    best = json.loads((tmp_path / "best.json").read_text())
    assert best["genotype"] == result["genotype"] and best["out_dir"] == str(tmp_path)
    assert best["fitness"] == df[df.generation == 2].fitness.max()
    for name in ("config.yaml", "run.json", "curves.parquet", "supernet.pt", "fitness.png", "best_normal_cell.png"):
        assert (tmp_path / name).is_file(), name
    assert (tmp_path / "checkpoints" / "last.pt").is_file() and (tmp_path / "checkpoints" / "last.json").is_file()
    manifest = json.loads((tmp_path / "run.json").read_text())
    assert manifest["command"] == "evolve" and manifest["status"] == "done" and manifest["seed"] == 0
    assert manifest["result"]["genotype"] == result["genotype"] and set(manifest["versions"]) >= {"evoray", "torch"}
    assert any((tmp_path / "tensorboard").iterdir())
    assert (df[df.generation == 1].origin == "elite").sum() == 1


def test_fresh_process_and_sigkill_resume_give_the_same_archive(tmp_path) -> None:
    ref = tmp_path / "ref"
    evolve(tiny("evolution.generations=4"), ref, log=lambda _: None)
    fresh = tmp_path / "fresh"
    proc = subprocess.run(
        _cli("--out", str(fresh), *_sets("evolution.generations=4")),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    pd.testing.assert_frame_equal(_archive(ref), _archive(fresh))
    argv = json.loads((fresh / "run.json").read_text())["argv"]  # the command line as typed
    assert argv[1:4] == ["-m", "evoray.evolve", "--out"], argv

    killed = tmp_path / "killed"
    p = subprocess.Popen(
        _cli("--out", str(killed), *_sets("evolution.generations=4")),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while time.time() < deadline:
        arch = killed / "archive.parquet"
        if arch.is_file() and pd.read_parquet(arch).generation.max() >= 1:
            break
        time.sleep(0.2)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    assert pd.read_parquet(killed / "archive.parquet").generation.max() < 3, "killed too late to test resume"
    done = json.loads((killed / "checkpoints" / "last.json").read_text())["generation"]  # its last whole generation
    proc = subprocess.run(_cli("--resume", str(killed)), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    # it continued from its checkpoint (a run that started over would give the same archive)
    assert f"resuming {killed} at generation {done + 1}" in proc.stdout, proc.stdout
    pd.testing.assert_frame_equal(_archive(ref), _archive(killed))


def _digest(d: Path) -> dict[str, str]:
    return {
        str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.rglob("*")) if p.is_file()
    }


def test_bad_input_is_one_line_and_loses_nothing(tmp_path, capsys) -> None:
    run = tmp_path / "run"
    evolve(tiny("evolution.generations=2"), run, log=lambda _: None)
    before = _digest(run)
    cases = [
        (["--set", "evolution.strategy=cmaes"], "unknown strategy 'cmaes'"),
        (["--set", "fitness.backend=oracle"], "unknown fitness backend 'oracle'"),
        (["--set", "supernet.space=dartz"], "unknown search space 'dartz'"),
        (
            [
                "--config",
                str(ROOT / "configs/nb201-tabular.yaml"),
                "--set",
                "fitness.table=/no/table.csv",
                "--out",
                str(tmp_path / "bad"),
            ],
            "/no/table.csv",
        ),
        (["--resume", str(run), "--config", str(ROOT / "configs/evnas-cifar10.yaml")], "would change"),
        (["--resume", str(run), "--set", "evolution.population=5"], "would change evolution.population"),
        (["--resume", str(tmp_path / "nothing")], "no evoray run there"),
    ]
    for args, message in cases:
        assert main(args) == 2, args
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err and message in err, (args, err)
    assert not (tmp_path / "bad").exists()  # a run refused for its input leaves no directory
    (run / "checkpoints" / "last.pt").write_bytes(b"not a checkpoint")
    before = _digest(run)
    assert main(["--resume", str(run)]) == 2
    assert "corrupt" in capsys.readouterr().err
    assert _digest(run) == before  # nothing written was touched


def test_table_without_the_column(tmp_path) -> None:
    table = tmp_path / "t.csv"
    table.write_text("arch,acc\n|none~0|+|none~0|none~1|+|none~0|none~1|none~2|,10.0\n")
    cfg = load_config(EvolveConfig, ROOT / "configs/nb201-tabular.yaml", [f"fitness.table={table}"])
    with pytest.raises(ConfigError, match=r"no (metric )?column 'cifar10_valid_12ep'.*columns: arch, acc"):
        evolve(cfg, tmp_path / "out", log=lambda _: None)


@pytest.mark.parametrize("strategy", ["ga", "regularized"])
def test_tabular_search_respects_the_budget_and_improves(strategy: str, tmp_path) -> None:
    table = shared_file("nb201-12epoch.csv")
    cfg = load_config(
        EvolveConfig,
        ROOT / "configs/nb201-tabular.yaml",
        [
            f"fitness.table={table}",
            f"evolution.strategy={strategy}",
            "evolution.max_evaluations=100",
            "evolution.sample_size=5",
        ],
    )
    result = evolve(cfg, tmp_path, log=lambda _: None)
    df = pd.read_parquet(tmp_path / "archive.parquet")
    assert df.genotype.nunique() == 100 == result["evaluations"]  # the budget, exactly
    # selection at work: a later generation finds a cell better than any of the random first population, and the
    # last population is far better on average than the first (random sampling would keep it near the first's)
    first, later = df[df.generation == 0], df[df.generation > 0]
    assert later.fitness.max() > first.fitness.max() and result["fitness"] == later.fitness.max()
    assert df[df.generation == df.generation.max()].fitness.mean() > first.fitness.mean() + 5
    assert "cifar10_test_12ep" in result


def test_the_budget_is_met_exactly_on_a_supernet_through_the_cli(tmp_path) -> None:
    """The last generation is cut at the budget: only the individuals the budget allows are scored. Its training pass
    is the whole generation's, as without a budget, so a run cut by a budget is the first rows of the run without one
    (the same cells and fitness)."""
    out = tmp_path / "run"
    assert main(["--out", str(out), *_sets("evolution.generations=5", "evolution.max_evaluations=6")]) == 0
    df = pd.read_parquet(out / "archive.parquet")
    assert df.genotype.nunique() == 6 and sorted(df.generation.unique()) == [0, 1]
    assert json.loads((out / "run.json").read_text())["result"]["evaluations"] == 6
    whole = tmp_path / "whole"
    assert main(["--out", str(whole), *_sets("evolution.generations=5")]) == 0  # the same schedule, no budget
    ref = pd.read_parquet(whole / "archive.parquet")
    assert len(df) < (ref.generation <= 1).sum() == 8  # the budget cut the second generation short
    assert ref.genotype.head(len(df)).tolist() == df.genotype.tolist()
    np.testing.assert_allclose(ref.fitness.head(len(df)), df.fitness, atol=1e-6)


def test_regularized_evolution_ages_one_at_a_time_and_ends_at_its_cycles(tmp_path) -> None:
    table = shared_file("nb201-12epoch.csv")
    out = tmp_path / "run"
    args = ["--config", "nb201-tabular", "--out", str(out), "--set", f"fitness.table={table}"]
    sets = ["evolution.strategy=regularized", "evolution.population=10", "evolution.sample_size=3"]
    sets += ["evolution.cycles=13", "evolution.max_evaluations=0", "evolution.generations=100"]
    assert main([*args, *(a for s in sets for a in ("--set", s))]) == 0
    df = pd.read_parquet(out / "archive.parquet")
    children = df[df.generation > 0]
    assert len(children) == 13 and list(df.generation.value_counts().sort_index()) == [10, 10, 3]
    first = [p for ps in children[children.generation == 1].parents for p in ps]
    # each child is bred from the population as it stands after the previous child joined (one at a time): already
    # in generation 1 a child breeds from an earlier child (ids from 10), which a whole-generation step never does
    assert max(first) >= 10 and children.id.tolist() == list(range(10, 23))
    assert json.loads((out / "run.json").read_text())["status"] == "done"


def test_initial_population_from_published_genotypes_and_archives(tmp_path) -> None:
    from evoray.spaces.published import published_genotype

    first = tmp_path / "first"
    evolve(tiny("evolution.generations=1", "initial_population=DARTS_V2,EvNAS_A"), first, log=lambda _: None)
    df = pd.read_parquet(first / "archive.parquet")
    assert df.origin.tolist()[:2] == ["seed", "seed"] and df.origin.tolist()[2:] == ["random", "random"]
    assert df.genotype.iloc[0] == str(published_genotype("DARTS_V2"))
    assert df.genotype.iloc[1] == str(published_genotype("EvNAS_A"))
    second = tmp_path / "second"
    evolve(tiny("evolution.generations=1", f"initial_population={first}"), second, log=lambda _: None)
    seeded = pd.read_parquet(second / "archive.parquet")
    best_first = df.sort_values("fitness", ascending=False, kind="stable").genotype.tolist()
    assert seeded.genotype.tolist() == best_first  # the previous run's last generation, fittest first
    with pytest.raises(ConfigError, match="neither a path nor a published genotype"):
        evolve(tiny("initial_population=NOPE"), tmp_path / "third", log=lambda _: None)


@pytest.mark.parametrize("name", ["SNAS_aggressive", "SNAS_mild_edge_all"])
def test_a_published_genotype_no_alphas_derive_is_refused_as_a_seed(name: str) -> None:
    """SNAS' children keep none ops, or every edge of a node: no DARTS-space alphas derive them, so a seed made of
    them was another architecture under the seed's name. Every other published DARTS genotype seeds itself."""
    import numpy as np

    from evoray.evolution.individual import genotype_of
    from evoray.evolution.run import initial_alphas
    from evoray.spaces import get_space
    from evoray.spaces.published import published_genotype, published_names

    space = get_space("darts")
    with pytest.raises(ConfigError, match=rf"initial_population '{name}' cannot be an individual of search space"):
        initial_alphas(name, space, 8, np.random.default_rng(0))
    for other in published_names():
        if other in ("SNAS_aggressive", "SNAS_mild_edge_all") or published_genotype(other).is_nb201:
            continue
        (alphas,) = initial_alphas(other, space, 8, np.random.default_rng(0))
        assert genotype_of(space, alphas) == published_genotype(other), other


@pytest.mark.parametrize("name", ["evnas-cifar10", "evnas-nb201"])
def test_paper_configs_run_the_evnas_ga(name: str) -> None:
    """nightstorm0909/EvNAS train_search.py and searchNAS201.sh: population 50, 50 generations, tournament 10, one
    elite, uniform row crossover (a row from parent 1 with probability 0.5) on every child, row reset at 0.1."""
    from evoray.evolution.strategies import GeneticAlgorithm

    e = load_config(EvolveConfig, ROOT / f"configs/{name}.yaml").evolution
    assert (e.strategy, e.population, e.generations, e.tournament, e.elites) == ("ga", 50, 50, 10, 1)
    assert (e.crossover_prob, e.crossover_row_prob, e.mutation_rate) == (1.0, 0.5, 0.1)
    assert (e.init, e.selection, e.crossover) == ("uniform", "tournament", "uniform_rows")
    assert (e.mutation or GeneticAlgorithm.default_mutation) == "reset_rows"
    assert (e.max_evaluations, e.cycles) == (0, 0)


def test_supernet_fitness_needs_a_validation_half() -> None:
    with pytest.raises(ConfigError, match=r"data\.train_portion = 1\.0 leaves the EvNAS fitness no validation half"):
        tiny("data.train_portion=1.0")
    tiny("data.train_portion=1.0", "fitness.backend=tabular", "fitness.table=x.parquet")  # a table reads no data


def test_supernet_fitness_refuses_fp16_without_loss_scaling() -> None:
    with pytest.raises(ConfigError, match=r"runtime\.precision=fp16 is not supported by the EvNAS supernet"):
        tiny("runtime.precision=fp16")
    tiny("runtime.precision=bf16")


def test_supernet_fitness_scores_the_validation_half_plain_or_augmented() -> None:
    cfg = tiny("data.augment=true")
    space = get_space(cfg.supernet.space)
    rng = np.random.default_rng(0)
    population = [{ct: rng.normal(size=space.alpha_shape(ct)) for ct in space.cell_types} for _ in range(3)]

    def scores(augment: bool, swap: bool = False) -> list[float]:
        fitness_cfg = FitnessConfig(augment=augment)
        trainer = SupernetTrainer(cfg.supernet, cfg.optim, fitness_cfg, cfg.data, 1, 0, torch.device("cpu"))
        if swap:  # the plain and augmented halves trade places: a score must follow the half it reads
            trainer.data = dataclasses.replace(trainer.data, valid=trainer.data.arch, arch=trainer.data.valid)
        return trainer.fitness([*population, population[0]], generation=0)

    plain, augmented = scores(False), scores(True)
    assert plain != augmented
    assert scores(False, swap=True) == augmented
    assert scores(True, swap=True) == plain


@pytest.mark.parametrize("augment", [False, True])
def test_each_individual_reads_its_own_pass_over_the_validation_half(augment: bool) -> None:
    """As the original's SubsetRandomSampler: every individual gets a fresh shuffle (and, augmented, fresh crops) of
    the validation half, chosen by (generation, id), so a shard of the population scores as the whole does."""
    cfg = tiny("data.augment=true")
    space = get_space(cfg.supernet.space)
    alphas = {ct: np.ones(space.alpha_shape(ct)) for ct in space.cell_types}
    trainer = SupernetTrainer(
        cfg.supernet, cfg.optim, FitnessConfig(augment=augment), cfg.data, 1, 0, torch.device("cpu")
    )
    seen: list[torch.Tensor] = []
    trainer.net.register_forward_pre_hook(lambda _, args: seen.append(args[0].clone()))
    scores = trainer.fitness([alphas, alphas, alphas], generation=0, keys=[0, 1, 0])
    per = len(seen) // 3
    first, second, again = seen[:per], seen[per : 2 * per], seen[2 * per :]
    assert not torch.equal(first[0], second[0])  # two individuals: two batch orders
    assert all(torch.equal(a, b) for a, b in zip(first, again)) and scores[0] == scores[2]  # same key, same pass
    images = sorted(float(x.sum()) for batch in first for x in batch)
    if not augment:  # a reshuffle of the same images ...
        assert images == pytest.approx(sorted(float(x.sum()) for batch in second for x in batch))
    assert trainer.fitness([alphas], generation=0, keys=[1]) == [scores[1]]  # ... and a shard scores the same
    seen.clear()
    trainer.fitness([alphas], generation=1, keys=[0])
    assert not torch.equal(seen[0], first[0])  # the next generation: new passes


def test_supernet_fitness_batch_size() -> None:
    cfg = tiny("fitness.batch_size=40")
    trainer = SupernetTrainer(cfg.supernet, cfg.optim, cfg.fitness, cfg.data, 1, 0, torch.device("cpu"))
    space = get_space(cfg.supernet.space)
    alphas = {ct: np.ones(space.alpha_shape(ct)) for ct in space.cell_types}
    seen: list[int] = []
    trainer.net.register_forward_pre_hook(lambda _, args: seen.append(int(args[0].shape[0])))
    trainer.fitness([alphas], generation=0)
    assert seen == [40, 40, 16]  # the 96 validation images of 192 (train_portion 0.5)
    x, _ = next(iter(trainer.batches(0)))
    assert x.shape[0] == 32  # training keeps data.batch_size


def test_resume_does_not_reread_a_moved_initial_population(tmp_path) -> None:
    first = tmp_path / "first"
    evolve(tiny("evolution.generations=1", "initial_population=DARTS_V2"), first, log=lambda _: None)
    second = tmp_path / "second"
    cfg = tiny("evolution.generations=1", f"initial_population={first}")
    result = evolve(cfg, second, log=lambda _: None)
    archive = _archive(second)
    first.rename(tmp_path / "moved")  # the seed population's source is gone; the checkpoint holds the population
    resumed = evolve(cfg, second, resume=True, log=lambda _: None)
    assert resumed["genotype"] == result["genotype"] and resumed["fitness"] == result["fitness"]
    pd.testing.assert_frame_equal(_archive(second), archive)


def test_checkpoint_holds_the_gpu_rng_and_resumes_without_it(tmp_path) -> None:
    from evoray.runs.directory import load_checkpoint, save_checkpoint

    cfg = tiny("evolution.generations=1")
    result = evolve(cfg, tmp_path, log=lambda _: None)
    loaded = load_checkpoint(tmp_path / "checkpoints")
    assert loaded is not None
    state, tensors = loaded
    assert "cuda_rng" in tensors and tensors["cuda_rng"] is None  # a CPU run: saved, empty
    del tensors["cuda_rng"]  # a checkpoint written before the key existed still resumes
    save_checkpoint(tmp_path / "checkpoints", state, tensors)
    assert evolve(cfg, tmp_path, resume=True, log=lambda _: None)["genotype"] == result["genotype"]


@pytest.mark.parametrize("supernet", [False, True])
def test_the_answer_is_never_an_unscored_individual(supernet: bool) -> None:
    """A table with a gap (NaN) or an individual never scored (None) must not win the run's answer, wherever it
    stands among the rows."""
    from evoray.evolution.run import _best
    from evoray.runs.archive import individual_row

    alphas = {"cell": np.zeros((6, 5), dtype=np.float32)}
    scores = [float("nan"), 80.0, None, 84.0, 70.0]
    rows = [individual_row(0, i, [], "random", "g", f, None, alphas) for i, f in enumerate(scores)]
    assert _best(rows, None, supernet).id == 3


def test_random_ops_draw_the_same_numbers_however_the_shards_are_spread() -> None:
    """On RobustDARTS S4 (the ``noise`` op), the gradient of a batch split in 2 shards on one replica equals the sum of
    the two replicas' gradients (one shard each), and an individual's fitness is the same on either replica and on a
    second call: the noise is drawn from (seed, generation, step, shard) or (seed, generation, individual), not from
    whichever replica's generator runs it."""
    from evoray.evolution.supernet_fitness import SupernetTrainer

    cfg = tiny("supernet.space=rdarts-s4", "distributed.batch_shards=2", "data.limit_train=64", "fitness.max_batches=1")
    kwargs = {**cfg.trainer_kwargs(), "device": torch.device("cpu")}
    one = SupernetTrainer(**kwargs)
    halves = [SupernetTrainer(**kwargs, rank=r, world=2) for r in (0, 1)]
    assert one.random_ops
    rng = np.random.default_rng(0)
    alphas = {ct: rng.normal(size=one.space.alpha_shape(ct)) for ct in one.space.cell_types}
    x, y = next(one.batches(0))
    weights = one.decode(alphas)
    torch.manual_seed(1)  # whatever the generators held before
    one.compute_grads(x, y, weights, (0, 0))
    for r, trainer in enumerate(halves):
        torch.manual_seed(100 + r)
        trainer.compute_grads(x, y, weights, (0, 0))
    for p, a, b in zip(one.params, halves[0].params, halves[1].params, strict=True):
        if p.grad is not None:
            assert a.grad is not None and b.grad is not None
            torch.testing.assert_close(p.grad, a.grad + b.grad, rtol=1e-4, atol=1e-6)
    scores = [t.fitness([alphas], 0, [7])[0] for t in (one, halves[1], one)]
    assert scores[0] == scores[1] == scores[2]
