"""Members one after another in this process, and the member directories that keep what each member left behind.

The Ray executor (one task per member, on a GPU when the cluster has them) is ``evoray.distributed.members``; both
give the same logits. A member directory (``members/<name>/``) holds its logits as soon as it is done, so a committee
run that is stopped and resumed never computes a member twice.
"""

from __future__ import annotations

import json
import zipfile
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from evoray.config import config_to_dict
from evoray.ensemble.config import EnsembleConfig
from evoray.ensemble.predict import MemberLogits, member_logits
from evoray.ensemble.sources import MEMBER_FILE, MemberSpec, member_train_config
from evoray.errors import ConfigError
from evoray.runs.directory import atomic_write, load_tensors, read_json
from evoray.runtime import resolve_device, torch_threads

Log = Callable[[str], None]
OnResult = Callable[[int, MemberLogits], None]
Executor = Callable[[EnsembleConfig, list[MemberSpec], Log, OnResult], list[MemberLogits]]
LOGITS_FILE = "logits.npz"


def run_members_locally(
    cfg: EnsembleConfig, pool: list[MemberSpec], log: Log = print, on_result: OnResult | None = None
) -> list[MemberLogits]:
    """The logits of every member of ``pool``, in pool order, one at a time in this process."""
    device = resolve_device(cfg.train.runtime.device)
    out = []
    with torch_threads(max(int(cfg.resources.cpus), 1)):
        for i, member in enumerate(pool):
            result = member_logits(cfg, member, device, log)
            if on_result is not None:
                on_result(i, result)
            out.append(result)
    return out


def save_member(cfg: EnsembleConfig, spec: MemberSpec, result: MemberLogits, root: Path) -> None:
    """A member's directory: its logits (every split), ``member.json`` (what it is, how it fared, its validation
    split) and, for a member trained here, the train command's ``config.yaml`` and ``weights.pt`` (so it can serve
    again as a checkpoint member), its history and log. The logits go last: they mark the member done."""
    import io

    import torch
    import yaml

    d = root / spec.name
    d.mkdir(parents=True, exist_ok=True)
    info = {k: v for k, v in result.info.items() if k not in ("history", "log")}
    meta = {"name": spec.name, **info, "split_seed": cfg.seed, "train_portion": cfg.data.train_portion}
    if spec.kind == "genotype" and result.state is not None:
        train_cfg = config_to_dict(member_train_config(cfg, spec.genotype, spec.seed))
        atomic_write(d / "config.yaml", yaml.safe_dump(train_cfg, sort_keys=False).encode())
        buf = io.BytesIO()
        torch.save(result.state, buf)
        atomic_write(d / "weights.pt", buf.getvalue())
        atomic_write(d / "history.json", json.dumps(result.info.get("history", []), indent=1).encode())
    else:
        meta["source"] = spec.path
    atomic_write(d / MEMBER_FILE, json.dumps(meta, indent=1, default=str).encode())
    if result.info.get("log"):
        atomic_write(d / "train.log", ("\n".join(result.info["log"]) + "\n").encode())
    arrays: dict[str, Any] = {f"shift/{k}": v for k, v in result.shifted.items()}
    arrays.update(valid=result.valid, valid_labels=result.valid_labels, test=result.test)
    arrays["test_labels"] = result.test_labels
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write(d / LOGITS_FILE, buf.getvalue())


def load_member(spec: MemberSpec, root: Path) -> MemberLogits | None:
    """The saved result of a member done in an earlier attempt of this run, or None; a torn or foreign member
    directory is a one-line ``ConfigError``."""
    d = root / spec.name
    if not (d / LOGITS_FILE).is_file():
        return None
    meta = read_json(d / MEMBER_FILE, "member record")
    if meta.get("genotype") != spec.genotype or meta.get("kind") != spec.kind:
        raise ConfigError(f"member directory {str(d)!r} holds another member than {spec.name} ({spec.genotype})")
    try:
        with np.load(d / LOGITS_FILE, allow_pickle=False) as f:
            shifted = {k.split("/", 1)[1]: f[k] for k in f.files if k.startswith("shift/")}
            arrays = {k: f[k] for k in ("valid", "valid_labels", "test", "test_labels")}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as err:
        raise ConfigError(
            f"member logits {str(d / LOGITS_FILE)!r} are unreadable ({type(err).__name__}); delete that file to "
            "compute the member again, or start the committee run afresh"
        ) from None
    info = {k: v for k, v in meta.items() if k not in ("name", "split_seed", "train_portion", "source")}
    state = load_tensors(d / "weights.pt", "member weights") if (d / "weights.pt").is_file() else None
    return MemberLogits(spec.name, **arrays, shifted=shifted, info=info, state=state)


def run_members(
    cfg: EnsembleConfig,
    pool: list[MemberSpec],
    root: Path,
    executor: Executor,
    log: Log = print,
) -> list[MemberLogits]:
    """The logits of every member, in pool order: members already done in ``root`` (an earlier attempt of this run)
    are read back, the others computed by ``executor`` and saved as each one ends."""
    done: dict[int, MemberLogits] = {}
    for i, spec in enumerate(pool):
        saved = load_member(spec, root)
        if saved is not None:
            done[i] = saved
            log(f"member {spec.name}: done in an earlier attempt, reused")
    todo = [i for i in range(len(pool)) if i not in done]

    def on_result(k: int, result: MemberLogits) -> None:
        save_member(cfg, pool[todo[k]], result, root)

    if todo:
        for k, result in enumerate(executor(cfg, [pool[i] for i in todo], log, on_result)):
            done[todo[k]] = result
    return [done[i] for i in range(len(pool))]


def member_names(results: Sequence[MemberLogits]) -> list[str]:
    return [r.name for r in results]
