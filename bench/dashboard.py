"""The dashboard's speed over many runs: 200 run directories (evolve, search, train, ensemble, written with evoray's
own writers: RunDir, write_archive, write_curves) and one evolve run of 50 generations x 50 individuals, in a
temporary folder. Times the runs page and the evolve page (everything their callbacks compute, figures serialised to
JSON as the server sends them) on the first load and after it, and, with ``--browser``, the evolve page in Chromium.

    python bench/dashboard.py [--runs 200] [--generations 50] [--population 50] [--browser]

The issue's target: under 1 s for each page after the first load.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import plotly.io as pio

from evoray.dashboard.pages import evolve, runs
from evoray.dashboard.store import RunStore
from evoray.runs import RunDir, individual_row, write_archive
from evoray.runs.archive import ARCHIVE
from evoray.runs.curves import write_curves
from evoray.runs.reader import CURVES
from evoray.spaces import format_genotype, get_space
from evoray.spaces.derive import derive_genotype, softmax


def synthetic_evolve(path: Path, generations: int, population: int, seed: int = 0, finish: bool = True) -> Path:
    """A valid evolve run of random DARTS individuals: a GA lineage (elite, crossover, mutation), fitness rising
    with the generations, written as ``python -m evoray.evolve`` writes it."""
    rng = np.random.default_rng(seed)
    space = get_space("darts")
    rows: list[dict[str, Any]] = []
    curves: list[dict[str, float]] = []
    with RunDir.open("evolve", path, path.name) as run:
        run.start({"synthetic": True, "seed": seed}, seed, {"space": "darts", "method": "ga", "fitness": "synthetic"})
        previous: list[int] = []
        ident = 0
        for g in range(generations):
            fitness = []
            for k in range(population):
                alphas = {ct: rng.random(space.alpha_shape(ct)).astype(np.float32) for ct in space.cell_types}
                genotype = format_genotype(derive_genotype(space, {ct: softmax(a) for ct, a in alphas.items()}))
                if not previous:
                    parents, origin = [], "random"
                elif k == 0:
                    parents, origin = [previous[0]], "elite"
                else:
                    parents = [int(p) for p in rng.choice(previous, size=2, replace=False)]
                    origin = "crossover" if rng.random() < 0.5 else "mutation"
                    parents = parents if origin == "crossover" else parents[:1]
                f = float(40 + 40 * (1 - np.exp(-g / 10)) + rng.normal(0, 3))
                fitness.append(f)
                rows.append(
                    individual_row(
                        g, ident, parents, origin, genotype, f, float(rng.uniform(1.5, 4.0)), alphas, "darts", "ga",
                        "", seed,
                    )
                )  # fmt: skip
                ident += 1
            previous = [int(r["id"]) for r in sorted(rows[-population:], key=lambda r: -r["fitness"])]
            curves.append(
                {"generation": g, "best": max(fitness), "mean": float(np.mean(fitness)), "worst": min(fitness)}
            )
        write_archive(run.path / ARCHIVE, rows)
        write_curves(run.path / CURVES, curves)
        run.update(progress={"generation": generations, "of": generations})
        if finish:
            best = max(rows[-population:], key=lambda r: r["fitness"])
            run.write_json("best.json", {k: best[k] for k in ("genotype", "fitness", "id", "generation", "params_m")})
            run.finish({"genotype": best["genotype"], "fitness": best["fitness"], "params_m": best["params_m"]})
    return path


def synthetic_train(path: Path, epochs: int = 10, seed: int = 0) -> Path:
    with RunDir.open("train", path, path.name) as run:
        run.start({"synthetic": True}, seed, {"space": "darts", "method": "train"})
        curves = [
            {"epoch": e + 1, "train_loss": 2.3 / (e + 1), "train_top1": 10 + 8 * e, "lr": 0.025} for e in range(epochs)
        ]
        write_curves(run.path / CURVES, curves)
        run.finish({"genotype": "DARTS_V2", "test_top1": 90.0 + seed % 7, "params_m": 3.3, "epochs": epochs})
    return path


def synthetic_search(path: Path, trials: int = 4, seed: int = 0) -> Path:
    """A finished search run's own files (no Tune storage): its archive of trials and its manifest."""
    rng = np.random.default_rng(seed)
    space = get_space("darts")
    with RunDir.open("search", path, path.name) as run:
        run.start({"synthetic": True}, seed, {"space": "darts", "method": "darts,gdas", "trials": trials})
        rows = []
        for t in range(trials):
            alphas = {ct: rng.random(space.alpha_shape(ct)).astype(np.float32) for ct in space.cell_types}
            genotype = format_genotype(derive_genotype(space, {ct: softmax(a) for ct, a in alphas.items()}))
            searcher = ("darts", "gdas")[t % 2]
            rows.append(
                individual_row(
                    0,
                    t,
                    [],
                    f"search:{searcher}:s{seed}",
                    genotype,
                    float(rng.uniform(60, 90)),
                    2.0,
                    alphas,
                    "darts",
                    searcher,
                    f"trial-{t}",
                    seed,
                )
            )
        write_archive(run.path / ARCHIVE, rows)
        best = max(rows, key=lambda r: r["fitness"])
        run.finish({"trials": trials, "failed": 0, "best_valid_acc": best["fitness"], "genotype": best["genotype"],
                    "searcher": best["searcher"]})  # fmt: skip
    return path


def synthetic_ensemble(path: Path, seed: int = 0) -> Path:
    with RunDir.open("ensemble", path, path.name) as run:
        run.start({"synthetic": True}, seed, {"space": "darts", "method": "logit_sum", "members": 3})
        run.finish({"best_member": "DARTS_V2", "best_member_accuracy": 90.0, "best_committee": "logit_sum",
                    "best_committee_accuracy": 91.5, "accuracy_gain": 1.5, "nll_gain": 0.05})  # fmt: skip
    return path


def make_runs(root: Path, count: int) -> None:
    """``count`` small runs of every command under ``root``."""
    makers: list[Callable[[Path, int], Path]] = [
        lambda p, s: synthetic_evolve(p, 4, 6, s),
        lambda p, s: synthetic_train(p, 10, s),
        lambda p, s: synthetic_search(p, 4, s),
        lambda p, s: synthetic_ensemble(p, s),
    ]
    for i in range(count):
        command = ("evolve", "train", "search", "ensemble")[i % 4]
        makers[i % 4](root / command / f"{command}-{i:03d}", i)


def _serialise(value: Any) -> int:
    """Bytes of ``value`` as the server sends it (figures through plotly's JSON encoder)."""
    return (
        len(pio.to_json(value, validate=False))
        if hasattr(value, "to_plotly_json")
        else len(json.dumps(value, default=str))
    )


def time_runs_page(store: RunStore) -> float:
    t = time.perf_counter()
    page = runs.layout(store)
    _serialise(page.to_plotly_json())
    return time.perf_counter() - t


def time_evolve_page(store: RunStore, run_id: str) -> float:
    t = time.perf_counter()
    run = store.open(run_id)
    page = evolve.layout(store, run, run_id)
    fig, _, _, value, _ = evolve.draw_generations(store, run_id, None, None)
    population = evolve.draw_population(store, run_id, value)
    _, genealogy, lineage, alphas, cells = evolve.draw_individual(store, run_id, None)
    size = _serialise(fig) + _serialise(population) + _serialise(genealogy)
    for part in (page, lineage, *alphas, *cells):
        size += len(json.dumps(part.to_plotly_json(), default=_plotly_default))
    return time.perf_counter() - t


def _plotly_default(o: Any) -> Any:
    if hasattr(o, "to_plotly_json"):
        return o.to_plotly_json()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.generic):
        return o.item()
    return str(o)


def time_browser(root: Path, run_id: str) -> dict[str, float] | None:
    """Seconds in Chromium: a full load of the evolve page until its population is drawn (first visit, then again
    with the browser's cache warm), and a switch to another generation until it is redrawn; None without a browser."""
    import logging
    import shutil
    import socket
    import threading

    from werkzeug.serving import make_server

    from evoray.dashboard.app import create_app

    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = make_server("127.0.0.1", port, create_app([root]).server, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    args = [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
    ]
    out: dict[str, float] = {}
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=args)
            page = browser.new_page()
            for label in ("full load, first visit", "full load, cache warm"):
                t = time.perf_counter()
                page.goto(f"http://127.0.0.1:{port}/run?id={run_id}")
                page.get_by_text("on the Pareto front").first.wait_for(timeout=60_000)
                out[label] = time.perf_counter() - t
            thumb = page.locator("#evo-gen [role=slider]")
            t = time.perf_counter()
            thumb.press("Home")  # generation 0
            page.get_by_text("generation 0:").first.wait_for(timeout=30_000)
            out["another generation"] = time.perf_counter() - t
            browser.close()
    finally:
        server.shutdown()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--generations", type=int, default=50)
    parser.add_argument("--population", type=int, default=50)
    parser.add_argument("--browser", action="store_true", help="also time the evolve page in Chromium")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "runs"
        t = time.perf_counter()
        make_runs(root, args.runs - 1)
        synthetic_evolve(root / "evolve" / "big", args.generations, args.population)
        print(
            f"wrote {args.runs} runs ({args.generations}x{args.population} evolve) in {time.perf_counter() - t:.1f} s"
        )
        store = RunStore([root])
        rows, _ = store.listing()
        big = next(r.id for r in rows if r.name == "big")
        for label, fn in (
            ("runs page", lambda: time_runs_page(store)),
            ("evolve page", lambda: time_evolve_page(store, big)),
        ):
            first = fn()
            again = [fn() for _ in range(3)]
            print(f"{label:12s} ({len(rows)} runs): first load {first:.3f} s, after it {min(again):.3f} s (best of 3)")
        if args.browser:
            seconds = time_browser(root, big)
            if seconds is None:
                print("browser: no Chromium or Playwright")
            for label, value in (seconds or {}).items():
                print(f"evolve page in Chromium, {label}: {value:.2f} s")


if __name__ == "__main__":
    main()
