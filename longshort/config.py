"""One config idiom for every command: a dataclass with a ``help`` on each field, read from YAML, saved as YAML.

    @dataclass
    class ScoreConfig:
        dir: Path = option(Path("runs/analysis"), help="analysis directory (from `analyze chunk`)")
        alpha: float = option(0.05, help="level of the significance variant")

    config = load_config(ScoreConfig, "score.yaml", {"alpha": 0.1})  # the YAML, then the overrides on top
    save_config(config, "runs/analysis/score_config.yaml")            # passed back, it gives an equal config

The help lives in ``field.metadata["help"]``, as in TRL and ``HfArgumentParser``, so a config that
subclasses TRL's ``SFTConfig`` or ``GRPOConfig`` reads the same way as ours. Values from a file are
checked against the field annotations before the config is built (so ``__post_init__`` sees the
types it declares) and every error names the key: ``run.yaml: max_steps must be int, got 'ten' (str)``.
No heavy import here: the CLI builds its options from these classes without loading torch.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import functools
import re
import sys
import types
import typing
from collections.abc import Mapping
from pathlib import Path, PurePath
from typing import Any, Literal, TypeVar, Union

from longshort.errors import LongShortError

__all__ = ["ConfigError", "config_dict", "from_dict", "load_config", "option", "read_yaml", "save_config"]

T = TypeVar("T")

#: foreign (TRL/transformers) fields never written to a saved config: credentials
_SECRET_FIELDS = frozenset({"hub_token", "push_to_hub_token"})


class ConfigError(LongShortError, ValueError):
    """A config file or value is wrong; ``key`` is the field at fault (None: the file as a whole).

    ``missing``: the key is required and nothing set it; ``source``: the file (or layer) it came from.
    """

    def __init__(self, message: str, *, key: str | None = None, source: str | None = None, missing: bool = False):
        super().__init__(message)
        self.key = key
        self.source = source
        self.missing = missing


def option(
    default: Any = dataclasses.MISSING,
    *,
    help: str,
    default_factory: Any = dataclasses.MISSING,
    aliases: tuple[str, ...] = (),
    envvar: str | None = None,
    secret: bool = False,
    kw_only: bool = False,
) -> Any:
    """A dataclass field with its ``help`` (``metadata["help"]``, the TRL convention).

    ``aliases``: extra command-line names (``-k``, a former ``--benchmark``); ``envvar``: read from
    this environment variable when neither the YAML nor the command line sets it; ``secret``: never
    written by :func:`config_dict` (an API key); ``kw_only``: a required field after defaulted ones.
    """
    metadata: dict[str, Any] = {"help": help}
    if aliases:
        metadata["aliases"] = tuple(aliases)
    if envvar:
        metadata["envvar"] = envvar
    if secret:
        metadata["secret"] = True
    extra: dict[str, Any] = {"kw_only": True} if kw_only else {}
    return dataclasses.field(default=default, default_factory=default_factory, metadata=metadata, **extra)


# ------------------------------------------------------------------------------------ types


@functools.cache
def field_types(cls: type) -> dict[str, Any]:
    """The resolved annotation of every field of ``cls`` (``Any`` where one cannot be resolved)."""
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # noqa: BLE001 (one unresolvable name: resolve the others one by one)
        hints = {}
        for klass in reversed(cls.__mro__):
            module = sys.modules.get(klass.__module__)
            namespace = dict(vars(module)) if module else {}
            for name, annotation in klass.__dict__.get("__annotations__", {}).items():
                try:
                    hints[name] = (
                        eval(annotation, namespace, dict(vars(klass))) if isinstance(annotation, str) else annotation
                    )
                except Exception:  # noqa: BLE001
                    hints[name] = Any
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(cls)}


def describe(tp: Any) -> str:
    """``int``, ``int or null``, ``one of 'long', 'short'``, ``list of str``: what a value must be."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return "any value"
    if tp is type(None):
        return "null"
    if origin in (Union, types.UnionType):
        return " or ".join(dict.fromkeys(describe(a) for a in args))
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return "one of " + ", ".join(repr(m.value) for m in tp)
    if origin in (list, tuple) or tp in (list, tuple):
        return f"list of {describe(args[0])}" if args else "list"
    if origin is dict or tp is dict:
        return "mapping"
    if isinstance(tp, type) and issubclass(tp, PurePath):
        return "path"
    return getattr(tp, "__name__", str(tp))


class _Mismatch(Exception):
    pass


def convert(value: Any, tp: Any) -> Any:
    """``value`` as the annotation ``tp`` wants it (an int for a float, a str for a Path), else ``_Mismatch``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any or tp is object or isinstance(tp, (str, typing.TypeVar)):
        return value
    if tp is type(None):
        if value is None:
            return None
        raise _Mismatch
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in args:
            try:
                return convert(value, arg)
            except _Mismatch:
                continue
        raise _Mismatch
    if origin is Literal:
        if any(value == a and type(value) is type(a) for a in args):
            return value
        raise _Mismatch
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _Mismatch
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise _Mismatch
    if tp is str:
        if isinstance(value, str):
            return value
        raise _Mismatch
    if isinstance(tp, type) and issubclass(tp, PurePath):
        if isinstance(value, (str, PurePath)):
            return tp(value)
        raise _Mismatch
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        if isinstance(value, tp) or any(value == m.value for m in tp):
            return value
        raise _Mismatch
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        return [convert(v, args[0]) for v in value] if args else list(value)
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise _Mismatch
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, (dict, tp)):
            return value
        raise _Mismatch
    if isinstance(tp, type) and origin is None:
        if isinstance(value, tp):
            return value
        raise _Mismatch
    return value  # a typing construct we do not check (Callable, …)


# ------------------------------------------------------------------------------------ reading


def _where(source: str | None) -> str:
    return f"{source}: " if source else ""


def _has_default(f: dataclasses.Field) -> bool:
    return f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING


def check_values(cls: type, values: Mapping[str, Any], *, source: str | None = "config") -> dict[str, Any]:
    """``values`` converted to ``cls``'s field types; an unknown key or a wrong type is a :class:`ConfigError`."""
    if not isinstance(values, Mapping):
        raise ConfigError(f"{_where(source)}expected a mapping of {cls.__name__} fields, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = field_types(cls)
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key not in fields:
            renamed = getattr(cls, "renamed_keys", {}).get(key)
            close = [renamed] if renamed else difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise ConfigError(f"{_where(source)}unknown key {key!r} for {cls.__name__}{hint}", key=key, source=source)
        try:
            out[key] = convert(value, hints[key])
        except _Mismatch:
            raise ConfigError(
                f"{_where(source)}{key} must be {describe(hints[key])}, got {value!r} ({type(value).__name__})",
                key=key,
                source=source,
            ) from None
    return out


def _guess_key(message: str, names: list[str]) -> str | None:
    """The first field named in an error message (TRL's and ours name the field they reject)."""
    words = re.findall(r"[A-Za-z][A-Za-z0-9_]*", message)
    return next((w for w in words if w in names), None)


def build(cls: type[T], values: Mapping[str, Any], *, source: str | None = "config") -> T:
    """``cls(**values)`` (values already checked): a missing key or a failed ``__post_init__`` check is a
    :class:`ConfigError` naming the field."""
    fields = [f for f in dataclasses.fields(cls) if f.init]
    missing = [f.name for f in fields if not _has_default(f) and f.name not in values]
    if missing:
        hints = field_types(cls)
        what = ", ".join(f"{name} ({describe(hints[name])})" for name in missing)
        raise ConfigError(f"{_where(source)}{cls.__name__} needs {what}", key=missing[0], source=source, missing=True)
    try:
        return cls(**values)
    except ConfigError as e:
        raise ConfigError(f"{_where(source)}{e}", key=e.key, source=source) from None
    except (ValueError, TypeError) as e:
        key = _guess_key(str(e), [f.name for f in fields])
        raise ConfigError(f"{_where(source)}{e}", key=key, source=source) from e


def from_dict(cls: type[T], values: Mapping[str, Any], *, source: str | None = "config") -> T:
    """A ``cls`` from plain values (a parsed YAML): keys and types checked, then ``__post_init__`` run."""
    return build(cls, check_values(cls, values, source=source), source=source)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """The mapping in a YAML file (empty file: ``{}``); a missing or malformed file is a :class:`ConfigError`."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} not found", source=str(path))
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {e}", source=str(path)) from None
    if not isinstance(values, dict):
        raise ConfigError(
            f"{path} must hold a mapping of config fields, got a {type(values).__name__}", source=str(path)
        )
    return values


def load_config(
    cls: type[T],
    path: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    defaults: Mapping[str, Any] | None = None,
) -> T:
    """``cls`` from ``defaults``, then the YAML at ``path`` (if any), then ``overrides`` on top.

    Each layer is checked on its own, so an error names where the bad key came from.
    """
    values = check_values(cls, defaults or {}, source="defaults")
    if path is not None:
        values |= check_values(cls, read_yaml(path), source=str(path))
    values |= check_values(cls, overrides or {}, source="overrides")
    return build(cls, values, source=str(path) if path is not None else None)


# ------------------------------------------------------------------------------------ writing


def plain(value: Any) -> Any:
    """``value`` as YAML/JSON data: paths as str, enums as their value, dataclasses and tuples unpacked."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value.value if isinstance(value, enum.Enum) else value
    if isinstance(value, enum.Enum):
        return plain(value.value)
    if isinstance(value, PurePath):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [plain(v) for v in value]
    return str(value)


def _own(klass: type, cls: type) -> bool:
    """Whether ``klass`` (in ``cls``'s hierarchy) is of ``cls``'s project, not a foreign base such as TRL's."""
    return klass.__module__.split(".")[0] == cls.__module__.split(".")[0]


def own_fields(cls: type) -> list[str]:
    """The fields declared by ``cls``'s own project's classes (not those it inherits from TRL), in field order."""
    names = {n for k in cls.__mro__ if _own(k, cls) for n in k.__dict__.get("__annotations__", {})}
    return [f.name for f in dataclasses.fields(cls) if f.name in names]


def foreign_fields(cls: type) -> set[str]:
    """The fields some foreign base declares (our class may declare them again, with its own default)."""
    return {n for k in cls.__mro__ if not _own(k, cls) for n in k.__dict__.get("__annotations__", {})}


def config_dict(config: Any) -> dict[str, Any]:
    """Every field of ``config`` as YAML/JSON data (secrets left out).

    A field inherited from a foreign base (TRL's ``TrainingArguments``: ~130 fields) is written when it
    is one of ``cli_fields`` or differs from its declared default; loaded back, the dict gives an
    equal config. A config whose ``__post_init__`` derives fields from each other keeps what it was
    given in ``init_values`` (``{name: value}``), and that is written instead.
    """
    cls = type(config)
    own = set(own_fields(cls)) | set(getattr(cls, "cli_fields", ()))
    init_values = getattr(config, "init_values", None) or {}
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if not f.init or f.metadata.get("secret") or (f.name in _SECRET_FIELDS and f.name not in own):
            continue
        value = plain(getattr(config, f.name))
        if f.name in init_values:  # derived in __post_init__: what was given (None: let it derive again)
            value = plain(init_values[f.name])
            if value is None:
                continue
        if f.name not in own:
            if f.default is not dataclasses.MISSING:
                default = f.default
            elif f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            else:
                default = dataclasses.MISSING
            if default is not dataclasses.MISSING and value == plain(default):
                continue
        out[f.name] = value
    return out


def save_config(config: Any, path: str | Path) -> Path:
    """Write ``config`` (or its :func:`config_dict`) as YAML that, given back with ``--config``, reproduces the run."""
    import yaml

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = dict(config) if isinstance(config, Mapping) else config_dict(config)
    name = "" if isinstance(config, Mapping) else f"{type(config).__name__}: "
    header = f"# {name}pass this file back with --config to reproduce the run\n"
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    tmp.replace(path)
    return path
