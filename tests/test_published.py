"""Published genotypes as data: every entry loads, round-trips, and unknown names list the valid ones."""

from __future__ import annotations

import json

import pytest

from evoray.errors import ConfigError
from evoray.spaces.genotype import Genotype, parse_genotype
from evoray.spaces.published import PUBLISHED_PATH, published_entry, published_genotype, published_names

REQUIRED = {
    "DARTS_V1",
    "DARTS_V2",
    "EvNAS_A",
    "EvNAS_B",
    "EvNAS_C",
    "XNAS",
    "SNAS_mild",
    "SNAS_mild_edge_all",
    "GDAS_V1",
}


def test_data_file_is_the_one_in_populations() -> None:
    assert PUBLISHED_PATH.parts[-2:] == ("populations", "published.json") and PUBLISHED_PATH.is_file()


def test_required_names_are_present() -> None:
    assert set(published_names()) >= REQUIRED


@pytest.mark.parametrize("name", published_names())
def test_every_entry_loads(name: str) -> None:
    entry = published_entry(name)
    assert entry["space"] == "darts"
    assert entry["source"] and entry["paper"]
    assert all(isinstance(v, (int, float)) for v in entry["reported"].values()), entry["reported"]
    g = published_genotype(name)
    assert g.cell_types == ("normal", "reduce")
    for cell_type in g.cell_types:
        assert g.cell(cell_type).concat == (2, 3, 4, 5)
        assert len(g.cell(cell_type).nodes) == 4
    assert parse_genotype(str(g)) == g


def test_darts_v2_round_trips_through_text_and_json() -> None:
    g = published_genotype("DARTS_V2")
    text = str(g)
    assert text == published_entry("DARTS_V2")["genotype"]  # published in the canonical form already
    assert parse_genotype(text) == g
    assert Genotype.from_json(json.loads(json.dumps(g.to_json()))) == g
    assert parse_genotype(json.dumps(g.to_json())) == g
    assert g.normal.nodes[3] == (("skip_connect", 0), ("dil_conv_3x3", 2))
    assert g.reduce.nodes[0] == (("max_pool_3x3", 0), ("max_pool_3x3", 1))


def test_range_concat_is_read() -> None:
    assert "range(2, 6)" in published_entry("XNAS")["genotype"]
    assert published_genotype("XNAS").normal.concat == (2, 3, 4, 5)
    assert published_genotype("XNAS").normal.nodes[3] == (("dil_conv_5x5", 4), ("sep_conv_3x3", 0))


def test_aliases() -> None:
    assert published_genotype("DARTS") == published_genotype("DARTS_V2")
    for code_name, name in (("EvNASA", "EvNAS_A"), ("EvNASB", "EvNAS_B"), ("EvNASC", "EvNAS_C")):
        assert published_genotype(code_name) == published_genotype(name)
        assert published_entry(code_name) == published_entry(name)
    assert "DARTS" not in published_names()


def test_unknown_name_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match="unknown published genotype 'DARTS_V3'") as info:
        published_genotype("DARTS_V3")
    message = str(info.value)
    assert "\n" not in message
    for name in published_names():
        assert name in message
    assert message.endswith("(aliases: DARTS -> DARTS_V2, EvNASA -> EvNAS_A, EvNASB -> EvNAS_B, EvNASC -> EvNAS_C)")
    with pytest.raises(ConfigError, match="valid: "):
        published_entry("nope")


def test_entries_are_copies() -> None:
    published_entry("DARTS_V2")["reported"]["cifar10_error"] = 0.0
    assert published_entry("DARTS_V2")["reported"]["cifar10_error"] == 2.76


def test_snas_edge_all_has_every_edge_by_position() -> None:
    g = published_genotype("SNAS_mild_edge_all")
    for cell_type in ("normal", "reduce"):
        assert [len(node) for node in g.cell(cell_type).nodes] == [2, 3, 4, 5]
    # the flat list is split by position, not sorted by input: node 5 of the reduce cell as published
    assert g.reduce.nodes[3] == (("max_pool_3x3", 0), ("dil_conv_5x5", 2), ("none", 1), ("none", 3), ("none", 4))
    mild = published_genotype("SNAS_mild")
    for cell_type in ("normal", "reduce"):
        kept = [tuple(e for e in node if e[0] != "none") for node in g.cell(cell_type).nodes]
        assert [sorted(n) for n in kept] == [sorted(n) for n in mild.cell(cell_type).nodes]


@pytest.mark.parametrize(
    ("name", "error", "params"),
    [
        ("DARTS_V2", 2.76, 3.3),
        ("DARTS_V1", 3.00, 3.3),
        ("EvNAS_A", 2.47, 3.6),
        ("EvNAS_B", 2.62, 3.8),
        ("EvNAS_C", 2.63, 3.4),
        ("SNAS_mild", 2.98, 2.9),
        ("GDAS_V1", 2.93, 3.4),
        ("XNAS", 1.81, 3.7),
    ],
)
def test_reported_numbers(name: str, error: float, params: float) -> None:
    reported = published_entry(name)["reported"]
    assert (reported["cifar10_error"], reported["cifar10_params_m"]) == (error, params)


def test_released_evnas_models() -> None:
    names = ("EvNAS_A", "EvNAS_B", "EvNAS_C")
    released = [published_entry(n)["reported"]["cifar10_error_released_model"] for n in names]
    assert released == [2.40, 2.51, 2.55]


def test_an_entry_without_its_fields_is_named(tmp_path, monkeypatch) -> None:
    import evoray.spaces.published as published

    path = tmp_path / "published.json"
    path.write_text(json.dumps({"X": {"space": "darts", "genotype": "|none~0|", "source": "s"}}))
    monkeypatch.setattr(published, "PUBLISHED_PATH", path)
    with pytest.raises(ConfigError, match=r"entry 'X' lacks paper, reported; needs space, genotype, source, paper"):
        published._load.__wrapped__()


def test_snas_edge_all_is_written_as_published() -> None:
    """The every-edge SNAS cells are written back as the flat list they were published as."""
    text = published_entry("SNAS_mild_edge_all")["genotype"]
    assert str(published_genotype("SNAS_mild_edge_all")) == text.replace("range(2, 6)", "[2, 3, 4, 5]")
