"""The dashboard's data layer without a browser: cells laid out edge by edge as their genotypes say, the static
drawing, run ids refused outside the roots, unreadable runs listed with their reasons, reads cached by file stamp,
Pareto fronts and genealogies."""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from typing import Any

import pytest

from bench.dashboard import synthetic_evolve, synthetic_train
from evoray.dashboard.cells import OUTPUT, layout_cell
from evoray.dashboard.figures import (
    ancestry,
    drawn_family,
    lineage,
    pareto_front,
    population_figure,
    trial_curves_figure,
)
from evoray.dashboard.store import OutsideRootsError, RunStore, counted, format_duration
from evoray.report import draw_genotype
from evoray.runs.archive import ARCHIVE
from evoray.spaces import parse_genotype
from evoray.spaces.published import published_genotype

NB201 = "|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|avg_pool_3x3~0|none~1|skip_connect~2|"
EDGE_ALL = (
    "Genotype(normal=[[('sep_conv_3x3', 0), ('skip_connect', 1)], [('sep_conv_3x3', 0), ('sep_conv_3x3', 1), "
    "('dil_conv_3x3', 2)], [('max_pool_3x3', 0), ('skip_connect', 1), ('sep_conv_5x5', 2), ('avg_pool_3x3', 3)], "
    "[('dil_conv_5x5', 0), ('skip_connect', 1), ('sep_conv_3x3', 2), ('skip_connect', 3), ('max_pool_3x3', 4)]], "
    "normal_concat=[2, 3, 4, 5])"
)


def _genotypes() -> list[tuple[str, object]]:
    return [
        ("DARTS_V2", published_genotype("DARTS_V2")),
        ("GDAS_V1", published_genotype("GDAS_V1")),
        ("nb201", parse_genotype(NB201)),
        ("edge_all", parse_genotype(EDGE_ALL)),
    ]


@pytest.mark.parametrize(("name", "genotype"), _genotypes(), ids=[n for n, _ in _genotypes()])
def test_cell_layout_draws_every_edge_of_the_genotype_once_with_its_label_on_it(name, genotype) -> None:
    n_in = 1 if genotype.is_nb201 else 2
    for ct, cell in genotype.cells:
        layout = layout_cell(cell, n_in)
        wanted = Counter((j, n_in + k, op) for k, node in enumerate(cell.nodes) for op, j in node if op != "none")
        assert Counter(layout.ops()) == wanted, (name, ct)
        xs = {n.state: n.x for n in layout.nodes}
        assert all(xs[s] == 0.0 for s in range(n_in)), "inputs sit in the first column"
        assert [xs[n_in + k] for k in range(len(cell.nodes))] == sorted(xs[n_in + k] for k in range(len(cell.nodes)))
        labels = []
        for e in layout.edges:
            src, dst = layout.node(e.source), layout.node(e.target)
            assert e.points[0] == (src.x, src.y) and e.points[-1] == (dst.x, dst.y), "edges run node to node"
            assert dst.x > src.x, "every edge points left to right"
            if e.op is None:
                continue
            assert e.label_at is not None, "a drawn op has a label"
            lx, ly = e.label_at
            on_run = any(
                y0 == y1 == ly and min(x0, x1) < lx < max(x0, x1) for (x0, y0), (x1, y1) in zip(e.points, e.points[1:])
            )
            assert on_run, f"{e.op} label at {e.label_at} is not on its own edge {e.points}"
            labels.append((lx, ly))
        assert len(set(labels)) == len(labels), "two labels at one place"
        concat = [e for e in layout.edges if e.op is None]
        if genotype.is_nb201:
            assert not concat and layout.node(n_in + len(cell.nodes) - 1).kind == "output"
        else:
            assert sorted(e.source for e in concat) == sorted(cell.concat)
            assert all(e.target == OUTPUT for e in concat)


def test_static_drawing_writes_png_and_svg_with_every_op(tmp_path) -> None:
    genotype = published_genotype("DARTS_V2")
    paths = draw_genotype(genotype, tmp_path)
    assert sorted(p.name for p in paths) == [
        "best_normal_cell.png", "best_normal_cell.svg", "best_reduce_cell.png", "best_reduce_cell.svg",
    ]  # fmt: skip
    svg = (tmp_path / "best_normal_cell.svg").read_text()
    for op, _ in (e for node in genotype.normal.nodes for e in node):
        assert f">{op}<" in svg, f"{op} is not written in the SVG"
    assert svg.count(">sep_conv_3x3<") == sum(op == "sep_conv_3x3" for node in genotype.normal.nodes for op, _ in node)


def test_run_ids_outside_the_roots_are_refused(tmp_path) -> None:
    root = tmp_path / "runs"
    synthetic_train(root / "train" / "t", epochs=2)
    outside = synthetic_train(tmp_path / "elsewhere" / "t", epochs=2)
    (root / "link").symlink_to(outside.parent, target_is_directory=True)
    store = RunStore([root])
    assert store.open("0/train/t").command == "train"
    for bad in (
        "0/../elsewhere/t",
        "0/train/../../elsewhere/t",
        "1/train/t",
        "x/train/t",
        "0//etc",
        "/etc",
        "0/link/t",
    ):
        with pytest.raises(OutsideRootsError):
            store.open(bad)
    assert store.run_id(root / "train" / "t") == "0/train/t"
    with pytest.raises(OutsideRootsError):
        store.run_id(outside)
    rows, problems = store.listing()  # the linked run is left out of the runs page, which still serves the rest
    assert [r.id for r in rows] == ["0/train/t"]
    assert len(problems) == 1 and "links outside the dashboard's roots" in problems[0]


def test_a_run_under_two_roots_is_listed_once(tmp_path) -> None:
    """Roots that overlap (``runs`` and ``runs/evolve``): a run under both is one run, one row of the runs page."""
    root = tmp_path / "runs"
    synthetic_evolve(root / "evolve" / "e", 2, 3)
    synthetic_train(root / "train" / "t", epochs=2)
    rows, problems = RunStore([root, root / "evolve"]).listing()
    assert sorted(r.id for r in rows) == ["0/evolve/e", "0/train/t"] and problems == []
    rows, _ = RunStore([root / "evolve", root]).listing()
    assert sorted(r.id for r in rows) == ["0/e", "1/train/t"]


def test_unreadable_runs_are_listed_with_their_reason_and_the_rest_serves(tmp_path) -> None:
    root = tmp_path / "runs"
    good = synthetic_evolve(root / "evolve" / "good", 2, 3)
    corrupt = synthetic_evolve(root / "evolve" / "corrupt", 2, 3)
    (corrupt / ARCHIVE).write_bytes(b"not parquet at all")
    missing = synthetic_evolve(root / "evolve" / "missing", 2, 3)
    (missing / ARCHIVE).unlink()
    legacy = root / "evolve" / "legacy"
    legacy.mkdir(parents=True)
    (legacy / "results.json").write_text("{}")
    newer = synthetic_train(root / "train" / "newer", epochs=2)
    manifest = json.loads((newer / "run.json").read_text())
    (newer / "run.json").write_text(json.dumps({**manifest, "format": 99}))
    store = RunStore([root, tmp_path / "no-such-root"])
    rows, problems = store.listing()
    assert problems == [f"runs root {str(tmp_path / 'no-such-root')!r} is not a directory"]
    by_name = {r.name: r for r in rows}

    def problem(name: str) -> str:
        text = by_name[name].problem
        assert text is not None, name
        return text

    assert by_name["good"].status == "done" and by_name["good"].problem is None
    assert by_name["corrupt"].status == "unreadable" and "not a readable Parquet file" in problem("corrupt")
    assert by_name["missing"].status == "unreadable" and "missing" in problem("missing")
    assert by_name["legacy"].status == "unreadable" and "older evoray" in problem("legacy")
    assert by_name["newer"].status == "unreadable" and "newer than this evoray" in problem("newer")
    best = json.loads((good / "best.json").read_text())
    assert by_name["good"].result == pytest.approx(best["fitness"])
    assert len(store.archive(store.open("0/evolve/good"))) == 6


def test_reads_are_cached_until_the_file_changes(tmp_path) -> None:
    run_dir = synthetic_evolve(tmp_path / "runs" / "e", 2, 3)
    store = RunStore([tmp_path / "runs"])
    run = store.open("0/e")
    first = store.archive(run)
    assert store.archive(run) is first
    version = store.version("0/e")
    assert store.version("0/e") == version
    st = (run_dir / ARCHIVE).stat()
    os.utime(run_dir / ARCHIVE, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert store.archive(run) is not first and store.archive(run) == first
    assert store.version("0/e") != version


def test_pareto_front_and_genealogy() -> None:
    # params (lower is better) and fitness (higher is better)
    assert pareto_front([1.0, 2.0, 1.5, 3.0, 2.5], [50.0, 60.0, 40.0, 70.0, 65.0]) == [0, 1, 4, 3]
    assert pareto_front([1.0, float("nan")], [1.0, 2.0]) == [0]
    rows = [
        {"generation": 0, "id": 0, "parents": [], "origin": "random", "fitness": 1.0},
        {"generation": 0, "id": 1, "parents": [], "origin": "random", "fitness": 2.0},
        {"generation": 0, "id": 2, "parents": [], "origin": "random", "fitness": 0.5},
        {"generation": 1, "id": 3, "parents": [1, 2], "origin": "crossover", "fitness": 2.0},
        {"generation": 1, "id": 4, "parents": [0, 1], "origin": "crossover", "fitness": 2.5},
        {"generation": 2, "id": 5, "parents": [4, 3], "origin": "crossover", "fitness": 3.0},
    ]
    assert [r["id"] for r in ancestry(rows, 5)] == [0, 1, 2, 3, 4, 5]
    assert [r["id"] for r in lineage(rows, 5)] == [5, 4, 0]
    family, total = drawn_family(rows, 5, limit=6)  # within the limit: the whole ancestry
    assert total == 6 and [r["id"] for r in family] == [0, 1, 2, 3, 4, 5]
    # over it: the first-parent line (5, 4, 0) and its members' parents (3; 1); 2, a parent of 3 only, is left out
    family, total = drawn_family(rows, 5, limit=3)
    assert total == 6 and [r["id"] for r in family] == [0, 1, 3, 4, 5]


def _tune_trial(folder, epochs: int, rows: list[dict]) -> None:
    folder.mkdir(parents=True)
    (folder / "params.json").write_text(json.dumps({"search": {"searcher": "darts", "seed": 0, "epochs": epochs}}))
    (folder / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_search_trials_read_status_and_epochs_as_run(tmp_path) -> None:
    """A trial its scheduler stopped early (Tune marks it done) is stopped; a trial restored from a checkpoint
    reports its later epochs again, and each epoch shows once; a finished search whose Tune storage lies elsewhere
    still lists its trials, from the run's own archive."""
    from bench.dashboard import synthetic_search
    from evoray.dashboard.trials import search_trials

    run_dir = synthetic_search(tmp_path / "runs" / "search" / "s", trials=2)
    store = RunStore([tmp_path / "runs"])
    elsewhere = search_trials(store, store.open("0/search/s"))
    assert [(t.name, t.searcher) for t in elsewhere] == [("trial-0", "darts"), ("trial-1", "gdas")]

    def row(epoch: int, acc: float, done: bool = False) -> dict:
        return {"epoch": epoch, "training_iteration": epoch, "valid_acc": acc, "done": done}

    _tune_trial(run_dir / "tune" / "asha", 4, [row(1, 50.0), row(2, 55.0, done=True)])
    _tune_trial(run_dir / "tune" / "restored", 3, [row(1, 50.0), row(2, 60.0), row(2, 61.0), row(3, 70.0, True)])
    trials = {t.name: t for t in search_trials(store, store.open("0/search/s"))}
    assert trials["asha"].status == "stopped" and trials["asha"].epoch == 2
    restored = trials["restored"]
    assert restored.status == "done" and [r["epoch"] for r in restored.rows] == [1, 2, 3]
    assert [r["valid_acc"] for r in restored.rows] == [50.0, 61.0, 70.0]


def test_a_search_runs_progress_counts_its_trials_epochs_as_they_report(tmp_path, monkeypatch) -> None:
    """A search's trials report to Tune's files, not to its manifest: the runs table counts every trial's last
    reported epoch (a restored trial's repeated epochs once, a line being written not at all) against the epochs
    planned at its start, and sees each new report."""
    from bench.dashboard import synthetic_search

    run_dir = synthetic_search(tmp_path / "runs" / "search" / "s", trials=2)
    manifest = json.loads((run_dir / "run.json").read_text())
    manifest.update(status="running", ended=None, result=None, epochs=7)
    (run_dir / "run.json").write_text(json.dumps(manifest))
    store = RunStore([tmp_path / "runs"])
    assert store.listing()[0][0].progress == "trial epochs 0/7"
    pad = "x" * 70_000  # a last line longer than the tail read: the whole file is read
    _tune_trial(run_dir / "tune" / "a", 4, [{"epoch": 1}, {"epoch": 2}, {"epoch": 1}, {"epoch": 2, "pad": pad}])
    _tune_trial(run_dir / "tune" / "b", 3, [{"epoch": 1}])
    with (run_dir / "tune" / "b" / "result.json").open("a") as f:
        f.write('{"epoch": 2, "valid_a')  # being written
    (row,) = store.listing()[0]
    assert (row.progress, row.headline) == ("trial epochs 3/7", "trial epochs 3/7")
    with (run_dir / "tune" / "b" / "result.json").open("a") as f:
        f.write('cc": 50.0}\n{"epoch": 3}\n')
    assert store.listing()[0][0].progress == "trial epochs 5/7"
    # finished with trials stopped early (ASHA): the count and the plan, not a run that looks unfinished
    manifest.update(status="done")
    (run_dir / "run.json").write_text(json.dumps(manifest))
    assert store.listing()[0][0].progress == "trial epochs 5 (7 planned; trials stopped early)"
    # Tune's files on a remote storage: nothing counted; in a folder that cannot be looked at: none seen, still listed
    shutil.rmtree(run_dir / "tune")
    manifest.update(tune="s3://bucket/s")
    (run_dir / "run.json").write_text(json.dumps(manifest))
    assert store.listing()[0][0].progress == ""
    locked = tmp_path / "locked" / "tune"
    locked.mkdir(parents=True)
    manifest.update(tune=str(locked))
    (run_dir / "run.json").write_text(json.dumps(manifest))
    real_is_dir = type(locked).is_dir

    def refused(path, *args, **kwargs):  # as a folder without permission answers
        if "locked" in str(path):
            raise PermissionError(13, "Permission denied", str(path))
        return real_is_dir(path, *args, **kwargs)

    monkeypatch.setattr(type(locked), "is_dir", refused)
    (row,) = store.listing()[0]
    assert row.name == "s" and row.progress.startswith("trial epochs 0 ")


def test_the_population_rings_the_individual_shown_below_and_keeps_the_readers_zoom(tmp_path) -> None:
    """The ring marks the individual the page details, by id, in the generation drawn; one without a finite fitness
    (failed) gets no ring; a redraw keeps the reader's zoom (``uirevision``)."""
    rows = [
        {"generation": 0, "id": 0, "origin": "random", "params_m": 1.0, "fitness": 50.0},
        {"generation": 1, "id": 0, "origin": "elite", "params_m": 1.0, "fitness": 50.0},
        {"generation": 1, "id": 1, "origin": "crossover", "params_m": 2.0, "fitness": 60.0},
        {"generation": 1, "id": 2, "origin": "mutation", "params_m": 3.0, "fitness": float("nan")},
    ]
    fig = population_figure(rows, 1, shown=0)  # kept from generation 0 as an elite: ringed in generation 1
    (ring,) = [t for t in fig.data if (t.name or "").startswith("shown below")]
    assert (ring.name, list(ring.x), list(ring.y)) == ("shown below (id 0)", [1.0], [50.0])
    assert fig.layout.uirevision == "population"
    assert not [t for t in population_figure(rows, 1, shown=2).data if (t.name or "").startswith("shown below")]
    assert not [t for t in population_figure(rows, 1, shown=7).data if (t.name or "").startswith("shown below")]


def test_a_trials_grid_point_is_what_the_grid_varies_not_the_searchers_own_settings(tmp_path) -> None:
    from bench.dashboard import synthetic_search
    from evoray.dashboard.trials import search_trials

    run_dir = synthetic_search(tmp_path / "runs" / "search" / "s", trials=2)
    paper: dict[str, dict[str, Any]] = {
        "darts": {"optim": {"nesterov": False}, "darts": {"order": 1}},
        "gdas": {"optim": {"nesterov": True}},
    }
    for i, (searcher, lr) in enumerate([("darts", 0.1), ("darts", 0.2), ("gdas", 0.1), ("gdas", 0.2)]):
        folder = run_dir / "tune" / f"t{i}"
        folder.mkdir(parents=True)
        params = {"searcher": searcher, "seed": i, **paper[searcher], "arch": {"lr": lr}}
        (folder / "params.json").write_text(json.dumps({"search": params}))
    store = RunStore([tmp_path / "runs"])
    grids = {t.name: t.grid for t in search_trials(store, store.open("0/search/s")) if len(t.name) == 2}
    assert grids == {"t0": "arch.lr=0.1", "t1": "arch.lr=0.2", "t2": "arch.lr=0.1", "t3": "arch.lr=0.2"}


def test_compare_overlays_train_and_search_runs_epoch_for_epoch(tmp_path) -> None:
    """The compare page numbers every run's first epoch 1: a search trial's (Tune's results), a train run's, and a
    train run written when train numbered its first epoch 0."""
    from bench.dashboard import synthetic_search
    from evoray.dashboard.pages.compare import _curves
    from evoray.runs.curves import write_curves
    from evoray.runs.reader import CURVES

    root = tmp_path / "runs"
    synthetic_train(root / "train" / "new", epochs=3)
    old = synthetic_train(root / "train" / "old", epochs=3)
    write_curves(old / CURVES, [{"epoch": e, "train_top1": 10.0 + e, "train_loss": 2.0} for e in range(3)])
    search_dir = synthetic_search(root / "search" / "s", trials=1)
    tune = {"timestamp": 1764900000, "pid": 4242, "iterations_since_restore": 1, "time_total_s": 1.5}
    rows = [{"epoch": e, "training_iteration": e, "valid_acc": 50.0 + e, **tune} for e in (1, 2, 3)]
    _tune_trial(search_dir / "tune" / "trial-0", 3, rows)
    store = RunStore([root])
    for run_id in ("0/train/new", "0/train/old", "0/search/s"):
        steps = [x for _, x, _ in _curves(store, store.open(run_id))["score"]]
        assert steps == [[1.0, 2.0, 3.0]], (run_id, steps)
    # the metrics offered are the search's own and Tune's clock, not Tune's bookkeeping
    assert set(_curves(store, store.open("0/search/s"))) == {"score", "valid_acc", "time_total_s"}


def test_evolve_page_best_passes_over_failed_individuals(tmp_path) -> None:
    """While best.json is not written, the best of the newest generation is the fittest scored individual: one whose
    fitness is NaN (a failed evaluation) or missing never is."""
    from evoray.dashboard.pages.evolve import _Data, best_key

    rows: list[dict[str, Any]] = [
        {"generation": 0, "id": 7, "fitness": float("nan")},
        {"generation": 0, "id": 8, "fitness": 91.0},
        {"generation": 0, "id": 9, "fitness": None},
        {"generation": 0, "id": 10, "fitness": 60.0},
    ]
    run_dir = synthetic_evolve(tmp_path / "runs" / "e", 1, 3)
    (run_dir / "best.json").unlink()
    store = RunStore([tmp_path / "runs"])
    assert best_key(store, store.open("0/e"), _Data(rows)) == (0, 8)


def test_every_op_of_every_space_has_a_colour_of_its_own() -> None:
    from evoray.dashboard.cells import op_colour
    from evoray.spaces import SPACES

    ops = {op for name in SPACES.names() for ct in SPACES.get(name).cell_types
           for op in SPACES.get(name).edge_ops(ct, 0)}  # fmt: skip
    assert {"none", "noise", "dil_conv_5x5", "nor_conv_1x1"} <= ops
    colours = {op: op_colour(op) for op in ops}
    assert len(set(colours.values())) == len(ops), colours
    assert op_colour("made_up_op") not in colours.values() and op_colour("made_up_op") == op_colour("made_up_op")


def test_alpha_figures_name_each_edges_own_ops() -> None:
    """RobustDARTS S1 gives every edge its own two candidates: the heat map and the op distributions name the op of
    each entry by its edge, not by the first edge's list."""
    import numpy as np

    from evoray.dashboard.alphas import edge_names, op_names
    from evoray.dashboard.figures import alphas_figure, op_distribution_figure
    from evoray.spaces import get_space

    space = get_space("rdarts-s1")
    E, K = space.alpha_shape("normal")
    names = op_names(space, "normal", E, K)
    assert names == [list(space.edge_ops("normal", e)) for e in range(E)]
    assert len({tuple(n) for n in names}) > 1  # the space's edges differ
    probs = np.full((E, K), 1.0 / K)
    heat = alphas_figure(probs, edge_names(space, E), names, "normal").data[0]
    assert [list(row) for row in heat.customdata] == names and list(heat.x) == [f"slot {k}" for k in range(K)]
    dist = op_distribution_figure([1, 2], [probs, probs], edge_names(space, E), names, "normal")
    assert [t.name for t in dist.data] == [op for edge in names for op in edge]
    darts = get_space("darts")
    shared = op_names(darts, "normal", *darts.alpha_shape("normal"))
    assert list(alphas_figure(np.ones((14, 8)) / 8, edge_names(darts, 14), shared, "n").data[0].x) == shared[0]


def test_a_running_runs_status_follows_its_process_between_writes(tmp_path) -> None:
    """The runs table caches each run's row with its files, but a running run's process can end without a write:
    its status turns interrupted (its headline too), its duration stops at its manifest's last write, and the trials
    of an interrupted search are stopped, not running."""
    import socket
    import subprocess
    import sys
    import time

    from bench.dashboard import synthetic_search
    from evoray.dashboard.trials import search_trials

    root = tmp_path / "runs"
    run_dir = synthetic_evolve(root / "evolve" / "e", 1, 3, finish=False)
    search_dir = synthetic_search(root / "search" / "s", trials=1)
    _tune_trial(search_dir / "tune" / "t", 4, [{"epoch": 1, "training_iteration": 1, "valid_acc": 50.0}])
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        for d in (run_dir, search_dir):
            manifest = json.loads((d / "run.json").read_text())
            manifest.update(status="running", ended=None, result=None, progress=None, pid=proc.pid,
                            host=socket.gethostname())  # fmt: skip
            (d / "run.json").write_text(json.dumps(manifest))
        store = RunStore([root])
        assert {r.name: r.status for r in store.listing()[0]} == {"e": "running", "s": "running"}
        trials = {t.name: t.status for t in search_trials(store, store.open("0/search/s"))}
        assert trials["t"] == "running"
        versions = {name: store.version(f"0/{name}") for name in ("evolve/e", "search/s")}
        assert versions == {name: store.version(f"0/{name}") for name in versions}, "no change, no redraw"
    finally:
        proc.kill()
        proc.wait()
    # a run page redraws (its header says interrupted) although no file changed
    assert all(store.version(f"0/{name}") != v for name, v in versions.items())
    rows = {r.name: r for r in store.listing()[0]}
    assert rows["e"].status == "interrupted" and rows["e"].headline == "interrupted"
    assert rows["s"].status == "interrupted"
    duration = rows["e"].duration_s
    time.sleep(1.1)
    assert {r.name: r for r in store.listing()[0]}["e"].duration_s == duration
    trials = {t.name: t.status for t in search_trials(store, store.open("0/search/s"))}
    assert trials["t"] == "stopped"


def test_a_trial_that_failed_mid_search_shows_its_error_while_the_search_runs(tmp_path) -> None:
    """A trial whose Tune folder holds ``error.txt`` (Tune writes it when the trial fails) is an error at once, not
    running until the search ends; one that Tune retried and that has reported since is running again."""
    import os
    import socket
    import subprocess
    import sys

    from bench.dashboard import synthetic_search
    from evoray.dashboard.trials import search_trials

    root = tmp_path / "runs"
    search_dir = synthetic_search(root / "search" / "s", trials=1)
    for name in ("failed", "retried", "fine"):
        _tune_trial(search_dir / "tune" / name, 4, [{"epoch": 1, "training_iteration": 1, "valid_acc": 50.0}])
    for name, age in (("failed", 0), ("retried", 10)):  # retried: its results written after the error
        error = search_dir / "tune" / name / "error.txt"
        error.write_text("Failure # 1 (occurred at ...)\nRuntimeError: boom\n")
        st = (search_dir / "tune" / name / "result.json").stat()
        os.utime(error, ns=(st.st_atime_ns, st.st_mtime_ns - age * 1_000_000_000))
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        manifest = json.loads((search_dir / "run.json").read_text())
        manifest.update(status="running", ended=None, result=None, progress=None, pid=proc.pid,
                        host=socket.gethostname())  # fmt: skip
        (search_dir / "run.json").write_text(json.dumps(manifest))
        store = RunStore([root])
        trials = {t.name: t.status for t in search_trials(store, store.open("0/search/s"))}
    finally:
        proc.kill()
        proc.wait()
    assert (trials["failed"], trials["retried"], trials["fine"]) == ("error", "running", "running")


def _tune_state(tune_dir, statuses: dict[str, str], session: str) -> None:
    """Tune's experiment state of the session started at ``session``, as Tune saves it (each trial's state a JSON
    text inside the JSON)."""
    trials = [[json.dumps({"relative_logdir": n, "status": s, "trial_id": n}), "{}"] for n, s in statuses.items()]
    state = {"trial_data": trials, "runner_data": {}, "stats": {"start_time": 0.0}}
    (tune_dir / f"experiment_state-{session}.json").write_text(json.dumps(state))


def test_a_trial_tune_marks_failed_shows_its_error_while_the_search_runs(tmp_path) -> None:
    """Tune's experiment state decides which trials failed for good, whatever the times of their files (Tune's sync
    to its storage copies every file anew, in no set order): a trial it marks ERROR is an error while the search runs
    on; one it retries from its checkpoint (its error.txt kept) is running; a new state redraws the run's pages."""
    import socket

    from bench.dashboard import synthetic_search
    from evoray.dashboard.trials import search_trials

    root = tmp_path / "runs"
    search_dir = synthetic_search(root / "search" / "s", trials=1)
    tune_dir = search_dir / "tune"
    for name in ("failed", "retried", "fine"):
        _tune_trial(tune_dir / name, 4, [{"epoch": 1, "training_iteration": 1, "valid_acc": 50.0}])
    for name, age in (("failed", 1), ("retried", -1)):  # failed: copied before its results; retried: after
        error = tune_dir / name / "error.txt"
        error.write_text("Failure # 1 (occurred at ...)\nRuntimeError: boom\n")
        st = (tune_dir / name / "result.json").stat()
        os.utime(error, ns=(st.st_atime_ns, st.st_mtime_ns - age * 1_000_000))
    _tune_state(tune_dir, {"failed": "RUNNING", "retried": "RUNNING", "fine": "RUNNING"}, "2026-01-01_00-00-00")
    manifest = json.loads((search_dir / "run.json").read_text())
    manifest.update(status="running", ended=None, result=None, progress=None, pid=os.getpid(),
                    host=socket.gethostname())  # fmt: skip
    (search_dir / "run.json").write_text(json.dumps(manifest))
    store = RunStore([root])
    version = store.version("0/search/s")
    _tune_state(tune_dir, {"failed": "ERROR", "retried": "RUNNING", "fine": "RUNNING"}, "2026-01-01_00-10-00")
    assert store.version("0/search/s") != version
    trials = {t.name: t.status for t in search_trials(store, store.open("0/search/s"))}
    assert (trials["failed"], trials["retried"], trials["fine"]) == ("error", "running", "running")


def test_best_search_trial_is_chosen_on_the_held_out_split() -> None:
    """The trial a search page and a comparison show as the best: the best accuracy on the held-out split; a trial
    validated on the test set, or one whose accuracy is NaN, never."""
    from evoray.dashboard.trials import Trial, best_trial

    def trial(name: str, best: float | None, valid_on: str) -> Trial:
        return Trial(name, "darts", 0, "-", "done", 4, best, best, valid_on, "", None, "darts")

    trials = [trial("nan", float("nan"), "split"), trial("test", 97.0, "test"), trial("split", 80.0, "split"),
              trial("worse", 70.0, "split"), trial("none", None, "split")]  # fmt: skip
    best = best_trial(trials)
    assert best is not None and best.name == "split"
    first = best_trial(trials[:2])
    assert first is not None and first.name == "nan"  # no trial scored on the split: the first
    assert best_trial([]) is None


def test_search_page_and_headline_choose_the_same_trial() -> None:
    """The dashboard's best trial is the run's headline (printed summary, ``run.json``, the archive's fitness): the
    last epoch's validation accuracy, not the best epoch's (XNAS' last epoch after the final wipeout falls below)."""
    from evoray.dashboard.trials import Trial, best_trial
    from evoray.searchers.results import best_trial as headline

    accs = {"xnas": (17.6, 52.2), "darts": (45.0, 45.5), "gdas": (40.0, 48.0)}  # (last epoch, best epoch)
    trials = [Trial(n, n, 0, "-", "done", 50, a, b, "split", "", None, "nb201") for n, (a, b) in accs.items()]
    summary = [{"searcher": n, "valid_acc": last, "valid_acc_best": best, "valid_on": "split"}
               for n, (last, best) in accs.items()]  # fmt: skip
    chosen, top = best_trial(trials), headline(summary)
    assert chosen is not None and top is not None
    assert chosen.name == top["searcher"] == "darts"


def test_an_empty_reliability_bin_draws_no_bar() -> None:
    """A confidence bin no example fell in has no accuracy: the diagram leaves it empty instead of drawing a bar of
    accuracy 0 (which reads as a badly calibrated bin)."""
    from evoray.dashboard.figures import reliability_figure

    edges = [i / 4 for i in range(5)]
    report = {
        "reliability": {"lo": edges[:-1], "hi": edges[1:], "accuracy": [None, 0.3, None, 0.9], "share": [0, 0.2, 0, 1]},
        "test": {"ece": 4.0},
    }
    bars = [t for t in reliability_figure([("member", report)]).data if t.type == "bar"]
    assert len(bars) == 1 and list(bars[0].y) == [None, 0.3, None, 0.9]


def test_a_search_whose_tune_storage_lies_elsewhere_is_followed_there(tmp_path) -> None:
    """A search whose experiment config put Tune's files outside the run (run.json's "tune"): its trials and epochs
    are read there, and a new epoch written there changes the page's version (the page redraws)."""
    import shutil

    from bench.dashboard import synthetic_search
    from evoray.dashboard.trials import search_trials

    run_dir = synthetic_search(tmp_path / "runs" / "search" / "s", trials=2)
    storage = tmp_path / "storage" / "s"
    _tune_trial(storage, 3, [{"epoch": 1, "training_iteration": 1, "valid_acc": 40.0, "done": False}])
    if (run_dir / "tune").exists():
        shutil.rmtree(run_dir / "tune")
    manifest = json.loads((run_dir / "run.json").read_text())
    (run_dir / "run.json").write_text(json.dumps({**manifest, "tune": str(storage.parent)}))
    store = RunStore([tmp_path / "runs"])
    trials = {t.name: t for t in search_trials(store, store.open("0/search/s"))}
    assert trials["s"].epoch == 1
    before = store.version("0/search/s")
    with (storage / "result.json").open("a") as f:
        f.write(json.dumps({"epoch": 2, "training_iteration": 2, "valid_acc": 45.0, "done": False}) + "\n")
    assert store.version("0/search/s") != before
    assert {t.name: t for t in search_trials(store, store.open("0/search/s"))}["s"].epoch == 2


def test_the_entropy_panel_marks_the_uniform_choice_and_keeps_a_readable_span() -> None:
    """A search whose alphas barely move (entropy within 1e-5 of ln 5) draws a flat line at the mark of the uniform
    choice (ln K, K read from the reported op distributions), on an axis at least a tenth of ln K tall; entropies
    that fall far below it stay in view."""
    import math

    ops = [[0.2] * 5 for _ in range(6)]
    flat = [{"epoch": e, "entropy_cell": math.log(5) - 1e-5 * e, "ops_cell": ops} for e in (1, 2, 3)]
    fig = trial_curves_figure({"gdas": flat})
    (mark,) = [s for s in fig.layout.shapes if s.y0 == s.y1]
    assert mark.y0 == pytest.approx(math.log(5))
    (axis,) = [a for a in (fig.layout[k] for k in fig.layout if k.startswith("yaxis")) if a.range is not None]
    low, high = axis.range
    assert high > math.log(5) and high - low >= 0.1 * math.log(5)
    falling = [{"epoch": e, "entropy_normal": v, "ops_normal": [[0.125] * 8]} for e, v in ((1, 2.07), (2, 0.3))]
    fig = trial_curves_figure({"xnas": falling})
    (axis,) = [a for a in (fig.layout[k] for k in fig.layout if k.startswith("yaxis")) if a.range is not None]
    assert axis.range[0] < 0.3 and axis.range[1] > math.log(8)


def test_headlines_keep_three_significant_digits_of_small_parameter_counts() -> None:
    from evoray.dashboard.store import headline_text

    assert (
        headline_text("train", {"test_top1": 22.841, "params_m": 0.00177}, {}) == "test top-1 22.84%, 0.00177 M params"
    )
    assert headline_text("evolve", {"fitness": 95.828, "params_m": 3.63421}, {}) == "fitness 95.83, 3.634 M params"


def test_an_ensemble_report_of_another_layout_is_one_line_on_its_page(tmp_path) -> None:
    """A report.json that lacks what a committee report holds (a null weight or ECE, a curve point without its NLL)
    is a one-line problem naming the run on its page, not a callback that fails and leaves the page loading; a
    whole report beside it still draws."""
    from bench.dashboard import synthetic_ensemble
    from evoray.dashboard.pages.ensemble import draw_report, draw_tables

    edges = [0.0, 0.5, 1.0]
    reliability = {"lo": edges[:-1], "hi": edges[1:], "accuracy": [0.4, 0.9], "share": [0.5, 0.5]}
    member = {"name": "a", "kind": "genotype", "params_m": 0.1, "test": {"accuracy": 90.0, "nll": 0.3, "ece": 2.0},
              "valid": {"nll": 0.4}, "reliability": reliability}  # fmt: skip
    committee = {"name": "logit_sum", "combiner": "logit_sum", "size": 2, "members": {"a": 0.5, "b": 0.5},
                 "test": {"accuracy": 91.0, "nll": 0.25, "ece": 1.5}, "valid": {"nll": 0.35},
                 "curve": [{"size": 1, "accuracy": 90.0, "nll": 0.3}, {"size": 2, "accuracy": 91.0, "nll": 0.25}],
                 "reliability": reliability}  # fmt: skip
    whole = {"members": [member], "committees": [committee], "summary": {"best_member": member}}
    broken = {
        "null-weight": {**whole, "committees": [{**committee, "members": {"a": None}}]},
        "null-ece": {**whole, "summary": {"best_member": {**member, "test": {"ece": None}}}},
        "torn-curve": {**whole, "committees": [{**committee, "curve": [{"size": 1, "accuracy": 90.0}]}]},
    }
    root = tmp_path / "runs"
    for name, report in {"whole": whole, **broken}.items():
        run = synthetic_ensemble(root / name)
        (run / "report.json").write_text(json.dumps(report))
    store = RunStore([root])
    *_, problem = draw_report(store, "0/whole")
    assert problem is None and draw_tables(store, "0/whole", "test")[0] is not None
    for name in broken:
        *_, problem = draw_report(store, f"0/{name}")
        text = problem.children
        assert (
            text.startswith(f"unreadable: report.json of run '{name}' is not a committee report") and "\n" not in text
        )
        draw_tables(store, f"0/{name}", "test")  # the tables it can show, or none; never a failed callback
    assert draw_tables(store, "0/null-weight", "test") == (None, None)


def test_compare_tells_apart_runs_that_share_a_name(tmp_path) -> None:
    """Two runs of one name (one config run twice, or a run that ``--overwrite`` moved aside keeps its name): the
    comparison's legend and genotype headings add each run's id, so no curve or cell is taken for the other run's;
    a run whose name is its own keeps just its name."""
    from evoray.dashboard.pages.compare import draw

    root = tmp_path / "runs"
    synthetic_evolve(root / "a" / "same", 2, 3, seed=0)
    synthetic_evolve(root / "b" / "same", 2, 3, seed=1)
    synthetic_evolve(root / "c" / "other", 2, 3, seed=2)
    figure, columns, problems = draw(RunStore([root]), ["0/a/same", "0/b/same", "0/c/other"], "score")
    assert [t.name for t in figure.data] == ["same (0/a/same)", "same (0/b/same)", "other"] and problems == []
    assert [c.children[0].children for c in columns] == ["evolve same (0/a/same)", "evolve same (0/b/same)",
                                                         "evolve other"]  # fmt: skip


def test_compare_says_which_runs_curves_cannot_be_read(tmp_path) -> None:
    """A compared run whose curves file is damaged is one line above the curves, naming the run; the other runs'
    curves and every run's cells still show."""
    from evoray.dashboard.pages.compare import _metric_options, draw
    from evoray.runs.reader import CURVES

    root = tmp_path / "runs"
    synthetic_train(root / "good", epochs=3)
    (synthetic_train(root / "torn", epochs=3) / CURVES).write_bytes(b"PAR1 torn")
    store = RunStore([root])
    figure, columns, problems = draw(store, ["0/good", "0/torn"], "score")
    assert [t.name for t in figure.data] == ["good"] and len(columns) == 2
    (problem,) = [p.children for p in problems]
    assert problem.startswith("train torn: curves unreadable: curves ") and "not a readable Parquet file" in problem
    assert "\n" not in problem
    assert "train_loss" in {o["value"] for o in _metric_options(store, [store.open("0/good"), store.open("0/torn")])}


def _manifest(run_dir, **fields: Any) -> None:
    manifest = json.loads((run_dir / "run.json").read_text())
    (run_dir / "run.json").write_text(json.dumps({**manifest, **fields}))


def test_the_runs_table_lists_newest_first_with_each_commands_headline(tmp_path) -> None:
    """Runs newest first by their start; the headline number of a search is its best validation accuracy, of an
    ensemble its best committee's accuracy; the gain of the committee over its best member keeps its sign; a
    duration over an hour reads in hours and minutes."""
    from bench.dashboard import synthetic_ensemble, synthetic_search

    root = tmp_path / "runs"
    train = synthetic_train(root / "train" / "t", epochs=2)
    _manifest(train, started="2026-01-01T10:00:00+00:00", ended="2026-01-01T11:30:05+00:00")
    search = synthetic_search(root / "search" / "s", trials=1)
    _manifest(
        search,
        started="2026-01-03T10:00:00+00:00",
        result={"trials": 1, "failed": 0, "best_valid_acc": 77.5, "valid_acc": 70.0, "searcher": "darts"},
    )
    ensemble = synthetic_ensemble(root / "ensemble" / "n")
    _manifest(ensemble, started="2026-01-02T10:00:00+00:00")
    rows, problems = RunStore([root]).listing()
    assert [r.name for r in rows] == ["s", "n", "t"] and problems == []
    t, n, s = rows[2], rows[1], rows[0]
    assert t.duration_s == 5405.0 and format_duration(t.duration_s) == "1h 30m"
    assert (format_duration(59.4), format_duration(61), format_duration(None)) == ("59s", "1m 01s", "")
    assert s.result == 77.5 and s.headline == "best valid 77.50% (darts), 1 trial, 0 failed"
    assert n.result == 91.5 and "+1.50 vs member DARTS_V2" in n.headline
    assert (counted(0, "trial"), counted(1, "trial"), counted(2, "trial")) == ("0 trials", "1 trial", "2 trials")


def test_a_runs_row_shows_no_number_it_cannot_stand_behind(tmp_path) -> None:
    """An unreadable run (a corrupt archive, a newer layout) shows no result and no seed; a NaN fitness is no
    result; a run that ended without an end time has no duration, and a clock that went back gives zero, not a
    negative duration."""
    root = tmp_path / "runs"
    corrupt = synthetic_evolve(root / "corrupt", 1, 3)
    (corrupt / ARCHIVE).write_bytes(b"not parquet at all")
    newer = synthetic_train(root / "newer", epochs=2)
    _manifest(newer, format=99)
    nan = synthetic_evolve(root / "nan", 1, 3)
    _manifest(nan, result={"fitness": float("nan"), "params_m": 1.0})
    failed = synthetic_train(root / "failed", epochs=2)
    _manifest(failed, status="failed", ended=None, error="boom")
    skew = synthetic_train(root / "skew", epochs=2)
    _manifest(skew, started="2026-01-01T10:00:05+00:00", ended="2026-01-01T10:00:00+00:00")
    rows = {r.name: r for r in RunStore([root]).listing()[0]}
    assert (rows["corrupt"].status, rows["corrupt"].result) == ("unreadable", None)
    assert (rows["newer"].status, rows["newer"].result, rows["newer"].seed) == ("unreadable", None, None)
    assert rows["nan"].status == "done" and rows["nan"].result is None
    assert rows["failed"].duration_s is None and rows["failed"].headline == "failed: boom"
    assert rows["skew"].duration_s == 0.0


def test_a_running_evolve_shows_its_generation_and_waits_for_its_archive(tmp_path) -> None:
    """A running evolve's progress is its manifest's generation of generations; before its first generation ends it
    has no archive, and is running, not unreadable; an archive without its alphas column is an older layout."""
    import pyarrow.parquet as pq

    root = tmp_path / "runs"
    running = synthetic_evolve(root / "running", 2, 3, finish=False)
    _manifest(running, progress={"generation": 1, "of": 5})
    (running / ARCHIVE).unlink()
    older = synthetic_evolve(root / "older", 1, 3)
    pq.write_table(pq.read_table(older / ARCHIVE).drop_columns(["alphas"]), older / ARCHIVE)
    rows = {r.name: r for r in RunStore([root]).listing()[0]}
    assert (rows["running"].status, rows["running"].progress, rows["running"].problem) == (
        "running", "generation 1/5", None,
    )  # fmt: skip
    assert rows["older"].status == "unreadable" and rows["older"].problem == (
        f"{ARCHIVE} lacks columns ['alphas'] (an older evoray?)"
    )


def test_a_root_that_is_itself_a_run_lists_and_opens_it(tmp_path) -> None:
    run_dir = synthetic_train(tmp_path / "t", epochs=2)
    store = RunStore([run_dir])
    rows, problems = store.listing()
    assert [r.id for r in rows] == ["0/."] and problems == []
    assert store.open(rows[0].id).path == run_dir.resolve()


def test_a_finished_search_whose_trials_ran_every_epoch_shows_them_done(tmp_path) -> None:
    """Every trial's last epoch summed against the epochs planned: a finished search short of the plan stopped
    trials early, one that reached it did not."""
    from evoray.dashboard.store import search_progress

    files = []
    for name, last in (("a", 2), ("b", 3)):
        path = tmp_path / name / "result.json"
        path.parent.mkdir()
        path.write_text("".join(json.dumps({"epoch": e}) + "\n" for e in range(1, last + 1)))
        files.append(path)
    assert search_progress({"status": "done", "epochs": 5}, files) == "trial epochs 5/5"
    assert search_progress({"status": "done", "epochs": 6}, files) == "trial epochs 5 (6 planned; trials stopped early)"


def test_a_running_searchs_trials_show_their_last_epoch_and_what_they_were_measured_on(tmp_path) -> None:
    """While a search runs, a trial shows its last epoch's accuracy and genotype, its best finite accuracy (a NaN
    epoch never the best), its supernet's space and the set it is validated on (the test set when it trains on the
    whole training set); a trial with no report yet is pending."""
    import socket

    from bench.dashboard import synthetic_search
    from evoray.dashboard.trials import search_trials

    search_dir = synthetic_search(tmp_path / "runs" / "search" / "s", trials=1)
    tune = search_dir / "tune"
    accs = [float("nan"), 50.0, 70.0, 60.0]
    for name, portion, rows in (
        ("live", 0.5, [{"epoch": e, "valid_acc": a, "genotype": f"G{e}"} for e, a in enumerate(accs, 1)]),
        ("full", 1.0, []),
    ):
        (tune / name).mkdir(parents=True)
        params = {"searcher": "darts", "seed": 3, "epochs": 6, "data": {"train_portion": portion},
                  "supernet": {"space": "nb201"}}  # fmt: skip
        (tune / name / "params.json").write_text(json.dumps({"search": params}))
        (tune / name / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    _manifest(search_dir, status="running", ended=None, result=None, pid=os.getpid(), host=socket.gethostname())
    store = RunStore([tmp_path / "runs"])
    trials = {t.name: t for t in search_trials(store, store.open("0/search/s"))}
    live, full = trials["live"], trials["full"]
    assert (live.status, live.epoch, live.genotype, live.space, live.valid_on) == ("running", 4, "G4", "nb201", "split")
    assert (live.valid_acc, live.best) == (60.0, 70.0)
    assert (live.table_row()["valid_acc"], live.table_row()["best"]) == (60.0, 70.0)
    assert (full.status, full.epoch, full.valid_on) == ("pending", None, "test")
    assert (live.grid, full.grid) == ("data.train_portion=0.5", "data.train_portion=1.0")


def test_a_finished_searchs_summary_decides_its_trials(tmp_path) -> None:
    """Once the search has ended its summary.json says each trial's status, seed and the set it was validated on
    (whatever Tune's leftover files say); an entry without a trial folder is no trial; with nothing varied between
    trials of one searcher, no grid point."""
    from bench.dashboard import synthetic_search
    from evoray.dashboard.trials import search_trials

    search_dir = synthetic_search(tmp_path / "runs" / "search" / "s", trials=1)
    folder = search_dir / "tune" / "a"
    folder.mkdir(parents=True)
    (folder / "params.json").write_text(json.dumps({"search": {"searcher": "gdas", "data": {"train_portion": 0.5}}}))
    (folder / "result.json").write_text(json.dumps({"epoch": 1, "valid_acc": 40.0}) + "\n")
    (folder / "error.txt").write_text("Failure # 1\nRuntimeError: boom\n")  # retried, then finished
    st = (folder / "result.json").stat()
    os.utime(folder / "error.txt", ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    summary = [
        {"path": str(folder), "searcher": "gdas", "status": "done", "valid_on": "test", "seed": 7},
        {"path": "/elsewhere/b", "searcher": "darts", "status": "done", "valid_on": "split", "seed": 9},
        {"searcher": "darts", "status": "error"},
    ]
    (search_dir / "summary.json").write_text(json.dumps(summary))
    store = RunStore([tmp_path / "runs"])
    trials = {t.name: t for t in search_trials(store, store.open("0/search/s"))}
    assert sorted(trials) == ["a", "b", "trial-0"]
    assert (trials["a"].status, trials["a"].valid_on, trials["a"].seed) == ("done", "test", 7)
    assert (trials["b"].searcher, trials["b"].seed) == ("darts", 9)
    assert {t.grid for t in trials.values()} == {"-"}


def test_a_failed_trial_is_never_the_best() -> None:
    from evoray.dashboard.trials import Trial, best_trial

    failed = Trial("failed", "darts", 0, "-", "error", 3, 99.0, 99.0, "split", "", None, "darts")
    done = Trial("done", "darts", 1, "-", "done", 4, 60.0, 60.0, "split", "", None, "darts")
    best = best_trial([failed, done])
    assert best is not None and best.name == "done"


def test_alphas_show_as_each_edges_softmax_named_source_to_target() -> None:
    """Each row of alphas is its own softmax (a wiped-out op, -inf, at 0; large alphas without overflow); DARTS'
    rows are the edges into node 2 from states 0 and 1, then into node 3 from 0, 1 and 2; a shape the space does
    not have is named by index."""
    import math

    import numpy as np

    from evoray.dashboard.alphas import edge_names, op_names, softmax
    from evoray.spaces import get_space

    probs = softmax(np.array([[0.0, math.log(3.0)], [-math.inf, 5.0], [1000.0, 1000.0 + math.log(3.0)]]))
    assert probs.ravel().tolist() == pytest.approx([0.25, 0.75, 0.0, 1.0, 0.25, 0.75])
    darts = get_space("darts")
    assert edge_names(darts, 14)[:5] == ["0→2", "1→2", "0→3", "1→3", "2→3"]
    assert edge_names(darts, 3) == ["edge 0", "edge 1", "edge 2"]
    assert op_names(darts, "normal", 3, 8) == [[f"op {k}" for k in range(8)]] * 3


def test_a_trials_op_distributions_per_epoch_are_reported_or_derived_from_its_genotypes() -> None:
    """Reported distributions (``ops_<cell>``) count from the epochs that report them; without any, each epoch's
    genotype gives a one-hot choice per edge at its op, and rows without an epoch number count from 1."""
    import numpy as np

    from evoray.dashboard.alphas import epoch_distributions
    from evoray.spaces import get_space

    nb201 = get_space("nb201")
    uniform = [[0.2] * 5 for _ in range(6)]
    rows: list[dict[str, Any]] = [
        {"epoch": 1, "valid_acc": 10.0},
        {"epoch": 2, "ops_cell": uniform},
        {"epoch": 3, "ops_cell": uniform},
    ]
    epochs, dists, source = epoch_distributions(rows, nb201)
    assert (epochs, source, len(dists["cell"])) == ([2, 3], "reported", 2)
    epochs, dists, source = epoch_distributions([{"genotype": NB201}, {"genotype": NB201}], nb201)
    assert (epochs, source) == ([1, 2], "derived")
    # edges (1,0) (2,0) (2,1) (3,0) (3,1) (3,2); ops none, skip_connect, nor_conv_1x1, nor_conv_3x3, avg_pool_3x3
    one_hot = np.zeros((6, 5))
    for edge, op in ((0, 3), (1, 1), (2, 2), (3, 4), (4, 0), (5, 1)):
        one_hot[edge, op] = 1.0
    assert dists["cell"][0].tolist() == one_hot.tolist()


def test_a_cells_arrows_end_at_their_targets_and_its_inputs_are_named_in_order() -> None:
    """Each arrowhead stops at its target node's rim, coming from the edge's last bend; a DARTS cell's first input
    is c_{k-2}, its second c_{k-1}; ``none`` edges are drawn on request; the output's bus runs below every lane."""
    from evoray.dashboard.cells import RADIUS, arrow_tail

    genotype = published_genotype("DARTS_V2")
    layout = layout_cell(genotype.normal, 2)
    assert [(n.state, n.label) for n in layout.nodes[:2]] == [(0, "c_{k-2}"), (1, "c_{k-1}")]
    for e in layout.edges:
        tail, head = arrow_tail(e)
        target = layout.node(e.target)
        assert tail == e.points[-2]
        assert ((head[0] - target.x) ** 2 + (head[1] - target.y) ** 2) ** 0.5 == pytest.approx(RADIUS)
    lanes = [y for e in layout.edges if e.op is not None for _, y in e.points]
    bus = {y for e in layout.edges if e.op is None for _, y in e.points[1:-1]}
    assert bus and max(bus) < min(lanes)
    nb201 = parse_genotype(NB201).cell("cell")
    assert (1, 3, "none") not in layout_cell(nb201, 1).ops() and (1, 3, "none") in layout_cell(nb201, 1, True).ops()


def test_fitness_per_generation_is_best_mean_std_and_worst_of_the_scored_individuals() -> None:
    from evoray.dashboard.figures import fitness_figure, generation_stats

    rows: list[dict[str, Any]] = [
        {"generation": 0, "fitness": 1.0},
        {"generation": 0, "fitness": 3.0},
        {"generation": 0, "fitness": float("nan")},
        {"generation": 0, "fitness": None},
        {"generation": 1, "fitness": 4.0},
        {"generation": 2, "fitness": float("nan")},
    ]
    stats = generation_stats(rows)
    assert stats[:2] == [
        {"generation": 0, "best": 3.0, "mean": 2.0, "std": 1.0, "worst": 1.0, "n": 2},
        {"generation": 1, "best": 4.0, "mean": 4.0, "std": 0.0, "worst": 4.0, "n": 1},
    ]
    assert stats[2]["n"] == 0 and all(v != v for k, v in stats[2].items() if k not in ("generation", "n"))
    traces = {t.name: list(t.y) for t in fitness_figure(stats[:2]).data if t.name in ("mean", "best")}
    assert traces == {"mean": [2.0, 4.0], "best": [3.0, 4.0]}


def test_the_pareto_front_keeps_of_equal_params_the_fittest_only() -> None:
    assert pareto_front([1.0, 1.0, 2.0], [5.0, 6.0, 6.0]) == [1]
    assert pareto_front([2.0, 1.0, 1.0], [7.0, 6.0, 5.0]) == [1, 0]


def test_a_generations_population_stands_apart_from_the_earlier_ones() -> None:
    rows = [
        {"generation": 0, "id": 0, "origin": "random", "params_m": 1.0, "fitness": 50.0},
        {"generation": 0, "id": 1, "origin": "random", "params_m": 2.0, "fitness": 40.0},
        {"generation": 1, "id": 2, "origin": "mutation", "params_m": 3.0, "fitness": 60.0},
        {"generation": 1, "id": 3, "origin": "crossover", "params_m": 4.0, "fitness": 55.0},
        {"generation": 2, "id": 4, "origin": "mutation", "params_m": 5.0, "fitness": 70.0},
    ]
    fig = population_figure(rows, 1)
    (earlier,) = [t for t in fig.data if t.name == "earlier generations"]
    (now,) = [t for t in fig.data if t.name == "generation 1"]
    assert (list(earlier.x), list(now.x)) == ([1.0, 2.0], [3.0, 4.0])
    assert fig.layout.title.text == "generation 1: 2 individuals, 1 on the Pareto front"


def test_a_genealogy_draws_a_survivor_where_it_was_made_and_arrows_from_parent_to_child() -> None:
    """Regularized evolution keeps an individual (its id) for generations: its ancestry and its first-parent line
    place it in the generation that made it; every arrow runs from a parent's generation to its child's."""
    from evoray.dashboard.figures import genealogy_figure

    rows = [
        {"generation": 0, "id": 0, "parents": [], "origin": "random", "fitness": 1.0},
        {"generation": 0, "id": 1, "parents": [], "origin": "random", "fitness": 2.0},
        {"generation": 1, "id": 2, "parents": [0], "origin": "mutation", "fitness": 3.0},
        {"generation": 1, "id": 1, "parents": [], "origin": "random", "fitness": 2.0},
        {"generation": 2, "id": 2, "parents": [0], "origin": "mutation", "fitness": 3.0},
        {"generation": 2, "id": 3, "parents": [2, 1], "origin": "crossover", "fitness": 4.0},
    ]
    assert [(r["generation"], r["id"]) for r in ancestry(rows, 3)] == [(0, 0), (0, 1), (1, 2), (2, 3)]
    assert [(r["generation"], r["id"]) for r in lineage(rows, 3)] == [(2, 3), (1, 2), (0, 0)]
    family, total = drawn_family(rows, 3, limit=2)
    assert total == 4 and [(r["generation"], r["id"]) for r in family] == [(0, 0), (0, 1), (1, 2), (2, 3)]
    arrows = genealogy_figure(family, 3).layout.annotations
    assert sorted((a.ax, a.x) for a in arrows) == [(0.0, 1.0), (0.0, 2.0), (1.0, 2.0)]


def test_ensemble_figures_hold_accuracy_then_nll_and_bars_at_their_bins_centres() -> None:
    from evoray.dashboard.figures import committee_size_figure, reliability_figure

    committee = {"name": "logit_sum", "curve": [{"size": 1, "accuracy": 90.0, "nll": 0.3},
                                                {"size": 2, "accuracy": 91.0, "nll": 0.25}]}  # fmt: skip
    accuracy, nll = committee_size_figure([committee]).data
    assert (list(accuracy.x), list(accuracy.y), list(nll.y)) == ([1, 2], [90.0, 91.0], [0.3, 0.25])
    assert (accuracy.xaxis, nll.xaxis) == ("x", "x2")
    report = {"reliability": {"lo": [0.0, 0.5], "hi": [0.5, 1.0], "accuracy": [0.4, 0.9], "share": [0.5, 0.5]},
              "test": {"ece": 2.0}}  # fmt: skip
    (bars,) = [t for t in reliability_figure([("a", report)]).data if t.type == "bar"]
    assert (list(bars.x), bars.width) == ([0.25, 0.75], 0.5)


def test_step_axes_tick_every_whole_step_or_every_few() -> None:
    from evoray.dashboard.figures import step_ticks

    assert step_ticks(range(26)) == {"tick0": 0, "dtick": 3}
    assert step_ticks([1, 2, 3]) == {"tick0": 0, "dtick": 1}


def test_trial_curves_draw_what_each_trial_reports_and_op_shares_per_op() -> None:
    """A trial that does not report a metric gets no line for it; each op's stacked area holds that op's share of
    its edge, epoch by epoch."""
    import numpy as np

    from evoray.dashboard.figures import op_distribution_figure

    curves = {
        "gdas": [{"epoch": e, "valid_acc": 40.0 + e, "tau": 10.0 - e} for e in (1, 2)],
        "darts": [{"epoch": e, "valid_acc": 50.0 + e} for e in (1, 2)],
    }
    lines = [(t.name, t.hovertemplate.split(":")[0]) for t in trial_curves_figure(curves).data]
    assert sorted(lines) == [("darts", "darts valid_acc"), ("gdas", "gdas tau"), ("gdas", "gdas valid_acc")]
    probs = [np.array([[0.1, 0.2, 0.7]]), np.array([[0.3, 0.3, 0.4]])]
    fig = op_distribution_figure([1, 2], probs, ["0→1"], [["a", "b", "c"]], "cell")
    assert {t.name: list(t.y) for t in fig.data} == {"a": [0.1, 0.3], "b": [0.2, 0.3], "c": [0.7, 0.4]}
