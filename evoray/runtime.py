"""Devices, precision, threads and seeding: the runtime settings every command shares."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from evoray.errors import ConfigError


@dataclass
class RuntimeConfig:
    device: str = "auto"  # auto (the first GPU if there is one, else the CPU) | cpu | cuda | cuda:N
    precision: str = field(default="fp32", metadata={"choices": ("fp32", "bf16", "fp16")})  # autocast dtype
    # NHWC memory format for models and inputs: measured faster for evoray's supernets on the CPU (bench/supernet.py,
    # bench/evnas.py) and the format of the fast convolution kernels on GPUs; false keeps NCHW
    channels_last: bool = True
    threads: int = field(default=0, metadata={"min": 0})  # torch intra-op threads; 0 leaves PyTorch's default
    deterministic: bool = False  # ask cuDNN/PyTorch for deterministic kernels (slower on a GPU)
    # cuDNN's autotuner on a GPU (torch.backends.cudnn.benchmark): times the kernels of each new convolution shape and
    # keeps the fastest. auto: as each method's original code sets it: on where every step runs the same shapes
    # (DARTS, SNAS, XNAS, training a network), off where a sampled path changes them step by step (GDAS, RSPS, whose
    # AutoDL scripts turn it off) and in EvNAS (its original turns it off; on an H200 the embedded default's first
    # generation took 32.6 s on a GPU actor with it on, 3.7 s on a CPU one). Off whenever deterministic is on
    autotune: str = field(default="auto", metadata={"choices": ("auto", "on", "off")})
    # keep freed host memory in the process for the next tensor (glibc malloc: no mmap per large block, no trimming):
    # a fitness pass at batch 1024 otherwise page-faults through every fresh tensor and takes twice as long
    # (bench/evnas.py); the price is that the process's resident memory stays at its peak
    reuse_memory: bool = True

    def validate(self) -> None:
        if self.device != "auto":
            parse_device(self.device)
        if self.precision == "fp16" and self.device == "cpu":
            raise ConfigError(FP16_NEEDS_CUDA)

    def autotunes(self, method_default: bool) -> bool:
        """Whether cuDNN's autotuner runs, for work whose method turns it on (``method_default``) under auto."""
        return not self.deterministic and (self.autotune == "on" or (self.autotune == "auto" and method_default))


@dataclass
class ResourcesConfig:
    """What each worker of a run reserves on a Ray cluster: an evolve run's supernet actors, a search's trials, a
    committee's member tasks. The one rule: ``gpus: -1`` gives each worker a GPU when the cluster has GPUs, none
    otherwise; a CPU worker runs ``cpus`` torch threads."""

    cpus: float = field(default=1.0, metadata={"min": 0.0})  # CPUs each worker reserves; its torch threads
    gpus: float = -1.0  # GPUs each worker reserves (fractions share one); -1: one when the cluster has GPUs, else 0
    address: str = ""  # Ray cluster to join ("auto", "host:port", "ray://..."); "" starts a local Ray

    def validate(self) -> None:
        if self.gpus < 0 and self.gpus != -1:
            raise ConfigError(f"resources.gpus = {self.gpus}: give a count >= 0, or -1 for one per worker on GPUs")


FP16_NEEDS_CUDA = "runtime.precision=fp16 needs a CUDA device; use bf16 or fp32 on the CPU"


def parse_device(name: str) -> torch.device:
    """The CPU or CUDA device ``name`` names (not ``auto``), whether or not this machine has it; anything else is a
    one-line error."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise ConfigError(f"runtime.device {name!r} is not a device; valid: auto, cpu, cuda, cuda:N")
    return device


def resolve_device(name: str) -> torch.device:
    """``auto`` picks ``cuda`` when available; a CUDA device that does not exist is a one-line error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = parse_device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} asked for, but this machine has no CUDA GPU; use device=cpu or auto")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"device {name!r} does not exist; this machine has {torch.cuda.device_count()} GPU(s)")
    return device


_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX = -1, -2, -4  # glibc's mallopt parameters
_memory_reused = False


def reuse_freed_memory() -> bool:
    """Make this process's allocator keep freed memory for reuse: glibc's malloc serves every block from its heap
    (no ``mmap``, whose pages fault in again on each new tensor) and returns memory to the system only above 1 GiB
    free. Once per process; False where the C library is not glibc (then nothing changes)."""
    global _memory_reused
    if _memory_reused or not sys.platform.startswith("linux"):
        return _memory_reused
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018 -- present only in glibc, whose mallopt parameters these are
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    settings = ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 1 << 30), (_M_TOP_PAD, 64 << 20))
    _memory_reused = all(mallopt(param, value) == 1 for param, value in settings)
    return _memory_reused


def set_determinism(deterministic: bool, autotune: bool = False) -> None:
    """Deterministic kernels (and no cuDNN autotuning), or not, and cuDNN's autotuner on or off, for this process:
    every process that computes (the driver, an actor, a trial) sets it for itself."""
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = autotune and not deterministic


def autotuner_on() -> bool:
    """Whether this process runs cuDNN's autotuner (what :func:`set_determinism` last set)."""
    return bool(torch.backends.cudnn.benchmark)


def apply_runtime(cfg: RuntimeConfig, autotune: bool = True) -> torch.device:
    """Set threads, determinism, cuDNN's autotuner (``cfg.autotunes(autotune)``: ``autotune`` is the setting of the
    method to come, which runtime.autotune=auto follows) and the allocator; return the device."""
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    if cfg.reuse_memory:
        reuse_freed_memory()
    set_determinism(cfg.deterministic, cfg.autotunes(autotune))
    return runtime_device(cfg)


def runtime_device(cfg: RuntimeConfig) -> torch.device:
    """The device ``cfg`` runs on in this process, checked with its precision (fp16 needs a GPU); sets nothing."""
    device = resolve_device(cfg.device)
    if cfg.precision == "fp16" and device.type != "cuda":
        raise ConfigError(FP16_NEEDS_CUDA)
    return device


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[None]:
    """Mixed-precision context for ``precision`` (a no-op for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def memory_format(cfg: RuntimeConfig) -> torch.memory_format:
    return torch.channels_last if cfg.channels_last else torch.contiguous_format


def seed_everything(seed: int) -> None:
    """Seed torch's generators (CPU and CUDA): weight initialisation and torch-sampled noise. evoray's other
    randomness flows from explicit generators (``numpy.random.Generator``, ``torch.Generator``) seeded from the
    config, so no global numpy or ``random`` state is touched."""
    torch.manual_seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Temporarily use ``n`` intra-op threads (0: unchanged)."""
    before = torch.get_num_threads()
    if n > 0:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
