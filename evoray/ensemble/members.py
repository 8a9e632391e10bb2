"""Members in parallel: one Ray task per member, each on one GPU (when the cluster has them) or on its CPU slots.

This is the only module of ``evoray.ensemble`` that imports Ray, and only when the ``ray`` executor runs. The local
executor computes the members one after another in this process, with the same threads per member, so both give the
same logits.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import torch

from evoray.ensemble.config import EnsembleConfig
from evoray.ensemble.predict import MemberLogits, member_logits
from evoray.ensemble.sources import MemberSpec
from evoray.errors import ConfigError
from evoray.runtime import resolve_device, torch_threads

Log = Callable[[str], None]


def run_members(cfg: EnsembleConfig, pool: list[MemberSpec], log: Log = print) -> list[MemberLogits]:
    """The logits of every member of ``pool``, in pool order."""
    if cfg.resources.executor == "local":
        device = resolve_device(cfg.train.runtime.device)
        out = []
        with torch_threads(cfg.resources.cpus_per_member):
            for member in pool:
                out.append(member_logits(cfg, member, device, log))
        return out
    return _run_on_ray(cfg, pool, log)


def ensure_ray(address: str) -> None:
    """Join the cluster at ``address``, or start a local Ray, unless Ray is already initialised."""
    import ray

    if not ray.is_initialized():
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        # "local" starts a fresh Ray even when a cluster started earlier left its address behind
        ray.init(address=address or "local", include_dashboard=False, log_to_driver=False)


def _member_task(cfg: EnsembleConfig, member: MemberSpec, threads: int) -> MemberLogits:
    """Body of a member's Ray task: its device is the GPU Ray assigned it, if any."""
    import ray

    torch.set_num_threads(threads)
    gpus = ray.get_gpu_ids()
    cpu_only = cfg.train.runtime.device == "cpu"
    device = torch.device("cuda", 0) if gpus and torch.cuda.is_available() and not cpu_only else torch.device("cpu")
    lines: list[str] = []
    result = member_logits(cfg, member, device, lines.append)
    result.info["log"] = lines
    result.info["device"] = str(device)
    return result


def _run_on_ray(cfg: EnsembleConfig, pool: list[MemberSpec], log: Log) -> list[MemberLogits]:
    import ray

    res = cfg.resources
    ensure_ray(res.address)
    gpus = res.gpus_per_member
    if gpus < 0:
        gpus = 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
    task = ray.remote(_member_task).options(num_cpus=res.cpus_per_member, num_gpus=gpus)
    cpus = int(ray.cluster_resources().get("CPU", 1))
    log(
        f"training {len(pool)} members as Ray tasks ({res.cpus_per_member} CPU, {gpus:g} GPU each; "
        f"{cpus} CPUs in the cluster)"
    )
    start = time.perf_counter()
    refs = {task.remote(cfg, m, res.cpus_per_member): i for i, m in enumerate(pool)}
    results: dict[int, MemberLogits] = {}
    pending = list(refs)
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        i = refs[done[0]]
        results[i] = _get(done[0], pool[i])
        r = results[i]
        test_top1 = 100 * (r.test.argmax(1) == r.test_labels).mean()
        log(
            f"member {len(results)}/{len(pool)} {r.name} done on {r.info.get('device')}: test top1 {test_top1:.2f}% "
            f"({time.perf_counter() - start:.0f} s)"
        )
    return [results[i] for i in range(len(pool))]


def _get(ref: Any, member: MemberSpec) -> MemberLogits:
    import ray

    try:
        result: MemberLogits = ray.get(ref)
    except ray.exceptions.RayTaskError as err:
        cause = getattr(err, "cause", None)
        if isinstance(cause, ConfigError):
            raise ConfigError(f"member {member.name}: {cause}") from None
        raise
    return result
