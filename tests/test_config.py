from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest
import yaml

from evoray.config import (
    add_config_args,
    config_from_args,
    config_from_dict,
    config_to_dict,
    load_config,
    save_config,
)
from evoray.errors import ConfigError


@dataclass
class DataConfig:
    batch_size: int = field(default=64, metadata={"min": 1, "help": "samples per step"})
    cutout: bool = False
    train_portion: float = field(default=0.5, metadata={"min": 0, "max": 1})
    root: str | None = None
    mean: tuple[float, ...] = (0.49, 0.48, 0.45)


@dataclass
class OptimConfig:
    lr: float = field(default=0.025, metadata={"min": 0})
    milestones: list[int] = field(default_factory=lambda: [30, 60])
    schedule: Literal["cosine", "step"] = "cosine"


@dataclass
class RuntimeConfig:
    precision: str = field(default="fp32", metadata={"choices": ("fp32", "bf16", "fp16")})
    seed: int | None = 0


@dataclass
class RunConfig:
    name: str = "run"
    epochs: int = field(default=10, metadata={"min": 1})
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        if self.optim.schedule == "step" and max(self.optim.milestones, default=0) >= self.epochs:
            raise ConfigError(
                f"config key 'optim.milestones' = {self.optim.milestones} must be below epochs = {self.epochs}"
            )


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return path


def test_defaults() -> None:
    assert load_config(RunConfig) == RunConfig()


def test_yaml_nested_merge_and_coercion(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "epochs: 100\n"
        "data: {batch_size: 96, mean: [0.5, 1, 0.5], root: /data}\n"
        "optim: {lr: 1e-3, schedule: step, milestones: [50, 75]}\n"
        "extra: {note: hi, depth: {a: 1}}\n",
    )
    cfg = load_config(RunConfig, path)
    assert cfg.epochs == 100
    assert cfg.data == DataConfig(batch_size=96, root="/data", mean=(0.5, 1.0, 0.5))
    assert isinstance(cfg.data.mean, tuple) and isinstance(cfg.data.mean[1], float)
    assert cfg.optim.lr == pytest.approx(1e-3) and isinstance(cfg.optim.lr, float)  # PyYAML reads 1e-3 as a string
    assert cfg.optim.schedule == "step" and cfg.optim.milestones == [50, 75]
    assert cfg.runtime == RuntimeConfig()  # untouched section keeps its defaults
    assert cfg.extra == {"note": "hi", "depth": {"a": 1}}


def test_overrides_apply_after_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "epochs: 100\noptim: {lr: 0.5}\ndata: {root: /data}\n")
    cfg = load_config(
        RunConfig,
        path,
        [
            "optim.lr=0.1",
            "data.cutout=true",
            "optim.milestones=[1, 2, 3]",
            "data.root=null",
            "runtime.seed=null",
            "name=123",
            "extra.model.drop=0.2",
            "optim.lr=0.2",
        ],
    )
    assert cfg.epochs == 100  # from the file
    assert cfg.optim.lr == 0.2  # the last override wins over the file and earlier overrides
    assert cfg.data.cutout is True
    assert cfg.optim.milestones == [1, 2, 3]
    assert cfg.data.root is None and cfg.runtime.seed is None
    assert cfg.name == "123"  # a string field keeps the raw text
    assert cfg.extra == {"model": {"drop": 0.2}}


def test_base_is_not_mutated() -> None:
    base = RunConfig(epochs=7)
    cfg = load_config(RunConfig, overrides=["optim.milestones=[1]"], base=base)
    assert cfg.epochs == 7 and cfg.optim.milestones == [1]
    assert base.optim.milestones == [30, 60]


@pytest.mark.parametrize(
    ("overrides", "fragments"),
    [
        (["data.foo=1"], ["'data.foo'", "valid keys under data:", "batch_size, cutout, mean, root, train_portion"]),
        (["data.batchsize=1"], ["'data.batchsize'", "did you mean 'batch_size'"]),
        (["nope=1"], ["'nope'", "valid keys at the top level:", "data, epochs, extra"]),
        (["optim.lr=abc"], ["config key 'optim.lr' must be a float, got 'abc'"]),
        (["epochs=2.5"], ["config key 'epochs' must be an int, got 2.5"]),
        (["data.cutout=3"], ["config key 'data.cutout' must be a bool"]),
        (["optim.milestones=[1, x]"], ["config key 'optim.milestones[1]' must be an int, got 'x'"]),
        (["optim.milestones=5"], ["config key 'optim.milestones' must be a list of ints, got 5"]),
        (["optim.schedule=linear"], ["config key 'optim.schedule' = 'linear' is not one of cosine, step"]),
        (["data=3"], ["config key 'data' must be a section"]),
        (["epochs.x=3"], ["config key 'epochs' is an int, not a section"]),
        (["data.train_portion=1.5"], ["config key 'data.train_portion' = 1.5 is out of range [0, 1]"]),
        (["data.batch_size=0"], ["config key 'data.batch_size' = 0 is out of range [1, inf)"]),
        (["runtime.precision=fp8"], ["config key 'runtime.precision' = 'fp8' is not one of fp32, bf16, fp16"]),
        (["optim.schedule=step", "epochs=40"], ["config key 'optim.milestones'", "must be below epochs = 40"]),
        (["optim.lr"], ["override 'optim.lr' must look like KEY=VALUE"]),
        (["=3"], ["must look like KEY=VALUE"]),
        (["extra.a=1", "extra.a.b=2"], ["cannot set 'extra.a.b': config key 'extra.a' is 1, not a mapping"]),
        (["optim..lr=3"], ["must look like KEY=VALUE"]),
    ],
)
def test_errors_name_the_key(overrides: list[str], fragments: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(RunConfig, overrides=overrides)
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message


def test_file_errors(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    with pytest.raises(ConfigError, match=r"config file not found: .*missing\.yaml"):
        load_config(RunConfig, missing)
    bad = _write(tmp_path, "data: {batch_size: [1, 2\n")
    with pytest.raises(ConfigError, match=r"cfg.yaml is not valid YAML.*line") as info:
        load_config(RunConfig, bad)
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match=r"cfg\.yaml must hold a mapping of config keys, got list"):
        load_config(RunConfig, _write(tmp_path, "- 1\n- 2\n"))
    with pytest.raises(ConfigError, match=r"unknown config key 'optim.momentum'; valid keys under optim: lr, "):
        load_config(RunConfig, _write(tmp_path, "optim: {momentum: 0.9}\n"))
    with pytest.raises(ConfigError, match=r"config key 'data\.mean' must be a list of floats, got 'x'"):
        load_config(RunConfig, _write(tmp_path, "data: {mean: x}\n"))
    assert load_config(RunConfig, _write(tmp_path, "")) == RunConfig()
    assert load_config(RunConfig, _write(tmp_path, "optim:\n  # lr: 0.1\n")) == RunConfig()  # empty section


def test_save_load_round_trip(tmp_path: Path) -> None:
    cfg = load_config(
        RunConfig,
        overrides=["optim.lr=3e-4", "data.root=/x y", "extra.k=[1, 2]", "runtime.seed=null", "name='null'"],
    )
    assert cfg.name == "null"
    path = save_config(cfg, tmp_path / "run" / "config.yaml")
    assert load_config(RunConfig, path) == cfg
    plain = yaml.safe_load(path.read_text())
    assert plain["data"]["mean"] == [0.49, 0.48, 0.45]  # tuples saved as lists
    assert plain == config_to_dict(cfg)
    assert config_from_dict(RunConfig, plain) == cfg


def test_config_from_dict_validates() -> None:
    with pytest.raises(ConfigError, match=r"'data\.train_portion' = -0\.1 is out of range"):
        config_from_dict(RunConfig, {"data": {"train_portion": -0.1}})


def test_cli_args(tmp_path: Path) -> None:
    path = _write(tmp_path, "epochs: 5\n")
    parser = argparse.ArgumentParser()
    add_config_args(parser, default_config=str(path))
    args = parser.parse_args(["--set", "epochs=6", "--set", "optim.lr=0.3"])
    cfg = config_from_args(RunConfig, args)
    assert cfg.epochs == 6 and cfg.optim.lr == 0.3
    assert config_from_args(RunConfig, parser.parse_args([])).epochs == 5
    assert parser.parse_args([]).overrides is None  # no state shared between parses


@pytest.mark.parametrize("command", ["evolve", "search", "train", "ensemble"])
def test_help_describes_each_command_in_its_whole_first_paragraph(command: str) -> None:
    """``--help`` gives the first paragraph of the command's docstring, not its first line cut mid-sentence."""
    import importlib
    import io
    from contextlib import redirect_stdout

    module = importlib.import_module(f"evoray.commands.{command}")
    out = io.StringIO()
    with redirect_stdout(out), pytest.raises(SystemExit) as stop:
        module.main(["--help"])
    assert stop.value.code == 0
    text = " ".join(out.getvalue().split())
    assert module.__doc__ is not None, f"evoray.commands.{command} has no docstring"
    summary = " ".join(module.__doc__.split("\n\n")[0].split())
    assert summary.endswith(".") and summary in text


@dataclass(frozen=True)
class Inner:
    width: int = 8


@dataclass(frozen=True)
class Outer:
    name: str  # required: no default
    inner: Inner | None = None
    shape: tuple[int, int] = (1, 2)


def test_required_optional_section_and_fixed_tuple() -> None:
    with pytest.raises(ConfigError, match="config key 'name' is required"):
        load_config(Outer)
    cfg = config_from_dict(Outer, {"name": "a", "inner": {"width": 4}, "shape": [3, 4]})
    assert cfg == Outer(name="a", inner=Inner(width=4), shape=(3, 4))
    assert load_config(Outer, overrides=["name=b", "inner.width=2"], base=Outer("a")).inner == Inner(2)
    with pytest.raises(ConfigError, match="config key 'shape' must be a list of 2 items"):
        config_from_dict(Outer, {"name": "a", "shape": [1, 2, 3]})


# -- --set of a whole section, dotted grid keys, empty strings, non-finite floats, seeds ------------------------


@dataclass
class Factory:
    data: DataConfig = field(default_factory=lambda: DataConfig(batch_size=8, root="/factory"))
    grid: dict[str, list[Any]] = field(default_factory=dict, metadata={"dotted_keys": True})
    extra: dict[str, Any] = field(default_factory=dict)


def test_set_section_mapping_merges_into_the_current_section(tmp_path: Path) -> None:
    path = _write(tmp_path, "optim: {lr: 0.5, milestones: [1, 2]}\ndata: {batch_size: 32}\n")
    cfg = load_config(RunConfig, path, ["optim={lr: 0.05}", "data={cutout: true}"])
    assert cfg.optim == OptimConfig(lr=0.05, milestones=[1, 2])  # milestones from the file, not the class default
    assert cfg.data.batch_size == 32 and cfg.data.cutout is True
    assert load_config(RunConfig, path, ["optim={}"]).optim.milestones == [1, 2]  # as an empty YAML section
    # a section with a default_factory starts from the factory's value, not the class's bare defaults
    assert load_config(Factory, overrides=["data={cutout: true}"]).data == DataConfig(8, True, root="/factory")
    assert config_from_dict(Factory, {"data": {"cutout": True}}).data == DataConfig(8, True, root="/factory")


def test_set_section_mapping_keeps_the_shipped_files_keys() -> None:
    from evoray.training import TrainConfig

    path = Path(__file__).resolve().parents[1] / "configs" / "train-default.yaml"
    file_cfg = load_config(TrainConfig, path)
    cfg = load_config(TrainConfig, path, ["optim={lr: 0.05}"])
    assert cfg.optim.lr == 0.05 and cfg.optim.epochs == file_cfg.optim.epochs != TrainConfig().optim.epochs


def test_dotted_grid_keys_take_the_rest_of_the_key_whole() -> None:
    from evoray.searchers.experiment import ExperimentConfig, expand

    cfg = load_config(Factory, overrides=["grid.optim.lr=[0.1, 0.01]", "extra.a.b=1"])
    assert cfg.grid == {"optim.lr": [0.1, 0.01]} and cfg.extra == {"a": {"b": 1}}  # other dicts still nest
    exp = load_config(ExperimentConfig, overrides=["searchers=[darts]", "grid.optim.lr=[0.1, 0.01]"])
    assert exp.grid == {"optim.lr": [0.1, 0.01]}
    assert [t.optim.lr for t in expand(exp)] == [0.1, 0.01]
    with pytest.raises(ConfigError, match=r"config key 'grid\.optim\.lr' must be a list, got 0\.1"):
        load_config(Factory, overrides=["grid.optim.lr=0.1"])


def test_an_empty_value_is_an_empty_string_where_a_string_fits() -> None:
    cfg = load_config(RunConfig, overrides=["name=", "data.root=/x", "data.root=", "extra.k="])
    assert cfg.name == "" and cfg.data.root == "" and cfg.extra == {"k": ""}
    with pytest.raises(ConfigError, match="config key 'epochs' must be an int, got None"):
        load_config(RunConfig, overrides=["epochs="])
    from evoray.searchers.config import SearchConfig

    assert load_config(SearchConfig, overrides=["step_order=arch_first", "step_order="]).step_order == ""


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optim.lr=inf", "config key 'optim.lr' = inf must be a finite number"),
        ("optim.lr=.inf", "config key 'optim.lr' = inf must be a finite number"),
        ("optim.lr=-.inf", "config key 'optim.lr' = -inf must be a finite number"),
        ("optim.lr=1e999", "config key 'optim.lr' = inf must be a finite number"),
        ("optim.lr=.nan", "config key 'optim.lr' = nan must be a finite number"),
        ("optim.lr=NaN", "config key 'optim.lr' = nan must be a finite number"),
        ("data.mean=[0.1, .inf]", "config key 'data.mean[1]' = inf must be a finite number"),
    ],
)
def test_non_finite_floats_are_refused(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(RunConfig, overrides=[override])
    assert str(info.value) == message


def test_non_finite_floats_are_refused_from_files_and_every_config(tmp_path: Path) -> None:
    from evoray.evolution.config import EvolveConfig
    from evoray.runtime import ResourcesConfig

    with pytest.raises(ConfigError, match=r"'data\.train_portion' = nan must be a finite number"):
        config_from_dict(RunConfig, {"data": {"train_portion": float("nan")}})
    with pytest.raises(ConfigError, match=r"'optim\.lr' = inf must be a finite number"):
        load_config(RunConfig, _write(tmp_path, "optim: {lr: .inf}\n"))
    with pytest.raises(ConfigError, match=r"'resources\.cpus' = inf must be a finite number"):
        load_config(EvolveConfig, overrides=["resources.cpus=.inf"])
    with pytest.raises(ConfigError, match=r"'cpus' = -inf must be a finite number"):
        config_from_dict(ResourcesConfig, {"cpus": float("-inf")})


@pytest.mark.parametrize("key", ["evolve:seed", "search:seed", "experiment:seeds"])
def test_seeds_are_in_range(key: str) -> None:
    from evoray.config import SEED_MAX
    from evoray.evolution.config import EvolveConfig
    from evoray.searchers.config import SearchConfig
    from evoray.searchers.experiment import ExperimentConfig
    from evoray.searchers.settings import SearchSettings

    kind, name = key.split(":")
    classes: dict[str, type[EvolveConfig] | type[SearchSettings] | type[ExperimentConfig]] = {
        "evolve": EvolveConfig,
        "search": SearchConfig,
        "experiment": ExperimentConfig,
    }
    cls = classes[kind]
    wrap = (lambda v: f"[0, {v}]") if name == "seeds" else str
    where = f"{name}[1]" if name == "seeds" else name
    assert SEED_MAX == 2**32 - 1
    load_config(cls, overrides=[f"{name}={wrap(SEED_MAX)}"])
    for bad in (-1, SEED_MAX + 1, 2**64):
        with pytest.raises(ConfigError) as info:
            load_config(cls, overrides=[f"{name}={wrap(bad)}"])
        assert str(info.value) == f"config key {where!r} = {bad} is out of range [0, {SEED_MAX}]"


def _readme_command_lines() -> list[tuple[str, list[str]]]:
    """Every ``python -m evoray.<command> ...`` line of the README's code blocks (a comment after ``#`` dropped),
    as (command, argv)."""
    import shlex

    readme = Path(__file__).resolve().parents[1] / "README.md"
    out, in_code = [], False
    for line in readme.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
            continue
        if in_code and line.startswith("python -m evoray."):
            words = shlex.split(line, comments=True)
            out.append((words[2].removeprefix("evoray."), words[3:]))
    return out


README_LINES = _readme_command_lines()


def test_the_readme_shows_command_lines_of_every_configurable_command() -> None:
    assert {"evolve", "search", "train", "ensemble"} <= {command for command, _ in README_LINES}


@pytest.mark.parametrize(
    "command,argv", [(c, a) for c, a in README_LINES if c != "dashboard"], ids=lambda v: str(v)[:60]
)
def test_readme_command_lines_name_configs_and_keys_that_exist(command: str, argv: list[str]) -> None:
    """The README's example command lines: every ``--config`` names a shipped config or spec, every ``--set`` a key
    of that command's config with a valid value (checked as the command loads it; nothing runs)."""
    from evoray.cli import default_config_path, load_from_args, make_parser
    from evoray.commands.ensemble import spec_path
    from evoray.ensemble.config import EnsembleConfig
    from evoray.evolution.config import EvolveConfig
    from evoray.searchers.experiment import ExperimentConfig
    from evoray.training import TrainConfig

    if "--resume" in argv:
        pytest.skip("a resume reads the run's saved config")
    classes = {"evolve": EvolveConfig, "search": ExperimentConfig, "train": TrainConfig, "ensemble": EnsembleConfig}
    import importlib

    if command == "ensemble":
        default = spec_path("default")
    else:  # the command's own embedded default
        default = default_config_path(importlib.import_module(f"evoray.commands.{command}").DEFAULT)
    parser = make_parser(f"python -m evoray.{command}", None, default)
    args, _ = parser.parse_known_args(argv)  # the commands' own extra flags (--address, --genotype) are theirs
    if command == "ensemble":
        args.config = spec_path(args.config)
    load_from_args(classes[command], args)


# -- bounds, strict types, nested checks, paths ----------------------------------------------------------------


def test_range_bounds_are_inclusive() -> None:
    cfg = load_config(RunConfig, overrides=["data.batch_size=1", "data.train_portion=0", "optim.lr=0"])
    assert (cfg.data.batch_size, cfg.data.train_portion, cfg.optim.lr) == (1, 0.0, 0.0)
    assert load_config(RunConfig, overrides=["data.train_portion=1"]).data.train_portion == 1.0


@dataclass
class Window:
    lo: int = 0
    hi: int = 10

    def validate(self) -> None:
        if self.lo >= self.hi:
            raise ConfigError(f"config key 'window.lo' = {self.lo} must be below window.hi = {self.hi}")


@dataclass
class Typed:
    size: int | str = 3
    level: Literal[0, 1, 2] = 0
    weights: dict[str, float] = field(default_factory=dict)
    where: Path = Path("runs")
    window: Window = field(default_factory=Window)
    inner: Inner | None = field(default_factory=Inner)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["epochs=true"], "config key 'epochs' must be an int, got True"),
        (["optim.lr=true"], "config key 'optim.lr' must be a float, got True"),
        (["data.batch_size=false"], "config key 'data.batch_size' must be an int, got False"),
        (["optim.milestones=[1, true]"], "config key 'optim.milestones[1]' must be an int, got True"),
    ],
)
def test_a_bool_is_not_a_number(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(RunConfig, overrides=overrides)
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"size": None}, "config key 'size' must be an int or a string, got None"),
        ({"level": True}, "config key 'level' = True is not one of 0, 1, 2"),
        ({"level": 1.0}, "config key 'level' = 1.0 is not one of 0, 1, 2"),
        ({"weights": {"a": 0.5, "b": "x"}}, "config key 'weights.b' must be a float, got 'x'"),
        ({"where": 3}, "config key 'where' must be a path, got 3"),
        ({"window": {"lo": 10}}, "config key 'window.lo' = 10 must be below window.hi = 10"),
        ({"window": {"hi": -1}}, "config key 'window.lo' = 0 must be below window.hi = -1"),
    ],
)
def test_typed_fields_refuse_values_of_another_type(data: dict[str, Any], message: str) -> None:
    """Unions without null refuse null, literals match by type as well as value, a dict's values take their annotation,
    and a nested section's own validate() runs."""
    with pytest.raises(ConfigError) as info:
        config_from_dict(Typed, data)
    assert str(info.value) == message


def test_a_string_field_in_a_file_refuses_a_number(tmp_path: Path) -> None:
    """``name: 007`` in YAML is the int 7: refused, not saved as '7' (``--set name=007`` keeps the text)."""
    with pytest.raises(ConfigError) as info:
        load_config(RunConfig, _write(tmp_path, "name: 007\n"))
    assert str(info.value) == "config key 'name' must be a string, got 7"
    assert load_config(RunConfig, overrides=["name=007"]).name == "007"


def test_an_override_value_may_hold_equals_signs_and_blanks_are_empty() -> None:
    cfg = load_config(RunConfig, overrides=["name=a=b", "extra.expr=x==1", "data.root= "])
    assert (cfg.name, cfg.extra, cfg.data.root) == ("a=b", {"expr": "x==1"}, "")


def test_a_yaml_error_gives_its_line_and_column_from_one(tmp_path: Path) -> None:
    path = _write(tmp_path, "epochs: 3\ndata:\n  root: [x\n  cutout: true\n")
    with pytest.raises(ConfigError) as info:
        load_config(RunConfig, path)
    assert str(info.value) == (
        f"config file {path} is not valid YAML: expected ',' or ']', but got ':' (line 4, column 9)"
    )


def test_a_key_given_twice_is_refused_and_a_merged_key_may_be_overridden(tmp_path: Path) -> None:
    """A second ``data:`` section would silently drop the first one's keys: refused, with its line. A key that a
    YAML merge (``<<``) brings in may be given again, as YAML means it."""
    path = _write(tmp_path, "epochs: 3\ndata:\n  root: x\ndata:\n  cutout: true\n")
    with pytest.raises(ConfigError) as info:
        load_config(RunConfig, path)
    twice = "key 'data' is given twice in one mapping (line 4, column 1)"
    assert str(info.value) == f"config file {path} is not valid YAML: {twice}"
    path = _write(tmp_path, "extra:\n  <<: {a: 1, b: 2}\n  b: 3\n")
    assert load_config(RunConfig, path).extra == {"a": 1, "b": 3}


def test_paths_optional_sections_and_typed_dicts_round_trip(tmp_path: Path) -> None:
    """A Path field is saved as text and read back as a Path; null clears an optional section; dict values are
    coerced to their annotation (an int weight becomes a float)."""
    cfg = config_from_dict(Typed, {"where": "out/x y", "weights": {"a": 1}, "inner": None, "size": "big"})
    assert (cfg.where, cfg.weights, cfg.inner, cfg.size) == (Path("out/x y"), {"a": 1.0}, None, "big")
    assert isinstance(cfg.weights["a"], float)
    path = save_config(cfg, tmp_path / "config.yaml")
    assert yaml.safe_load(path.read_text())["where"] == "out/x y"
    assert load_config(Typed, path) == cfg
    base = Typed(inner=Inner(4))
    assert load_config(Typed, _write(tmp_path, "inner: null\n"), base=base).inner is None


def test_a_file_section_merges_into_the_base_and_the_result_shares_nothing_with_it(tmp_path: Path) -> None:
    base = RunConfig(data=DataConfig(root="/base", batch_size=16))
    cfg = load_config(RunConfig, _write(tmp_path, "data: {cutout: true}\n"), base=base)
    assert cfg.data == DataConfig(batch_size=16, cutout=True, root="/base")
    same = load_config(RunConfig, base=base)
    same.optim.milestones.append(90)
    same.extra["k"] = 1
    assert base.optim.milestones == [30, 60] and base.extra == {}
