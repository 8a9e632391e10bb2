import math
from types import SimpleNamespace

import pytest
import torch
from torch import Tensor, nn

from evoray import profiling
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


def test_count_flops_sees_every_op_of_a_cell() -> None:
    """The ops that run their convolutions or pools through evoray's own kernels count as the nn layers they stand
    for: a SepConv as its two depthwise kxk and two 1x1 convs, a DilConv as one of each, the 3x3 average pool as one
    operation per output element."""
    from evoray.nn.ops import AvgPool3x3, DilConv, SepConv

    C, H = 8, 16
    depthwise, pointwise, bn = C * H * H * 3 * 3, C * H * H * C, 2 * C * H * H  # thop: 2 per element of a BN
    assert count_flops(SepConv(C, C, 3, 1, 1, affine=False), (C, H, H)) == 2 * (depthwise + pointwise + bn)
    assert count_flops(DilConv(C, C, 3, 1, 2, 2, affine=False), (C, H, H)) == depthwise + pointwise + bn
    assert count_flops(AvgPool3x3(1), (C, H, H)) == C * H * H


def test_count_flops_reproduces_the_originals_counts() -> None:
    """DARTS_V2 in the DARTS evaluation network (C=36, 20 cells, 32x32) and a NAS-Bench-201 cell in its network
    (C=16, N=5): the multiply-adds thop counts for quark0/darts' NetworkCIFAR and AutoDL-Projects' TinyNetwork."""
    from evoray.nn.networks import NB201Network, NetworkCIFAR
    from evoray.spaces import parse_genotype
    from evoray.spaces.published import published_genotype

    darts = NetworkCIFAR(36, 10, 20, True, published_genotype("DARTS_V2"))
    assert count_flops(darts, (3, 32, 32)) / 1e6 == pytest.approx(549.85, abs=0.005)
    cell = parse_genotype("|nor_conv_3x3~0|+|none~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_1x1~1|avg_pool_3x3~2|")
    assert count_flops(NB201Network(16, 5, cell, 10), (3, 32, 32)) / 1e6 == pytest.approx(48.73, abs=0.005)


def test_genotype_params_m_counts_the_evaluation_networks() -> None:
    """The archive's params_m column: DARTS_V2 in the DARTS CIFAR-10 network (3.349342M, as the original counts it,
    auxiliary head excluded) and NAS-Bench-201's all-3x3 cell in its network (1.531546M)."""
    from evoray.profiling import genotype_params_m
    from evoray.spaces.published import published_entry

    assert genotype_params_m(published_entry("DARTS_V2")["genotype"]) == pytest.approx(3.349342, abs=1e-9)
    arch = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
    assert genotype_params_m(arch) == pytest.approx(1.531546, abs=1e-9)
    assert genotype_params_m(published_entry("DARTS_V2")["genotype"], C=16, layers=8) < 1.0


def test_count_parameters_matches_names_anywhere_and_counts_shared_once() -> None:
    """A wrapped model's auxiliary head (``0.auxiliary_head.weight``) is still left out, and a parameter shared by two
    modules counts once."""
    assert count_parameters(nn.Sequential(TinyNet())) == 67
    tied = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    tied[1].weight = tied[0].weight
    assert count_parameters(tied) == 16 + 4 + 4
    assert profile_model(TinyNet(), (10,), "cpu", exclude=(), warmup=0, repeats=1)["params_m"] == 85 / 1e6


class Clocked(nn.Module):
    """Linear(10, 2) whose forward passes advance a fake clock by the given seconds, one after another."""

    def __init__(self, seconds: list[float]) -> None:
        super().__init__()
        self.linear = nn.Linear(10, 2)
        self.seconds = seconds
        self.now = 0.0

    def forward(self, x: Tensor) -> Tensor:
        self.now += self.seconds.pop(0)
        return self.linear(x)


def test_measure_latency_is_the_median_timed_pass_per_sample(monkeypatch) -> None:
    """Warm-up passes are not timed; the latency is the median timed pass divided by the batch size, in ms, measured
    on the caller's model itself when it already lives on the device."""
    net = Clocked([1.0, 1.0, 0.004, 0.010, 0.100])  # two warm-up passes, then three timed ones
    monkeypatch.setattr(profiling, "time", SimpleNamespace(perf_counter=lambda: net.now))
    ms = measure_latency(net, (10,), "cpu", warmup=2, repeats=3, batch_size=4)
    assert ms == pytest.approx(10.0 / 4) and net.seconds == []


def test_genotype_params_m_depends_on_every_argument() -> None:
    """Each (genotype, C, layers) is counted for itself: the cache does not answer one depth with another's count."""
    from evoray.profiling import genotype_params_m
    from evoray.spaces.published import published_entry

    g = published_entry("DARTS_V2")["genotype"]
    assert genotype_params_m(g) == pytest.approx(3.349342, abs=1e-9)
    assert genotype_params_m(g, layers=8) < genotype_params_m(g, C=36, layers=14) < genotype_params_m(g)
