"""``evoray.evolve`` on Ray actors: 1 actor = in-process, 2 actors = 1 actor, a lost node does not change the run."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from evoray.commands.evolve import evolve
from evoray.errors import ConfigError
from tests.test_evolve import tiny

ROOT = Path(__file__).resolve().parents[1]


def test_actors_match_in_process(tmp_path, ray_session, monkeypatch) -> None:
    from evoray.distributed import fleet

    started: list[int] = []  # the actors each fleet started (the in-process run starts none)
    original = fleet.SupernetFleet._start

    def spy(self) -> None:  # type: ignore[no-untyped-def]
        original(self)
        started.append(len(self.placements()))

    monkeypatch.setattr(fleet.SupernetFleet, "_start", spy)
    local = tmp_path / "local"
    evolve(tiny("distributed.batch_shards=2"), local, log=lambda _: None)
    assert started == []
    one = tmp_path / "one"
    evolve(tiny("distributed.num_actors=1", "distributed.batch_shards=2"), one, log=lambda _: None)
    two = tmp_path / "two"
    evolve(tiny("distributed.num_actors=2", "distributed.batch_shards=2"), two, log=lambda _: None)
    assert started == [1, 2]
    a, b, c = (pd.read_parquet(p / "archive.parquet") for p in (local, one, two))
    pd.testing.assert_frame_equal(a, b)  # one actor: bit-identical to in-process
    assert (a.genotype == c.genotype).all()
    np.testing.assert_allclose(a.fitness, c.fitness, atol=1e-6)  # two actors: the same run, gradients all-reduced


def test_two_actors_merge_the_running_statistics_of_every_shard(tmp_path, ray_session) -> None:
    """Fitness on BatchNorm running statistics (bn_mode eval, EvNAS' NAS-Bench-201 setting): each actor runs its own
    shards, and the statistics every shard moves are merged in shard order on every actor, so two actors score and
    end as the in-process run of the same shards (they each kept their own shards' statistics: fitness 10.01 for all
    four individuals against 11.4-29.2 in process)."""
    from evoray.runs.directory import load_tensors

    local, two = tmp_path / "local", tmp_path / "two"
    shards = ("distributed.batch_shards=2", "fitness.bn_mode=eval", "evolution.generations=2")
    evolve(tiny(*shards), local, log=lambda _: None)
    evolve(tiny("distributed.num_actors=2", *shards), two, log=lambda _: None)
    a, c = (pd.read_parquet(p / "archive.parquet") for p in (local, two))
    assert (a.genotype == c.genotype).all()
    np.testing.assert_allclose(a.fitness, c.fitness, atol=1e-6)
    assert a.fitness.nunique() > 1  # the statistics tell the individuals apart
    na, nc = (load_tensors(p / "supernet.pt", "supernet") for p in (local, two))
    stats = [k for k in na if "running_" in k or "num_batches" in k]
    assert stats and all(torch.allclose(na[k].float(), nc[k].float(), atol=1e-6) for k in stats)


def test_actors_that_do_not_fit_the_cpus_are_refused(tmp_path, ray_session) -> None:
    """Two actors of 2 CPUs on a 2-CPU Ray: one line, instead of an actor that waits forever for its CPUs."""
    cfg = tiny("distributed.num_actors=2", "resources.cpus=2", "distributed.batch_shards=2")
    with pytest.raises(
        ConfigError, match=r"num_actors=2: 2 worker\(s\) of resources.cpus=2 need 4 CPUs but this Ray has 2"
    ):
        evolve(cfg, tmp_path / "run", log=lambda _: None)


@pytest.mark.parametrize(
    ("deterministic", "autotune", "tuned"), [(True, "on", False), (False, "auto", False), (False, "on", True)]
)
def test_actors_take_the_runs_determinism_and_autotuner(
    ray_session, deterministic: bool, autotune: str, tuned: bool
) -> None:
    """``runtime.deterministic`` and ``runtime.autotune`` hold in the actors that train and score, not only in the
    driver that set them; under ``auto`` cuDNN's autotuner stays off, as the original EvNAS sets it, and
    deterministic kernels turn it off whatever ``autotune`` says."""
    from evoray.distributed.fleet import SupernetFleet

    cfg = tiny(
        "distributed.num_actors=1",
        f"runtime.deterministic={str(deterministic).lower()}",
        f"runtime.autotune={autotune}",
    )
    fleet = SupernetFleet(cfg)
    try:
        assert [(p["deterministic"], p["autotune"]) for p in fleet.placements()] == [(deterministic, tuned)]
    finally:
        fleet.shutdown()


CLUSTER_SCRIPT = textwrap.dedent(
    """
    import os, sys, threading, time
    from pathlib import Path
    import pandas as pd, ray
    from ray.cluster_utils import Cluster
    from evoray.commands.evolve import evolve
    from tests.test_evolve import tiny

    out = Path(sys.argv[1])
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
    worker = cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, log_to_driver=False)
    cfg = tiny("distributed.num_actors=2", "distributed.batch_shards=2", "evolution.generations=3")
    removed = {}

    def remove_worker():
        arch = out / "archive.parquet"
        while not (arch.is_file() and pd.read_parquet(arch).generation.max() >= 0):
            time.sleep(0.05)
        time.sleep(0.5)  # well inside generation 1
        cluster.remove_node(worker)
        removed["at"] = time.time()

    from evoray.distributed import fleet
    original = fleet.SupernetFleet._start
    nodes, starts = set(), []

    def spy(self):
        original(self)
        starts.append(1)
        nodes.update(p["node"] for p in self.placements())

    fleet.SupernetFleet._start = spy
    threading.Thread(target=remove_worker, daemon=True).start()
    evolve(cfg, out, log=lambda m: None)
    ray.shutdown()
    cluster.shutdown()
    print("NODES", len(nodes), "REMOVED", "at" in removed, "STARTS", len(starts))
    """
)


def test_lost_worker_node_does_not_change_the_archive(tmp_path) -> None:
    ref = tmp_path / "ref"
    evolve(tiny("distributed.batch_shards=2", "evolution.generations=3"), ref, log=lambda _: None)
    out = tmp_path / "cluster"
    proc = subprocess.run(
        [sys.executable, "-c", CLUSTER_SCRIPT, str(out)], cwd=ROOT, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    # the first fleet spanned both nodes; the worker was removed; the fleet was rebuilt on what was left
    assert "NODES 2 REMOVED True STARTS 2" in proc.stdout, proc.stdout
    a, b = pd.read_parquet(ref / "archive.parquet"), pd.read_parquet(out / "archive.parquet")
    assert (a.genotype == b.genotype).all()
    np.testing.assert_allclose(a.fitness, b.fitness, atol=1e-6)


def _states_equal(a: dict, b: dict) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_states_equal(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_states_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    return bool(a == b)


def test_an_actor_lost_while_the_state_is_fetched_is_replaced(ray_session) -> None:
    """A node lost while the checkpoint's state is fetched, or between a training pass and its state: the fleet is
    rebuilt, the pass runs again, and the state is the one an undisturbed fleet gives."""
    from evoray.distributed import fleet as fleet_mod
    from evoray.evolution.operators import init_uniform
    from evoray.spaces import get_space

    cfg = tiny("distributed.num_actors=1")
    rng = np.random.default_rng(0)
    population = [init_uniform(get_space(cfg.supernet.space), rng) for _ in range(2)]
    ref = fleet_mod.SupernetFleet(cfg)
    ref.train(population, 0)
    want = ref.state_dict()
    ref.shutdown()

    fleet = fleet_mod.SupernetFleet(cfg)
    get_all = fleet_mod._get_all

    def then_kill(refs):  # the pass completes; its actor dies before the driver holds the new state
        out = get_all(refs)
        fleet_mod._get_all = get_all
        ray_session.kill(fleet.actors[0], no_restart=True)
        return out

    fleet_mod._get_all = then_kill
    try:
        fleet.train(population, 0)
    finally:
        fleet_mod._get_all = get_all
    assert fleet.restarts == 1
    ray_session.kill(fleet.actors[0], no_restart=True)  # lost while the checkpoint fetches the state
    got = fleet.state_dict()
    assert fleet.restarts == 2
    assert _states_equal(got, want)
    fleet.shutdown()


def test_an_actor_lost_before_the_first_state_or_while_replaced_is_replaced(ray_session) -> None:
    """An actor lost before the fleet first held a state, then a replacement lost while the fleet starts, and a
    result lost with its node: each is one more restart, and the state is the seed's, as a fresh trainer's."""
    from evoray.distributed import fleet as fleet_mod
    from evoray.evolution.supernet_fitness import SupernetTrainer

    cfg = tiny("distributed.num_actors=1")
    fleet = fleet_mod.SupernetFleet(cfg)
    start, fetch = fleet._start, fleet._fetch_state
    lost: list[str] = []

    def replacement_lost() -> None:
        start()
        if "start" not in lost:
            lost.append("start")
            raise ray_session.exceptions.ActorDiedError()

    def result_lost() -> dict:  # once the fleet holds a state: its next fetch loses the result with its node
        if fleet._state is not None and "result" not in lost:
            lost.append("result")
            raise ray_session.exceptions.ObjectLostError("00" * 28, None, "")
        return fetch()

    fleet._start, fleet._fetch_state = replacement_lost, result_lost  # type: ignore[method-assign]
    try:
        ray_session.kill(fleet.actors[0], no_restart=True)
        got = fleet.state_dict()
        assert fleet.restarts == 3 and lost == ["start", "result"]
        fresh = SupernetTrainer(**{**fleet.kwargs, "reuse_memory": False}, device=torch.device("cpu"))
        assert _states_equal(got["net"], fresh.state_dict()["net"]) and got["generation"] == 0
    finally:
        fleet.shutdown()


def test_an_actors_own_error_is_raised_not_retried(ray_session, monkeypatch) -> None:
    """A RuntimeError that an actor's code raises while every actor still answers (a bug, out of memory) is raised at
    once: rebuilding the fleet would only raise it again, ``distributed.max_restarts`` times. The same error while
    an actor of the fleet is dead is a lost peer's broken collective: a loss, rebuilt as before."""
    from evoray.distributed import fleet as fleet_mod
    from evoray.evolution.operators import init_uniform
    from evoray.spaces import get_space

    base = fleet_mod.SupernetActor.__ray_actor_class__  # type: ignore[attr-defined]

    class Failing(base):  # type: ignore[misc,valid-type]
        def fitness(self, population: list, generation: int, keys: list) -> list[float]:
            raise RuntimeError("out of memory (a hand case)")

    cfg = tiny("distributed.num_actors=1", "distributed.max_restarts=3")
    population = [init_uniform(get_space(cfg.supernet.space), np.random.default_rng(0)) for _ in range(2)]
    monkeypatch.setattr(fleet_mod, "SupernetActor", ray_session.remote(Failing))
    fleet = fleet_mod.SupernetFleet(cfg)
    monkeypatch.undo()  # a rebuilt fleet would start sound actors
    try:
        with pytest.raises(RuntimeError, match="out of memory") as raised:
            fleet.fitness(population, 0, [0, 1])
        assert not isinstance(raised.value, fleet_mod.FleetError) and fleet.restarts == 0
        err = ray_session.exceptions.RayTaskError("fitness", "", RuntimeError("Connection closed by peer"))
        assert not fleet._lost(err)
        ray_session.kill(fleet.actors[0], no_restart=True)
        deadline = time.monotonic() + 60  # the kill is asynchronous: a call may still be answered just after it
        while time.monotonic() < deadline:
            try:
                ray_session.get(fleet.actors[0].where.remote())
            except ray_session.exceptions.RayActorError:
                break
            time.sleep(0.1)
        assert fleet._lost(err)  # the same error with a dead actor in the fleet
        assert fleet._lost(ray_session.exceptions.ActorDiedError())
    finally:
        fleet.shutdown()


@pytest.mark.parametrize(("runtime_threads", "want"), [(2, 1), (0, 1)])
def test_a_search_trial_runs_no_more_threads_than_its_cpus(ray_session, runtime_threads: int, want: int) -> None:
    """A trial that reserved one CPU runs one torch thread, whatever ``runtime.threads`` its settings carry."""
    from evoray.config import config_from_dict, config_to_dict
    from evoray.distributed.tune import SearchTrainable
    from evoray.searchers.experiment import ExperimentConfig, expand

    base = {
        "epochs": 1,
        "supernet": {"space": "nb201", "init_channels": 4, "layers": 1},
        "data": {"dataset": "digits", "batch_size": 32, "augment": False, "limit_train": 64},
        "runtime": {"threads": runtime_threads},
    }
    exp = config_from_dict(ExperimentConfig, {"searchers": ["darts"], "seeds": [0], "base": base})
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        trial = object.__new__(SearchTrainable)  # setup alone, as the trial's worker runs it
        SearchTrainable.setup(trial, {"search": config_to_dict(expand(exp)[0]), "threads": 1})
        assert torch.get_num_threads() == want
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize(
    ("searcher", "autotune", "tuned"),
    [
        ("darts", "auto", True),
        ("gdas", "auto", False),
        ("rsps", "auto", False),
        ("gdas", "on", True),
        ("xnas", "off", False),
    ],
)
def test_a_search_trial_sets_cudnns_autotuner_as_its_original(
    ray_session, searcher: str, autotune: str, tuned: bool
) -> None:
    """Under ``runtime.autotune=auto`` a trial turns cuDNN's autotuner on as the method's original code did: on for
    DARTS (every op runs, the same shapes each step), off for GDAS and RSPS (AutoDL's scripts; a sampled path per step);
    ``on`` and ``off`` override."""
    from evoray.config import config_from_dict, config_to_dict
    from evoray.distributed.tune import SearchTrainable
    from evoray.searchers.experiment import ExperimentConfig, expand

    base = {
        "epochs": 1,
        "supernet": {"space": "nb201", "init_channels": 4, "layers": 1},
        "data": {"dataset": "digits", "batch_size": 32, "augment": False, "limit_train": 64},
        "runtime": {"autotune": autotune},
    }
    exp = config_from_dict(ExperimentConfig, {"searchers": [searcher], "seeds": [0], "base": base})
    before = torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic, torch.get_num_threads()
    torch.backends.cudnn.benchmark = not tuned
    try:
        trial = object.__new__(SearchTrainable)  # setup alone, as the trial's worker runs it
        SearchTrainable.setup(trial, {"search": config_to_dict(expand(exp)[0]), "threads": 1})
        assert torch.backends.cudnn.benchmark is tuned
    finally:
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = before[:2]
        torch.set_num_threads(before[2])


def test_workers_that_do_not_fit_the_gpus_are_refused(ray_session, monkeypatch) -> None:
    """A GPU each for more workers than the local Ray has GPUs: one line, instead of workers that wait forever."""
    from evoray.distributed.cluster import require_cpus
    from evoray.runtime import ResourcesConfig

    with pytest.raises(ConfigError, match=r"a search trial: 1 worker\(s\) of resources.gpus=1 need 1 GPUs but this"):
        require_cpus(ResourcesConfig(gpus=1), 1, "a search trial")  # this Ray has no GPU
    monkeypatch.setattr(ray_session, "cluster_resources", lambda: {"CPU": 8.0, "GPU": 1.0})
    require_cpus(ResourcesConfig(gpus=0.5), 2, "distributed.num_actors=2")  # two halves share the one GPU
    with pytest.raises(ConfigError, match=r"num_actors=2: 2 worker\(s\) of resources.gpus=-1 need 2 GPUs but this"):
        require_cpus(ResourcesConfig(), 2, "distributed.num_actors=2")  # -1: one GPU each, as the cluster has GPUs


NICENESS_SCRIPT = textwrap.dedent(
    """
    import os
    import ray
    from evoray.distributed.cluster import ensure_ray

    ensure_ray(None)

    @ray.remote(num_cpus=1)
    class Probe:
        def niceness(self):
            return os.nice(0)

    print("DRIVER", os.nice(0), "ACTOR", ray.get(Probe.remote().niceness.remote()))
    """
)


def test_the_local_rays_workers_run_at_the_drivers_priority(tmp_path) -> None:
    """Ray starts its workers at niceness 15: beside any other busy process an actor then gets a few percent of a
    core. The local Ray evoray starts keeps them at the driver's."""
    proc = subprocess.run(
        [sys.executable, "-c", NICENESS_SCRIPT], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    driver, actor = proc.stdout.split()[1::2]
    assert actor == driver, proc.stdout


def test_a_cluster_address_is_probed_where_ray_would_connect(monkeypatch) -> None:
    """A ``ray://`` address without a port is Ray's client port; an IPv6 host loses its brackets; ``auto`` and
    ``local`` are left to Ray; an address nothing answers at is one line naming it and the reason."""
    from evoray.distributed import cluster

    probed: list[tuple[str, int]] = []

    def connect(address: tuple[str, int], timeout: float) -> Any:
        probed.append(address)
        if address[1] == 1:
            raise ConnectionRefusedError(111, "Connection refused")
        return open(__file__)  # a context manager that closes

    monkeypatch.setattr(cluster.socket, "create_connection", connect)
    for address in ("ray://head", "ray://head:2000/", "[::1]:6379", "10.0.0.2:6379", "auto", "local"):
        cluster.check_reachable(address)
    assert probed == [("head", 10001), ("head", 2000), ("::1", 6379), ("10.0.0.2", 6379)]
    with pytest.raises(ConfigError, match=r"^no Ray cluster answers at 'head:1' \(Connection refused\); start one"):
        cluster.check_reachable("head:1")


def test_a_worker_reserves_its_cpus_and_a_gpu_only_where_the_cluster_has_gpus(monkeypatch) -> None:
    """``gpus: -1`` is one GPU per worker on a cluster with GPUs, else none; a CPU worker reserves at least one CPU and
    runs at least one thread, a GPU worker may reserve none; workers that just fit are accepted, and a cluster
    (``resources.address``) is not checked."""
    from evoray.distributed import cluster
    from evoray.runtime import ResourcesConfig

    have = {"CPU": 2.0}
    monkeypatch.setattr(cluster.ray, "cluster_resources", lambda: have)
    assert cluster.placement(ResourcesConfig()) == {"num_cpus": 1.0, "num_gpus": 0.0}
    assert cluster.placement(ResourcesConfig(cpus=0)) == {"num_cpus": 1.0, "num_gpus": 0.0}
    assert cluster.placement(ResourcesConfig(cpus=0, gpus=0.5)) == {"num_cpus": 0.0, "num_gpus": 0.5}
    assert cluster.threads_of(ResourcesConfig(cpus=0)) == 1 and cluster.threads_of(ResourcesConfig(cpus=3)) == 3
    cluster.require_cpus(ResourcesConfig(), 2, "two workers")  # 2 CPUs of 2
    cluster.require_cpus(ResourcesConfig(cpus=4, address="auto"), 8, "a cluster's workers")
    have["GPU"] = 1.0
    assert cluster.placement(ResourcesConfig(cpus=0)) == {"num_cpus": 0.0, "num_gpus": 1.0}
    assert cluster.placement(ResourcesConfig(cpus=2)) == {"num_cpus": 2.0, "num_gpus": 1.0}


class _FakeActor:
    """Stands in for a supernet actor: its calls answer at once (``_get_all`` is the identity in these tests)."""

    def __init__(self, rank: int) -> None:
        self.rank = rank
        outer = self

        class Call:
            def __init__(self, fn: Any) -> None:
                self.remote = fn

        self.fitness = Call(lambda population, generation, keys: [100.0 * k + outer.rank for k in keys])
        self.train_generation = Call(lambda population, generation: {"train_loss": float(outer.rank)})


def _fake_fleet(monkeypatch, actors: int, max_restarts: int = 3) -> Any:
    from types import SimpleNamespace

    from evoray.distributed import fleet as fleet_mod

    monkeypatch.setattr(fleet_mod, "_get_all", list)
    fleet = object.__new__(fleet_mod.SupernetFleet)
    fleet.cfg = SimpleNamespace(distributed=SimpleNamespace(max_restarts=max_restarts))  # type: ignore[assignment]
    fleet.actors, fleet.restarts, fleet._state = [_FakeActor(r) for r in range(actors)], 0, {"net": {}}
    fleet._fetch_state = lambda: {"net": {}}  # type: ignore[method-assign]
    return fleet


def test_fitness_is_split_over_the_actors_by_individual_and_keyed_by_id(monkeypatch) -> None:
    fleet = _fake_fleet(monkeypatch, 3)
    population: list[Any] = [{}] * 5
    assert fleet.fitness(population, 0, [10, 11, 12, 13, 14]) == [1000.0, 1101.0, 1202.0, 1300.0, 1401.0]
    assert fleet.fitness(population[:2], 0, [7, 8]) == [700.0, 801.0]  # fewer individuals than actors
    assert fleet.train(population, 0) == {"train_loss": 1.0}  # the mean over the actors


def test_a_lost_actor_is_replaced_up_to_max_restarts_times(monkeypatch) -> None:
    """Each loss rebuilds the fleet and runs the work again; one loss more than ``distributed.max_restarts`` is a
    FleetError naming the count and the last error. A loss that Ray itself reports needs no probe of the actors."""
    from evoray.distributed import fleet as fleet_mod

    monkeypatch.setattr(fleet_mod.ray, "kill", lambda actor, no_restart: None)
    fleet = _fake_fleet(monkeypatch, 1, max_restarts=2)
    fleet._start = lambda: None  # type: ignore[method-assign]
    fleet.actors = []  # nothing to probe: only Ray's own error says the actor was lost
    failures = [2]

    def work() -> str:
        if failures[0]:
            failures[0] -= 1
            raise ray_exceptions().ObjectLostError("00" * 28, None, "")
        return "done"

    assert fleet._retrying(work) == "done" and fleet.restarts == 2
    fleet.restarts, failures[0] = 0, 3
    with pytest.raises(fleet_mod.FleetError, match=r"^supernet actors failed 3 times; last error: "):
        fleet._retrying(work)


def ray_exceptions() -> Any:
    import ray

    return ray.exceptions
