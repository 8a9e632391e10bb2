"""What every gradient searcher shares: the supernet, the data halves, the weight optimiser, the epoch loop, the
epoch metrics, the genotype and the state.

A searcher is plain PyTorch (no Ray): ``train_epoch()`` runs one epoch and returns its metrics, ``genotype()`` derives
the current cell, ``state_dict()``/``load_state_dict()`` save and restore everything needed to continue to the same
results. Subclasses set the supernet's weighting mode and implement :meth:`Searcher.arch_update` (bilevel searchers)
or :meth:`Searcher.step` (single-level ones).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from evoray.data import build_data
from evoray.errors import ConfigError, diverged
from evoray.nn.supernet import Supernet, build_supernet
from evoray.nn.weighting import EdgeWeights, path_weights
from evoray.optim import (
    FlatSGD,
    build_schedule,
    build_sgd,
    clip_gradient_tensors,
    step_schedule_first,
    weight_gradients,
)
from evoray.runtime import autocast
from evoray.searchers.settings import SearchSettings
from evoray.spaces import SPACES, Genotype, format_genotype, get_space

Alphas = dict[str, np.ndarray]


class Searcher:
    """One gradient search on one device. Subclasses: DARTS, SNAS, GDAS, XNAS, RSPS."""

    name: ClassVar[str]
    weighting: ClassVar[str] = "softmax"  # the supernet's weighting mode (evoray.nn.weighting)
    families: ClassVar[tuple[str, ...]] = ("darts", "nb201")  # search-space families the method applies to
    # Bilevel searchers step the alphas on validation batches; a single-level one (SNAS, RSPS) reads none, and its
    # steps get the training batch in their place.
    bilevel: ClassVar[bool] = True
    step_order: ClassVar[str] = "arch_first"  # bilevel: the original's order of the two halves of a step
    # cuDNN's autotuner under runtime.autotune=auto, as the original code set it: on where every step runs the same
    # convolution shapes (every op of every edge), off where a sampled path changes them step by step
    autotune: ClassVar[bool] = True
    Options: ClassVar[type | None] = None  # the dataclass of this searcher's options (its config section)
    # The paper's settings that differ from SearchSettings' defaults, per space family, applied under the user's.
    paper_defaults: ClassVar[dict[str, dict[str, Any]]] = {}

    @classmethod
    def check_space(cls, space_name: str) -> None:
        space = get_space(space_name)
        if space.family.name not in cls.families:
            valid = [s for s in SPACES.names() if get_space(s).family.name in cls.families]
            raise ConfigError(
                f"searcher {cls.name} cannot run on space {space_name} ({space.family} family); "
                f"it runs on: {', '.join(valid)}"
            )

    @classmethod
    def check(cls, cfg: SearchSettings) -> None:
        """Checks of this searcher's settings that need the whole config (called by ``SearchSettings.validate``)."""
        if cls.bilevel:
            cfg.data.require_validation_half(f"the alphas of {cls.name}")

    def __init__(self, cfg: SearchSettings, device: torch.device) -> None:
        self.cfg, self.device = cfg, device
        self.space = get_space(cfg.supernet.space)
        self.data = build_data(cfg.data, seed=cfg.seed, split="search")
        torch.manual_seed(cfg.seed)
        self.net = self.build_net().to(device)
        self.fmt = torch.channels_last if cfg.runtime.channels_last else torch.contiguous_format
        self.net = self.net.to(memory_format=self.fmt)
        self.weights = list(self.net.weight_parameters())
        self.w_optimizer = build_sgd(self.weights, cfg.optim, flat=True)  # state dicts go through torch.save
        self.scheduler = build_schedule(self.w_optimizer, cfg.optim, cfg.epochs)
        self.a_optimizer = self.build_arch_optimizer()
        self.epoch = 0
        self.best: tuple[float, int] | None = None  # the best validation accuracy so far, and its epoch

    # -- construction -------------------------------------------------------------------------------------------
    def build_net(self) -> Supernet:
        d = self.data
        return build_supernet(self.cfg.supernet, d.num_classes, d.in_channels, self.weighting, self.cfg.alpha_init_std)

    def build_arch_optimizer(self) -> torch.optim.Optimizer | None:
        a = self.cfg.arch
        alphas = self.net.arch_parameters()
        if a.optimizer == "adam":
            return torch.optim.Adam(alphas, a.lr, betas=(a.beta1, a.beta2), weight_decay=a.weight_decay)
        return torch.optim.SGD(alphas, a.lr, weight_decay=a.weight_decay)

    # -- one epoch ----------------------------------------------------------------------------------------------
    def begin_epoch(self) -> None:
        """Per-epoch schedules (temperatures); called before the epoch's first step."""

    def order(self) -> str:
        """The order of a bilevel step's halves: the config's, else the searcher's original."""
        return self.cfg.step_order or self.step_order

    def step(self, x: Tensor, y: Tensor, xv: Tensor, yv: Tensor) -> tuple[float, int]:
        """One search step on a training batch ``(x, y)`` and a validation batch ``(xv, yv)`` (the training batch again
        where the searcher is not :attr:`bilevel`); returns the summed training loss and the number of correct training
        predictions. Bilevel: the architecture update and the weight step, in :meth:`order`."""
        if self.order() == "arch_first":
            self.arch_update(x, y, xv, yv)
            return self.weight_step(x, y)
        out = self.weight_step(x, y)
        self.arch_update(x, y, xv, yv)
        return out

    def arch_update(self, x: Tensor, y: Tensor, xv: Tensor, yv: Tensor) -> None:
        """Update the architecture with the validation batch ``(xv, yv)`` (and the training batch, if needed)."""
        raise NotImplementedError

    def steps_per_epoch(self) -> int:
        return len(self.data.train)

    def train_epoch(self) -> dict[str, Any]:
        """One epoch of search; returns the epoch's metrics."""
        if self.epoch >= self.cfg.epochs:
            raise ConfigError(f"search already ran its {self.cfg.epochs} epochs")
        self.begin_epoch()
        if self.cfg.optim.lr_step_at_start:
            step_schedule_first(self.scheduler)
        lr = self.scheduler.get_last_lr()[0]
        self.net.train()
        self.data.train.set_epoch(self.epoch)
        loss_sum, correct, n = 0.0, 0, 0
        valid = self._valid_batches() if self.bilevel else None
        for x, y in self.data.train:
            x, y = self.to_device(x, y)
            xv, yv = self.to_device(*next(valid)) if valid is not None else (x, y)
            loss, right = self.step(x, y, xv, yv)
            loss_sum, correct, n = loss_sum + loss, correct + right, n + int(y.shape[0])
        if not self.cfg.optim.lr_step_at_start:
            self.scheduler.step()
        self.epoch += 1
        self.end_epoch()
        scores = self.evaluate()
        if self.best is None or scores["valid_acc"] > self.best[0]:
            self.best = (scores["valid_acc"], self.epoch)
        return {
            "epoch": self.epoch,
            "lr": lr,
            "train_loss": loss_sum / max(n, 1),
            "train_acc": 100.0 * correct / max(n, 1),
            **scores,
            "valid_acc_best": self.best[0],  # XNAS' last epoch, single-path after wipeout, can fall far below it
            "best_epoch": self.best[1],
            **self.describe(),
        }

    def end_epoch(self) -> None:
        """Work after an epoch's steps and before its metrics (RSPS: choose the best sampled cell)."""

    def _valid_batches(self) -> Iterator[tuple[Tensor, Tensor]]:
        """The validation half for the architecture steps, augmented as the training half is."""
        source = self.data.arch or self.data.valid
        assert source is not None
        k = 0
        while True:  # the validation half is reshuffled each time it runs out
            source.set_epoch(self.epoch * 1000 + k)
            yield from source
            k += 1

    def to_device(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        x = x.to(self.device, non_blocking=True).to(memory_format=self.fmt)
        return x, y.to(self.device, non_blocking=True)

    # -- shared pieces of steps ---------------------------------------------------------------------------------
    def forward(self, x: Tensor, weights: dict[str, EdgeWeights] | None = None) -> Tensor:
        with autocast(self.device, self.cfg.runtime.precision):
            return self.net(x, weights).float()

    def zero_weight_grads(self) -> None:
        """Free the weights' gradients, or zero them (``optim.keep_zero_grads``, PyTorch 1.x's zero_grad). Alphas
        without an optimiser (XNAS' experts, updated by hand) lose the gradient the last weight step left them, which
        nothing reads and which would otherwise add up step after step in ``optim.clip_all``'s norm."""
        self.w_optimizer.zero_grad(set_to_none=not self.cfg.optim.keep_zero_grads)
        if self.a_optimizer is None:
            for alpha in self.net.arch_parameters():
                alpha.grad = None

    def clip_weight_grads(self) -> None:
        """Clip the weights' gradient norm (with ``optim.clip_all``, the alphas' gradients count in it too)."""
        grads = weight_gradients(self.w_optimizer, self.weights)
        if self.cfg.optim.clip_all:
            grads += [a.grad for a in self.net.arch_parameters() if a.grad is not None]
        clip_gradient_tensors(grads, self.cfg.optim.grad_clip)

    def weight_step(self, x: Tensor, y: Tensor, weights: dict[str, EdgeWeights] | None = None) -> tuple[float, int]:
        """One SGD step of the supernet weights on the training loss."""
        self.zero_weight_grads()
        logits = self.forward(x, weights)
        loss = F.cross_entropy(logits, y)
        loss.backward()
        self.clip_weight_grads()
        self.w_optimizer.step()
        return self.loss_value(loss) * int(y.shape[0]), int((logits.argmax(1) == y).sum())

    def loss_value(self, loss: Tensor) -> float:
        """The training loss as a number (read after the step, as the step's one synchronisation); a NaN or infinite
        one stops the search with a one-line ``DivergedError`` (a trial that went on would report a cell of NaN
        weights as a result)."""
        value = float(loss.item())
        if not math.isfinite(value):
            lr = self.w_optimizer.param_groups[0]["lr"]
            what = f"search diverged: the training loss became {value} at epoch {self.epoch}"
            raise diverged(what, lr, self.cfg.optim.grad_clip)
        return value

    def arch_step(self, grads: list[Tensor]) -> None:
        """Apply ``grads`` (one per alpha tensor) with the architecture optimiser."""
        assert self.a_optimizer is not None
        self.a_optimizer.zero_grad(set_to_none=True)
        alphas = self.net.arch_parameters()
        for alpha, g in zip(alphas, grads):
            alpha.grad = g.detach()
        if self.cfg.arch.grad_clip > 0:
            nn.utils.clip_grad_norm_(alphas, self.cfg.arch.grad_clip)
        self.a_optimizer.step()

    # -- metrics ------------------------------------------------------------------------------------------------
    def accuracy(
        self, weights: dict[str, EdgeWeights] | None = None, batches: Iterable[tuple[Tensor, Tensor]] | None = None
    ) -> dict[str, float]:
        """Loss and accuracy of the supernet under ``weights`` (default: this searcher's weighting) on ``batches``
        (default: the validation half, at most ``eval_batches``), with BatchNorm on batch or running statistics
        (``eval_bn``); the running statistics are left as training accumulated them."""
        batch_stats = self.cfg.eval_bn == "train"
        saved = {k: v.clone() for k, v in self.net.state_dict().items() if "running_" in k or "num_batches" in k}
        self.net.train(batch_stats)
        drop, self.net.drop_path_prob = self.net.drop_path_prob, 0.0  # measuring drops no path
        loss_sum, correct, n = 0.0, 0, 0
        with torch.inference_mode():
            for x, y in batches if batches is not None else self.validation_batches():
                x, y = self.to_device(x, y)
                logits = self.forward(x, weights)
                loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
                correct += int((logits.argmax(1) == y).sum())
                n += int(y.shape[0])
        if batch_stats:
            self.net.load_state_dict(saved, strict=False)
        self.net.train()
        self.net.drop_path_prob = drop
        return {"valid_loss": loss_sum / max(n, 1), "valid_acc": 100.0 * correct / max(n, 1)}

    def validation_batches(self, limit: int | None = None) -> Iterator[tuple[Tensor, Tensor]]:
        """The validation half's batches in the order of pass 0 (at most ``limit``, default ``eval_batches``)."""
        assert self.data.valid is not None
        limit = self.cfg.eval_batches if limit is None else limit
        self.data.valid.set_epoch(0)
        for b, batch in enumerate(self.data.valid):
            if limit and b >= limit:
                return
            yield batch

    def evaluate(self) -> dict[str, float]:
        """The epoch's validation loss and accuracy under this searcher's weighting."""
        return self.accuracy()

    def score_cells(self, cells: Sequence[Genotype], batches: Sequence[tuple[Tensor, Tensor]]) -> list[float]:
        """Accuracy (%) of each cell on ``batches`` with the shared weights: the cell's single path (its ops run with
        weight 1, every other op and edge is off), BatchNorm as in :meth:`accuracy`. This is how the shared weights
        rank architectures (Kendall tau against a benchmark; RSPS' choice)."""
        out = []
        for cell in cells:
            weights = {ct: path_weights(self.space, ct, cell.cell(ct), self.device) for ct in self.space.cell_types}
            out.append(self.accuracy(weights, batches)["valid_acc"])
        return out

    def describe(self) -> dict[str, Any]:
        """The architecture's state: genotype, entropy of each cell type's op distribution, method specifics."""
        out: dict[str, Any] = {"genotype": format_genotype(self.genotype())}
        for ct, p in self.op_distributions().items():
            logp = torch.where(p > 0, p.clamp_min(1e-30).log(), torch.zeros_like(p))
            out[f"entropy_{ct}"] = float(-(p * logp).sum(-1).mean())
        return out

    def op_distributions(self) -> dict[str, Tensor]:
        """Per cell type, the (E, K) distribution over each edge's ops that the alphas stand for."""
        out = {}
        for ct, alpha in self.net.alphas.items():
            a = alpha.detach().float().masked_fill(self.net.wiped(ct), float("-inf"))
            out[ct] = F.softmax(a, dim=-1).cpu()
        return out

    # -- results ------------------------------------------------------------------------------------------------
    def derive_method(self) -> str | None:
        return None  # the space's default: DARTS top-2, NB201 argmax

    def genotype(self) -> Genotype:
        return self.net.genotype(self.derive_method())

    def alphas(self) -> Alphas:
        return {ct: a.detach().float().cpu().numpy().copy() for ct, a in self.net.alphas.items()}

    def done(self) -> bool:
        return self.epoch >= self.cfg.epochs

    # -- state --------------------------------------------------------------------------------------------------
    def extra_state(self) -> dict[str, Any]:
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        return None

    def state_dict(self) -> dict[str, Any]:
        state = {
            "searcher": self.name,
            "epoch": self.epoch,
            "net": self.net.state_dict(),
            "w_optimizer": self.w_optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "a_optimizer": None if self.a_optimizer is None else self.a_optimizer.state_dict(),
            "best": self.best,
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else None,
            "extra": self.extra_state(),
            "grads": self._grads_state(),
        }
        return state

    def _grads_state(self) -> dict[str, Any]:
        """What of the gradients the next steps read: which weights hold one (zeroed gradients, ``keep_zero_grads``:
        such a weight keeps getting weight decay and momentum) and the alphas' (with ``clip_all``, the last
        architecture step's gradient counts in the next weight step's clipping norm, as in AutoDL's code)."""
        return {
            "weights": [i for i, p in enumerate(self.weights) if p.grad is not None],
            "alphas": [None if a.grad is None else a.grad.detach().clone() for a in self.net.arch_parameters()],
        }

    def _load_grads_state(self, grads: dict[str, Any] | None) -> None:
        """Restore :meth:`_grads_state` (zeros for the weights that held a gradient). A checkpoint without it (older
        evoray): the weights with optimiser state held one."""
        if grads is None:
            grads = {"weights": [i for i, p in enumerate(self.weights) if self.w_optimizer.state.get(p)], "alphas": []}
        if self.cfg.optim.keep_zero_grads:
            for i in grads["weights"]:
                self.weights[int(i)].grad = torch.zeros_like(self.weights[int(i)])
        for alpha, g in zip(self.net.arch_parameters(), grads["alphas"]):
            alpha.grad = None if g is None else g.to(alpha.device)
        if isinstance(self.w_optimizer, FlatSGD):  # the flat buffers an uninterrupted run holds by now
            self.w_optimizer.flatten()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("searcher") != self.name:
            raise ConfigError(f"checkpoint holds a {state.get('searcher')!r} searcher, not {self.name}")
        self.net.load_state_dict(state["net"])
        self.w_optimizer.load_state_dict(state["w_optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.a_optimizer is not None and state["a_optimizer"] is not None:
            self.a_optimizer.load_state_dict(state["a_optimizer"])
        self.epoch = int(state["epoch"])
        best = state.get("best")
        self.best = None if best is None else (float(best[0]), int(best[1]))
        torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.load_extra_state(state["extra"])
        self._load_grads_state(state.get("grads"))


def linear_schedule(start: float, end: float, epoch: int, epochs: int) -> float:
    """``start`` at epoch 0, ``end`` at epoch ``epochs - 1`` (and after), linear in between."""
    if epochs <= 1:
        return end
    t = min(epoch, epochs - 1) / (epochs - 1)
    return start + (end - start) * t


def lr_now(searcher: Searcher) -> float:
    return float(searcher.w_optimizer.param_groups[0]["lr"])
