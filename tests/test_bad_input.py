"""Bad input, as a careless user types it, one row each: one line on stderr, exit status 2, and nothing written under
the output directory (a digest of every file before and after). Rows run in-process; the runs they aim at are made
once."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from evoray.commands import ensemble as ensemble_cmd
from evoray.commands import evolve as evolve_cmd
from evoray.commands import search as search_cmd
from evoray.commands import train as train_cmd
from tests.test_evolve import TINY

ROOT = Path(__file__).resolve().parents[1]
MAINS = {"evolve": evolve_cmd.main, "train": train_cmd.main, "search": search_cmd.main, "ensemble": ensemble_cmd.main}
TRAIN_TINY = ["optim.epochs=1", "model.init_channels=4", "model.layers=3", "data.limit_train=64", "profile.repeats=1"]
NODES = "[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), " \
        "('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1)]"  # fmt: skip


def darts(normal: str = NODES, concat: str = "[2, 3, 4, 5]") -> str:
    return f"Genotype(normal={normal}, normal_concat={concat}, reduce={NODES}, reduce_concat=[2, 3, 4, 5])"


def digest(d: Path) -> dict[str, str]:
    if not d.exists():
        return {}
    if d.is_file():
        return {d.name: hashlib.sha256(d.read_bytes()).hexdigest()}
    return {
        str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.rglob("*")) if p.is_file()
    }


def sets(*items: str) -> list[str]:
    return [arg for item in items for arg in ("--set", item)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A finished evolve run, a finished train run and a plain file, to aim bad input at."""
    base = tmp_path_factory.mktemp("targets")
    assert evolve_cmd.main(["--out", str(base / "evolve"), *sets(*TINY, "evolution.generations=1")]) == 0
    assert train_cmd.main(["--out", str(base / "train"), *sets(*TRAIN_TINY)]) == 0
    (base / "file.txt").write_text("not a run directory")
    (base / "dup.yaml").write_text("evolution:\n  population: 6\nevolution:\n  generations: 1\n")
    shutil.copytree(base / "train", base / "blank")
    (base / "blank" / "run.json").write_text("{}")
    return {
        "evolve": base / "evolve",
        "train": base / "train",
        "file": base / "file.txt",
        "new": base / "new",
        "dup": base / "dup.yaml",
        "blank": base / "blank",
    }


# (command, arguments with {evolve}/{train}/{file}/{new} for the targets, the output aimed at, the message's words)
ROWS = [
    ("evolve", ["--out", "{file}"], "file", "is a file, not a directory"),
    ("search", ["--out", "{file}"], "file", "is a file, not a directory"),
    ("train", ["--out", "{file}", *sets(*TRAIN_TINY)], "file", "is a file, not a directory"),
    ("ensemble", ["--out", "{file}", "--set", "executor=local"], "file", "is a file, not a directory"),
    ("evolve", ["--out", "{evolve}", *sets(*TINY)], "evolve", "already holds a run; continue it with --resume"),
    ("train", ["--out", "{train}", *sets(*TRAIN_TINY)], "train", "already holds a run; continue it with --resume"),
    ("evolve", ["--out", "{new}", "--set", "evolution.population=1000000000000"], "new", "needs about"),
    ("evolve", ["--out", "{new}", "--set", "supernet.init_channels=1000000000000"], "new", "needs about"),
    ("evolve", ["--out", "{new}", "--set", "supernet.layers=1000000000000"], "new", "needs about"),
    ("train", ["--out", "{new}", "--set", "model.init_channels=1000000000000"], "new", "needs about"),
    ("train", ["--out", "{new}", "--set", "model.layers=1000000000000"], "new", "needs about"),
    ("search", ["--out", "{new}", "--set", "base.supernet.init_channels=1000000000000"], "new", "needs about"),
    ("train", ["--out", "{new}", "--genotype", ""], "new", "--genotype is empty"),
    (
        "evolve",
        ["--out", "{new}", "--address", "127.0.0.1:1", *sets("distributed.num_actors=1")],
        "new",
        "no Ray cluster answers",
    ),
    ("search", ["--out", "{new}", "--address", "ray://127.0.0.1:1"], "new", "no Ray cluster answers at"),
    ("train", ["--resume", "{train}", "--out", "{new}"], "train", "--out cannot be given with it"),
    ("evolve", ["--resume", "{evolve}", "--overwrite"], "evolve", "--overwrite cannot be given with it"),
    ("ensemble", ["--resume", "{evolve}", "--out", "{new}"], "evolve", "--out cannot be given with it"),
    ("search", ["--resume", "{evolve}", "--overwrite"], "evolve", "--overwrite cannot be given with it"),
    (
        "train",
        ["--out", "{new}", "--set", "model.network=nb201", "--genotype", "DARTS_V2"],
        "new",
        "model.network=nb201 cannot build a DARTS-family genotype; use model.network=cifar or imagenet",
    ),
    (
        "train",
        ["--out", "{new}", "--genotype", "|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|none~0|none~1|none~2|"],
        "new",
        "model.network=cifar cannot build an NB201 arch string; use model.network=nb201",
    ),
    ("train", ["--out", "{new}", "--genotype", "  "], "new", "--genotype is empty"),
    (
        "train",
        [
            "--out",
            "{new}",
            "--set",
            "model.layers=2",
            "--genotype",
            darts(NODES.replace("sep_conv_3x3", "sep_conv_9x9", 1)),
        ],
        "new",
        "op 'sep_conv_9x9' is in no DARTS-family space",
    ),
    ("train", ["--out", "{new}", "--genotype", darts(concat="range(0, 1000000000000)")], "new", "spans 1000000000000"),
    ("train", ["--out", "{new}", "--genotype", darts(concat="[2, 3, 4, 9]")], "new", "its concat [2, 3, 4, 9] implies"),
    (
        "train",
        ["--out", "{new}", "--set", "model.network=nb201", "--genotype", "|nor_conv_3x3~0|+|nor_conv_3x3~0|none~1|"],
        "new",
        "the cell needs 3 nodes, got 2",
    ),
    (
        "train",
        [
            "--out",
            "{new}",
            "--set",
            "model.network=nb201",
            "--genotype",
            "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~0|+|none~0|none~1|none~2|",
        ],
        "new",
        "must take each earlier node once",
    ),
    ("evolve", ["--out", "{new}", "--set", "nope=1"], "new", "unknown config key 'nope'; valid keys"),
    ("train", ["--out", "{new}", "--set", "optim.nope=1"], "new", "unknown config key"),
    ("search", ["--out", "{new}", "--set", "base.nope=1"], "new", "unknown config key"),
    ("ensemble", ["--out", "{new}", "--set", "nope=1"], "new", "unknown config key 'nope'; valid keys"),
    ("evolve", ["--out", "{new}", "--set", "evolution.population=abc"], "new", "must be an int, got 'abc'"),
    ("train", ["--out", "{new}", "--set", "optim.epochs=-1"], "new", "out of range [0, inf)"),
    ("search", ["--out", "{new}", "--set", "base.data.batch_size=0"], "new", "out of range [1, inf)"),
    ("evolve", ["--out", "{new}", "--set", "evolution.strategy=nope"], "new", "unknown strategy 'nope'; valid: ga"),
    ("search", ["--out", "{new}", "--set", "searchers=[nope]"], "new", "unknown searcher 'nope'; valid: darts"),
    ("search", ["--out", "{new}", "--set", "base.supernet.space=nope"], "new", "unknown search space 'nope'; valid"),
    ("train", ["--out", "{new}", "--genotype", "NOPE_V9"], "new", "unknown published genotype 'NOPE_V9'; valid"),
    ("ensemble", ["--out", "{new}", "--set", "members.published=[NOPE]"], "new", "unknown published genotype"),
    ("train", ["--out", "{new}", *sets("data.dataset=npz", "data.root=/no/such.npz")], "new", "does not exist"),
    ("evolve", ["--out", "{new}", *sets("data.dataset=cifar10", "data.root=/no/dir")], "new", "CIFAR-10 not found"),
    ("evolve", ["--out", "{new}", "--set", "runtime.device=cuda:3"], "new", "no CUDA GPU"),
    ("evolve", ["--resume", "{train}"], "train", "not an evolve run"),
    ("train", ["--resume", "{evolve}"], "evolve", "not a train run"),
    ("ensemble", ["--resume", "{evolve}"], "evolve", "not an ensemble run"),
    ("search", ["--resume", "{new}"], "new", "no evoray run there"),
    ("evolve", ["--resume", "{evolve}", "--set", "seed=3"], "evolve", "would change seed"),
    ("train", ["--resume", "{train}", "--genotype", "DARTS_V1"], "train", "--genotype and --profile do not apply"),
    ("ensemble", ["--out", "{new}", *sets("executor=local", "members.checkpoints=[{evolve}]")], "new", "weights.pt"),
    (
        "train",
        ["--out", "{new}", "--config", "nosuch"],
        "new",
        "config file not found: nosuch; valid: a YAML file, or a shipped config: darts-cifar10, darts-imagenet, "
        "nb201-train, train-default",
    ),
    ("evolve", ["--out", "{new}", "--config", "nosuch"], "new", "shipped config: evnas-cifar10, evnas-nb201, evolve"),
    ("search", ["--out", "{new}", "--config", "nosuch"], "new", "shipped config: search-cifar10, search-default"),
    ("search", ["--out", "{new}", "--set", "grid.seed=[1, 2]"], "new", "grid.seed cannot be set: each trial's seed"),
    ("search", ["--out", "{new}", "--set", "base.seed=3"], "new", "use seeds: [...] instead"),
    ("search", ["--out", "{new}", "--set", "per_searcher.darts.searcher=gdas"], "new", "use searchers: [...] instead"),
    ("search", ["--out", "{new}", "--set", "grid.optim.lr=0.1"], "new", "'grid.optim.lr' must be a list, got 0.1"),
    ("train", ["--out", "{new}", "--set", "optim.lr=.inf"], "new", "'optim.lr' = inf must be a finite number"),
    ("train", ["--out", "{new}", "--set", "optim.lr=nan"], "new", "'optim.lr' = nan must be a finite number"),
    ("evolve", ["--out", "{new}", "--set", "resources.cpus=.inf"], "new", "'resources.cpus' = inf must be a finite"),
    ("search", ["--out", "{new}", "--set", "base.optim.lr=-.inf"], "new", "'optim.lr' = -inf must be a finite"),
    ("evolve", ["--out", "{new}", "--set", "seed=-1"], "new", "'seed' = -1 is out of range [0, 4294967295]"),
    ("evolve", ["--out", "{new}", "--set", "seed=4294967296"], "new", "is out of range [0, 4294967295]"),
    ("search", ["--out", "{new}", "--set", "seeds=[0, -1]"], "new", "'seeds[1]' = -1 is out of range [0, 4294967295]"),
    ("train", ["--out", "{new}", "--set", "seed=-1"], "new", "'seed' = -1 is out of range [0, 4294967295]"),
    ("ensemble", ["--out", "{new}", *sets("seed=4294967295", "members.seeds=2")], "new", "member seeds past"),
    ("ensemble", ["--out", "{new}", "--config", "nosuch"], "new", "committee spec not found: nosuch; valid: a YAML"),
    ("evolve", ["--out", "{file}/sub"], "file", "cannot be created (Not a directory); give --out a writable"),
    ("evolve", ["--out", ""], "new", "error: argument --out: is empty; give a directory; see python -m evoray.evolve"),
    ("train", ["--bogus"], "new", "unrecognized arguments: --bogus; see python -m evoray.train --help"),
    ("train", ["--out", "{new}", "--set", "runtime.device=tpu"], "new", "runtime.device 'tpu' is not a device; valid"),
    ("search", ["--out", "{new}", "--set", "base.runtime.device=gpu"], "new", "runtime.device 'gpu' is not a device"),
    ("ensemble", ["--out", "{new}", "--set", "train.runtime.device=cuda:-1"], "new", "'cuda:-1' is not a device"),
    ("train", ["--out", "{new}", *sets("runtime.device=cpu", "runtime.precision=fp16")], "new", "fp16 needs a CUDA"),
    ("search", ["--out", "{new}", "--set", "storage=nope://b/x"], "new", "storage 'nope://b/x': unknown file system"),
    ("train", ["--out", "{new}", "--genotype", "{evolve}"], "new", "is a directory, not a .json file; its genotype is"),
    ("evolve", ["--out", "{new}", "--config", "{dup}"], "new", "key 'evolution' is given twice in one mapping (line 3"),
    ("train", ["--resume", "{blank}"], "blank", "run.json has no run format (format None; this evoray writes 1)"),
    # --overwrite moves the old run aside only once the new one starts: a new run refused after its directory opened
    # leaves the old one where it was
    (
        "evolve",
        ["--out", "{evolve}", "--overwrite", "--config", "nb201-tabular", "--set", "fitness.table=/no/such.csv"],
        "evolve",
        "fitness table '/no/such.csv' does not exist",
    ),
    ("search", ["--out", "{evolve}", "--overwrite", "--address", "127.0.0.1:1"], "evolve", "no Ray cluster answers"),
    # data the workers would refuse, refused by the command before a run directory or Ray
    ("evolve", ["--out", "{new}", *sets(*TINY, "data.cutout=9")], "new", "data.cutout = 9 exceeds the image side 8"),
    ("evolve", ["--out", "{new}", *sets(*TINY, "data.train_portion=0.0001")], "new", "leaves one side empty"),
    ("search", ["--out", "{new}", *sets("searchers=[darts]", "base.data.cutout=9")], "new", "exceeds the image side"),
    # image sides and batches the networks cannot take (traced on the meta device)
    (
        "train",  # DARTS_V2 at 5 cells: a normal cell after each reduction halves its first input (FactorizedReduce)
        ["--out", "{new}", *sets(*TRAIN_TINY, "model.layers=5", "data.image_size=6")],
        "new",
        "6x6 images (data.image_size) do not fit the network with model.init_channels = 4, model.layers = 5",
    ),
    (
        "train",
        ["--out", "{new}", *sets(*TRAIN_TINY, "model.layers=5", "data.image_size=10")],
        "new",
        "the nearest larger side that fits is 12",
    ),
    ("evolve", ["--out", "{new}", *sets(*TINY, "data.image_size=6")], "new", "do not fit the supernet with"),
    (
        "train",
        ["--out", "{new}", *sets(*TRAIN_TINY, "data.limit_train=1")],
        "new",
        "training batches of 1 image do not fit the network",
    ),
]


@pytest.mark.parametrize(
    ("command", "args", "target", "message"), ROWS, ids=[f"{r[0]}-{i}" for i, r in enumerate(ROWS)]
)
def test_bad_input_is_one_line_and_touches_nothing(command, args, target, message, runs, capsys) -> None:
    argv = [a.format(**{k: str(v) for k, v in runs.items()}) for a in args]
    before = digest(runs[target])
    assert MAINS[command](argv) == 2, argv
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and message in err, err
    assert digest(runs[target]) == before
    assert not runs["new"].exists()


@pytest.mark.parametrize("name", ["../../x", "a/b", "..", "/tmp/x"])
def test_a_run_name_is_a_plain_folder_name(name: str, tmp_path, monkeypatch, capsys) -> None:
    """``name`` places a run under runs/<command>/ when no --out is given: a path in it would escape there."""
    monkeypatch.chdir(tmp_path / ".")
    (tmp_path / "w").mkdir()
    monkeypatch.chdir(tmp_path / "w")
    assert train_cmd.main(sets(*TRAIN_TINY, f"name={name}")) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: run name {name!r} must be a plain folder name (no '/' or '..'); give --out DIR to write " \
        "elsewhere", err  # fmt: skip
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["w"]


def test_json_last_line_is_strict_json(capsys) -> None:
    """NaN and infinities are written as null: the last line parses as strict JSON."""
    from evoray.cli import emit_json

    def strict(name: str) -> None:
        raise ValueError(f"not strict JSON: {name}")

    emit_json({"a": float("nan"), "b": [1.5, float("inf"), (float("-inf"),)], "c": {"d": float("nan")}, "p": Path("x")})
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last, parse_constant=strict) == {"a": None, "b": [1.5, None, [None]], "c": {"d": None}, "p": "x"}


@pytest.mark.parametrize("port", ["70000", "0", "-1"])
def test_dashboard_port_out_of_range_is_one_line(port, tmp_path, monkeypatch, capsys) -> None:
    from dash import Dash

    from evoray.dashboard.app import main

    served = []
    monkeypatch.setattr(Dash, "run", lambda self, *a, **k: served.append(k))
    assert main([str(tmp_path), "--port", port]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err == f"error: --port {port} is out of range; valid: 1 to 65535", err
    assert not served and not captured.out


def test_dashboard_port_in_use_is_one_line(tmp_path, monkeypatch, capsys) -> None:
    import socket

    from dash import Dash

    from evoray.dashboard.app import main

    served = []
    monkeypatch.setattr(Dash, "run", lambda self, *a, **k: served.append(k))
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        assert main([str(tmp_path), "--port", str(port)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"error: cannot serve on 127.0.0.1:{port} (") and err.endswith("; choose --port"), err
    assert not served


def test_dashboard_host_not_of_this_machine_is_one_line(tmp_path, monkeypatch, capsys) -> None:
    from dash import Dash

    from evoray.dashboard.app import main

    served = []
    monkeypatch.setattr(Dash, "run", lambda self, *a, **k: served.append(k))
    assert main([str(tmp_path), "--host", "192.0.2.1", "--port", "18055"]) == 2  # TEST-NET-1: no machine's own
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: cannot serve on 192.0.2.1:18055 (") and err.endswith(
        "; choose --host (an address of this machine)"
    ), err
    assert not served


def test_ray_authentication_is_left_as_the_user_set_it(tmp_path) -> None:
    """evoray never sets RAY_AUTH_MODE: importing and running it leaves the variable as it was (unset stays unset).
    (The search and ensemble tests run with Ray's default, token authentication for a local cluster.)"""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"}
    script = (
        "import os, evoray.commands.console, evoray.distributed.cluster, evoray.commands.train as t\n"
        "assert 'RAY_AUTH_MODE' not in os.environ\n"
        f"assert t.main(['--out', {str(tmp_path / 'run')!r}] + {sets(*TRAIN_TINY)!r}) == 0\n"
        "print('RAY_AUTH_MODE' in os.environ)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "False"
    for path in (ROOT / "evoray").rglob("*.py"):
        assert "RAY_AUTH_MODE" not in path.read_text().replace("never sets ``RAY_AUTH_MODE``", "").replace(
            "``RAY_AUTH_MODE=token``", ""
        ), path
    assert json.loads((tmp_path / "run" / "run.json").read_text())["status"] == "done"


# -- files evoray reads never run code --------------------------------------------------------------------------


class _Payload:
    """Unpickling this runs code: it creates the file ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').close()",))


def _craft(path: Path, marker: Path) -> None:
    import torch

    torch.save({"backend": _Payload(marker), "state_dict": _Payload(marker)}, path)


def test_the_payload_is_live(tmp_path) -> None:
    """The control: loaded the unsafe way, the crafted file does create its marker."""
    import torch

    _craft(tmp_path / "probe.pt", tmp_path / "control")
    torch.load(tmp_path / "probe.pt", weights_only=False)
    assert (tmp_path / "control").is_file()


@pytest.fixture(scope="module")
def search_run(tmp_path_factory, ray_session) -> Path:
    """A finished one-trial search run."""
    from evoray.config import config_from_dict
    from evoray.searchers.experiment import ExperimentConfig

    base = {
        "epochs": 1,
        "supernet": {"space": "darts", "init_channels": 4, "layers": 3},
        "data": {"dataset": "digits", "batch_size": 32, "augment": False, "limit_train": 64},
    }
    exp = config_from_dict(ExperimentConfig, {"name": "s", "searchers": ["darts"], "seeds": [0], "base": base})
    out = tmp_path_factory.mktemp("search") / "run"
    search_cmd.search(exp, out, log=lambda _: None)
    return out


def _copy(run: Path, to: Path) -> Path:
    import shutil

    shutil.copytree(run, to)
    return to


def _trial_checkpoints(run: Path) -> list[Path]:
    return sorted(run.glob("tune/*/checkpoint_*/searcher.pt"))


@pytest.mark.parametrize("where", ["evolve checkpoint", "search trial", "checkpoint member", "supernet member"])
def test_a_crafted_pickle_never_runs(where, runs, search_run, tmp_path, capsys) -> None:
    marker = tmp_path / "marker"
    if where == "evolve checkpoint":
        run = _copy(runs["evolve"], tmp_path / "evolve")
        _craft(run / "checkpoints" / "last.pt", marker)
        argv, main, target = ["--resume", str(run)], evolve_cmd.main, run
    elif where == "search trial":
        run = _copy(search_run, tmp_path / "search")
        assert _trial_checkpoints(run)
        for file in _trial_checkpoints(run):
            _craft(file, marker)
        argv, main, target = ["--resume", str(run)], search_cmd.main, run
    elif where == "checkpoint member":
        run = _copy(runs["train"], tmp_path / "train")
        _craft(run / "weights.pt", marker)
        argv = ["--out", str(tmp_path / "committee"), *sets("executor=local", f"members.checkpoints=[{run}]")]
        main, target = ensemble_cmd.main, run
    else:
        run = _copy(runs["evolve"], tmp_path / "evolve")
        _craft(run / "supernet.pt", marker)
        argv = ["--out", str(tmp_path / "committee"), *sets("executor=local", f"members.supernets=[{run}]")]
        main, target = ensemble_cmd.main, run
    before = digest(target)
    assert main(argv) == 2, where
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "not a tensors-only file" in err, err
    assert not marker.exists(), f"{where}: the crafted pickle ran"
    assert digest(target) == before and not (tmp_path / "committee").exists()


def test_a_search_resume_names_a_changed_key_of_a_section_within_a_section(search_run, capsys) -> None:
    before = digest(search_run)
    assert search_cmd.main(["--resume", str(search_run), "--set", "base.supernet.init_channels=8"]) == 2
    err = capsys.readouterr().err
    assert err == "error: --resume continues a run with its saved config; --config/--set would change " \
        "base.supernet.init_channels\n"  # fmt: skip
    assert digest(search_run) == before


def test_a_search_resume_that_cannot_read_its_checkpoints_writes_nothing(search_run, tmp_path, capsys) -> None:
    run = _copy(search_run, tmp_path / "search")
    for file in _trial_checkpoints(run):
        file.write_bytes(file.read_bytes()[:100])  # truncated
    before = digest(run)
    assert search_cmd.main(["--resume", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "searcher.pt" in err and "corrupt" in err, err
    assert digest(run) == before


def test_a_search_resume_whose_trial_alphas_are_damaged_writes_nothing(search_run, tmp_path, capsys) -> None:
    """A trial checkpoint's alphas.npz is read (no pickles) before Tune restores anything: one line, the run as it
    was (it ended in a traceback and a finished run marked failed)."""
    run = _copy(search_run, tmp_path / "search")
    for file in _trial_checkpoints(run):
        (file.parent / "alphas.npz").write_text("garbage")
    before = digest(run)
    assert search_cmd.main(["--resume", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "alphas.npz' is corrupt or not an alphas file" in err, err
    assert digest(run) == before


@pytest.mark.parametrize("damage", ["experiment state", "tuner.pkl"])
def test_a_search_resume_whose_tune_state_is_corrupt_leaves_the_run_as_it_was(
    damage: str, search_run, tmp_path, capsys
) -> None:
    run = _copy(search_run, tmp_path / "search")
    target = (
        sorted(run.glob("tune/experiment_state-*.json"))[-1] if damage == "experiment state" else run / "tune/tuner.pkl"
    )
    target.write_text("garbage\n")
    before = digest(run)
    assert search_cmd.main(["--resume", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: Tune's ") and "\n" not in err and target.name in err and "cannot be read" in err, err
    assert digest(run) == before  # the finished run's manifest is not marked failed


def test_a_search_stopped_before_tunes_first_experiment_state_starts_over(search_run, tmp_path) -> None:
    """Stopped after Tune wrote its ``tuner.pkl`` and before its first experiment state: nothing Tune can restore
    (it would restart an experiment without its trials), so the resume searches afresh, to the same results."""
    import shutil

    run = _copy(search_run, tmp_path / "search")
    for path in (run / "tune").iterdir():
        if path.name != "tuner.pkl":
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    for name in ("archive.parquet", "summary.json", "valid_curves.png"):
        (run / name).unlink(missing_ok=True)
    manifest = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**manifest, "status": "running", "result": None, "ended": None}))
    assert search_cmd.main(["--resume", str(run)]) == 0
    keys = ("searcher", "seed", "epochs", "valid_acc", "genotype", "status")

    def summary(path: Path) -> list[dict[str, object]]:
        return [{k: row[k] for k in keys} for row in json.loads((path / "summary.json").read_text())]

    assert summary(run) == summary(search_run) and json.loads((run / "run.json").read_text())["status"] == "done"


def test_a_finished_search_whose_tune_experiment_is_gone_is_not_searched_again(search_run, tmp_path, capsys) -> None:
    import shutil

    run = _copy(search_run, tmp_path / "search")
    shutil.rmtree(run / "tune")
    before = digest(run)
    assert search_cmd.main(["--resume", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --resume ") and "\n" not in err and "Tune experiment" in err and "is gone" in err
    assert digest(run) == before


# -- one run directory, one run ----------------------------------------------------------------------------------


def test_two_evolve_runs_into_one_out_the_second_is_refused(tmp_path) -> None:
    """Started at once into one --out: the second is refused in one line while the first runs; the first's results
    equal a solo run's."""
    import subprocess
    import sys
    import time

    import pandas as pd

    args = sets(*TINY, "evolution.generations=2")
    out, solo = tmp_path / "shared", tmp_path / "solo"
    first = subprocess.Popen(
        [sys.executable, "-m", "evoray.evolve", "--out", str(out), *args],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.time() + 300
    while not (out / "run.json").is_file() and first.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    second = subprocess.run(
        [sys.executable, "-m", "evoray.evolve", "--out", str(out), *args], cwd=ROOT, capture_output=True, text=True
    )
    assert first.wait(timeout=600) == 0, first.stderr.read() if first.stderr else ""
    assert second.returncode == 2
    err = second.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    assert "in use by another run" in err or "already holds a run" in err, err
    assert evolve_cmd.main(["--out", str(solo), *args]) == 0
    pd.testing.assert_frame_equal(pd.read_parquet(out / "archive.parquet"), pd.read_parquet(solo / "archive.parquet"))
    best, best_solo = (json.loads((d / "best.json").read_text()) for d in (out, solo))
    assert best.pop("out_dir") == str(out) and best_solo.pop("out_dir") == str(solo)
    assert best == best_solo


def test_address_auto_without_a_cluster_is_one_line(monkeypatch) -> None:
    """``--address auto`` where no cluster runs: Ray's ConnectionError (a traceback) becomes one line."""
    import ray

    from evoray.distributed.cluster import ensure_ray
    from evoray.errors import ConfigError

    def no_cluster(**_: object) -> None:
        raise ConnectionError("Could not find any running Ray instance.\nPlease specify the one to connect to.")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", no_cluster)
    with pytest.raises(ConfigError) as err:
        ensure_ray("auto")
    assert str(err.value) == (
        "no Ray cluster found for address 'auto' (Could not find any running Ray instance.); start one (ray start "
        "--head) or correct resources.address (--address): host:port, ray://host:port or auto"
    )
