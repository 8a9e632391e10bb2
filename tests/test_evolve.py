"""``evoray.evolve`` in-process: outputs, reproducibility in a fresh process, SIGKILL + resume, bad input; the EvNAS
supernet trainer step by step (decoding, round-robin training, fitness) and the generation loop's records."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
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
from evoray.evolution.individual import Individual, genotype_of
from evoray.evolution.run import alphas_for
from evoray.evolution.supernet_fitness import SupernetTrainer
from evoray.nn.weighting import EdgeWeights
from evoray.runs.directory import load_checkpoint
from evoray.spaces import SearchSpace, get_space, one_hot
from evoray.spaces.published import published_genotype
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
    # its last whole generation, as a resume reads it: from the tensors file, whose state is one save newer than
    # last.json's where the kill fell between their two writes
    saved = load_checkpoint(killed / "checkpoints")
    assert saved is not None
    done = saved[0]["generation"]
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


def test_regularized_evolution_ages_one_at_a_time_and_ends_at_its_cycles(tmp_path, capsys) -> None:
    """Run over the GA config nb201-tabular: its tournament of 5, a GA setting, is named in a note."""
    table = shared_file("nb201-12epoch.csv")
    out = tmp_path / "run"
    args = ["--config", "nb201-tabular", "--out", str(out), "--set", f"fitness.table={table}"]
    sets = ["evolution.strategy=regularized", "evolution.population=10", "evolution.sample_size=3"]
    sets += ["evolution.cycles=13", "evolution.max_evaluations=0", "evolution.generations=100"]
    assert main([*args, *(a for s in sets for a in ("--set", s))]) == 0
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note:")]
    assert notes == ["note: evolution.tournament=5 is read by strategy ga only; strategy regularized ignores it"]
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
    # params_m: the evaluation network (C=36, 20 cells, no auxiliary head), the published 3.349M and 3.626M
    assert df.params_m.iloc[:2].round(3).tolist() == [3.349, 3.626]
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


# -- the EvNAS supernet trainer, step by step ----------------------------------------------------------------------


def _trainer(*extra: str) -> SupernetTrainer:
    torch.set_num_threads(1)  # as the run's runtime.threads=1 does (conftest restores the count after the test)
    return SupernetTrainer(**tiny(*extra).trainer_kwargs(), device=torch.device("cpu"))


def _population(space: SearchSpace, n: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """``n`` U(0, 1) individuals with distinct genotypes."""
    rng = np.random.default_rng(seed)
    out: list[dict[str, np.ndarray]] = []
    while len(out) < n:
        alphas = {ct: rng.random(space.alpha_shape(ct)).astype(np.float32) for ct in space.cell_types}
        if all(genotype_of(space, alphas) != genotype_of(space, a) for a in out):
            out.append(alphas)
    return out


def _recorder(trainer: SupernetTrainer) -> list[tuple[bool, float, torch.Tensor, dict[str, EdgeWeights]]]:
    """Every forward of the supernet: (training mode, learning rate, images, edge weights)."""
    seen: list[tuple[bool, float, torch.Tensor, dict[str, EdgeWeights]]] = []

    def hook(module: torch.nn.Module, args: tuple) -> None:
        seen.append((module.training, trainer.optimizer.param_groups[0]["lr"], args[0].clone(), args[1]))

    trainer.net.register_forward_pre_hook(hook)
    return seen


@pytest.mark.parametrize("space_name", ["darts", "nb201"])
def test_decoding_weighs_the_chosen_ops_by_the_softmax_of_a_one_hot(space_name: str) -> None:
    """DARTS: on each of the genotype's 8 (edge, op) pairs the op weighs e/(e+7) = 0.280 and the edge's other ops
    1/(e+7) = 0.103; the 6 unchosen edges weigh every op 1/8. NAS-Bench-201: every edge is chosen, e/(e+4) and
    1/(e+4)."""
    trainer = _trainer(f"supernet.space={space_name}", "data.limit_train=64")
    space = trainer.space
    e = math.e
    if space_name == "darts":
        genotype = published_genotype("DARTS_V2")
        alphas = alphas_for(space, genotype, np.random.default_rng(0))
    else:
        alphas = {"cell": np.random.default_rng(0).random((6, 5)).astype(np.float32)}
    weights = trainer.decode(alphas)
    for ct in space.cell_types:
        k = space.alpha_shape(ct)[1]
        if space_name == "darts":
            chosen = {
                space.edge_index(space.num_inputs + i, j): space.edge_ops(ct, 0).index(op)
                for i, node in enumerate(genotype.cell(ct).nodes)
                for op, j in node
            }
            assert len(chosen) == 8
        else:  # argmax on every edge, none included
            chosen = dict(enumerate(alphas[ct].argmax(1).tolist()))
        want = np.full(space.alpha_shape(ct), 1 / k)
        for edge, op in chosen.items():
            want[edge] = 1 / (e + k - 1)
            want[edge, op] = e / (e + k - 1)
        np.testing.assert_allclose(weights[ct].weights.numpy(), want, rtol=1e-6)
    if space_name == "darts":
        assert round(e / (e + 7), 3) == 0.280 and round(1 / (e + 7), 3) == 0.103


@pytest.mark.parametrize("bn_mode", ["train", "eval"])
def test_fitness_is_each_individuals_top1_on_its_own_pass_over_the_validation_half(bn_mode: str) -> None:
    """Recomputed by hand: individual k's fitness is 100 x correct / images over one whole pass of the plain
    validation half in the order of (generation, its id), on the softmax of its genotype's one-hot, with BatchNorm
    in the configured mode; scoring moves no weight or running statistic, and leaves the supernet in training mode.
    Without ids, the individuals are ids 0, 1, ... in order."""
    trainer = _trainer(f"fitness.bn_mode={bn_mode}")
    space = trainer.space
    population = _population(space, 4)
    trainer.train_generation(population, 0)
    before = {k: v.clone() for k, v in trainer.net.state_dict().items()}
    net = copy.deepcopy(trainer.net)
    keys = [3, 0, 7, 1]
    scores = trainer.fitness(population, generation=1, keys=keys)
    assert all(torch.equal(v, trainer.net.state_dict()[k]) for k, v in before.items())
    assert trainer.net.training
    want = []
    valid = trainer.data.valid
    assert valid is not None
    for alphas, key in zip(population, keys):
        cells = one_hot(space, genotype_of(space, alphas))
        weights = {ct: EdgeWeights(torch.softmax(torch.tensor(cells[ct], dtype=torch.float32), -1)) for ct in cells}
        net.train(bn_mode == "train")
        valid.set_epoch(1, key)
        correct = total = 0
        with torch.no_grad():
            for x, y in valid:
                correct += int((net(x, weights).argmax(1) == y).sum())
                total += len(y)
        assert total == 96
        want.append(100.0 * correct / total)
    if bn_mode == "train":  # four different scores: a score paired with another individual shows
        assert len(set(want)) == len(want)
    assert scores == pytest.approx(want, abs=1e-9)
    assert trainer.fitness(population, generation=1) == trainer.fitness(population, 1, keys=[0, 1, 2, 3])


def test_fitness_reads_at_most_max_batches_per_individual() -> None:
    """fitness.max_batches=2 stops each individual's pass after 2 of the validation half's 3 batches."""
    trainer = _trainer("fitness.max_batches=2")
    seen = _recorder(trainer)
    trainer.fitness(_population(trainer.space, 2), generation=0)
    assert [len(x) for _, _, x, _ in seen] == [32, 32, 32, 32]


@pytest.mark.parametrize("at_start", [False, True])
def test_step_s_trains_with_individual_s_mod_p_in_training_mode_at_the_cosine_rate(at_start: bool) -> None:
    """One generation is one pass over the training half (160 images: 5 steps of 32), freshly shuffled every
    generation; step s runs individual s mod 3 in training mode; generation g trains at lr_min + (lr - lr_min)
    (1 + cos(pi g / G)) / 2 over the run's G = 3 generations (not the population of 4), or at that of g + 1 with
    ``optim.lr_step_at_start`` (the schedule stepped before each generation)."""
    trainer = _trainer("data.limit_train=320", f"optim.lr_step_at_start={str(at_start).lower()}")
    population = _population(trainer.space, 3)
    decoded = [trainer.decode(a) for a in population]
    seen = _recorder(trainer)
    o, generations = trainer.optim_cfg, 3
    passes = []
    for g in range(generations):
        seen.clear()
        trainer.train_generation(population, g)
        assert len(seen) == 5 == trainer.steps_per_generation()
        cosine = o.lr_min + (o.lr - o.lr_min) * (1 + math.cos(math.pi * (g + at_start) / generations)) / 2
        for s, (training, lr, _, weights) in enumerate(seen):
            assert training and lr == pytest.approx(cosine)
            for ct in trainer.space.cell_types:
                assert torch.equal(weights[ct].weights, decoded[s % 3][ct].weights), (g, s)
        passes.append(torch.cat([x for _, _, x, _ in seen]))
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(o.lr_min)
    for a in passes[1:]:  # the same 160 images, in another order
        assert not torch.equal(a, passes[0])
        assert sorted(a.sum((1, 2, 3)).tolist()) == pytest.approx(sorted(passes[0].sum((1, 2, 3)).tolist()))


def test_a_step_takes_the_gradient_of_its_batchs_mean_loss_alone() -> None:
    """Gradients do not accumulate across steps; with 2 shards of a batch made of every image twice (each shard one
    copy), the gradient and mean loss are those of the images once in one shard."""
    one, two = _trainer(), _trainer("distributed.batch_shards=2")
    x, y = next(one.batches(0))
    weights = one.decode(_population(one.space, 1)[0])
    loss = one.compute_grads(x, y, weights)
    grads = [p.grad.clone() if p.grad is not None else None for p in one.params]
    with torch.no_grad():
        assert loss == pytest.approx(float(torch.nn.functional.cross_entropy(one.net(x, weights), y, reduction="sum")))
    one.compute_grads(x, y, weights)
    doubled = two.compute_grads(x.repeat_interleave(2, 0), y.repeat_interleave(2, 0), weights)
    assert doubled == pytest.approx(2 * loss, rel=1e-5)
    for p, q, g in zip(one.params, two.params, grads, strict=True):
        if g is None:
            continue
        assert p.grad is not None and q.grad is not None
        torch.testing.assert_close(p.grad, g)
        torch.testing.assert_close(q.grad, g, rtol=1e-4, atol=1e-6)


def test_train_loss_is_the_mean_cross_entropy_of_the_pass() -> None:
    """Recomputed with the learning rate at 0 (the weights stay put): the mean over the pass's examples of the
    cross-entropy of each step's individual in training mode."""
    trainer = _trainer("data.limit_train=320")
    population = _population(trainer.space, 2)
    for group in trainer.optimizer.param_groups:
        group["lr"] = 0.0
    net = copy.deepcopy(trainer.net)
    got = trainer.train_generation(population, 0)["train_loss"]
    total, n = 0.0, 0
    with torch.no_grad():
        for step, (x, y) in enumerate(trainer.batches(0)):
            logits = net(x, trainer.decode(population[step % 2]))
            total += float(torch.nn.functional.cross_entropy(logits, y, reduction="sum"))
            n += len(y)
    assert n == 160 and got == pytest.approx(total / n, rel=1e-5)


def test_the_seed_sets_the_initial_weights_and_the_split() -> None:
    """Two trainers of one seed start from the same weights and the same validation half; another seed changes
    both."""
    a, b, c = _trainer(), _trainer(), _trainer("seed=1")
    same = [torch.equal(p, q) for p, q in zip(a.params, b.params, strict=True)]
    other = [torch.equal(p, q) for p, q in zip(a.params, c.params, strict=True)]
    assert all(same) and not all(other)

    def held_out(trainer: SupernetTrainer) -> list[float]:  # the validation half's images, as a set
        assert trainer.data.valid is not None
        return sorted(float(x.sum()) for batch, _ in trainer.data.valid for x in batch)

    assert held_out(a) == held_out(b) != held_out(c)


def test_a_trainer_loaded_from_a_state_continues_as_the_original() -> None:
    """The weights, momentum buffers and schedule come back: the next generation trains the same weights at the
    same rate."""
    first, second = _trainer(), _trainer()
    population = _population(first.space, 2)
    first.train_generation(population, 0)
    second.load_state_dict(copy.deepcopy(first.state_dict()))
    assert second.generation == 1
    for trainer in (first, second):
        trainer.train_generation(population, 1)
    assert first.optimizer.param_groups[0]["lr"] == second.optimizer.param_groups[0]["lr"]
    for p, q in zip(first.params, second.params, strict=True):
        assert torch.equal(p, q)


# -- the generation loop, its records and resume (on the table: seconds) --------------------------------------------


def _tabular(*extra: str) -> EvolveConfig:
    sets = ["evolution.population=6", "evolution.generations=4", "evolution.tournament=2"]
    sets += ["evolution.max_evaluations=0", f"fitness.table={shared_file('nb201-12epoch.csv')}"]
    return load_config(EvolveConfig, ROOT / "configs/nb201-tabular.yaml", [*sets, *extra])


@pytest.fixture(scope="module")
def tabular_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("tabular") / "run"
    return out, evolve(_tabular(), out, log=lambda _: None)


def test_a_table_runs_answer_and_records(tabular_run: tuple[Path, dict]) -> None:
    """The answer is the best individual ever evaluated, where it was first found; every row records the run's seed;
    the manifest's progress counts the generations done."""
    out, result = tabular_run
    df = _archive(out)
    top = df[df.fitness == df.fitness.max()]
    first = top[top.generation == top.generation.min()].iloc[0]
    assert (result["id"], result["generation"], result["fitness"]) == (first.id, first.generation, first.fitness)
    assert result["genotype"] == first.genotype and result["cifar10_test_12ep"] > 0
    assert (df.seed == 0).all() and sorted(df.generation.unique()) == [0, 1, 2, 3]
    assert json.loads((out / "run.json").read_text())["progress"]["generation"] == 4
    assert len(pd.read_parquet(out / "curves.parquet")) == 4


def test_the_seed_sets_the_first_population_and_is_recorded(tabular_run: tuple[Path, dict], tmp_path) -> None:
    """Seed 1 draws another first population than seed 0, and its archive rows say seed 1."""
    out, _ = tabular_run
    evolve(_tabular("seed=1", "evolution.generations=1"), tmp_path, log=lambda _: None)
    ours, theirs = _archive(tmp_path), _archive(out)
    assert (ours.seed == 1).all()
    assert ours.genotype.tolist() != theirs[theirs.generation == 0].genotype.tolist()


def test_an_archive_seeds_the_fittest_of_its_last_generation(tabular_run: tuple[Path, dict]) -> None:
    """initial_population=<run>: the alphas of its last generation's fittest individuals, fittest first."""
    from evoray.evolution.run import initial_alphas
    from evoray.runs import read_archive, row_alphas

    out, _ = tabular_run
    rows = [r for r in read_archive(out) if r["generation"] == 3]
    assert len(rows) == 6
    fittest = sorted(rows, key=lambda r: -r["fitness"])[:3]  # a stable sort: ties keep the archive's order
    seeds = initial_alphas(str(out), get_space("nb201"), 3, np.random.default_rng(0))
    assert len(seeds) == 3
    for got, row in zip(seeds, fittest, strict=True):
        np.testing.assert_array_equal(got["cell"], row_alphas(row)["cell"])


def test_a_run_stopped_between_its_archive_and_its_checkpoint_resumes_to_the_same_results(
    tabular_run: tuple[Path, dict], tmp_path, monkeypatch
) -> None:
    """The archive of generation 2 is written but not its checkpoint: the resumed run does generation 2 once more,
    and its archive, curves and answer are those of the run never stopped."""
    from evoray.runs import RunDir

    ref, result = tabular_run
    real = RunDir.save_checkpoint

    def stop(self: RunDir, state: dict, tensors: dict, name: str = "last") -> None:
        if state["generation"] == 2:
            raise KeyboardInterrupt
        real(self, state, tensors, name)

    monkeypatch.setattr(RunDir, "save_checkpoint", stop)
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        evolve(_tabular(), out, log=lambda _: None)
    assert _archive(out).generation.max() == 2
    monkeypatch.undo()
    resumed = evolve(_tabular(), out, resume=True, log=lambda _: None)
    pd.testing.assert_frame_equal(_archive(out), _archive(ref))
    timings = ["time_s", "train_s", "fitness_s"]
    curves = [pd.read_parquet(d / "curves.parquet").drop(columns=timings) for d in (out, ref)]
    pd.testing.assert_frame_equal(*curves)
    assert {**resumed, "out_dir": ""} == {**result, "out_dir": ""}


def test_each_generation_trains_its_population_then_scores_it_under_its_own_index() -> None:
    """Generation g: train_generation(population, g), then evaluate(the same individuals, g); g = 0, 1, 2."""
    from evoray.evolution.fitness import FitnessBackend
    from evoray.evolution.search import run_evolution
    from evoray.evolution.strategies import EvolutionConfig, build_strategy

    calls: list[tuple[str, int, list[int]]] = []

    class Recording(FitnessBackend):
        def train_generation(self, individuals: list[Individual], generation: int) -> dict[str, float]:
            calls.append(("train", generation, [i.id for i in individuals]))
            return {}

        def evaluate(self, individuals: list[Individual], generation: int = 0) -> list[float]:
            calls.append(("evaluate", generation, [i.id for i in individuals]))
            return [float(i.id) for i in individuals]

    cfg = EvolutionConfig(population=4, generations=3, tournament=2)
    run_evolution(build_strategy(cfg, get_space("nb201"), np.random.default_rng(0)), Recording())
    assert [c[:2] for c in calls] == [(what, g) for g in range(3) for what in ("train", "evaluate")]
    for train, scored in zip(calls[::2], calls[1::2]):
        assert train[2] == scored[2]


def test_a_supernet_runs_answer_is_the_best_of_its_last_generation(tmp_path) -> None:
    """EvNAS' answer is the best individual of the final generation, scored on the final shared weights, even where
    an earlier generation scored higher on the weights of its day."""
    from evoray.evolution.fitness import FitnessBackend
    from evoray.evolution.run import run_evolve
    from evoray.runs import RunDir

    class Declining(FitnessBackend):
        def evaluate(self, individuals: list[Individual], generation: int = 0) -> list[float]:
            return [90.0 - 20.0 * generation + i.id % 7 for i in individuals]

    with RunDir.open("evolve", tmp_path, "run") as run:
        result = run_evolve(tiny("evolution.generations=2"), run, Declining(), log=lambda _: None)
    df = _archive(tmp_path)
    last = df[df.generation == 1]
    assert df.fitness.max() > last.fitness.max()
    assert (result["generation"], result["fitness"]) == (1, last.fitness.max())


def test_a_loop_continued_from_a_state_counts_every_generation_of_the_strategy() -> None:
    """run_evolution on a strategy loaded after 1 of 3 generations runs the other 2; its result counts all 3."""
    from evoray.evolution.fitness import FitnessBackend
    from evoray.evolution.search import run_evolution, run_generation
    from evoray.evolution.strategies import EvolutionConfig, build_strategy

    class ById(FitnessBackend):
        def evaluate(self, individuals: list[Individual], generation: int = 0) -> list[float]:
            return [float(i.id) for i in individuals]

    cfg, space = EvolutionConfig(population=4, generations=3, tournament=2), get_space("nb201")
    first = build_strategy(cfg, space, np.random.default_rng(0))
    run_generation(first, ById())
    continued = build_strategy(cfg, space, np.random.default_rng(1))
    continued.load_state_dict(copy.deepcopy(first.state_dict()))
    result = run_evolution(continued, ById())
    assert (result.generations, len(result.history)) == (3, 2)


def test_an_individual_holds_its_own_alphas_and_is_unscored_in_a_new_generation() -> None:
    """make_individual copies the alphas (changing the caller's array later changes no individual); an individual
    listed in another generation keeps its id, alphas and genotype, and has no fitness there until scored."""
    from evoray.evolution.individual import make_individual

    space = get_space("nb201")
    alphas = {"cell": np.eye(6, 5, dtype=np.float32)}
    ind = make_individual(space, alphas, 7, 2).with_fitness(81.5)
    alphas["cell"][:] = 0.0
    np.testing.assert_array_equal(ind.alphas["cell"], np.eye(6, 5))
    moved = ind.in_generation(3)
    assert (moved.id, moved.generation, moved.genotype, moved.fitness) == (7, 3, ind.genotype, None)
    assert ind.fitness == 81.5
    with pytest.raises(ValueError, match="origin 'clone' is not one of"):
        make_individual(space, alphas, 8, 2, origin="clone")
