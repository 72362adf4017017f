"""Typer commands generated from config dataclasses: the options are the fields, declared once.

    add_config_command(analyze_app, "score", ScoreConfig, score_main, help="...")

gives ``longshort analyze score [--config FILE.yaml] [--dir DIR] [--alpha A]``: one option per field
(``--field-name``, its ``help``, bool as ``--x/--no-x``, a Literal as a choice, a list as
comma-separated values), then ``main(config)``. The config is the YAML file (if any) with the options
actually typed on the command line on top: an option left at its default never overrides the file.
A TRL config (``SFTConfig``/``GRPOConfig`` subclass) gets options for the fields it declares plus its
``cli_fields`` (a short list of inherited ones that matter); every other inherited field is set in YAML.

Commands whose config imports trl (seconds) are built only when asked for: :class:`LazyGroup`.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import types
import typing
from collections.abc import Callable, Sequence
from pathlib import Path, PurePath
from typing import Any, Literal, Optional, Union

import typer
from rich.markup import escape
from typer.core import TyperGroup

from longshort.cli._console import csv_list as _csv
from longshort.cli._console import fail
from longshort.config import ConfigError, field_types, foreign_fields, load_config, own_fields
from longshort.errors import LongShortError

__all__ = ["LazyGroup", "add_config_command", "cli_fields", "config_command", "lazy_command"]

# by name: typer vendors its own click (typer._click), whose ParameterSource is not click's
_GIVEN = ("COMMANDLINE", "PROMPT")
_FALLBACK = ("ENVIRONMENT", "DEFAULT_MAP")


@dataclasses.dataclass
class _Spec:
    name: str
    annotation: Any  # what typer parses
    parse: Callable[[Any], Any]  # typer's value -> the field's
    option: Any  # typer.Option(...)


def _strip_none(tp: Any) -> list[Any]:
    """The members of ``X | Y | None`` but None (``[tp]`` for a plain type)."""
    if typing.get_origin(tp) in (Union, types.UnionType):
        return [a for a in typing.get_args(tp) if a is not type(None)]
    return [tp]


def _is_str_list(tp: Any) -> bool:
    return typing.get_origin(tp) in (list, tuple) and typing.get_args(tp)[:1] in ((str,), ())


def _cli_type(tp: Any) -> tuple[Any, Callable[[Any], Any]] | None:
    """(the type typer parses, the conversion to the field's value), or None: not on the command line."""
    same: Callable[[Any], Any] = lambda v: v  # noqa: E731
    args = _strip_none(tp)
    if any(_is_str_list(a) for a in args):  # list[str] (| str): comma-separated; one item stays a str if allowed
        if str in args:
            return str, lambda v: _csv(v) if len(_csv(v)) != 1 else _csv(v)[0]
        return str, _csv
    enums = [a for a in args if isinstance(a, type) and issubclass(a, enum.Enum)]
    if enums and len(args) == 1:
        return Literal[tuple(m.value for m in enums[0])], same  # type: ignore[return-value]
    if enums and str in args:
        return str, same
    if len(args) != 1:
        if set(args) == {int, float}:
            return float, same
        return (str, same) if str in args else None
    (base,) = args
    if typing.get_origin(base) is Literal:
        return base, same
    if base in (bool, int, float, str):
        return base, same
    if isinstance(base, type) and issubclass(base, PurePath):
        return Path, same
    return None


def cli_fields(cls: type) -> list[str]:
    """The fields that get an option: those the config's own classes declare, then its ``cli_fields``."""
    own, foreign = own_fields(cls), foreign_fields(cls)
    names = [n for n in own if n not in foreign] + [n for n in own if n in foreign]  # ours first, then TRL's
    # an inherited name that this transformers/TRL version lacks (e.g. ``activation_checkpointing``, new in
    # transformers 5.2x) gets no option rather than breaking every command built from the config
    present = {f.name for f in dataclasses.fields(cls)}
    names += [n for n in getattr(cls, "cli_fields", ()) if n not in own and n in present]
    exclude = set(getattr(cls, "cli_exclude", ()))
    return [n for n in names if n not in exclude]


def _default_text(f: dataclasses.Field) -> str:
    if f.metadata.get("secret"):
        return ""
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return " [required]"
    if value is None or value == "" or value == []:
        return ""
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, (list, tuple)):
        value = ",".join(map(str, value))
    return f" [default: {value}]"


def _specs(cls: type) -> list[_Spec]:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = field_types(cls)
    declared = set(getattr(cls, "cli_fields", ()))
    specs = []
    for name in cli_fields(cls):
        f = fields[name]
        kind = _cli_type(hints[name])
        if kind is None:
            if name in declared:
                raise TypeError(f"{cls.__name__}.{name}: {hints[name]} cannot be a command-line option")
            continue  # a mapping or the like: YAML only
        annotation, parse = kind
        flag = "--" + name.replace("_", "-")
        decls = [f"{flag}/--no-{name.replace('_', '-')}" if annotation is bool else flag]
        decls += list(f.metadata.get("aliases", ()))
        help_text = escape(" ".join(str(f.metadata.get("help", "")).replace("%%", "%").split()) + _default_text(f))
        opt = typer.Option(None, *decls, help=help_text, show_default=False, envvar=f.metadata.get("envvar"))
        specs.append(_Spec(name, Optional[annotation], parse, opt))  # noqa: UP045 (a runtime type for typer)
    return specs


ConfigFile = Callable[[Path | None, dict[str, Any]], Path | None]


def config_command(
    cls: type,
    main: Callable[[Any], Any],
    *,
    help: str | None = None,
    config_file: ConfigFile | None = None,
    errors: Sequence[type[BaseException]] = (LongShortError, ValueError, OSError),
) -> Callable[..., None]:
    """The typer callback for ``cls``: parse the options, load the config, run ``main(config)``.

    ``config_file(path, given)`` may pick the YAML to load (e.g. a shipped default) or reject a
    combination; ``errors`` raised by ``main`` are printed as ``error: …`` with exit code 2.
    """
    specs = _specs(cls)
    names = {s.name for s in specs}
    assert not names & {"ctx", "config_file"}, f"{cls.__name__}: a field name clashes with the CLI's own"
    kw = inspect.Parameter.KEYWORD_ONLY
    params = [
        inspect.Parameter("ctx", kw, annotation=typer.Context),
        inspect.Parameter(
            "config_file",
            kw,
            default=typer.Option(
                None,
                "--config",
                help=escape(f"YAML of {cls.__name__} fields (options given here override it)"),
                show_default=False,
            ),
            annotation=Optional[Path],  # noqa: UP045
        ),
        *(inspect.Parameter(s.name, kw, default=s.option, annotation=s.annotation) for s in specs),
    ]
    by_name = {s.name: s for s in specs}
    catch = tuple(errors)
    pick_file = config_file

    def command(ctx: typer.Context, config_file: Path | None = None, **values: Any) -> None:
        given, fallback = {}, {}
        for name, value in values.items():
            source = getattr(ctx.get_parameter_source(name), "name", None)
            if source in _GIVEN:
                given[name] = by_name[name].parse(value)
            elif source in _FALLBACK and value is not None:
                fallback[name] = by_name[name].parse(value)
        try:
            path = pick_file(config_file, given) if pick_file else config_file
            config = load_config(cls, path, given, defaults=fallback)
        except ConfigError as e:
            fail(_with_flag(e, names))
        try:
            main(config)
        except catch as e:
            fail(str(e))

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    command.__doc__ = help or (cls.__doc__ or "").strip()
    return command


def _with_flag(error: ConfigError, names: set[str]) -> str:
    """A missing required field also says which option sets it."""
    if error.missing and error.key in names:
        return f"{error}: give --{error.key.replace('_', '-')} or set {error.key} in --config FILE"
    return str(error)


def add_config_command(app: typer.Typer, name: str, cls: type, main: Callable[[Any], Any], **kwargs: Any) -> None:
    """Register ``name`` on ``app``: the options of ``cls``, then ``main(config)``."""
    callback = config_command(cls, main, **kwargs)
    app.command(name, help=callback.__doc__)(callback)


def lazy_command(name: str, cls: Callable[[], type], main: Callable[[Any], Any], **kwargs: Any) -> Any:
    """A click command built from ``cls()`` (imported only now) for :class:`LazyGroup`."""
    sub = typer.Typer(add_completion=False)
    add_config_command(sub, name, cls(), main, **kwargs)
    return typer.main.get_command(sub)


class LazyGroup(TyperGroup):
    """A typer group whose ``lazy`` commands are built on first use (their configs import trl).

    ``longshort --help`` and ``longshort demo`` then never import trl; ``longshort train --help`` does.
    Subclasses set ``lazy = {"name": builder}``.
    """

    lazy: typing.ClassVar[dict[str, Callable[[], Any]]] = {}

    def list_commands(self, ctx: Any) -> list[str]:
        return [*self.lazy, *(n for n in super().list_commands(ctx) if n not in self.lazy)]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name in self.lazy and cmd_name not in self.commands:
            self.add_command(self.lazy[cmd_name](), cmd_name)
        return super().get_command(ctx, cmd_name)
