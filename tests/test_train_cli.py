"""``python -m evoray.train``: profile output, a short real training run, reproducibility and one-line errors; the
training loop, evaluation and the shipped DARTS recipes against the original code."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from evoray.commands.train import main, train
from evoray.config import config_to_dict, load_config
from evoray.errors import ConfigError
from evoray.training import TrainConfig, train_genotype

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "evoray.train", *args], cwd=cwd, capture_output=True, text=True, timeout=600
    )


def test_profile_json_reports_darts_v2_params() -> None:
    proc = _run(
        "--config",
        "darts-cifar10",  # a shipped config, by name
        "--genotype",
        "DARTS_V2",
        "--profile",
        "--json",
        "--set",
        "profile.repeats=2",
        "--set",
        "profile.warmup=1",
        "--set",
        "seed=3",
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert round(result["params_m"], 3) == 3.349
    assert 500 < result["flops_m"] < 560  # DARTS reports 528M multiply-adds on 32x32 inputs
    assert result["latency_ms"] > 0


def test_short_training_run_learns_digits(tmp_path) -> None:
    cfg = load_config(
        TrainConfig,
        ROOT / "configs/train-default.yaml",
        ["optim.epochs=3", "model.init_channels=8", "profile.repeats=2", "profile.warmup=1"],
    )
    result = train(cfg, tmp_path, log=lambda _: None)
    assert result["test_top1"] > 60.0  # chance is 10%
    for name in ("results.json", "config.yaml", "weights.pt", "history.json", "run.json", "curves.parquet"):
        assert (tmp_path / name).is_file()
    saved = load_config(TrainConfig, tmp_path / "config.yaml")
    assert saved == cfg
    assert json.loads((tmp_path / "run.json").read_text())["status"] == "done"


def test_same_seed_same_result_in_fresh_processes(tmp_path) -> None:
    args = (
        "--json",
        "--set",
        "optim.epochs=1",
        "--set",
        "model.init_channels=4",
        "--set",
        "model.layers=3",
        "--set",
        "profile.repeats=1",
        "--set",
        "profile.warmup=0",
        "--set",
        "seed=7",
    )
    runs = [json.loads(_run(*args, cwd=tmp_path).stdout.strip().splitlines()[-1]) for _ in range(2)]
    assert len(list((tmp_path / "runs" / "train").iterdir())) == 2  # each run in runs/train/<name> by default
    assert runs[0]["test_loss"] == runs[1]["test_loss"]
    assert runs[0]["test_top1"] == runs[1]["test_top1"]


@pytest.mark.parametrize(
    ("args", "message"),
    [  # what was wrong, then what is valid
        (["--set", "optim.lrr=0.1"], r"unknown config key 'optim\.lrr' .*; valid keys under optim: .*\blr\b"),
        (["--set", "data.dataset=mnist"], r"'data\.dataset' = 'mnist' is not one of digits, cifar10"),
        (["--set", "runtime.precision=fp8"], r"'runtime\.precision' = 'fp8' is not one of fp32, bf16, fp16"),
        (["--genotype", "Genotype(normal=[('sep_conv_3x3', 0)"], r"malformed genotype .*not a Genotype\(name="),
        (["--genotype", "NOT_A_NAME"], r"unknown published genotype 'NOT_A_NAME'; valid: DARTS_V1, DARTS_V2"),
        (
            ["--genotype", "|nor_conv_9x9~0|+|none~0|none~1|+|none~0|none~1|none~2|"],
            r"op 'nor_conv_9x9' is not allowed .*; valid: none, skip_connect, nor_conv_1x1",
        ),
        (
            ["--config", "darts-cifar10", "--set", "data.root=/no/such/dir"],
            r"not found under '/no/such/dir' .*set data\.root to its directory",
        ),
        (["--config", "/no/such/config.yaml"], r"/no/such/config\.yaml; valid: .*shipped config: darts-cifar10"),
    ],
)
def test_bad_input_is_one_line_error(args: list[str], message: str, capsys, tmp_path, monkeypatch) -> None:
    """Each names what was wrong and what is valid, in one line, exit status 2, and writes nothing (no run
    directory under the working directory's runs/)."""
    monkeypatch.chdir(tmp_path)
    extra = ["--set", "model.network=nb201"] if args[-1].startswith("|") else []
    assert main([*args, *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and re.search(message, err), err
    assert list(tmp_path.iterdir()) == []


def test_nb201_genotype_needs_nb201_network() -> None:
    cfg = TrainConfig()
    cfg.model.genotype = "|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|"
    with pytest.raises(ConfigError, match=r"model\.network=nb201"):
        train_genotype(cfg)


# -- resume: the genotype it started with, and checkpoints that do not fit ------------------------------------------


def _tiny_run(tmp_path: Path, *extra: str) -> tuple[TrainConfig, Path]:
    from tests.test_runs import tiny_train

    cfg = tiny_train("optim.epochs=1", *extra)
    out = tmp_path / "run"
    train(cfg, out, log=lambda _: None)
    return cfg, out


def test_resume_trains_the_genotype_the_run_started_with(tmp_path, capsys) -> None:
    from evoray.runs import RunDir
    from evoray.spaces.published import published_genotype
    from tests.test_runs import digest

    v1, v2 = str(published_genotype("DARTS_V1")), str(published_genotype("DARTS_V2"))
    spec = tmp_path / "genotype.json"
    spec.write_text(json.dumps({"genotype": v2}))
    cfg, out = _tiny_run(tmp_path, f"model.genotype={spec}")
    first = json.loads((out / "results.json").read_text())
    spec.write_text(json.dumps({"genotype": v1}))  # the file edited after the run started
    before = digest(out)
    assert main(["--resume", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and v1 in err and v2 in err, err
    with RunDir.open("train", out, "x", resume=True) as run, pytest.raises(ConfigError, match="now gives"):
        train_genotype(cfg, run, log=lambda _: None)  # the run's own check, without the command's
    assert digest(out) == before  # refused before anything was written
    spec.unlink()  # the file gone: the run continues with the genotype it recorded
    assert main(["--resume", str(out), "--json"]) == 0
    resumed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert resumed["genotype"] == v2 and resumed["test_loss"] == first["test_loss"]


def test_checkpoint_holds_the_gpu_rng_and_resumes_without_it(tmp_path, capsys) -> None:
    from evoray.runs.directory import load_checkpoint, save_checkpoint

    _, out = _tiny_run(tmp_path)
    first = json.loads((out / "results.json").read_text())
    loaded = load_checkpoint(out / "checkpoints")
    assert loaded is not None
    state, tensors = loaded
    assert "cuda_rng" in tensors and tensors["cuda_rng"] is None  # a CPU run: saved, empty
    del tensors["cuda_rng"]  # a checkpoint written before the key existed
    save_checkpoint(out / "checkpoints", state, tensors)
    assert main(["--resume", str(out), "--json"]) == 0
    resumed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (resumed["test_loss"], resumed["test_top1"]) == (first["test_loss"], first["test_top1"])


def test_checkpoint_that_does_not_fit_is_one_line_and_changes_nothing(tmp_path, capsys) -> None:
    from evoray.runs.directory import load_checkpoint, save_checkpoint
    from tests.test_runs import digest

    _, out = _tiny_run(tmp_path)
    folder = out / "checkpoints"
    loaded = load_checkpoint(folder)
    assert loaded is not None
    state, tensors = loaded
    for key in ("history", "model"):
        save_checkpoint(folder, state, {k: v for k, v in tensors.items() if k != key})
        before = digest(out)
        assert main(["--resume", str(out)]) == 2, key
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err, err
        assert f"lacks {key!r}" in err and str(folder / "last.pt") in err, err
        assert digest(out) == before, key  # refused before anything was written
    tensors["model"] = {k: torch.zeros(1) for k in tensors["model"]}  # weights of another network
    save_checkpoint(folder, state, tensors)
    before = digest(out)
    assert main(["--resume", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "does not fit this run" in err, err
    assert digest(out) == before


def test_a_diverged_training_is_one_line_and_the_run_is_failed(tmp_path, capsys) -> None:
    """A loss that becomes NaN (a learning rate of 1e9, no clipping) stops the run with one line that names the cause
    and the settings to change, exit 2, and the run directory says failed."""
    from tests.test_runs import TRAIN_TINY

    out = tmp_path / "run"
    sets = [f"--set={s}" for s in (*TRAIN_TINY, "optim.epochs=1", "optim.lr=1e9", "optim.grad_clip=0")]
    assert main([*sets, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: training diverged: the loss became nan at epoch 0 step ") and "\n" not in err, err
    assert "lower optim.lr (now 1e+09) or set optim.grad_clip (now 0: no clipping)" in err
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["status"] == "failed" and "training diverged" in manifest["error"]


# -- the training loop against the original's, step by step ---------------------------------------------------------


class _TwoHeads(torch.nn.Module):
    """A classifier with an auxiliary head whose logits shrink by ``1 - drop_path_prob`` while training (so the
    probability each epoch trains at shows in the loss), as the evaluation networks' drop path is on only then."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.main, self.aux = torch.nn.Linear(4, 6), torch.nn.Linear(4, 6)
        self.drop_path_prob = 0.0

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scale = 1 - self.drop_path_prob if self.training else 1.0
        x = x.flatten(1)  # (B, 4, 1, 1) images -> (B, 4)
        return self.main(x) * scale, self.aux(x)


class _Batches:
    """A fixed list of (x, y) batches as a BatchSource."""

    def __init__(self, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        self.batches = batches
        self.num_examples = sum(len(y) for _, y in batches)
        self.batch_size = len(batches[0][1])

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)

    def set_epoch(self, *key: int) -> None:
        pass


def _batches() -> _Batches:
    """Uneven batches: the first with gradients far above the clipping norm of 5, the second far below it."""
    g = torch.Generator().manual_seed(1)
    sizes, scales = (5, 3), (30.0, 0.05)
    return _Batches(
        [
            (torch.randn(n, 4, 1, 1, generator=g) * s, torch.randint(0, 6, (n,), generator=g))
            for n, s in zip(sizes, scales)
        ]
    )


def _smoothed_ce(logits: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    """The original's CrossEntropyLabelSmooth (train_imagenet.py): targets (1 - eps) one-hot + eps / K."""
    log_probs = logits.log_softmax(1)
    targets = torch.zeros_like(log_probs).scatter_(1, y[:, None], 1) * (1 - eps) + eps / logits.shape[1]
    return (-targets * log_probs).mean(0).sum()


RECIPES = {
    "cifar10": [],  # cosine to 0, epoch e at cosine(e), drop path 0.2 e / epochs, auxiliary weight 0.4
    "imagenet": ["optim.schedule=exponential", "optim.lr=0.1", "optim.weight_decay=3e-5", "optim.label_smoothing=0.1"],
    "step-first": [
        "optim.lr_step_at_start=true",
        "optim.lr_min=0.001",
        "optim.nesterov=true",
        "model.auxiliary_weight=0.7",
    ],
}


@pytest.mark.parametrize("sets", list(RECIPES.values()), ids=list(RECIPES))
def test_fit_model_replays_the_originals_training_loop(sets: list[str]) -> None:
    """fit_model's weights, learning rates, losses and train accuracies equal the original's train.py loop written
    out: scheduler, drop_path_prob = p * epoch / epochs, loss = CE(logits) + w CE(aux) (both label-smoothed),
    clip_grad_norm_(5) over all parameters, SGD step; loss and top-1 averaged over examples, of the main head."""
    from evoray.training import fit_model

    cfg = load_config(TrainConfig, ROOT / "configs/darts-cifar10.yaml", ["optim.epochs=4", *sets])
    o, m = cfg.optim, cfg.model
    model, ref = _TwoHeads(), _TwoHeads()
    data = _batches()
    model.eval()  # as after an evaluation: each epoch trains in train mode
    history = fit_model(cfg, model, data, torch.device("cpu"), log=lambda _: None)

    opt = torch.optim.SGD(ref.parameters(), o.lr, momentum=o.momentum, weight_decay=o.weight_decay, nesterov=o.nesterov)
    expected = []
    for e in range(o.epochs):
        t = e + 1 if o.lr_step_at_start else e  # PyTorch >= 1.1 or 0.3.1 semantics of the step before each epoch
        if o.schedule == "exponential":
            lr = o.lr * o.lr_gamma**t
        else:
            lr = o.lr_min + (o.lr - o.lr_min) * (1 + math.cos(math.pi * t / o.epochs)) / 2
        for group in opt.param_groups:
            group["lr"] = lr
        ref.drop_path_prob = m.drop_path_prob * e / o.epochs
        losses, hits, count = 0.0, 0.0, 0
        for x, y in data:
            opt.zero_grad()
            logits, aux = ref(x)
            loss = _smoothed_ce(logits, y, o.label_smoothing) + m.auxiliary_weight * _smoothed_ce(
                aux, y, o.label_smoothing
            )
            loss.backward()
            torch.nn.utils.clip_grad_norm_(ref.parameters(), o.grad_clip)
            opt.step()
            losses += loss.item() * len(y)
            hits += (logits.argmax(1) == y).sum().item()
            count += len(y)
        expected.append({"epoch": e + 1, "lr": lr, "train_loss": losses / count, "train_top1": 100 * hits / count})
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    for key in ("lr", "train_loss", "train_top1"):
        assert [h[key] for h in history] == pytest.approx([h[key] for h in expected], rel=1e-5), key
    for a, b in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert model.drop_path_prob == pytest.approx(m.drop_path_prob * 3 / 4)  # the last epoch's: 0.2 * 3 / 4


def test_clipping_scales_the_total_l2_norm_down_only() -> None:
    """Gradients of norms 5 and 12 (total 13) clipped to 6.5 halve; below the bound they stay as they are."""
    from evoray.optim import clip_gradient_tensors

    grads = [torch.tensor([3.0, 4.0]), torch.tensor([[12.0]])]
    clip_gradient_tensors(grads, 6.5)
    torch.testing.assert_close(grads[0], torch.tensor([1.5, 2.0]), rtol=1e-5, atol=0.0)
    torch.testing.assert_close(grads[1], torch.tensor([[6.0]]), rtol=1e-5, atol=0.0)
    clip_gradient_tensors(grads, 100.0)
    torch.testing.assert_close(grads[0], torch.tensor([1.5, 2.0]), rtol=1e-5, atol=0.0)


class _ModeLogits(torch.nn.Module):
    """Fixed logits for the examples whose indices it is given, noise while training; auxiliary logits that rank the
    classes the other way round."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits

    def forward(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.logits[index]
        if self.training:
            out = out + 100 * torch.randn_like(out)
        return out, -out


def test_evaluate_reads_the_main_head_in_eval_mode_averaged_over_examples() -> None:
    """Loss, top-1 and top-5 (%) of 7 examples in batches of 4 and 3, computed by hand: ranks of the targets
    1, 1, 2, 5, 6, 3, 1 among 6 classes, so top-1 3/7 and top-5 6/7; the loss is the mean over examples."""
    from evoray.training import evaluate

    rank = [1, 1, 2, 5, 6, 3, 1]
    logits = torch.zeros(7, 6)
    for i, r in enumerate(rank):  # the target, class 0, scores 7 - r of 1..6: rank r
        logits[i] = torch.tensor([7.0 - r] + [v for v in (6.0, 5.0, 4.0, 3.0, 2.0, 1.0) if v != 7.0 - r])
    targets = torch.zeros(7, dtype=torch.long)
    source = _Batches([(torch.arange(4), targets[:4]), (torch.arange(4, 7), targets[4:])])
    model = _ModeLogits(logits)
    model.train()
    result = evaluate(model, source, torch.device("cpu"))
    nll = sum(math.log(sum(math.exp(v) for v in row)) - row[0] for row in logits.tolist()) / 7
    assert result == pytest.approx({"loss": nll, "top1": 100 * 3 / 7, "top5": 100 * 6 / 7})
    assert not model.training


# quark0/darts cnn/train.py (with the README's --auxiliary --cutout) and cnn/train_imagenet.py (with --auxiliary)
DARTS_CIFAR10: dict[str, dict[str, Any]] = {
    "model": {
        "init_channels": 36,
        "layers": 20,
        "auxiliary": True,
        "auxiliary_weight": 0.4,
        "drop_path_prob": 0.2,
    },
    "optim": {
        "epochs": 600,
        "lr": 0.025,
        "lr_min": 0.0,
        "schedule": "cosine",
        "lr_step_at_start": False,
        "momentum": 0.9,
        "nesterov": False,
        "weight_decay": 3e-4,
        "grad_clip": 5.0,
        "label_smoothing": 0.0,
    },
    "data": {
        "dataset": "cifar10",
        "batch_size": 96,
        "cutout": 16,
        "augment": True,
    },
}
DARTS_IMAGENET: dict[str, dict[str, Any]] = {
    "model": {
        "network": "imagenet",
        "init_channels": 48,
        "layers": 14,
        "auxiliary": True,
        "auxiliary_weight": 0.4,
        "drop_path_prob": 0.0,
    },
    "optim": {
        "epochs": 250,
        "lr": 0.1,
        "schedule": "exponential",
        "lr_gamma": 0.97,
        "lr_step_at_start": False,
        "momentum": 0.9,
        "weight_decay": 3e-5,
        "grad_clip": 5.0,
        "label_smoothing": 0.1,
    },
    "data": {
        "dataset": "imagenet",
        "batch_size": 128,
    },
}


def _values(cfg: TrainConfig, like: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The values of ``cfg`` under the keys of ``like``."""
    resolved = config_to_dict(cfg)
    return {section: {k: resolved[section][k] for k in keys} for section, keys in like.items()}


def test_darts_recipes_are_the_originals() -> None:
    """The shipped configs hold the original's values, and TrainConfig's defaults are the CIFAR-10 recipe."""
    cifar = load_config(TrainConfig, ROOT / "configs/darts-cifar10.yaml")
    assert _values(cifar, DARTS_CIFAR10) == DARTS_CIFAR10
    assert _values(TrainConfig(), DARTS_CIFAR10) == DARTS_CIFAR10
    imagenet = load_config(TrainConfig, ROOT / "configs/darts-imagenet.yaml")
    assert _values(imagenet, DARTS_IMAGENET) == DARTS_IMAGENET
