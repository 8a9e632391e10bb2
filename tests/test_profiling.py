import math

import torch
from torch import Tensor, nn

from evoray.profiling import count_flops, count_parameters, measure_latency, profile_model


class TinyNet(nn.Module):
    """Linear(10, 5) + Linear(5, 2) = 55 + 12 = 67 parameters, plus an auxiliary head of 5 * 3 + 3 = 18."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(10, 5), nn.ReLU(), nn.Dropout(0.5))
        self.classifier = nn.Linear(5, 2)
        self.auxiliary_head = nn.Linear(5, 3)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        h = self.body(x)
        aux = self.auxiliary_head(h) if self.training else None
        return self.classifier(h), aux


def test_count_parameters_excludes_auxiliary() -> None:
    net = TinyNet()
    assert count_parameters(net) == 67
    assert count_parameters(net, exclude=()) == 85
    assert count_parameters(net, exclude=("auxiliary", "classifier")) == 55


def test_count_flops_matches_thop_formulas() -> None:
    assert count_flops(nn.Linear(10, 5), (10,)) == 50.0  # in_features * out elements
    conv = nn.Conv2d(3, 8, 3, padding=1)
    assert count_flops(conv, (3, 16, 16)) == 8 * 16 * 16 * 3 * 3 * 3  # out elements * C_in * k * k
    grouped = nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=4)
    assert count_flops(grouped, (8, 16, 16)) == 8 * 8 * 8 * (8 // 4) * 3 * 3


def test_count_flops_handles_tuple_output_and_leaves_model_clean() -> None:
    net = TinyNet().train()
    assert count_flops(net, (10,)) == 50 + 10  # eval mode: the auxiliary head does not run
    assert net.training
    assert all("total_ops" not in m._buffers for m in net.modules())
    assert all(not m._forward_hooks for m in net.modules())


def test_measure_latency_restores_modes() -> None:
    net = TinyNet().train()
    net.body[2].eval()  # a caller's per-module mode survives
    ms = measure_latency(net, (10,), torch.device("cpu"), warmup=1, repeats=3, batch_size=4)
    assert math.isfinite(ms) and ms > 0
    assert net.training and net.classifier.training and not net.body[2].training


def test_profile_model_keys() -> None:
    stats = profile_model(TinyNet(), (10,), "cpu", warmup=0, repeats=2)
    assert set(stats) == {"params_m", "flops_m", "latency_ms"}
    assert stats["params_m"] == 67 / 1e6
    assert stats["flops_m"] == 60 / 1e6
    assert stats["latency_ms"] > 0
