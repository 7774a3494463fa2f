"""One configuration schema: dataclasses are the truth, command-line options are derived from them.

A configuration dataclass (:class:`audiointerp.runner.RunConfig`,
:class:`audiointerp.fit.TrainConfig`) declares each field with :func:`option`: its default, a
help text, the valid values and how a command-line string becomes the value. :func:`add_options`
turns the fields into ``argparse`` options (``--shap-nsamples`` for ``shap_nsamples``; the help
shows the default and the valid values) and :func:`from_options` builds the dataclass back from
the parsed arguments. Notebooks build the same dataclass from their parameters, and a test checks
that their parameter names and defaults are the dataclass's.
"""

from __future__ import annotations

import argparse
from dataclasses import MISSING, field, fields

from .errors import ConfigError


def csv_list(s: str) -> list[str]:
    """``"a, b,,c" -> ["a", "b", "c"]`` (a comma-separated command-line list)."""
    return [v.strip() for v in str(s).split(",") if v.strip()]


def _csv_numbers(s: str, kind: type, example: str) -> tuple:
    out = []
    for v in csv_list(s):
        try:
            out.append(kind(v))
        except ValueError:
            what = "a number" if kind is float else "an integer"
            raise ConfigError(f"{v!r} is not {what} (expected comma-separated values, e.g. {example})") from None
    return tuple(out)


def csv_floats(s: str) -> tuple[float, ...]:
    """``"0.05,0.3" -> (0.05, 0.3)``.

    Raises:
        ConfigError: a value that is not a number (quoted).
    """
    return _csv_numbers(s, float, "0.05,0.3")


def csv_ints(s: str) -> tuple[int, ...]:
    """``"1,2,3" -> (1, 2, 3)``.

    Raises:
        ConfigError: a value that is not an integer (quoted).
    """
    return _csv_numbers(s, int, "1,2,3")


def json_object(s: str) -> dict:
    """A JSON object from the command line: ``'{"a": 1}' -> {"a": 1}``.

    Raises:
        ConfigError: text that is not a JSON object (quoted, with the parser's reason).
    """
    import json

    try:
        obj = json.loads(s)
    except ValueError as exc:
        raise ConfigError(f"{s!r} is not JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise ConfigError(f"{s!r} is not a JSON object {{...}}")
    return obj


def key_values(s: str) -> dict:
    """``"piq=a.pt,l2i=b.pt" -> {"piq": "a.pt", "l2i": "b.pt"}``.

    Raises:
        ConfigError: an entry without ``=`` (quoted).
    """
    out = {}
    for v in csv_list(s):
        if "=" not in v:
            raise ConfigError(f"expected name=value entries, got {v!r}")
        k, val = v.split("=", 1)
        out[k.strip()] = val.strip()
    return out


def optional(parse):
    """A parser that maps ``none`` / ``None`` / empty to None and anything else through ``parse``."""
    def run(s):
        return None if str(s).strip().lower() in ("", "none") else parse(s)
    run.__name__ = getattr(parse, "__name__", "value")
    return run


def option(default=MISSING, *, help: str, choices=None, parse=None, metavar: str | None = None,
           cli: bool = True, default_factory=MISSING):
    """A dataclass field that also describes its command-line option.

    Args:
        default, default_factory: as :func:`dataclasses.field`.
        help: one line for ``--help``.
        choices: the valid values (shown in the help; argparse checks them when ``parse`` is None).
        parse: ``str -> value`` for the command line (default: the type of the default).
        metavar: the placeholder in the help.
        cli: False keeps the field out of the command line.
    """
    meta = {"help": help, "choices": choices, "parse": parse, "metavar": metavar, "cli": cli}
    if default_factory is not MISSING:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)


def _show(v) -> str:
    if isinstance(v, (list, tuple)):
        return ",".join(str(x) for x in v) or "(none)"
    if isinstance(v, dict):
        return ",".join(f"{k}={x}" for k, x in v.items()) or "(none)"
    return "none" if v is None else str(v)


def _quoting(parse):
    """``parse`` with its ConfigError message shown by argparse as is (one line, exit status 2)."""
    def run(s):
        try:
            return parse(s)
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    run.__name__ = getattr(parse, "__name__", "value")
    return run


def add_options(parser: argparse.ArgumentParser, cls, skip=()) -> None:
    """Add one ``--name`` option per field of dataclass ``cls`` declared with :func:`option`.

    Fields without a default become required options. The help text gets the default and the
    valid values appended.
    """
    for f in fields(cls):
        meta = f.metadata
        if not meta or not meta.get("cli", True) or f.name in skip:
            continue
        default = f.default if f.default is not MISSING else (
            f.default_factory() if f.default_factory is not MISSING else MISSING)
        text = meta["help"]
        if meta.get("choices"):
            text += f" (one of: {', '.join(map(str, meta['choices']))})"
        kwargs = {"dest": f.name, "metavar": meta.get("metavar")}
        if default is MISSING:
            kwargs["required"] = True
        else:
            text += f" [default: {_show(default)}]"
            kwargs["default"] = argparse.SUPPRESS  # the dataclass fills in its own default
        parse = meta.get("parse")
        if parse is None and isinstance(default, bool):
            kwargs["action"] = argparse.BooleanOptionalAction
            kwargs.pop("metavar")
        else:
            if parse is None:
                parse = type(default) if default not in (MISSING, None) else str
                if meta.get("choices"):
                    kwargs["choices"] = meta["choices"]
            kwargs["type"] = _quoting(parse)
        parser.add_argument("--" + f.name.replace("_", "-"), help=text.replace("%", "%%"), **kwargs)


def from_options(cls, args: argparse.Namespace, **overrides):
    """Build dataclass ``cls`` from parsed arguments (fields not given keep their defaults)."""
    names = {f.name for f in fields(cls)}
    values = {k: v for k, v in vars(args).items() if k in names}
    values.update(overrides)
    return cls(**values)


def field_defaults(cls) -> dict:
    """``{field name: default}`` of a dataclass (fields without a default are left out)."""
    out = {}
    for f in fields(cls):
        if f.default is not MISSING:
            out[f.name] = f.default
        elif f.default_factory is not MISSING:
            out[f.name] = f.default_factory()
    return out
