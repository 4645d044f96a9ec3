"""Command-line options made from the parameter table, checked as they are parsed.

Every option of :mod:`superglue_ros.parameters` that applies to the command
line becomes ``--name-with-dashes`` with the table's type, range and text,
and a bad value stops the command before any work with one line naming the
option and what it accepts.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from ..parameters import CLI, DEFAULTS, Parameter, default_text, in_scope, matcher_arguments
from . import CommandError

MODEL_TARGETS = ("matcher", "extractor", "superglue")


class Parser(argparse.ArgumentParser):
    """An argparse parser whose errors are one line (usage is one ``--help`` away)."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


def checked(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse ``type`` that reports the setting's own message instead of 'invalid value'."""
    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    convert.__name__ = getattr(parse, "__name__", "value")
    return convert


def positive_int(name: str, low: int = 1, high: int | None = None) -> Callable[[str], int]:
    """An option that is a whole number in [low, high] (counts, strides), checked when parsed."""
    from ..settings import Setting

    return checked(Setting(name, int, None, "", low, high).parse)


def finite_float(name: str, low: float | None = None, high: float | None = None) -> Callable[[str], float]:
    """An option that is a finite number in [low, high], checked when parsed."""
    from ..settings import Setting

    return checked(Setting(name, float, None, "", low, high).parse)


def add_parameter_options(parser: argparse.ArgumentParser, targets: tuple[str, ...],
                          title: str) -> argparse._ArgumentGroup:
    """The table's command-line options for the given targets, as one group."""
    group = parser.add_argument_group(title)
    for parameter in in_scope(CLI):
        if parameter.target in targets:
            group.add_argument(*parameter.cli_flags, dest=parameter.name, type=checked(parameter.parse),
                               default=parameter.default, metavar=metavar(parameter), help=help_text(parameter))
    return group


def add_matcher_options(parser: argparse.ArgumentParser) -> None:
    add_parameter_options(parser, MODEL_TARGETS, "model").add_argument(
        "--resize", type=int, nargs="+", metavar="N",
        help="W H to resize to, or one number for the longer side; keypoints are reported in original pixels "
             "(eval of a pair list: the reference's resize, default 640 480, -1 keeps the size)")


def metavar(parameter: Parameter) -> str:
    setting = parameter.setting
    if setting.choices:
        return "{" + ",".join(setting.choices) + "}"
    return {int: "N", float: "X", str: "TEXT", bool: "true|false", list: "NAMES"}[setting.kind]


def help_text(parameter: Parameter) -> str:
    setting = parameter.setting
    accepted = f" ({setting.range_text})" if setting.range_text and not setting.choices else ""
    default = default_text(parameter).strip("`")
    return f"{setting.description}{accepted}; default: {default}".replace("%", "%%")


def matcher_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """Matcher keyword arguments from the parsed options."""
    if args.resize is not None and len(args.resize) not in (1, 2):
        raise CommandError("--resize takes W H or a single number (the longer side)")
    if args.resize is not None and not all(8 <= side <= 16384 for side in args.resize) and \
            getattr(args, "images", None) is None:
        raise CommandError(f"--resize sides must be between 8 and 16384 pixels, got {' '.join(map(str, args.resize))}")
    values = {**DEFAULTS, **{name: getattr(args, name) for name in DEFAULTS if hasattr(args, name)}}
    kwargs = matcher_arguments(values)
    if getattr(args, "images", None) is None:  # a pair list's --resize is the source's, not the matcher's
        kwargs["resize"] = None if args.resize is None else args.resize[0] if len(
            args.resize) == 1 else tuple(args.resize)
    return kwargs


def build_matcher(args: argparse.Namespace, **overrides: Any):
    """A Matcher from the options; configuration and weight problems become one-line errors."""
    from ..inference.matcher import Matcher
    from ..inference.weights import WeightsError

    from ..files.outputs import OutputError

    try:
        return Matcher(**{**matcher_kwargs(args), **overrides})
    except (ValueError, WeightsError, OutputError) as error:
        raise CommandError(str(error)) from None
    except ModuleNotFoundError as error:
        raise CommandError(f"{error.name} is needed for backend {args.backend}: "
                           f"pip install 'superglue_ros[onnx]'") from None
