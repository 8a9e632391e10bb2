"""Genotype codecs and derivation from architecture weights."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from evoray.errors import ConfigError
from evoray.spaces import (
    CellGenotype,
    Genotype,
    derive_cell,
    derive_genotype,
    get_space,
    one_hot,
    one_hot_cell,
    parse_arch,
    parse_genotype,
)
from evoray.spaces.derive import softmax
from tests.conftest import shared_file

DARTS_V2 = (
    "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), "
    "('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)], normal_concat=[2, 3, 4, 5], "
    "reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 1), ('max_pool_3x3', 0), "
    "('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)], reduce_concat=[2, 3, 4, 5])"
)
ARCH = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"


def test_darts_string_round_trip() -> None:
    g = parse_genotype(DARTS_V2)
    assert str(g) == DARTS_V2
    assert g.normal.nodes[3] == (("skip_connect", 0), ("dil_conv_3x3", 2))
    assert g.reduce.concat == (2, 3, 4, 5)
    assert parse_genotype(str(g)) == g


def test_range_concat_accepted() -> None:
    text = _concat("range(2, 6)")
    assert parse_genotype(text) == parse_genotype(DARTS_V2)


def test_json_round_trip() -> None:
    for g in (parse_genotype(DARTS_V2), parse_arch(ARCH)):
        assert Genotype.from_json(json.loads(json.dumps(g.to_json()))) == g
        assert parse_genotype(json.dumps(g.to_json())) == g


def test_arch_string_round_trip() -> None:
    g = parse_arch(ARCH)
    assert g.is_nb201 and str(g) == ARCH
    assert g.cell("cell").nodes[2] == (("skip_connect", 0), ("nor_conv_3x3", 1), ("skip_connect", 2))


def test_edge_all_and_explicit_nodes() -> None:
    flat14 = [("skip_connect", j) for i in range(4) for j in range(2 + i)]
    text = f"Genotype(normal={flat14}, normal_concat=[2, 3, 4, 5], reduce={flat14}, reduce_concat=[2, 3, 4, 5])"
    g = parse_genotype(text)
    assert [len(n) for n in g.normal.nodes] == [2, 3, 4, 5]
    assert parse_genotype(str(g)) == g
    irregular = (
        "Genotype(normal=[[('skip_connect', 0)], [('sep_conv_3x3', 1)], [('skip_connect', 3)], []], "
        "normal_concat=[2, 3, 4, 5])"
    )
    g2 = parse_genotype(irregular)
    assert [len(n) for n in g2.normal.nodes] == [1, 1, 1, 0]
    assert parse_genotype(str(g2)) == g2


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("Genotype(normal=[('sep_conv_3x3', 0)", "malformed genotype"),
        (DARTS_V2.replace("('sep_conv_3x3', 0)", "('sep_conv_3x3', 7)", 1), "node 2 takes input 7; valid inputs 0..1"),
        (DARTS_V2.replace("('dil_conv_3x3', 2)", "('dil_conv_3x3', 5)"), "node 5 takes input 5; valid inputs 0..4"),
        (DARTS_V2.replace("('dil_conv_3x3', 2)", "('dil_conv_3x3', -1)"), "node 5 takes input -1"),
        ("Genotype(normal=[('sep_conv_3x3', 0), ('x', 1)], normal_concat=[2, 3, 4, 5])", "2 edges for the 4 nodes"),
        ("|nor_conv_3x3~0|+|nor_conv_3x3|", "bad edge"),
        ("|nor_conv_3x3~1|", "takes input 1"),
        ("sep_conv_3x3", "malformed genotype"),
        ("__import__('os').system('true')", "malformed genotype"),
        ("{not json", "does not parse"),
    ],
)
def test_bad_genotype_strings(text: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        parse_genotype(text)


def test_op_outside_space_is_named() -> None:
    g = parse_genotype(DARTS_V2)
    with pytest.raises(ConfigError, match=r"op 'sep_conv_3x3' is not allowed.*valid: none, max_pool_3x3"):
        get_space("conas-5x5").check_cell("normal", g.normal.nodes)


def _alphas_for(space_name: str, genotype: Genotype, strength: dict[int, float] | None = None) -> dict:
    """Hand-made weights: 0.1 everywhere, `none` 0.9 (ignored by top-2), and the genotype's edges high."""
    space = get_space(space_name)
    out = {}
    for ct in space.cell_types:
        w = np.full(space.alpha_shape(ct), 0.1)
        w[:, 0] = 0.9  # `none` is excluded from DARTS derivation whatever its weight
        for i, node in enumerate(genotype.cell(ct).nodes):
            for rank, (op, j) in enumerate(node):
                e = space.edge_index(2 + i, j)
                w[e, space.edge_ops(ct, e).index(op)] = 0.8 - 0.1 * rank
        out[ct] = w
    return out


def test_top2_derivation_recovers_darts_v2() -> None:
    g = parse_genotype(DARTS_V2)
    assert derive_genotype(get_space("darts"), _alphas_for("darts", g)) == g


def test_top2_derivation_by_hand() -> None:
    space = get_space("darts")
    w = np.zeros((14, 8))
    w[:, 0] = 5.0  # none: ignored
    # node 2 (edges 0, 1): edge 1 strongest via dil_conv_5x5
    w[0, 4], w[1, 7] = 1.0, 2.0
    # node 3 (edges 2, 3, 4): edges 4 and 2 beat edge 3
    w[2, 1], w[3, 3], w[4, 5] = 1.5, 0.5, 3.0
    # node 4 (edges 5..8): ties go to the lower input, op ties to the lower column
    w[5, 2] = w[5, 6] = 1.0
    w[6, 2] = 1.0
    # node 5 (edges 9..13): edge 13 and 9
    w[13, 3], w[9, 4] = 2.0, 1.0
    cell = derive_cell(space, "normal", w, "top2")
    assert cell.nodes == (
        (("dil_conv_5x5", 1), ("sep_conv_3x3", 0)),
        (("sep_conv_5x5", 2), ("max_pool_3x3", 0)),
        (("avg_pool_3x3", 0), ("avg_pool_3x3", 1)),
        (("skip_connect", 4), ("sep_conv_3x3", 0)),
    )


def test_top2_pairs_derivation_by_hand() -> None:
    """GDAS ranks (op, input) pairs, not edges: two ops of one edge can both be kept, where top-2 keeps one."""
    space = get_space("darts")
    w = np.zeros((14, 8))
    w[:, 0] = 5.0  # none: ignored
    # node 2 (edges 0, 1): both of edge 0's best ops beat edge 1's best
    w[0, 4], w[0, 2], w[1, 7] = 3.0, 2.0, 1.0
    # node 3 (edges 2, 3, 4): one pair from each of edges 4 and 2
    w[2, 1], w[3, 3], w[4, 5] = 1.5, 0.5, 3.0
    # node 4 (edges 5..8): a tie between edge 5's columns 2 and 6 goes to the lower column
    w[5, 2] = w[5, 6] = 1.0
    # node 5 (edges 9..13): ties between edges 9 and 13 go to the lower input
    w[9, 3] = w[13, 3] = 2.0
    pairs = derive_cell(space, "normal", w, "top2_pairs")
    assert pairs.nodes == (
        (("sep_conv_3x3", 0), ("avg_pool_3x3", 0)),
        (("sep_conv_5x5", 2), ("max_pool_3x3", 0)),
        (("avg_pool_3x3", 0), ("dil_conv_3x3", 0)),
        (("skip_connect", 0), ("skip_connect", 4)),
    )
    assert derive_cell(space, "normal", w, "top2").nodes[0] == (("sep_conv_3x3", 0), ("dil_conv_5x5", 1))


def test_argmax_and_edge_all_by_hand() -> None:
    nb = get_space("nb201")
    w = np.zeros((6, 5))
    for e, k in enumerate([3, 0, 1, 4, 2, 0]):
        w[e, k] = 1.0
    cell = derive_cell(nb, "cell", w, "argmax")
    assert cell.to_arch() == "|nor_conv_3x3~0|+|none~0|skip_connect~1|+|avg_pool_3x3~0|nor_conv_1x1~1|none~2|"
    assert cell == parse_arch(cell.to_arch()).cell("cell")  # an NB201 cell outputs its last node, state 3
    darts = get_space("darts")
    w = np.zeros((14, 8))
    w[:, 0] = 1.0
    w[3, 4] = 2.0
    cell = derive_cell(darts, "normal", w, "edge_all")
    assert [len(n) for n in cell.nodes] == [2, 3, 4, 5]
    assert cell.nodes[1] == (("none", 0), ("sep_conv_3x3", 1), ("none", 2))


def test_derivation_uses_softmax_weights_not_raw_alphas() -> None:
    """DARTS ranks edges by softmax weights, which can differ from ranking raw alphas across rows."""
    space = get_space("darts")
    alpha = np.zeros((14, 8))
    alpha[0] = [0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0]  # raw max 3.0, softmax max ~1/7.05
    alpha[1] = [0, 1.0, 0, 0, 0, 0, 0, 0]  # raw max 1.0, softmax max ~0.30
    alpha[2:] = 0
    raw = derive_cell(space, "normal", alpha).nodes[0][0]
    soft = derive_cell(space, "normal", softmax(alpha)).nodes[0][0]
    assert raw == ("max_pool_3x3", 0) and soft == ("max_pool_3x3", 1)
    # where evoray derives genotypes from alphas: a searcher's supernet and an EvNAS individual
    import torch

    from evoray.evolution.individual import genotype_of
    from evoray.nn.supernet import DartsSupernet

    net = DartsSupernet(space, C=4, layers=3)
    with torch.no_grad():
        net.alphas["normal"].copy_(torch.from_numpy(alpha))
    assert net.genotype().normal.nodes[0][0] == ("max_pool_3x3", 1)
    alphas = {"normal": alpha.astype(np.float32), "reduce": np.zeros((14, 8), np.float32)}
    assert genotype_of(space, alphas).normal.nodes[0][0] == ("max_pool_3x3", 1)


def test_one_hot_marks_exactly_the_genotype() -> None:
    g = parse_genotype(DARTS_V2)
    hot = one_hot(get_space("darts"), g)
    assert hot["normal"].sum() == 8 and hot["reduce"].sum() == 8
    space = get_space("darts")
    assert hot["normal"][space.edge_index(5, 2), space.edge_ops("normal", 0).index("dil_conv_3x3")] == 1.0


def test_every_nb201_arch_string_round_trips() -> None:
    path = shared_file("nb201-12epoch.csv")
    space = get_space("nb201")
    seen = set()
    with path.open() as f:
        for row in csv.DictReader(f):
            g = parse_arch(row["arch"])
            assert str(g) == row["arch"]
            space.check_cell("cell", g.cell("cell").nodes)
            seen.add(str(g))
    assert len(seen) == 15625


def test_autodl_node_tuple_form() -> None:
    """AutoDL-Projects writes nodes as tuples of edges and adds connectN/connects fields."""
    text = (
        "Genotype(normal=[(('skip_connect', 0), ('skip_connect', 1)), (('skip_connect', 0), ('sep_conv_5x5', 2)), "
        "(('sep_conv_3x3', 3), ('skip_connect', 0)), (('sep_conv_5x5', 4), ('sep_conv_3x3', 3))], "
        "normal_concat=[2, 3, 4, 5], connectN=None, connects=None)"
    )
    g = parse_genotype(text)
    assert g.cell_types == ("normal",)
    assert g.normal.nodes[3] == (("sep_conv_5x5", 4), ("sep_conv_3x3", 3))


def _json_text(old: str, new: str) -> str:
    """DARTS_V2 as JSON text with one piece of it replaced, to write what ``json.dumps`` never would."""
    text = json.dumps(parse_genotype(DARTS_V2).to_json())
    assert old in text
    return text.replace(old, new, 1)


EMPTY_NODES = (
    "Genotype(normal=[[], [], [], []], normal_concat=[2, 3, 4, 5], reduce=[[], [], [], []], reduce_concat=[2, 3])"
)


def _concat(value: str) -> str:
    """DARTS_V2 with its normal cell's concat written as ``value``."""
    return DARTS_V2.replace("normal_concat=[2, 3, 4, 5]", f"normal_concat={value}")


MALFORMED = [
    # (id, text, fragment of the one-line message)
    (
        "edge-extra-element",
        DARTS_V2.replace("('sep_conv_3x3', 0)", "('sep_conv_3x3', 0, 7)", 1),
        "bad edge ('sep_conv_3x3', 0, 7)",
    ),
    (
        "edge-bool-input",
        DARTS_V2.replace("('sep_conv_3x3', 1)", "('sep_conv_3x3', True)", 1),
        "bad edge ('sep_conv_3x3', True)",
    ),
    (
        "concat-string",
        _concat("'2345'"),
        "normal_concat '2345' must be",
    ),
    (
        "concat-float",
        _concat("[2.9, 3, 4, 5]"),
        "normal_concat [2.9, 3, 4, 5] must be a non-empty list of ints",
    ),
    ("concat-int", _concat("5"), "normal_concat 5 must be"),
    (
        "concat-name",
        _concat("['x']"),
        "normal_concat ['x'] must be",
    ),
    ("concat-none", _concat("None"), "normal_concat None must be"),
    (
        "concat-empty",
        _concat("[]"),
        "normal_concat [] must be a non-empty",
    ),
    (
        "concat-huge-int",
        _concat("[2, 3, 4, 1000000000]"),
        "ints in 0..63",
    ),
    (
        "range-bool",
        _concat("range(True, 6)"),
        "range() takes integer literals only",
    ),
    (
        "call-after-call",
        DARTS_V2 + "(normal=[[('skip_connect', 0)]], normal_concat=[2])",
        "nothing after its closing parenthesis",
    ),
    (
        "field-twice",
        DARTS_V2.replace("normal_concat=", "normal_concat=[2], normal_concat=", 1),
        "normal_concat is given twice",
    ),
    ("star-star-fields", "Genotype(**{'normal': [('skip_connect', 0)]})", "expected keyword fields only"),
    (
        "orphan-concat",
        "Genotype(normal=[[('skip_connect', 0)]], normal_concat=[2], reduce_concat=[2])",
        "reduce_concat has no reduce cell",
    ),
    (
        "op-newline",
        DARTS_V2.replace("('sep_conv_3x3', 0)", "('sep_conv_3x3\\n', 0)", 1),
        r"bad op name 'sep_conv_3x3\n'",
    ),
    ("all-nodes-empty", EMPTY_NODES, "genotype normal cell has no edges"),
    ("json-float-input", _json_text('["sep_conv_3x3", 0]', '["sep_conv_3x3", 0.7]'), "bad edge ['sep_conv_3x3', 0.7]"),
    ("json-string-input", _json_text('["sep_conv_3x3", 0]', '["sep_conv_3x3", "0"]'), "bad edge ['sep_conv_3x3', '0']"),
    ("json-string-edge", _json_text('["sep_conv_3x3", 0]', '"a0"'), "bad edge 'a0'"),
    ("json-huge-float", _json_text('["sep_conv_3x3", 0]', '["sep_conv_3x3", 1e400]'), "bad edge ['sep_conv_3x3', inf]"),
    ("json-huge-int", _json_text('["sep_conv_3x3", 0]', f'["sep_conv_3x3", {"1" * 5000}]'), "does not parse"),
    ("json-deep", '{"normal": ' + "[" * 100_000, "does not parse"),
    ("json-concat-float", _json_text('"concat": [2, 3, 4, 5]', '"concat": [2, 3, 4.5]'), "concat [2, 3, 4.5] must be"),
    ("json-extra-key", _json_text('"concat"', '"extra": 1, "concat"'), 'normal cell: expected {"nodes"'),
    ("json-cell-name", _json_text('"reduce"', '"re\\nduce"'), "cell name 're\\nduce' is not a name"),
    ("json-empty-nodes", '{"normal": {"nodes": [[], []], "concat": [2, 3]}}', "genotype normal cell has no edges"),
    ("arch-superscript", ARCH.replace("~0", "~\u00b2", 1), "bad edge 'nor_conv_3x3~\u00b2'"),
    ("arch-long-input", "|nor_conv_3x3~" + "1" * 5000 + "|", "expected op~input, the input in digits 0-9"),
    ("arch-op-newline", ARCH.replace("nor_conv_3x3~0", "nor_conv_3x3\n~0", 1), "bad edge 'nor_conv_3x3\\n~0'"),
    ("blank", "   ", "empty genotype string"),
    ("arch-empty-node", "|nor_conv_3x3~0|+|", "node 2 must look like |op~0|op~1|"),
    ("no-fields", "Genotype()", "no cells"),
    (
        "cell-without-concat",
        "Genotype(normal=[('skip_connect', 0), ('skip_connect', 1)])",
        "normal has no normal_concat",
    ),
    ("positional-field", "Genotype([('skip_connect', 0)], normal_concat=[2])", "expected keyword fields only"),
    (
        "concat-not-literal",
        _concat("sorted([2, 3, 4, 5])"),
        "normal_concat is not a literal",
    ),
    (
        "concat-negative",
        _concat("[-1, 2, 3, 4, 5]"),
        "normal_concat [-1, 2, 3, 4, 5] must be a non-empty list of ints in 0..63",
    ),
    (
        "concat-one-past-max",
        _concat("[2, 3, 4, 64]"),
        "normal_concat [2, 3, 4, 64] must be a non-empty list of ints in 0..63",
    ),
    (
        "concat-past-last-node",
        "Genotype(normal=[[('skip_connect', 0)], [('skip_connect', 1)], [('skip_connect', 2)], [('skip_connect', 3)]], "
        "normal_concat=[2, 3, 4, 5, 6])",
        "genotype normal cell: concat state 6 does not exist",
    ),
    (
        "edge-count",
        DARTS_V2.replace("('sep_conv_3x3', 0), ", "", 1),
        "7 edges for the 4 nodes its concat [2, 3, 4, 5] implies; expected 8 (two per node) or 14 (every edge)",
    ),
    ("json-empty-object", "{}", 'malformed genotype JSON: expected {cell: {"nodes": [...], "concat": [...]}}'),
    (
        "json-nodes-not-lists",
        '{"normal": {"nodes": ["ab"], "concat": [2]}}',
        "normal cell: nodes must be a list of nodes, each a list of [op, input] edges",
    ),
]


@pytest.mark.parametrize(("text", "fragment"), [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
def test_malformed_genotypes_are_one_line_config_errors(text: str, fragment: str) -> None:
    """Each malformed string is rejected (not silently misread, not a raw traceback) with one line naming its fault."""
    with pytest.raises(ConfigError) as err:
        parse_genotype(text)
    message = str(err.value)
    assert fragment in message and "\n" not in message, message


def test_one_empty_node_and_autodl_none_fields_still_parse() -> None:
    """Only a cell with no edge at all is rejected: one node without edges is zeros, as EvalCell builds it."""
    g = parse_genotype(
        "Genotype(normal=[[('skip_connect', 0)], [], [], []], normal_concat=[2, 3, 4, 5], reduce=None, "
        "reduce_concat=None)"
    )
    assert g.cell_types == ("normal",) and g.normal.nodes[1:] == ((), (), ())
    assert parse_genotype(json.dumps(g.to_json())) == g


def test_format_round_trips_a_concat_that_leaves_out_the_last_node() -> None:
    """A flat list is read back as max(concat) - 1 nodes, so a cell whose concat leaves out its last node (valid JSON,
    valid for the networks) is written with its nodes explicit, and its text parses back to the same genotype."""
    node = [["sep_conv_3x3", 0], ["skip_connect", 1]]
    data = {"normal": {"nodes": [node] * 4, "concat": [2, 3, 4]}, "reduce": {"nodes": [node] * 4, "concat": [3, 5]}}
    g = Genotype.from_json(data)
    assert parse_genotype(str(g)) == g
    assert "normal=[[(" in str(g) and "reduce=[(" in str(g)  # only the cell that needs it is written node by node


def test_edges_written_as_lists_are_read_as_a_flat_cell() -> None:
    """``Genotype(normal=[['sep_conv_3x3', 0], ...])``, e.g. a DARTS genotype that went through JSON, is the flat
    list of edges, not a list of nodes whose edges are 'sep_conv_3x3' and 0."""
    as_lists = "Genotype(" + DARTS_V2[len("Genotype(") : -1].replace("('", "['").replace(")", "]") + ")"
    assert "normal=[['sep_conv_3x3', 0], ['sep_conv_3x3', 1]" in as_lists
    assert parse_genotype(as_lists) == parse_genotype(DARTS_V2)


def test_concat_without_intermediate_nodes_is_named() -> None:
    text = _concat("[0, 1]")
    with pytest.raises(ConfigError, match=r"concat \[0, 1\] names no intermediate node; .* e.g. \[2, 3, 4, 5\]"):
        parse_genotype(text)


def test_nb201_json_concat_must_be_the_last_node() -> None:
    """The NB201 network outputs the last node whatever the concat says, and the arch string drops it: a JSON cell
    naming another output would be silently misread, so it is rejected."""
    data = parse_arch(ARCH).to_json()
    data["cell"]["concat"] = [2]
    with pytest.raises(ConfigError, match=r"concat \[2\], but a NAS-Bench-201 cell outputs its last node: \[3\]"):
        Genotype.from_json(data)
    data["cell"]["concat"] = [3]
    assert Genotype.from_json(data) == parse_arch(ARCH)


def test_genotype_file_not_utf8_is_a_config_error(tmp_path) -> None:
    from evoray.spaces.resolve import resolve_genotype

    path = tmp_path / "g.json"
    path.write_bytes(b"\xff\xfe\x00 not text")
    with pytest.raises(ConfigError, match="is not valid JSON"):
        resolve_genotype(str(path))


def test_top2_keeps_none_only_where_every_other_op_is_negative() -> None:
    """XNAS marks wiped experts with weight -1: an edge whose other ops are all negative takes `none` when `none`
    weighs at least 0; an op of weight exactly 0 is alive and beats `none`, however strong."""
    space = get_space("darts")
    w = np.full((14, 8), -1.0)
    w[0, 0] = 0.0  # edge 0: only `none` alive, at weight 0
    w[1, 0], w[1, 3] = 0.5, 0.0  # edge 1: skip_connect alive at weight 0
    w[2, 0] = -1.0  # edge 2: everything wiped, `none` too: the first op by column
    cell = derive_cell(space, "normal", w, "top2")
    assert cell.nodes[0] == (("skip_connect", 1), ("none", 0))
    assert cell.nodes[1][0] == ("max_pool_3x3", 0)


def test_top_k_derivations_keep_k_edges() -> None:
    """``k`` sets how many inputs each node keeps, in every top-k method."""
    space = get_space("darts")
    w = np.zeros((14, 8))
    w[1, 4], w[0, 2] = 2.0, 1.0
    for method in ("top2", "top2_with_none", "top2_pairs"):
        cell = derive_cell(space, "normal", w, method, k=1)
        assert [len(n) for n in cell.nodes] == [1, 1, 1, 1], method
        assert cell.nodes[0][0][1] == 1, method
    assert [len(n) for n in derive_cell(space, "normal", w, "top2", k=3).nodes] == [2, 3, 3, 3]


def test_decoding_strengths_are_float32_softmax() -> None:
    """EvNAS decodes an individual by the float32 softmax of its alphas: alphas equal after float32 rounding tie
    (the lower column wins), and large alphas do not overflow."""
    from evoray.evolution.individual import genotype_of
    from evoray.spaces.derive import decoding_strengths

    space = get_space("darts")
    alpha = np.zeros((14, 8))
    alpha[:, 4], alpha[:, 5] = 0.5, 0.5 + 1e-9  # distinct in float64, equal in float32
    s = decoding_strengths(alpha)
    assert s.dtype == np.float32 and (s[:, 4] == s[:, 5]).all()
    assert genotype_of(space, {"normal": alpha, "reduce": alpha}).normal.nodes[0][0] == ("sep_conv_3x3", 0)
    big = decoding_strengths(np.array([[200.0, 100.0, 200.0]]))
    assert np.isfinite(big).all() and big[0] == pytest.approx([0.5, 0.0, 0.5])


@pytest.mark.parametrize("name", ["darts", "rdarts-s1", "rdarts-s3", "conas-5x5", "nb201"])
def test_one_hot_derives_back_to_its_genotype(name: str) -> None:
    """Deriving from a genotype's one-hot matrix with the space's own method gives the genotype back, also where
    each edge has its own op list (RobustDARTS S1)."""
    from evoray.spaces.derive import random_genotype

    space = get_space(name)
    rng = np.random.default_rng(1)
    for _ in range(5):
        g = random_genotype(space, rng)
        hot = one_hot(space, g)
        assert all(hot[ct].sum() == sum(len(n) for n in g.cell(ct).nodes) for ct in space.cell_types)
        assert derive_genotype(space, hot) == g


def test_a_long_malformed_string_is_clipped_to_sixty_characters_in_the_message() -> None:
    with pytest.raises(ConfigError) as err:
        parse_genotype("x" * 100)
    assert f"malformed genotype '{'x' * 57}...'" in str(err.value) and "x" * 58 not in str(err.value)


def test_a_missing_cell_type_is_named_with_those_the_genotype_has() -> None:
    with pytest.raises(ConfigError, match=r"^genotype has no 'reduce' cell; it has cell$"):
        parse_arch(ARCH).cell("reduce")
    with pytest.raises(ConfigError, match=r"^genotype has no 'cell' cell; it has normal, reduce$"):
        parse_genotype(DARTS_V2).cell("cell")


def test_only_a_genotype_whose_one_cell_type_is_cell_is_nas_bench_201() -> None:
    """A DARTS-form genotype that happens to have a cell type called ``cell`` keeps two inputs per cell and is
    written in the Genotype(...) form, every cell included."""
    normal = parse_genotype(DARTS_V2).to_json()["normal"]
    g = Genotype.from_json({"normal": normal, "cell": normal})
    assert not g.is_nb201
    assert str(g).startswith("Genotype(normal=[") and "cell_concat=[2, 3, 4, 5]" in str(g)
    assert parse_genotype(str(g)) == g


def test_a_cell_is_written_flat_only_where_the_flat_list_reads_back_the_same() -> None:
    """SNAS' every-edge cells are written as the flat list they are published as; a cell with two edges on some
    nodes and fewer on another is written node by node."""
    flat14 = [("skip_connect", j) for i in range(4) for j in range(2 + i)]
    text = f"Genotype(normal={flat14}, normal_concat=[2, 3, 4, 5], reduce={flat14}, reduce_concat=[2, 3, 4, 5])"
    assert str(parse_genotype(text)) == text
    node = [["sep_conv_3x3", 0], ["skip_connect", 1]]
    g = Genotype.from_json({"normal": {"nodes": [node, node, node, node[:1]], "concat": [2, 3, 4, 5]}})
    assert str(g).startswith("Genotype(normal=[[(") and parse_genotype(str(g)) == g


def test_derivation_refuses_weights_of_the_wrong_shape_and_unknown_methods() -> None:
    space = get_space("darts")
    with pytest.raises(ConfigError, match=r"^normal weights have shape \(14, 9\); space darts needs \(14, 8\)$"):
        derive_cell(space, "normal", np.zeros((14, 9)))
    with pytest.raises(
        ConfigError,
        match=r"^unknown derivation method 'top3'; valid: top2, argmax, edge_all, top2_pairs, top2_with_none$",
    ):
        derive_cell(space, "normal", np.zeros((14, 8)), "top3")


def test_top2_pairs_ties_go_to_the_lower_input_before_the_lower_op() -> None:
    """GDAS lists the (op, input) pairs input by input, then op by op, and sorts them stably: of three equal pairs,
    the one on input 0 comes first even though its op column is the highest."""
    space = get_space("darts")
    w = np.zeros((14, 8))
    w[:, 0] = 5.0  # none: ignored
    w[0, 6] = w[1, 2] = w[1, 3] = 1.0  # dil_conv_3x3 from input 0, avg_pool_3x3 and skip_connect from input 1
    cell = derive_cell(space, "normal", w, "top2_pairs")
    assert cell.nodes[0] == (("dil_conv_3x3", 0), ("avg_pool_3x3", 1))


def test_derive_genotype_passes_k_to_every_cell() -> None:
    space = get_space("darts")
    w = np.zeros((14, 8))
    w[1, 4] = 1.0
    g = derive_genotype(space, {"normal": w, "reduce": w}, "top2", k=1)
    for ct in ("normal", "reduce"):
        assert [len(n) for n in g.cell(ct).nodes] == [1, 1, 1, 1]
        assert g.cell(ct).nodes[0] == (("sep_conv_3x3", 1),)


def test_one_hot_refuses_a_genotype_outside_the_space() -> None:
    g = parse_genotype(DARTS_V2)
    with pytest.raises(ConfigError, match=r"op 'sep_conv_3x3' is not allowed on edge 0->2 of the normal cell"):
        one_hot(get_space("conas-5x5"), g)
    three_nodes = CellGenotype(g.normal.nodes[:3], (2, 3, 4))
    with pytest.raises(ConfigError, match=r"space darts: the normal cell needs 4 nodes, got 3"):
        one_hot_cell(get_space("darts"), "normal", three_nodes)


def test_resolve_reads_json_text_result_files_and_paths_without_json_suffix(tmp_path) -> None:
    from evoray.spaces.resolve import resolve_genotype

    g = parse_genotype(DARTS_V2)
    assert resolve_genotype(json.dumps(g.to_json())) == g
    result = tmp_path / "result.json"
    result.write_text(json.dumps({"genotype": g.to_json(), "accuracy": 97.2}))  # a result: its genotype field
    assert resolve_genotype(str(result)) == g
    as_text = tmp_path / "genotype.txt"  # any value with a folder in it is a file
    as_text.write_text(json.dumps({"genotype": DARTS_V2}))  # the genotype field may hold the text form
    assert resolve_genotype(str(as_text)) == g


def test_top2_with_none_ranks_and_picks_none_too() -> None:
    """SNAS' own child: an edge whose strongest op is ``none`` ranks by that weight and keeps ``none``."""
    space = get_space("darts")
    w = np.full((14, 8), 0.1)
    w[0, 0] = 0.9  # edge 0 (input 0 of node 2): none strongest
    w[1, 4] = 0.5  # edge 1 (input 1 of node 2): sep_conv_3x3
    w[2, 0], w[3, 0] = 0.3, 0.2  # node 3: inputs 0 and 1 by none alone; input 2 at 0.1 everywhere
    cell = derive_cell(space, "normal", w, "top2_with_none")
    assert cell.nodes[0] == (("none", 0), ("sep_conv_3x3", 1))
    assert cell.nodes[1] == (("none", 0), ("none", 1))
