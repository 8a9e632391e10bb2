"""Joining Ray and placing work on it: the one ``ray.init`` of evoray, and the one GPU/CPU placement rule.

Ray's authentication is left as the user configured it: evoray never sets ``RAY_AUTH_MODE``; a local Ray uses
Ray's default (token authentication for local clusters), and a cluster started with ``RAY_AUTH_MODE=token`` is joined
with the token that ``ray get-auth-token`` prints on its head node.
"""

from __future__ import annotations

import socket
from typing import Any

import ray

from evoray.errors import ConfigError
from evoray.runtime import ResourcesConfig


def ensure_ray(address: str | None = None) -> None:
    """Join the cluster at ``address`` ("auto", "host:port", "ray://..."), or start a local Ray, unless this
    process is already connected."""
    if address and address not in ("auto", "local"):
        check_reachable(address)
    if ray.is_initialized():
        return
    if address:
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        except ConnectionError as err:  # "auto" with no cluster on this machine, or one that stopped answering
            reason = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
            raise ConfigError(
                f"no Ray cluster found for address {address!r} ({reason}); start one (ray start --head) or correct "
                "resources.address (--address): host:port, ray://host:port or auto"
            ) from None
        return
    # "local" starts a fresh Ray even when a cluster started earlier left its address behind. Its workers (the
    # actors and trials that do a run's work) run at the driver's priority: Ray's default niceness of 15 gives them
    # about 4% of a core beside any other busy process (beside a two-thread job, the embedded default's first
    # generation had not finished after 6 minutes; at the driver's priority it took 82 s)
    ray.init(address="local", include_dashboard=False, log_to_driver=False, _system_config={"worker_niceness": 0})


RAY_CLIENT_PORT = 10001  # the port of a ray:// address that names none


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """A cluster address that nothing answers at is a one-line error at once, not minutes of Ray's retries. An
    address of another form is left to Ray to judge."""
    scheme, _, rest = address.rpartition("://")
    host, sep, port = rest.rstrip("/").rpartition(":")
    if not sep and scheme == "ray":
        host, port = rest.rstrip("/"), str(RAY_CLIENT_PORT)
    if not host or not port.isdigit():
        return
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise ConfigError(
            f"no Ray cluster answers at {address!r} ({reason}); start one there (ray start --head) or correct "
            "resources.address (--address): host:port, ray://host:port or auto"
        ) from None


def cluster_has_gpus() -> bool:
    return bool(ray.cluster_resources().get("GPU", 0) > 0)


def placement(resources: ResourcesConfig) -> dict[str, float]:
    """What one worker (actor, trial, task) reserves: ``gpus`` (-1: one when the cluster has GPUs, else none) and
    ``cpus``, at least one, the torch threads of a CPU worker."""
    gpus = resources.gpus
    if gpus < 0:
        gpus = 1.0 if cluster_has_gpus() else 0.0
    return {"num_cpus": max(float(resources.cpus), 1.0 if gpus == 0 else 0.0), "num_gpus": gpus}


def require_cpus(resources: ResourcesConfig, workers: int, what: str) -> None:
    """On a local Ray, ``workers`` workers that must run at once (an evolve run's actors, which all-reduce) fit its
    CPUs and GPUs: otherwise the last ones would wait forever, or, with more torch threads than cores, crawl. A
    cluster (``resources.address``) may grow, so it is not checked."""
    if resources.address:
        return
    each, have = placement(resources), ray.cluster_resources()
    for key, kind, setting in (("num_cpus", "CPU", "cpus"), ("num_gpus", "GPU", "gpus")):
        need, got = each[key] * workers, float(have.get(kind, 0))
        if need > got:
            raise ConfigError(
                f"{what}: {workers} worker(s) of resources.{setting}={getattr(resources, setting):g} need {need:g} "
                f"{kind}s but this Ray has {got:g}; lower resources.{setting} or the number of workers"
            )


def worker_device(cpu_only: bool = False) -> Any:
    """The device of a Ray worker: the GPU Ray assigned it (it sees only that one), else the CPU."""
    import torch

    if not cpu_only and ray.get_gpu_ids() and torch.cuda.is_available():
        return torch.device("cuda", 0)
    return torch.device("cpu")


def threads_of(resources: ResourcesConfig) -> int:
    """The torch threads of a CPU worker: its reserved CPUs (at least one)."""
    return max(int(resources.cpus), 1)
