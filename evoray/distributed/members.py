"""Committee members in parallel: one Ray task per member, each on one GPU (when the cluster has them) or on its CPU
slots. The local executor (``evoray.ensemble.members.run_members_locally``) gives the same logits."""

from __future__ import annotations

import time
from typing import Any

import ray
import torch

from evoray.distributed.cluster import ensure_ray, placement, require_cpus, threads_of, worker_device
from evoray.ensemble.config import EnsembleConfig
from evoray.ensemble.members import Log, OnResult
from evoray.ensemble.predict import MemberLogits, member_logits
from evoray.ensemble.sources import MemberSpec
from evoray.errors import ConfigError


def _member_task(cfg: EnsembleConfig, member: MemberSpec, threads: int) -> MemberLogits:
    """Body of a member's Ray task: its device is the GPU Ray assigned it, if any."""
    torch.set_num_threads(threads)
    device = worker_device(cpu_only=cfg.train.runtime.device == "cpu")
    lines: list[str] = []
    result = member_logits(cfg, member, device, lines.append)
    result.info["log"] = lines
    result.info["device"] = str(device)
    return result


def run_members_on_ray(
    cfg: EnsembleConfig, pool: list[MemberSpec], log: Log = print, on_result: OnResult | None = None
) -> list[MemberLogits]:
    """The logits of every member of ``pool``, in pool order; ``on_result(i, logits)`` as each task ends."""
    ensure_ray(cfg.resources.address)
    require_cpus(cfg.resources, 1, "a committee member's task")
    res = placement(cfg.resources)
    task = ray.remote(_member_task).options(**res)
    cpus = int(ray.cluster_resources().get("CPU", 1))
    log(
        f"training {len(pool)} member{'s' if len(pool) != 1 else ''} as Ray tasks ({res['num_cpus']:g} CPU, "
        f"{res['num_gpus']:g} GPU each; "
        f"{cpus} CPUs in the cluster)"
    )
    start = time.perf_counter()
    refs = {task.remote(cfg, m, threads_of(cfg.resources)): i for i, m in enumerate(pool)}
    results: dict[int, MemberLogits] = {}
    pending = list(refs)
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        i = refs[done[0]]
        results[i] = _get(done[0], pool[i])
        r = results[i]
        if on_result is not None:
            on_result(i, r)
        test_top1 = 100 * (r.test.argmax(1) == r.test_labels).mean()
        log(
            f"member {len(results)}/{len(pool)} {r.name} done on {r.info.get('device')}: test top1 {test_top1:.2f}% "
            f"({time.perf_counter() - start:.0f} s)"
        )
    return [results[i] for i in range(len(pool))]


def _get(ref: Any, member: MemberSpec) -> MemberLogits:
    try:
        result: MemberLogits = ray.get(ref)
    except ray.exceptions.RayTaskError as err:
        cause = getattr(err, "cause", None)
        if isinstance(cause, ConfigError):
            named = str(cause).startswith(f"member {member.name}")  # already says which member
            raise ConfigError(str(cause) if named else f"member {member.name}: {cause}") from None
        raise
    return result
