"""The dashboard in a real Chromium (Debian's ``chromium``, driven by Playwright) over tiny runs of every command,
checked against the runs' own files: the runs table, an evolve run, a search run's trials, a train run, a committee
run, a comparison, refused and unreadable runs, a page that follows a running evolve without a reload; and the
TensorBoard scalars of every run as ``tensorboard --logdir`` lists them.

Without Chromium or Playwright the browser tests skip, except under CI (``CI=true``), where they fail. Screenshots
of every page go to ``<pytest basetemp>/dashboard-screenshots``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from evoray.commands.ensemble import ensemble
from evoray.commands.evolve import evolve
from evoray.commands.search import search
from evoray.commands.train import train
from evoray.config import config_from_dict, load_config
from evoray.ensemble.config import EnsembleConfig
from evoray.evolution.config import EvolveConfig
from evoray.runs import list_runs
from evoray.runs.archive import ARCHIVE, read_archive
from evoray.searchers.experiment import ExperimentConfig
from evoray.spaces import parse_genotype
from evoray.training import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("EVORAY_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking"]
QUIET = lambda _: None  # noqa: E731
EVOLVE = [
    "evolution.population=4", "evolution.generations=3", "evolution.tournament=2", "supernet.init_channels=4",
    "supernet.layers=3", "data.limit_train=192", "data.batch_size=32", "distributed.num_actors=0",
    "resources.cpus=1", "runtime.threads=1",
]  # fmt: skip
SEARCH = {
    "name": "tiny-search",
    "searchers": ["darts", "xnas"],
    "seeds": [0],
    "base": {
        "epochs": 2,
        "supernet": {"space": "darts", "init_channels": 4, "layers": 3},
        "data": {"dataset": "digits", "batch_size": 32, "augment": False, "limit_train": 128},
        "arch": {"lr": 3e-3},
    },
}
TRAIN = ["optim.epochs=2", "model.init_channels=4", "model.layers=2", "profile.repeats=1", "profile.warmup=1",
         "data.limit_train=240"]  # fmt: skip
ENSEMBLE = [
    "data.limit_train=240", "data.batch_size=32", "members.published=[DARTS_V2,GDAS_V1]", "members.latest_run=false",
    "members.latest_supernet=false", "train.model.init_channels=4", "train.model.layers=2",
    "train.model.auxiliary=false", "train.optim.epochs=1", "shift.severities=[1,3]", "executor=local",
    "committees=[{combiner: logit_sum, size: 2}, {combiner: caruana, size: 3}]",
]  # fmt: skip


def _files(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory, ray_session) -> Path:
    """One tiny run of every command, plus runs the dashboard must show as unreadable."""
    root = tmp_path_factory.mktemp("dashboard") / "runs"
    evolve(
        load_config(EvolveConfig, ROOT / "configs/evolve-default.yaml", EVOLVE), root / "evolve/tiny-evolve", log=QUIET
    )
    search(config_from_dict(ExperimentConfig, SEARCH), root / "search/tiny-search", log=QUIET)
    train(load_config(TrainConfig, ROOT / "configs/train-default.yaml", TRAIN), root / "train/tiny-train", log=QUIET)
    ensemble(load_config(EnsembleConfig, ROOT / "ensembles/default.yaml", ENSEMBLE), root / "ensemble/tiny-ensemble",
             spec_name="tiny", log=QUIET)  # fmt: skip
    corrupt = root / "bad" / "corrupt-archive"
    shutil.copytree(root / "evolve/tiny-evolve", corrupt, ignore=shutil.ignore_patterns("checkpoints", "*.pt"))
    (corrupt / ARCHIVE).write_bytes(b"PAR1 torn")
    manifest = json.loads((corrupt / "run.json").read_text())
    (corrupt / "run.json").write_text(json.dumps({**manifest, "name": corrupt.name}))
    legacy = root / "bad" / "legacy"
    legacy.mkdir(parents=True)
    (legacy / "best.json").write_text("{}")
    return root


@pytest.fixture(scope="module")
def live_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("live") / "runs"


@pytest.fixture(scope="module")
def snapshot(runs_root) -> dict[str, tuple[int, int]]:
    return _files(runs_root)


@pytest.fixture(scope="module")
def server(runs_root, live_root, snapshot) -> Iterator[str]:
    """The dashboard over the runs, a live folder and a root that does not exist, in a thread on a free port."""
    from werkzeug.serving import make_server

    from evoray.dashboard.app import create_app

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    app = create_app([runs_root, live_root, runs_root.parent / "no-such-root"])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    httpd = make_server("127.0.0.1", port, app.server, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}"
    httpd.shutdown()


@pytest.fixture(scope="module")
def browser():
    reason = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        reason = "Playwright is not installed (pip install -e '.[test]')"
    if reason is None and not Path(CHROMIUM).is_file():
        reason = f"no Chromium at {CHROMIUM} (apt-get install chromium, or set EVORAY_CHROMIUM)"
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the dashboard's browser tests need a browser under CI: {reason}")
        pytest.skip(reason)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = tmp_path_factory.getbasetemp() / "dashboard-screenshots"
    folder.mkdir(exist_ok=True)
    return folder


def _open_page(browser, base_url: str):
    """A browser page on ``base_url``; the test fails if the page raised a script error or a callback failed on the
    server (Dash answers it with a 500 and leaves its part of the page as it was, which no other check may see)."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, base_url=base_url)
    context.set_default_timeout(30_000)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda err: errors.append(str(err)))
    pg.on("response", lambda r: errors.append(f"{r.status} from {r.url}") if r.status >= 500 else None)
    yield pg
    context.close()
    assert not errors, errors


@pytest.fixture
def page(browser, server):
    yield from _open_page(browser, server)


def _rows(pg, count: int | None = None) -> Any:
    """The grid's rows, once there are ``count`` of them."""
    if count is not None:
        pg.wait_for_function(f"document.querySelectorAll('.ag-center-cols-container .ag-row').length == {count}")
    return pg.locator(".ag-center-cols-container .ag-row")


def _cell_ops(pg, scope: str, cell: str) -> Counter[str]:
    """The op labels drawn in a page's cell graph (the annotations written on the edges)."""
    locator = pg.locator(f"{scope} [data-cell={cell}] .annotation-text", has_text=re.compile(r"\w"))
    locator.first.wait_for()
    return Counter(t.strip() for t in locator.all_text_contents() if t.strip())


def _genotype_ops(genotype: str, cell: str) -> Counter[str]:
    return Counter(op for node in parse_genotype(genotype).cell(cell).nodes for op, _ in node if op != "none")


def _traces(pg, graph: str) -> dict[str, dict[str, list]]:
    """The named traces a page's Plotly figure draws (its ``_fullData``, decoded as drawn): name -> x and y."""
    pg.locator(f"{graph} .js-plotly-plot .main-svg").first.wait_for()
    data = pg.evaluate(
        "sel => document.querySelector(sel + ' .js-plotly-plot')._fullData"
        ".map(t => ({name: t.name, x: Array.from(t.x || []), y: Array.from(t.y || [])}))",
        graph,
    )
    return {t["name"]: t for t in data if t["name"]}


def test_runs_page_lists_every_run_and_the_unreadable_ones(page, runs_root, shots) -> None:
    page.goto("/")
    expected = list_runs(runs_root)
    page.get_by_text(f"{len(expected)} runs (").wait_for()
    assert _rows(page, len(expected)).count() == len(expected) == 6
    for name in ("tiny-evolve", "tiny-search", "tiny-train", "tiny-ensemble"):
        assert page.get_by_role("link", name=name, exact=True).count() == 1
    # each run's result column is the headline of its own run.json, to two decimals
    keys = {"evolve": "fitness", "search": "best_valid_acc", "train": "test_top1"}
    for command, key in {**keys, "ensemble": "best_committee_accuracy"}.items():
        manifest = json.loads((runs_root / command / f"tiny-{command}" / "run.json").read_text())
        cell = page.locator(f'.ag-center-cols-container .ag-row[row-id="0/{command}/tiny-{command}"] [col-id=result]')
        text = cell.inner_text().strip()  # two decimals
        assert re.fullmatch(r"\d+\.\d\d", text) and abs(float(text) - manifest["result"][key]) <= 0.005 + 1e-9, text
    # a search's progress: its trials' epochs (2 trials of 2 epochs), read from Tune's files
    assert json.loads((runs_root / "search/tiny-search/run.json").read_text())["epochs"] == 4
    progress = page.locator('.ag-center-cols-container .ag-row[row-id="0/search/tiny-search"] [col-id=progress]')
    assert progress.inner_text().strip() == "trial epochs 4/4"
    unreadable = page.locator("#runs-unreadable").inner_text()
    assert "bad/corrupt-archive" in unreadable and "not a readable Parquet file" in unreadable
    assert "bad/legacy" in unreadable and "older evoray" in unreadable
    assert "no-such-root" in page.locator("#runs-problems").inner_text()
    page.screenshot(path=str(shots / "runs.png"), full_page=True)
    page.locator("#runs-filter").fill("tiny-search")
    _rows(page, 1)
    assert page.locator(".ag-pinned-left-cols-container .ag-row").first.inner_text().strip() == "tiny-search"
    page.locator("#runs-count", has_text=f"1 of {len(expected)} runs shown (").wait_for()


def test_evolve_page_shows_the_runs_best_and_its_cells(page, runs_root, shots) -> None:
    run = runs_root / "evolve/tiny-evolve"
    best = json.loads((run / "best.json").read_text())
    archive = read_archive(run)
    last = max(r["generation"] for r in archive)
    page.goto("/")
    page.get_by_role("link", name="tiny-evolve", exact=True).click()  # a click on a run opens its page
    page.wait_for_url(re.compile(r"/run\?id=0/evolve/tiny-evolve"))
    n_last = sum(r["generation"] == last for r in archive)
    page.get_by_text(f"generation {last}: {n_last} individuals").wait_for()
    focus = page.locator("#evo-focus-text").inner_text()
    assert f"best individual {best['id']} of generation {best['generation']}: fitness {best['fitness']:.3f}" in focus
    for cell in ("normal", "reduce"):
        assert _cell_ops(page, "#evo-cells", cell) == _genotype_ops(best["genotype"], cell)
    assert page.locator("#evo-alphas .js-plotly-plot").count() == 2  # one heat map per cell type
    # the fitness figure: per generation the best and the mean of that generation's individuals, from the archive
    traces = _traces(page, "#evo-fitness")
    gens = sorted({r["generation"] for r in archive})
    scores = {g: [r["fitness"] for r in archive if r["generation"] == g] for g in gens}
    assert traces["best"]["x"] == gens
    assert traces["best"]["y"] == pytest.approx([max(scores[g]) for g in gens])
    assert traces["mean"]["y"] == pytest.approx([sum(scores[g]) / len(scores[g]) for g in gens])
    assert "genealogy of individual" in page.locator("#evo-genealogy").inner_text()
    # the population's legend names the colours: the origins of the generation shown (the last)
    legend = page.locator("#evo-population .legendtext").all_text_contents()
    origins = {str(r["origin"]) for r in archive if r["generation"] == last}
    ids = [r["id"] for r in archive if r["generation"] == last]
    ringed = {f"shown below (id {best['id']})"} if best["id"] in ids else set()  # the best, ringed where it is
    assert set(legend) == origins | {"earlier generations", "Pareto front"} | ringed, legend
    page.screenshot(path=str(shots / "evolve.png"), full_page=True)
    # a clicked individual is the one detailed below, and the one ringed
    box = page.locator("#evo-population .scatterlayer .trace").nth(1).locator(".point").first.bounding_box()
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)  # Plotly's drag layer takes it
    page.locator("#evo-focus-text", has_text=re.compile(r"^individual \d+ of generation")).wait_for()
    found = re.search(r"individual (\d+)", page.locator("#evo-focus-text").inner_text())
    assert found is not None
    clicked = int(found.group(1))
    assert clicked in ids
    page.locator("#evo-population .legendtext", has_text=f"shown below (id {clicked})").wait_for()
    ring = _traces(page, "#evo-population")[f"shown below (id {clicked})"]
    row = next(r for r in archive if r["generation"] == last and r["id"] == clicked)
    assert (ring["x"], ring["y"]) == ([pytest.approx(row["params_m"])], [pytest.approx(row["fitness"])])


def test_search_page_lists_the_trials_and_draws_a_clicked_trial(page, runs_root, shots) -> None:
    run = runs_root / "search/tiny-search"
    summary = json.loads((run / "summary.json").read_text())
    page.goto("/run?id=0/search/tiny-search")
    page.get_by_text(f"{len(summary)} trials;").wait_for()
    assert _rows(page, len(summary)).count() == len(summary) == 2
    # a click on a trial other than the one shown first (the best; tiny trials often tie) shows that trial
    page.locator("#search-focus-text b").first.wait_for()
    first = page.locator("#search-focus-text b").first.inner_text().strip()
    assert first in {Path(s["path"]).name for s in summary}, first
    other = next(s for s in summary if Path(s["path"]).name != first)
    trial = Path(other["path"]).name
    page.locator(f'.ag-center-cols-container .ag-row[row-id="{trial}"] [col-id="searcher"]').click()
    page.wait_for_function(
        "t => document.querySelector('#search-focus-text') && "
        "document.querySelector('#search-focus-text').innerText.startsWith(t)",
        arg=trial,
    )
    assert f"{other['searcher']}, seed {other['seed']}" in page.locator("#search-focus-text").inner_text()
    for cell in ("normal", "reduce"):
        assert _cell_ops(page, "#search-cells", cell) == _genotype_ops(other["genotype"], cell)
    assert "as the trial reported them each epoch" in page.locator("#search-ops").inner_text()
    assert page.locator("#search-ops .js-plotly-plot").count() == 2
    legend = [t or "" for t in page.locator("#search-curves .legendtext").all_text_contents()]
    assert sorted(legend) == sorted(f"{s['searcher']}-s{s['seed']} #{Path(s['path']).name.rsplit('_', 1)[-1]}"
                                    for s in summary)  # one entry per ticked trial  # fmt: skip
    titles = page.locator("#search-curves .annotation-text").all_text_contents()
    assert "loss (solid train, dotted valid)" in titles, titles
    page.screenshot(path=str(shots / "search.png"), full_page=True)


def test_train_and_ensemble_pages_show_their_results(page, runs_root, shots) -> None:
    results = json.loads((runs_root / "train/tiny-train/results.json").read_text())
    page.goto("/run?id=0/train/tiny-train")
    table = page.locator("#train-results-table")
    table.wait_for()
    assert f"{results['test_top1']:.3f}" in table.inner_text()
    assert _cell_ops(page, "#train-cells", "normal") == _genotype_ops(results["genotype"], "normal")
    page.screenshot(path=str(shots / "train.png"), full_page=True)

    report = json.loads((runs_root / "ensemble/tiny-ensemble/report.json").read_text())
    page.goto("/run?id=0/ensemble/tiny-ensemble")
    members = page.locator("#ens-members-table tbody tr")
    members.first.wait_for()
    assert members.count() == len(report["members"])
    committees = page.locator("#ens-committees-table tbody tr")
    assert committees.count() == len(report["committees"])
    first = report["committees"][0]
    assert f"{first['test']['accuracy']:.3f}" in committees.first.inner_text()
    assert f"{first['test']['oracle_nll']:.3f}" in committees.first.inner_text()
    # the best member and committee are the run's own (lowest validation NLL), said so, with that NLL shown
    summary = report["summary"]
    page.locator("#ens-choice", has_text="lowest validation NLL").wait_for()
    choice = page.locator("#ens-choice").inner_text()
    assert (
        f"best member {summary['best_member']['name']} and best committee {summary['best_committee']['name']}" in choice
    )
    assert min(report["members"], key=lambda m: m["valid"]["nll"])["name"] == summary["best_member"]["name"]
    assert (
        f"{summary['best_member']['valid']['nll']:.3f}"
        in members.nth([m["name"] for m in report["members"]].index(summary["best_member"]["name"])).inner_text()
    )
    page.locator("#ens-reliability .js-plotly-plot").wait_for()
    page.screenshot(path=str(shots / "ensemble.png"), full_page=True)


def test_compare_two_runs_ticked_on_the_runs_page(page, runs_root, shots) -> None:
    page.goto("/")
    _rows(page, 6)
    for rid in ("0/evolve/tiny-evolve", "0/search/tiny-search"):
        page.locator(f'.ag-pinned-left-cols-container .ag-row[row-id="{rid}"] input[type=checkbox]').check()
    link = page.locator("#runs-compare")
    page.wait_for_function("document.querySelector('#runs-compare').innerText == 'compare 2 runs'")
    link.click()
    page.wait_for_url(re.compile(r"/compare\?ids="))
    page.get_by_text("Comparing 2 runs").wait_for()
    page.locator("#cmp-curves .legendtext").first.wait_for()
    legend = [t or "" for t in page.locator("#cmp-curves .legendtext").all_text_contents()]
    assert any(t == "tiny-evolve" for t in legend) and any(t.startswith("tiny-search ") for t in legend)
    # the curves are the runs' scores: the evolve run's best fitness per generation, each trial's validation accuracy
    # per epoch as its result.json reports them
    traces = _traces(page, "#cmp-curves")
    archive = read_archive(runs_root / "evolve/tiny-evolve")
    gens = sorted({r["generation"] for r in archive})
    best = [max(r["fitness"] for r in archive if r["generation"] == g) for g in gens]
    assert traces["tiny-evolve"]["x"] == gens and traces["tiny-evolve"]["y"] == pytest.approx(best)
    trials = [d for d in (runs_root / "search/tiny-search/tune").iterdir() if (d / "result.json").is_file()]
    assert len(trials) == 2
    for trial in trials:
        rows = [json.loads(line) for line in (trial / "result.json").read_text().splitlines()]
        suffix = "#" + trial.name.rsplit("_", 1)[-1]
        label = next(t for t in traces if t.startswith("tiny-search ") and t.endswith(suffix))
        assert traces[label]["y"] == pytest.approx([r["valid_acc"] for r in rows])
    assert page.locator("#cmp-genotypes .column").count() == 2
    page.locator("#cmp-genotypes [data-cell=normal] .annotation-text", has_text=re.compile(r"\w")).first.wait_for()
    page.screenshot(path=str(shots / "compare.png"), full_page=True)


def test_paths_outside_the_roots_are_refused_and_bad_runs_explained(page) -> None:
    for rid in ("0/../..", "0/evolve/../../../", "7/evolve", "0%2F..%2F.."):
        page.goto(f"/run?id={rid}")
        page.locator("#problem").wait_for()
        assert page.locator("#problem").inner_text().startswith("refused:")
    page.goto("/run?id=0/bad/legacy")
    assert "older evoray" in page.locator("#problem").inner_text()
    page.goto("/run?id=0/bad/corrupt-archive")
    page.locator("#problem", has_text="is not a readable Parquet file").wait_for()
    page.goto("/run?id=0/evolve/tiny-evolve")  # and the rest still serves
    page.get_by_text("on the Pareto front").wait_for()


def test_pages_never_write_into_runs(runs_root, snapshot, page) -> None:
    page.goto("/")
    page.get_by_text("runs (").wait_for()
    assert _files(runs_root) == snapshot


def test_tensorboard_lists_every_runs_scalars(runs_root) -> None:
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

    expected = {
        "evolve/tiny-evolve": "fitness/best",
        "search/tiny-search": "ray/tune/valid_acc",
        "train/tiny-train": "result/test_top1",
        "ensemble/tiny-ensemble": "committee/caruana/test_accuracy",
    }
    for rel, tag in expected.items():
        mux = EventMultiplexer().AddRunsFromDirectory(str(runs_root / rel))  # what tensorboard --logdir <run> does
        mux.Reload()
        scalars = {t for run in mux.Runs().values() for t in run.get("scalars", [])}
        assert tag in scalars, (rel, sorted(scalars)[:10])
    search_runs = EventMultiplexer().AddRunsFromDirectory(str(runs_root / "search/tiny-search")).Reload().Runs()
    assert len(search_runs) == 2  # one per trial
    evolve_best = EventMultiplexer().AddRunsFromDirectory(str(runs_root / "evolve/tiny-evolve"))
    evolve_best.Reload()
    (run_name,) = evolve_best.Runs()
    events = evolve_best.Scalars(run_name, "fitness/best")
    archive = read_archive(runs_root / "evolve/tiny-evolve")
    assert len(events) == len({r["generation"] for r in archive})
    last = max(r["generation"] for r in archive)
    assert events[-1].value == pytest.approx(max(r["fitness"] for r in archive if r["generation"] == last))


def test_a_running_evolve_updates_its_page_without_a_reload(page, live_root, shots) -> None:
    out = live_root / "evolve" / "live"
    sets = [*EVOLVE, "evolution.generations=8", "data.limit_train=384"]
    cmd = [sys.executable, "-m", "evoray.evolve", "--out", str(out)] + [a for s in sets for a in ("--set", s)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not (out / ARCHIVE).is_file():  # the first generation is in
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.time() < deadline, "the live evolve wrote no generation in 120 s"
            time.sleep(0.3)
        page.goto("/run?id=1/evolve/live")
        title = page.locator("#evo-population .gtitle", has_text=re.compile(r"generation \d+: \d+ individuals"))
        title.wait_for()
        found = re.search(r"generation (\d+):", title.text_content() or "")
        assert found is not None, title.text_content()
        seen = int(found.group(1))
        page.evaluate("window.__no_reload = true")
        page.wait_for_function(
            "g => { const t = document.querySelector('#evo-population .gtitle');"
            " const m = t && t.textContent.match(/generation (\\d+):/); return m && +m[1] > g; }",
            arg=seen,
            timeout=120_000,
        )
        assert page.evaluate("window.__no_reload === true"), "the page reloaded"
        page.screenshot(path=str(shots / "live-evolve.png"), full_page=True)
        assert proc.wait(timeout=180) == 0, proc.stderr.read() if proc.stderr else ""
        page.locator("#run-status", has_text="done").wait_for(timeout=30_000)  # the status follows too
        assert page.evaluate("window.__no_reload === true")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# -- pages over synthetic runs: runs in progress, interrupted, damaged, and searches validated on the test set -------


def _serve(roots: list[Path]):
    """The dashboard over ``roots`` in a thread on a free port: (its address, the server to shut down)."""
    from werkzeug.serving import make_server

    from evoray.dashboard.app import create_app

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    httpd = make_server("127.0.0.1", port, create_app(roots).server, threaded=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{port}", httpd


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("synthetic") / "runs"


@pytest.fixture(scope="module")
def synth_server(synth_root):
    synth_root.mkdir(parents=True, exist_ok=True)
    address, httpd = _serve([synth_root])
    yield address
    httpd.shutdown()


@pytest.fixture
def synth_page(browser, synth_server):
    yield from _open_page(browser, synth_server)


def _set_manifest(run: Path, **fields: Any) -> None:
    manifest = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**manifest, **fields}))


def test_a_run_whose_process_ends_turns_interrupted_without_a_reload(synth_page, synth_root) -> None:
    """The runs table looks at a running run's process on every refresh, not only when its manifest changes: a run
    killed after the page first listed it is shown interrupted, its headline too."""
    from bench.dashboard import synthetic_evolve

    run = synthetic_evolve(synth_root / "evolve" / "killed", 2, 4, finish=False)
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        _set_manifest(run, pid=proc.pid, host=socket.gethostname(), status="running", progress=None)
        synth_page.goto("/")
        status = synth_page.locator('.ag-center-cols-container .ag-row[row-id="0/evolve/killed"] [col-id="status"]')
        status.get_by_text("running", exact=True).wait_for()
    finally:
        proc.kill()
        proc.wait()
    status.get_by_text("interrupted", exact=True).wait_for(timeout=20_000)
    headline = synth_page.locator('.ag-center-cols-container .ag-row[row-id="0/evolve/killed"] [col-id="headline"]')
    assert headline.inner_text().strip() == "interrupted"


def test_a_run_page_turns_interrupted_when_its_process_ends_without_a_reload(synth_page, synth_root) -> None:
    """No file changes when a run's process is killed: the page's header still follows its status."""
    from bench.dashboard import synthetic_evolve

    run = synthetic_evolve(synth_root / "evolve" / "killed-open", 2, 4, finish=False)
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        _set_manifest(run, pid=proc.pid, host=socket.gethostname(), status="running", progress=None)
        synth_page.goto("/run?id=0/evolve/killed-open")
        synth_page.locator("#run-status", has_text="running").wait_for()
    finally:
        proc.kill()
        proc.wait()
    synth_page.locator("#run-status", has_text="interrupted").wait_for(timeout=20_000)


def test_runs_sort_by_duration_and_progress_as_numbers(synth_page, synth_root) -> None:
    """Durations sort by seconds (3s before 12s before 2m 05s) and progress by the share done (3/14 before 7/14
    before 14/14), not as text; the count says how many runs the filter leaves."""
    from bench.dashboard import synthetic_evolve

    runs = {"sortme-a": (12, 14), "sortme-b": (3, 3), "sortme-c": (125, 7)}  # seconds, generations done of 14
    for name, (seconds, done) in runs.items():
        run = synthetic_evolve(synth_root / "evolve" / name, 2, 3)
        start = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
        _set_manifest(run, started=start.isoformat(), ended=(start + dt.timedelta(seconds=seconds)).isoformat(),
                      progress={"generation": done, "of": 14})  # fmt: skip
    synthetic_evolve(synth_root / "evolve" / "not-sorted", 2, 3)  # a run the filter leaves out
    synth_page.goto("/")
    synth_page.locator("#runs-filter").fill("sortme")
    _rows(synth_page, 3)
    total = len(list_runs(synth_root))
    synth_page.locator("#runs-count", has_text=f"3 of {total} runs shown (").wait_for()

    def order() -> list[str]:
        rows = synth_page.locator(".ag-pinned-left-cols-container .ag-row")
        by_index = {int(r.get_attribute("row-index")): r.inner_text().strip() for r in rows.all()}
        return [by_index[i] for i in sorted(by_index)]

    for header, wanted in (("duration", ["sortme-b", "sortme-a", "sortme-c"]),
                           ("progress", ["sortme-b", "sortme-c", "sortme-a"])):  # fmt: skip
        synth_page.locator(f'.ag-header-cell[col-id="{"duration_s" if header == "duration" else header}"]').click()
        synth_page.wait_for_timeout(300)
        assert order() == wanted, header
    durations = synth_page.locator('.ag-center-cols-container .ag-row [col-id="duration_s"]').all_inner_texts()
    assert sorted(durations) == sorted(["12s", "3s", "2m 05s"])


def test_an_evolve_run_before_its_first_generation_waits_for_it(synth_page, synth_root, tmp_path) -> None:
    """A run that has started but not yet written its archive is not unreadable: its page says that no generation
    has finished, and draws the first one as soon as it is written, without a reload."""
    from bench.dashboard import synthetic_evolve
    from evoray.runs import RunDir

    out = synth_root / "evolve" / "fresh"
    fresh = RunDir.open("evolve", out, "fresh")
    fresh.start({"synthetic": True}, 0, {"space": "darts", "method": "ga", "fitness": "supernet"})
    try:
        synth_page.goto("/run?id=0/evolve/fresh")
        synth_page.locator("#evo-fitness", has_text="no generation finished yet").wait_for()
        assert synth_page.locator("#evo-problem").inner_text().strip() == ""
        assert synth_page.locator("#problem").count() == 0
        source = synthetic_evolve(tmp_path / "source", 1, 5)
        shutil.copy(source / ARCHIVE, out / ARCHIVE)
        synth_page.locator("#evo-population .gtitle", has_text="generation 0: 5 individuals").wait_for()
    finally:
        fresh.release()


def test_a_train_run_with_a_damaged_curves_file_says_so_and_shows_its_results(synth_page, synth_root) -> None:
    from bench.dashboard import synthetic_train
    from evoray.spaces.published import published_genotype

    run = synthetic_train(synth_root / "train" / "torn", epochs=3)
    genotype = str(published_genotype("DARTS_V2"))
    (run / "results.json").write_text(json.dumps({"test_top1": 91.25, "params_m": 3.349, "genotype": genotype}))
    (run / "curves.parquet").write_bytes(b"PAR1 torn")
    synth_page.goto("/run?id=0/train/torn")
    synth_page.locator("#problem", has_text="curves").wait_for()
    assert "unreadable" in synth_page.locator("#problem").inner_text()
    assert "91.250" in synth_page.locator("#train-results-table").inner_text()
    assert _cell_ops(synth_page, "#train-cells", "normal") == _genotype_ops(genotype, "normal")


def _trial_folder(folder: Path, searcher: str, seed: int, train_portion: float, accs: list[float], genotype: str):
    folder.mkdir(parents=True)
    params = {"searcher": searcher, "seed": seed, "epochs": 4, "supernet": {"space": "darts"},
              "data": {"dataset": "digits", "train_portion": train_portion}}  # fmt: skip
    (folder / "params.json").write_text(json.dumps({"search": params, "threads": 1}))
    rows = []
    for e, acc in enumerate(accs, 1):
        rows.append({"epoch": e, "training_iteration": e, "valid_acc": acc, "train_loss": 1.0 / e,
                     "valid_acc_best": max(accs[:e]), "genotype": genotype, "done": False})  # fmt: skip
    (folder / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_search_page_says_which_trials_were_validated_on_the_test_set(synth_page, synth_root) -> None:
    """A single-level trial (data.train_portion = 1) validates on the test set: its table row says so, and it is not
    the trial the page focuses as the best, which is the best trial on the held-out split (as the run's headline
    chooses), nor is a trial whose accuracy is NaN."""
    from evoray.runs import RunDir
    from evoray.spaces.published import published_genotype

    out = synth_root / "search" / "single-level"
    run = RunDir.open("search", out, "single-level")
    run.start({"synthetic": True}, None, {"space": "darts", "method": "darts", "trials": 3})
    run.release()
    darts, gdas = str(published_genotype("DARTS_V2")), str(published_genotype("GDAS_V1"))
    _trial_folder(out / "tune" / "darts-darts-s0-a_00000", "darts", 0, 0.5, [70.0, 80.0], darts)
    _trial_folder(out / "tune" / "darts-darts-s1-a_00001", "darts", 1, 1.0, [90.0, 95.0], gdas)
    _trial_folder(out / "tune" / "darts-darts-s2-a_00002", "darts", 2, 0.5, [float("nan")], gdas)
    synth_page.goto("/run?id=0/search/single-level")
    _rows(synth_page, 3)
    on = {
        rid: synth_page.locator(f'.ag-center-cols-container .ag-row[row-id="{rid}"] [col-id="valid_on"]').inner_text()
        for rid in ("darts-darts-s0-a_00000", "darts-darts-s1-a_00001")
    }
    assert on == {"darts-darts-s0-a_00000": "split", "darts-darts-s1-a_00001": "test"}
    focus = synth_page.locator("#search-focus-text")
    focus.get_by_text("darts-darts-s0-a_00000").wait_for()
    assert "best 80.00%" in focus.inner_text()
    assert _cell_ops(synth_page, "#search-cells", "normal") == _genotype_ops(darts, "normal")
    synth_page.locator('.ag-center-cols-container .ag-row[row-id="darts-darts-s1-a_00001"] [col-id="seed"]').click()
    focus.get_by_text("(on the test set)").wait_for()


def test_generation_and_epoch_axes_tick_whole_steps_only(synth_page, synth_root) -> None:
    """Generations and epochs are whole steps: a short run's axes never read generation 0.5 or epoch 2.5."""
    from bench.dashboard import synthetic_evolve, synthetic_train

    synthetic_evolve(synth_root / "evolve" / "short", 5, 4)
    synthetic_train(synth_root / "train" / "short-train", epochs=5)

    def ticks(scope: str) -> list[str]:
        synth_page.locator(f"{scope} .xtick text").first.wait_for()
        return [t.strip() for t in synth_page.locator(f"{scope} .xtick text").all_text_contents()]

    synth_page.goto("/run?id=0/evolve/short")
    synth_page.locator("#evo-fitness .gtitle", has_text="fitness per generation").wait_for()
    assert ticks("#evo-fitness") == ["0", "1", "2", "3", "4"]
    synth_page.goto("/run?id=0/train/short-train")
    synth_page.locator("#train-curves .xtitle").first.wait_for()
    assert set(ticks("#train-curves")) == {"1", "2", "3", "4", "5"}  # epochs count from 1, generations from 0
    synth_page.goto("/compare?ids=0/evolve/short,0/train/short-train")
    synth_page.locator("#cmp-curves .legendtext").first.wait_for()
    assert ticks("#cmp-curves") == ["0", "1", "2", "3", "4", "5"]


def test_compare_runs_whose_folders_hold_commas(synth_page, synth_root) -> None:
    """A run folder named after its settings (``--out runs/evolve/lr=0.1,wd=3e-4``) is one run on the compare page,
    whose ids are separated by commas."""
    from bench.dashboard import synthetic_evolve, synthetic_train

    synthetic_evolve(synth_root / "evolve" / "lr=0.1,wd=3e-4", 2, 3)
    synthetic_train(synth_root / "train" / "plain", epochs=2)
    synth_page.goto("/")
    for rid in ("0/evolve/lr=0.1,wd=3e-4", "0/train/plain"):
        synth_page.locator(f'.ag-pinned-left-cols-container .ag-row[row-id="{rid}"] input[type=checkbox]').check()
    synth_page.wait_for_function("document.querySelector('#runs-compare').innerText == 'compare 2 runs'")
    synth_page.locator("#runs-compare").click()
    synth_page.get_by_text("Comparing 2 runs").wait_for()
    assert synth_page.locator("#cmp-list li").all_inner_texts() == ["evolve lr=0.1,wd=3e-4", "train plain"]
    assert synth_page.locator("#problem").count() == 0


def test_compare_metric_choices_follow_the_runs(synth_page, synth_root) -> None:
    """The compare page's metric choices are the metrics its runs report now: one that a run first writes after the
    page opened joins them without a reload, and drawing it shows that run's curve, named in the legend."""
    from bench.dashboard import synthetic_train
    from evoray.runs.curves import read_curves, write_curves
    from evoray.runs.reader import CURVES

    a = synthetic_train(synth_root / "train" / "grow-a", epochs=3)
    synthetic_train(synth_root / "train" / "grow-b", epochs=3)
    synth_page.goto("/compare?ids=0/train/grow-a,0/train/grow-b")
    synth_page.get_by_text("Comparing 2 runs").wait_for()
    synth_page.locator("#cmp-curves .legendtext").first.wait_for()

    def choices() -> list[str]:
        synth_page.locator("#cmp-metric").click()
        synth_page.get_by_role("option").first.wait_for()
        names = [t.strip() for t in synth_page.get_by_role("option").all_inner_texts()]
        synth_page.keyboard.press("Escape")
        return names

    assert "valid_top1" not in choices()
    rows = read_curves(a / CURVES)
    write_curves(a / CURVES, [{**r, "valid_top1": 50.0 + r["epoch"]} for r in rows])
    synth_page.wait_for_timeout(3000)  # the page looks for new results every 2 s
    assert "valid_top1" in choices()
    synth_page.locator("#cmp-metric").click()
    synth_page.get_by_role("option", name="valid_top1", exact=True).click()
    synth_page.locator("#cmp-curves .ytitle", has_text="valid_top1").wait_for()
    synth_page.locator("#cmp-curves .legendtext").first.wait_for()
    assert synth_page.locator("#cmp-curves .legendtext").all_text_contents() == ["grow-a"]
    write_curves(a / CURVES, rows)  # the run rewritten without it: the page falls back to every run's score
    synth_page.locator("#cmp-curves .ytitle", has_text="score").wait_for(timeout=10_000)
    assert "valid_top1" not in choices()
    assert sorted(synth_page.locator("#cmp-curves .legendtext").all_text_contents()) == ["grow-a", "grow-b"]
