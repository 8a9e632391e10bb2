"""Shared test fixtures: paths of the real data in ../shared/data, small deterministic seeds."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


_THREADS = torch.get_num_threads()  # the process's torch threads before any test


@pytest.fixture(autouse=True)
def _seed_and_threads() -> Iterator[None]:
    """Every test starts from seed 0 and leaves torch's thread count as it found it (a run applies its
    ``runtime.threads`` to the process, which would otherwise carry over into the tests after it)."""
    torch.manual_seed(0)
    yield
    if torch.get_num_threads() != _THREADS:
        torch.set_num_threads(_THREADS)


def shared_file(name: str) -> Path:
    """A file of ../shared/data, or a skip naming it when it is absent."""
    path = SHARED_DATA / name
    if not path.is_file():
        pytest.skip(f"{path} is absent (real data lives in ../shared/data beside the checkout)")
    return path


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for the whole test session (2 CPUs, no GPU, no dashboard)."""
    import ray

    if not ray.is_initialized():  # with Ray's default authentication (a token for local clusters)
        ray.init(address="local", num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
