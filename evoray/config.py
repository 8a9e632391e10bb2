"""Typed configs: nested dataclasses loaded from YAML, overridden with ``--set key=value``, validated once.

A config is a tree of dataclasses whose fields carry a default, a type annotation and, optionally, ``metadata`` with
``min``, ``max``, ``choices`` and ``help``. ``load_config`` starts from the defaults (or a given base), applies a YAML
file, then the command-line overrides, coerces every value to its annotation, checks ranges and choices, and finally
calls each section's ``validate()`` method (cross-field checks, raising ``ConfigError``). ``save_config`` writes the
resolved tree beside a run; ``load_config`` reads it back to an equal object.

Example::

    @dataclass
    class OptimConfig:
        lr: float = field(default=0.025, metadata={"min": 0, "help": "initial learning rate"})
        schedule: Literal["cosine", "step"] = "cosine"

    @dataclass
    class TrainConfig:
        epochs: int = field(default=50, metadata={"min": 1})
        optim: OptimConfig = field(default_factory=OptimConfig)

        def validate(self) -> None:
            if self.optim.schedule == "step" and self.epochs < 10:
                raise ConfigError("config key 'epochs' must be >= 10 with the step schedule")

    cfg = load_config(TrainConfig, "configs/train.yaml", ["optim.lr=0.1", "epochs=3"])

A ``dict`` field whose metadata has ``"dotted_keys": True`` (a grid of ``a.b`` keys) takes ``--set field.a.b=value``
as its one key ``"a.b"``; other free-form dicts nest, ``--set extra.a.b=1`` giving ``{"a": {"b": 1}}``. A mapping given
to a section with ``--set section={...}`` merges into it, as the file's section does. Floats must be finite; seeds
use ``SEED_RANGE``.

Supported annotations: ``int``, ``float`` (ints accepted), ``bool``, ``str``, ``Path``, ``X | None``, other unions
(first match wins), ``Literal[...]``, ``list[X]``, ``tuple[X, ...]``, ``tuple[X, Y]``, ``dict[str, X]`` (free-form,
e.g. ``dict[str, Any]``), ``Any`` and nested dataclasses. Configs' modules may use ``from __future__ import
annotations``; the classes must be defined at module level so their annotations resolve.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import difflib
import functools
import math
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePath
from typing import Any, Literal, TypeVar, Union

import yaml

from evoray.errors import ConfigError

T = TypeVar("T")

_NONE = type(None)

SEED_MAX = 2**32 - 1  # numpy's SeedSequence takes any non-negative int, torch.manual_seed up to 2**64 - 1: one range
SEED_RANGE: Mapping[str, int] = types.MappingProxyType({"min": 0, "max": SEED_MAX})  # metadata of every seed field


def load_config(
    cls: type[T], path: str | Path | None = None, overrides: Sequence[str] = (), base: T | None = None
) -> T:
    """Build a validated ``cls``: ``base`` (or ``cls()`` defaults), then the YAML mapping at ``path``, then each
    ``a.b.c=value`` override in order (values parsed as YAML, so ``3``, ``0.1``, ``true``, ``[1, 2]`` and ``null``
    work and a bare word stays a string)."""
    _require_dataclass(cls)
    if base is not None and not isinstance(base, cls):
        raise TypeError(f"base must be a {cls.__name__}, got {type(base).__name__}")
    cfg: Any = copy.deepcopy(base) if base is not None else None
    cfg = _merge(cls, cfg, {}, "")  # defaults, or a fresh copy of base with its required fields checked
    if path is not None:
        cfg = _merge(cls, cfg, _read_yaml(Path(path)), "")
    for item in overrides:
        key, raw = _split_override(item)
        cfg = _set_path(cls, cfg, key.split("."), raw, "")
    _validate(cfg, "")
    return typing.cast(T, cfg)


def config_from_dict(cls: type[T], data: Mapping[str, Any]) -> T:
    """Build a validated ``cls`` from plain data (the output of ``config_to_dict``), over ``cls()`` defaults."""
    _require_dataclass(cls)
    if not isinstance(data, Mapping):
        raise ConfigError(f"a {cls.__name__} config must be a mapping of config keys, got {_show(data)}")
    cfg = _merge(cls, None, data, "")
    _validate(cfg, "")
    return typing.cast(T, cfg)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Plain data for a config tree: dicts, lists (tuples included), strings, numbers, bools and None."""
    if not dataclasses.is_dataclass(cfg) or isinstance(cfg, type):
        raise TypeError(f"expected a config dataclass instance, got {type(cfg).__name__}")
    return typing.cast(dict[str, Any], _plain(cfg))


def save_config(cfg: Any, path: str | Path) -> Path:
    """Write the resolved config as YAML (parents created) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(config_to_dict(cfg), sort_keys=False, default_flow_style=False, allow_unicode=True)
    path.write_text(text, encoding="utf-8")
    return path


class _GivenConfig(argparse.Action):
    """``--config``, noting that it was given (``config_given``): a ``--config`` that names the default file is a
    config the user asked for, not the absence of one."""

    def __call__(self, parser: Any, namespace: argparse.Namespace, values: Any, option_string: Any = None) -> None:
        setattr(namespace, self.dest, values)
        namespace.config_given = True


def add_config_args(parser: argparse.ArgumentParser, default_config: str | None = None) -> None:
    """Add ``--config PATH`` and repeatable ``--set KEY=VALUE`` to a CLI's parser."""
    parser.add_argument(
        "--config",
        metavar="PATH",
        default=default_config,
        action=_GivenConfig,
        help=f"YAML config file (default: {default_config or 'built-in defaults'})",
    )
    parser.set_defaults(config_given=False)
    parser.add_argument(
        "--set",
        dest="overrides",
        metavar="KEY=VALUE",
        action="append",
        default=None,
        help="override one config key after the file, e.g. --set optim.lr=0.1 (repeatable; value parsed as YAML)",
    )


def config_from_args(cls: type[T], args: argparse.Namespace) -> T:
    """The config named by the arguments that ``add_config_args`` added."""
    return load_config(cls, getattr(args, "config", None), getattr(args, "overrides", None) or ())


# ---------------------------------------------------------------------------------------------------------------
# Reading


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (where the safe loader keeps the last: a second
    ``evolution:`` section would silently drop the first one's keys)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # '<<': merged keys may be overridden, as YAML says
                continue
            key = self.construct_object(key_node, deep=True)  # type: ignore[no-untyped-call]
            if not isinstance(key, (str, int, float, bool)):
                continue  # an unhashable key: the safe loader refuses it itself
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice in one mapping", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _read_yaml(path: Path) -> Mapping[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise ConfigError(f"config file {path} is not valid YAML: {problem}{where}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"config file {path} must hold a mapping of config keys, got {type(data).__name__}")
    return data


def _split_override(item: str) -> tuple[str, str]:
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {item!r} must look like KEY=VALUE with a dotted key, e.g. optim.lr=0.1")
    return key, raw


def _parse_value(raw: str) -> Any:
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw  # not YAML: keep the text, the type check reports it if it does not fit


# ---------------------------------------------------------------------------------------------------------------
# Building


def _require_dataclass(cls: type) -> None:
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"expected a config dataclass type, got {cls!r}")


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _init_fields(cls: type) -> dict[str, dataclasses.Field[Any]]:
    return {f.name: f for f in dataclasses.fields(cls) if f.init}


def _field_default(cls: type, name: str) -> Any:
    """The value a fresh ``cls`` gives field ``name``: its default_factory's (called), else its default, else None."""
    f = _init_fields(cls)[name]
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None if f.default is dataclasses.MISSING else f.default


def _current(cls: type, current: Any, name: str) -> Any:
    return getattr(current, name, None) if current is not None else _field_default(cls, name)


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _unknown_key(cls: type, prefix: str, name: object) -> ConfigError:
    valid = sorted(_init_fields(cls))
    close = difflib.get_close_matches(str(name), valid, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    where = f"under {prefix}" if prefix else "at the top level"
    return ConfigError(
        f"unknown config key {_join(prefix, str(name))!r}{hint}; valid keys {where}: {', '.join(valid) or '(none)'}"
    )


def _construct(cls: type, current: Any, changes: Mapping[str, Any], prefix: str) -> Any:
    """A new ``cls`` with ``current``'s init fields (if any), updated with ``changes``."""
    fields = _init_fields(cls)
    kwargs = {name: getattr(current, name) for name in fields} if current is not None else {}
    kwargs.update(changes)
    for name, f in fields.items():
        if name not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"config key {_join(prefix, name)!r} is required (it has no default)")
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid config section {prefix or cls.__name__!r}: {exc}") from exc


def _merge(cls: type, current: Any, mapping: Mapping[Any, Any], prefix: str) -> Any:
    """Apply a (YAML) mapping to ``current`` (or to ``cls`` defaults when None); nested mappings merge into
    nested sections, every other value replaces the field."""
    fields, hints = _init_fields(cls), _hints(cls)
    changes: dict[str, Any] = {}
    for name, value in mapping.items():
        if name not in fields:
            raise _unknown_key(cls, prefix, name)
        key, hint = _join(prefix, name), hints[name]
        sub = _section_type(hint)
        if sub is not None and value is None and _NONE not in typing.get_args(hint):
            continue  # an empty YAML section (`optim:` with every key commented out) changes nothing
        if sub is not None and isinstance(value, Mapping):
            existing = _current(cls, current, name)
            changes[name] = _merge(sub, existing if isinstance(existing, sub) else None, value, key)
        else:
            changes[name] = _coerce(value, hint, key)
    return _construct(cls, current, changes, prefix)


def _set_path(cls: type, current: Any, parts: list[str], raw: str, prefix: str) -> Any:
    """Apply one override ``parts = ['a', 'b', 'c']``; past a free-form dict field, the rest indexes into it."""
    fields, hints = _init_fields(cls), _hints(cls)
    name = parts[0]
    if name not in fields:
        raise _unknown_key(cls, prefix, name)
    key, hint = _join(prefix, name), hints[name]
    existing = _current(cls, current, name)
    sub = _section_type(hint)
    if len(parts) == 1:
        parsed = _parse_value(raw)
        if sub is not None and isinstance(parsed, Mapping):  # merges into the section, as a file's section does
            value = _merge(sub, existing if isinstance(existing, sub) else None, parsed, key)
        else:
            value = _coerce_override(raw, hint, key)
    else:
        if sub is not None:
            value = _set_path(sub, existing if isinstance(existing, sub) else None, parts[1:], raw, key)
        elif _is_dict(hint):
            rest = [".".join(parts[1:])] if fields[name].metadata.get("dotted_keys") else parts[1:]
            value = _set_in_dict(existing if isinstance(existing, Mapping) else {}, rest, raw, hint, key)
        else:
            raise ConfigError(
                f"config key {key!r} is {_describe(hint)}, not a section; cannot set {'.'.join([key, *parts[1:]])!r}"
            )
    return _construct(cls, current, {name: value}, prefix)


def _set_in_dict(d: Mapping[str, Any], parts: list[str], raw: str, hint: Any, key: str) -> dict[str, Any]:
    out = dict(d)
    name = parts[0]
    sub_key = f"{key}.{name}"
    if len(parts) == 1:
        args = typing.get_args(hint)
        value_hint = args[1] if len(args) == 2 else Any
        out[name] = _coerce_override(raw, value_hint, sub_key)
        return out
    inner = out.get(name, {})
    if not isinstance(inner, Mapping):
        rest = ".".join([sub_key, *parts[1:]])
        raise ConfigError(f"cannot set {rest!r}: config key {sub_key!r} is {_show(inner)}, not a mapping")
    out[name] = _set_in_dict(inner, parts[1:], raw, Any, sub_key)
    return out


# ---------------------------------------------------------------------------------------------------------------
# Types


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (Union, types.UnionType)


def _is_dict(hint: Any) -> bool:
    return hint is dict or typing.get_origin(hint) in (dict, Mapping)


def _section_type(hint: Any) -> type | None:
    """The dataclass behind ``Section`` or ``Section | None``, else None."""
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return hint
    if _is_union(hint):
        subs = [a for a in typing.get_args(hint) if a is not _NONE]
        if len(subs) == 1:
            return _section_type(subs[0])
    return None


_NAMES = {int: "an int", float: "a float", bool: "a bool", str: "a string", _NONE: "null"}


def _describe(hint: Any) -> str:
    if hint in _NAMES:
        return _NAMES[hint]
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if _is_union(hint):
        return " or ".join(_describe(a) for a in args)
    if origin is Literal:
        return "one of " + ", ".join(str(a) for a in args)
    if origin in (list, tuple) or hint in (list, tuple):
        elem = args[0] if args else Any
        if elem in (int, float, bool, str) and (origin is list or len(args) != 1):
            return f"a list of {_describe(elem).split(' ', 1)[1]}s"
        return "a list"
    if _is_dict(hint):
        return "a mapping"
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return "a section (mapping)"
    if isinstance(hint, type) and issubclass(hint, PurePath):
        return "a path"
    return getattr(hint, "__name__", str(hint))


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _type_error(value: Any, hint: Any, key: str) -> ConfigError:
    return ConfigError(f"config key {key!r} must be {_describe(hint)}, got {_show(value)}")


class _NotFiniteError(ConfigError):
    """A NaN or infinite value for a float."""


def _takes_str(hint: Any) -> bool:
    """Whether ``--set key=`` (empty) means ``''`` for a field of ``hint``: a string field, or a free-form value (a
    key of ``base`` is a string field of the config it feeds)."""
    if hint is str or hint is Any or hint is object:
        return True
    if typing.get_origin(hint) is Literal:
        return "" in typing.get_args(hint)
    return _is_union(hint) and any(_takes_str(a) for a in typing.get_args(hint))


def _coerce_float(value: Any, hint: Any, key: str) -> float:
    number: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:  # an int beyond a float's range
            raise _NotFiniteError(f"config key {key!r} = {_show(value)} must be a finite number") from None
    elif isinstance(value, str):  # PyYAML reads 1e-3 (no dot) as a string
        with contextlib.suppress(ValueError):
            number = float(value)
    if number is None:
        raise _type_error(value, hint, key)
    if not math.isfinite(number):
        raise _NotFiniteError(f"config key {key!r} = {_show(number)} must be a finite number")
    return number


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """``value`` checked against (and converted to) the annotation ``hint``; ConfigError naming ``key`` if not."""
    if hint is Any or hint is object:
        return copy.deepcopy(value)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is _NONE:
        if value is None:
            return None
        raise _type_error(value, hint, key)
    if _is_union(hint):
        if value is None and _NONE in args:
            return None
        options = [a for a in args if a is not _NONE]
        if len(options) == 1:
            return _coerce(value, options[0], key)
        not_finite: _NotFiniteError | None = None
        for option in options:
            try:
                return _coerce(value, option, key)
            except _NotFiniteError as exc:
                not_finite = not_finite or exc
            except ConfigError:
                continue
        raise not_finite or _type_error(value, hint, key)
    if origin is Literal:
        for choice in args:
            if value == choice and type(value) is type(choice):
                return choice
        raise ConfigError(f"config key {key!r} = {_show(value)} is not one of {', '.join(str(a) for a in args)}")
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise _type_error(value, hint, key)
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _type_error(value, hint, key)
    if hint is float:
        return _coerce_float(value, hint, key)
    if hint is str:
        if isinstance(value, str):
            return value
        raise _type_error(value, hint, key)
    if isinstance(hint, type) and issubclass(hint, PurePath):
        if isinstance(value, (str, PurePath)):
            return hint(value)
        raise _type_error(value, hint, key)
    if origin in (list, tuple) or hint in (list, tuple):
        return _coerce_sequence(value, hint, key)
    if _is_dict(hint):
        if not isinstance(value, Mapping):
            raise _type_error(value, hint, key)
        value_hint = args[1] if len(args) == 2 else Any
        return {str(k): _coerce(v, value_hint, f"{key}.{k}") for k, v in value.items()}
    sub = _section_type(hint)
    if sub is not None:
        if isinstance(value, sub):
            return copy.deepcopy(value)
        if isinstance(value, Mapping):
            return _merge(sub, None, value, key)
        raise _type_error(value, hint, key)
    if isinstance(hint, type) and isinstance(value, hint):
        return copy.deepcopy(value)
    raise _type_error(value, hint, key)


def _coerce_sequence(value: Any, hint: Any, key: str) -> list[Any] | tuple[Any, ...]:
    if not isinstance(value, (list, tuple)):
        raise _type_error(value, hint, key)
    origin = typing.get_origin(hint) or hint
    args = typing.get_args(hint)
    if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
        if len(value) != len(args):
            raise ConfigError(f"config key {key!r} must be a list of {len(args)} items, got {_show(value)}")
        elems = args
    else:
        elems = (args[0] if args else Any,) * len(value)
    items = [_coerce(v, h, f"{key}[{i}]") for i, (v, h) in enumerate(zip(value, elems))]
    return tuple(items) if origin is tuple else items


def _coerce_override(raw: str, hint: Any, key: str) -> Any:
    """Coerce a ``--set`` value parsed as YAML; if that does not fit, try the raw text, so that a string field
    takes ``--set name=3`` as ``'3'``; an empty value (``--set name=``) is ``''`` where a string fits, else null."""
    if not raw.strip() and _takes_str(hint):
        return _coerce("", hint, key)
    parsed = _parse_value(raw)
    try:
        return _coerce(parsed, hint, key)
    except ConfigError as exc:
        if parsed is None or isinstance(parsed, str):
            raise
        try:
            return _coerce(raw, hint, key)
        except ConfigError:
            raise exc from None


# ---------------------------------------------------------------------------------------------------------------
# Validation and output


def _check_field(value: Any, meta: Mapping[str, Any], key: str) -> None:
    if value is None:
        return
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_field(v, meta, f"{key}[{i}]")
        return
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        raise ConfigError(f"config key {key!r} = {_show(value)} is not one of {', '.join(str(c) for c in choices)}")
    lo, hi = meta.get("min"), meta.get("max")
    if not isinstance(value, (int, float)) or isinstance(value, bool) or (lo is None and hi is None):
        return
    if (lo is not None and value < lo) or (hi is not None and value > hi) or math.isnan(value):
        lo_text = f"[{lo}" if lo is not None else "(-inf"
        hi_text = f"{hi}]" if hi is not None else "inf)"
        raise ConfigError(f"config key {key!r} = {_show(value)} is out of range {lo_text}, {hi_text}")


def _validate(cfg: Any, prefix: str) -> None:
    """Check metadata ranges and choices over the tree, then call ``validate()`` sections bottom-up."""
    for f in dataclasses.fields(cfg):
        value, key = getattr(cfg, f.name), _join(prefix, f.name)
        _check_field(value, f.metadata, key)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            _validate(value, key)
    check = getattr(cfg, "validate", None)
    if callable(check):
        check()


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value) if f.init}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, PurePath):
        return str(value)
    return value
