"""Where members come from: published genotypes, population archives (the fittest genotypes of evolve or search
runs), trained checkpoints, and the supernets of evolve runs, all read through the public run reader
(:mod:`evoray.runs`). Everything here runs in the driver, before any training, so bad input fails in a second with
one line rather than after an hour.

Example::

    info = describe_data(cfg)
    pool = resolve_pool(cfg, info)  # [MemberSpec(name="DARTS_V2", kind="genotype", ...), ...]
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from evoray.config import config_from_dict, config_to_dict, load_config
from evoray.data import DataConfig, build_data
from evoray.data.datasets import search_split
from evoray.ensemble.config import EnsembleConfig
from evoray.errors import ConfigError
from evoray.runs import list_runs, open_run, read_archive
from evoray.runs.directory import load_tensors
from evoray.spaces.genotype import Genotype, parse_genotype
from evoray.spaces.published import published_genotype
from evoray.spaces.resolve import resolve_genotype
from evoray.training import TrainConfig, check_network

Log = Callable[[str], None]
KINDS = ("genotype", "checkpoint", "supernet")
MEMBER_FILE = "member.json"  # written beside the weights of every trained member
LATEST = ("latest_run", "latest_supernet")  # the members options that pick a run by its age
Latest = dict[str, str | None]  # what each of LATEST resolved to: a run directory, or None (no run fitted)


@dataclass
class MemberSpec:
    """One member of the pool, before it has logits."""

    name: str  # unique in the pool; names the member's directory and its rows in results
    kind: str  # genotype (trained from scratch here) | checkpoint (trained weights) | supernet (an evolve run's)
    origin: str  # where it came from, for the report
    genotype: str  # canonical genotype text
    seed: int = 0  # genotype members: the training seed
    path: str = ""  # checkpoint or run directory
    config: dict[str, Any] = field(default_factory=dict)  # checkpoint: its TrainConfig; supernet: its supernet section
    state: dict[str, Any] | None = field(default=None, repr=False)  # checkpoint / supernet weights (CPU tensors)
    valid_overlap: float | None = 0.0  # share of the validation set this member was trained on (None: unknown)


@dataclass(frozen=True)
class DataInfo:
    """What the driver knows of the ensemble's data without training anything."""

    num_classes: int
    in_channels: int
    num_train: int  # training examples before the validation split
    num_valid: int
    num_test: int


def describe_data(cfg: EnsembleConfig) -> DataInfo:
    """Class count, channels and split sizes of the ensemble's data (loads it once)."""
    splits = build_data(cfg.data, seed=cfg.seed, split="search")
    assert splits.valid is not None
    n_valid = splits.valid.num_examples
    return DataInfo(
        splits.num_classes,
        splits.in_channels,
        splits.train.num_examples + n_valid,
        n_valid,
        splits.test.num_examples,
    )


def member_train_config(cfg: EnsembleConfig, genotype: str, seed: int) -> TrainConfig:
    """The ``python -m evoray.train`` config of a genotype member (its data = the ensemble's data)."""
    r = cfg.train
    model = dataclasses.replace(r.model, genotype=genotype)
    return TrainConfig(
        seed=seed,
        data=dataclasses.replace(cfg.data),
        model=model,
        optim=dataclasses.replace(r.optim),
        runtime=dataclasses.replace(r.runtime),
        log_every=r.log_every,
    )


def genotype_key(genotype: Genotype) -> tuple[Any, ...]:
    """A genotype as an architecture, for finding duplicates: a node sums its incoming edges, so each node's edges
    are a multiset (sorted here) and the cell's output concatenation a set; two texts with one key (e.g. a DARTS
    cell with a node's two edges listed in either order) are the same architecture."""
    return tuple(
        (name, tuple(tuple(sorted(node)) for node in cell.nodes), tuple(sorted(set(cell.concat))))
        for name, cell in genotype.cells
    )


def resolve_pool(
    cfg: EnsembleConfig, info: DataInfo, log: Log = print, latest: Latest | None = None
) -> list[MemberSpec]:
    """Every member of the pool, deduplicated, with one-line errors for sources that do not exist or do not fit.

    ``latest`` pins ``members.latest_run`` / ``latest_supernet``: an option named in it takes the run recorded there
    (a resumed committee run draws its members from the runs it drew them from at its first start, not from a
    newer one); an enabled option missing from it is resolved from ``members.runs_dir`` and written into it."""
    m = cfg.members
    latest = {} if latest is None else latest
    genotypes: list[tuple[str, str, str]] = []  # (name, canonical genotype, origin)
    for name in m.published:
        genotypes.append((name, str(published_genotype(name)), f"published {name}"))
    archives = list(m.archives)
    if m.latest_run:
        if "latest_run" in latest:
            run_path = latest["latest_run"]
            _check_pinned("latest_run", run_path)
            log(f"members.latest_run: {run_path or 'none'}, as at this run's first start")
        else:
            found = latest_run(Path(m.runs_dir), cfg.train.model.network == "nb201")
            run_path = latest["latest_run"] = None if found is None else str(found.resolve())
            if run_path is None:
                log(f"members.latest_run: no run with an archive under {m.runs_dir}/ fits; none added")
            else:
                log(f"members.latest_run: {run_path}")
        if run_path is not None:
            archives.append(run_path)
    for i, path in enumerate(archives):
        genotypes += archive_genotypes(path, m.top_k, m.archive_scope, f"members.archives[{i}]")

    pool: list[MemberSpec] = []
    seen: dict[tuple[Any, ...], str] = {}
    for name, genotype, origin in genotypes:
        key = genotype_key(parse_genotype(genotype))
        if key in seen:
            log(f"member {name} has the genotype of {seen[key]}; trained once")
            continue
        seen[key] = name
        for r in range(m.seeds):
            seed = cfg.seed + r
            label = _unique(name if m.seeds == 1 else f"{name}-s{seed}", pool)
            spec = MemberSpec(label, "genotype", origin, genotype, seed)
            check_network(member_train_config(cfg, genotype, seed), parse_genotype(genotype))
            pool.append(spec)
    for path in m.checkpoints:
        pool.append(load_checkpoint_member(path, cfg, info, pool))
    for path in m.supernets:
        pool.append(load_supernet_member(path, cfg, info, pool))
    if m.latest_supernet:
        if "latest_supernet" in latest:
            run_path = latest["latest_supernet"]
            _check_pinned("latest_supernet", run_path)
            log(f"members.latest_supernet: {run_path or 'none'}, as at this run's first start")
            supernet = None if run_path is None else load_supernet_member(run_path, cfg, info, pool)
        else:
            supernet = latest_supernet_member(cfg, info, pool, log)
            latest["latest_supernet"] = None if supernet is None else supernet.path
            if supernet is None:
                log(f"members.latest_supernet: no evolve run under {m.runs_dir}/ has a supernet that fits the data")
            else:
                log(f"members.latest_supernet: {supernet.path}")
        if supernet is not None:
            pool.append(supernet)
    if not pool:
        raise ConfigError("the member pool is empty: no source named in members gave a member")
    return pool


def _check_pinned(option: str, path: str | None) -> None:
    if path is not None and not Path(path).is_dir():
        raise ConfigError(
            f"members.{option}: the run {path!r} that this committee run drew members from at its first start is "
            "gone; restore it, or start the committee run afresh (without --resume)"
        )


def _unique(name: str, pool: list[MemberSpec]) -> str:
    taken = {p.name for p in pool}
    out, k = name, 2
    while out in taken:
        out, k = f"{name}-{k}", k + 1
    return out


def _run_name(path: Path) -> str:
    return path.parent.name if path.name == "archive.parquet" else (path.name if path.is_dir() else path.stem)


def archive_genotypes(path: str, top_k: int, scope: str, where: str) -> list[tuple[str, str, str]]:
    """(name, genotype, origin) of the ``top_k`` fittest distinct genotypes of an archive (its last generation, or
    every generation with ``scope="all"``); a missing or unreadable archive is a one-line error."""
    try:
        rows = read_archive(path)
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None
    if not rows:
        raise ConfigError(f"{where}: population archive {path!r} holds no individuals")
    if scope == "last":
        last = max(int(r["generation"]) for r in rows)
        rows = [r for r in rows if int(r["generation"]) == last]

    def fitness_key(r: dict) -> float:  # unscored rows (None, NaN) come last
        f = r["fitness"]
        return np.inf if f is None or not np.isfinite(float(f)) else -float(f)

    rows = sorted(rows, key=fitness_key)
    run, out, seen = _run_name(Path(path)), [], set()
    for r in rows:
        parsed = parse_genotype(r["genotype"])
        key = genotype_key(parsed)
        if key in seen:
            continue
        seen.add(key)
        genotype = str(parsed)
        origin = f"archive {path}: generation {r['generation']}, id {r['id']}, fitness {r['fitness']}"
        out.append((f"{run}-g{r['generation']}-i{r['id']}", genotype, origin))
        if len(out) == top_k:
            break
    return out


def _runs(root: Path) -> list[Any]:
    """Finished runs under ``root``, newest first (none when the folder does not exist)."""
    if not root.is_dir():
        return []
    return [r for r in list_runs(root) if r.problem is None and r.status == "done"]


def latest_run(root: Path, nb201: bool) -> Path | None:
    """The newest finished run under ``root`` with an archive whose genotypes are NB201 cells iff ``nb201``."""
    for run in _runs(root):
        if not run.has_archive():
            continue
        try:
            rows = run.archive()
        except ConfigError:
            continue
        if rows and parse_genotype(rows[0]["genotype"]).is_nb201 == nb201:
            return run.path
    return None


def latest_supernet_member(cfg: EnsembleConfig, info: DataInfo, pool: list[MemberSpec], log: Log) -> MemberSpec | None:
    """The supernet of the newest evolve run under ``members.runs_dir`` whose supernet takes the ensemble's images and
    classes (runs on other data are passed over)."""
    for run in _runs(Path(cfg.members.runs_dir)):
        if run.command != "evolve" or not (run.path / "supernet.pt").is_file():
            continue
        try:
            return load_supernet_member(str(run.path.resolve()), cfg, info, pool)
        except ConfigError as err:
            log(f"members.latest_supernet: passing over {run.path}: {err}")
    return None


def _check_shape(name: str, state: dict[str, Any], info: DataInfo, cfg: EnsembleConfig) -> None:
    head = state.get("classifier.weight")
    if not isinstance(head, torch.Tensor) or head.dim() != 2:
        raise ConfigError(f"member {name!r} holds no trained evoray network (its weights have no classifier)")
    classes = int(head.shape[0])
    if classes != info.num_classes:
        raise ConfigError(
            f"member {name!r} has {classes} classes but the ensemble's data ({cfg.data.dataset}) has "
            f"{info.num_classes}; every member must have the class count of the data"
        )
    stem = next((v for v in state.values() if isinstance(v, torch.Tensor) and v.dim() == 4), None)
    if stem is not None and int(stem.shape[1]) != info.in_channels:
        raise ConfigError(
            f"member {name!r} takes {int(stem.shape[1])}-channel images but the ensemble's data has "
            f"{info.in_channels} channels"
        )


def _same_data(a: DataConfig, b: DataConfig) -> bool:
    """Whether two data configs hold the same training images in the same order (split portion aside)."""
    skip = {"train_portion", "batch_size", "eval_batch_size", "num_workers", "cutout", "augment", "download"}
    if a.dataset == "digits":  # shipped with scikit-learn: no paths
        skip |= {"root", "test_root"}
    da, db = config_to_dict(a), config_to_dict(b)
    for key in ("root", "test_root"):
        for d in (da, db):
            d[key] = str(Path(d[key]).resolve()) if d[key] else ""
    return all(da[k] == db[k] for k in da if k not in skip)


def validation_overlap(cfg: EnsembleConfig, info: DataInfo, data: DataConfig, seed: int, split: str) -> float | None:
    """Share of the ensemble's validation examples that a model trained on ``data`` (``split`` "train": the whole
    training set; "search": its ``train_portion`` drawn with ``seed``) saw in training; None when not comparable."""
    if not _same_data(data, cfg.data) or (cfg.data.limit_train and seed != cfg.seed):
        return None
    if split == "train" or data.whole_train:
        return 1.0
    _, held = search_split(info.num_train, cfg.data.train_portion, cfg.seed)
    kept, _ = search_split(info.num_train, data.train_portion, seed)
    return float(np.isin(held.numpy(), kept.numpy()).mean())


def load_checkpoint_member(path: str, cfg: EnsembleConfig, info: DataInfo, pool: list[MemberSpec]) -> MemberSpec:
    """A trained network: the directory written by ``python -m evoray.train --out`` or by a committee run
    (``config.yaml`` and ``weights.pt``)."""
    d = Path(path)
    if not (d / "config.yaml").is_file() or not (d / "weights.pt").is_file():
        raise ConfigError(f"members.checkpoints: {path!r} is not a directory holding config.yaml and weights.pt")
    train_cfg = load_config(TrainConfig, d / "config.yaml")
    state = load_tensors(d / "weights.pt", "weights file")
    name = _unique(d.name, pool)
    _check_shape(name, state, info, cfg)
    split, seed = "train", train_cfg.seed
    if (d / MEMBER_FILE).is_file():  # a committee member: trained on the training part of its validation split
        meta = _read_json(d / MEMBER_FILE, "members.checkpoints")
        split, seed = "search", int(meta.get("split_seed", train_cfg.seed))
    return MemberSpec(
        name,
        "checkpoint",
        f"checkpoint {path}",
        str(resolve_genotype(train_cfg.model.genotype)),
        train_cfg.seed,
        str(d),
        config_to_dict(train_cfg),
        state,
        validation_overlap(cfg, info, train_cfg.data, seed, split),
    )


def _read_json(path: Path, where: str) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"{where}: {str(path)!r} is not readable JSON ({type(err).__name__})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: {str(path)!r} holds no JSON object")
    return data


def load_supernet_member(path: str, cfg: EnsembleConfig, info: DataInfo, pool: list[MemberSpec]) -> MemberSpec:
    """The supernet of an evolve run, with the edge weights of its best individual's genotype (its headline)."""
    try:
        run = open_run(path)
        supernet, state = run.supernet()
        run_cfg = run.config()
    except ConfigError as err:
        raise ConfigError(f"members.supernets: {err}") from None
    name = _unique(f"supernet-{run.path.name}", pool)
    _check_shape(name, state, info, cfg)
    genotype = run.result.get("genotype")
    if not genotype:
        raise ConfigError(f"members.supernets: the run {path!r} names no best genotype (is it finished?)")
    origin = f"supernet of {path} ({supernet.get('space')}), best individual"
    data = config_from_dict(DataConfig, dict(run_cfg.get("data") or {}))
    overlap = validation_overlap(cfg, info, data, int(run_cfg.get("seed", 0)), "search")
    return MemberSpec(
        name,
        "supernet",
        origin,
        str(parse_genotype(str(genotype))),
        int(run_cfg.get("seed", 0)),
        str(run.path),
        supernet,
        state,
        overlap,
    )
