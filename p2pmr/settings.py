"""One definition per setting: its default, its command-line flag, its help.

A setting is a field of one of the option dataclasses (``MasterOptions``,
``PeerConfig``, ``WorkerLimits``), declared with :func:`setting`. The
command line builds its options from those declarations
(:func:`click_options`) and turns what was given back into the dataclass
(:func:`apply`), so a default is written once, where the library reads it.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

__all__ = ["DEFAULT_LISTEN", "Setting", "apply", "click_options", "command_line",
           "default_repo", "setting"]

# Here rather than with the node, so that what only needs defaults (the
# command line's help, local peers' arguments) does not import libp2p.
DEFAULT_LISTEN: Final = ("/ip4/127.0.0.1/tcp/0",)


def default_repo() -> Path:
    """``$P2PMR_REPO``, else ``~/.p2pmr``."""
    env = os.environ.get("P2PMR_REPO")
    return Path(env) if env else Path.home() / ".p2pmr"

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Setting:
    """How a dataclass field appears on the command line."""

    flag: str
    help: str
    metavar: str | None = None
    scale: int = 1                # the flag's unit in the field's (MiB: 2**20)
    zero_means_none: bool = False  # ``--flag 0`` switches the limit off
    low: int | None = None         # bounds, for integers
    high: int | None = None
    choices: tuple[str, ...] = ()


def setting(default: Any = dataclasses.MISSING, *, flag: str, help: str,
            default_factory: Any = dataclasses.MISSING, **how: Any) -> Any:
    """A dataclass field that is also a command-line option."""
    meta = {"setting": Setting(flag, help, **how)}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _fields(cls: type) -> dict[str, tuple[dataclasses.Field[Any], Setting, Any]]:
    hints = typing.get_type_hints(cls)
    return {f.name: (f, f.metadata["setting"], hints[f.name])
            for f in dataclasses.fields(cls) if "setting" in f.metadata}


def _shown(field: dataclasses.Field[Any], how: Setting) -> str:
    if field.default is dataclasses.MISSING:
        return ""
    value = field.default
    if value is None:
        return "none"
    if isinstance(value, (bool, tuple)):
        return ""
    if how.scale != 1:
        value = value // how.scale
    return f"{value:g}" if isinstance(value, float) else str(value)


def click_options(cls: type, names: Sequence[str] = ()) -> Callable[[F], F]:
    """Click options for these settings of ``cls`` (all, if none are named).

    Each option defaults to None, meaning "not given": the dataclass's own
    default then holds, so it is never written twice.
    """
    fields = _fields(cls)
    chosen = [fields[n] for n in names] if names else list(fields.values())

    import click  # the command line's; the dataclasses that declare settings stay light

    def decorate(fn: F) -> F:
        for field, how, kind in reversed(chosen):
            shown = _shown(field, how)
            text = how.help + (f" [default: {shown}]" if shown else "")
            if kind is bool:
                fn = click.option(how.flag, field.name, is_flag=True, default=None,
                                  help=text)(fn)
                continue
            base = next((t for t in typing.get_args(kind) if t is not type(None)), kind)
            if typing.get_origin(kind) is tuple:  # a repeatable option: tuple[str, ...]
                fn = click.option(how.flag, field.name, type=base, multiple=True,
                                  default=None, metavar=how.metavar, help=text)(fn)
                continue
            option_type: Any
            if how.choices:
                option_type = click.Choice(how.choices)
            elif base is int and (how.low is not None or how.high is not None):
                option_type = click.IntRange(how.low, how.high)
            else:
                option_type = base
            fn = click.option(how.flag, field.name, type=option_type, default=None,
                              metavar=how.metavar, help=text)(fn)
        return fn

    return decorate


def apply(cls: type[T], given: Mapping[str, Any], base: T | None = None) -> T:
    """``base`` (or the defaults) with the settings of ``cls`` that were given."""
    changes: dict[str, Any] = {}
    for name, (_, how, _kind) in _fields(cls).items():
        value = given.get(name)
        if value is None or value == ():  # not given (a repeatable option: not once)
            continue
        if how.zero_means_none and not value:
            value = None
        elif how.scale != 1:
            value = int(value * how.scale)
        changes[name] = value
    instance = base if base is not None else cls()
    return dataclasses.replace(instance, **changes)  # type: ignore[type-var]


def command_line(cls: type, given: Mapping[str, Any]) -> list[str]:
    """The settings of ``cls`` that were given, as options again (for a child process)."""
    args: list[str] = []
    for name, (_, how, kind) in _fields(cls).items():
        value = given.get(name)
        if value is None:
            continue
        if kind is bool:
            if value:
                args.append(how.flag)
        elif typing.get_origin(kind) is tuple:
            for item in value:
                args += [how.flag, str(item)]
        else:
            args += [how.flag, f"{value:g}" if isinstance(value, float) else str(value)]
    return args
