"""Command-line options made from the parameter table, checked as they are parsed.

Every option of :mod:`superglue_ros.parameters` that applies to the command
line becomes ``--name-with-dashes`` with the table's type, range and text,
and a bad value stops the command before any work with one line naming the
option and what it accepts.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NoReturn

from ..parameters import CLI, DEFAULTS, Parameter, default_text, in_scope, matcher_arguments
from ..settings import Setting
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
    return checked(Setting(name, int, None, "", low, high).parse)


def finite_float(name: str, low: float | None = None, high: float | None = None) -> Callable[[str], float]:
    """An option that is a finite number in [low, high], checked when parsed."""
    return checked(Setting(name, float, None, "", low, high).parse)


def add_settings(group: argparse._ActionsContainer, settings: Iterable[Setting],
                 flags: Mapping[str, tuple[str, ...]] | None = None) -> None:
    """Options made from settings (``--name-with-dashes``, or the flags given), with the setting's default,
    range and text, checked when parsed: a command's options declared once, like the node's parameters."""
    for setting in settings:
        names = (flags or {}).get(setting.name, ("--" + setting.name.replace("_", "-"),))
        if setting.kind is bool:
            group.add_argument(*names, dest=setting.name, action="store_true", help=setting.description)
            continue
        accepted = f" ({setting.range_text})" if setting.range_text and not setting.choices else ""
        default = "" if setting.default is None else "; default: %(default)s"
        group.add_argument(*names, dest=setting.name, type=checked(setting.parse), default=setting.default,
                           metavar=setting_metavar(setting),
                           help=(setting.description + accepted).replace("%", "%%") + default)


def setting_metavar(setting: Setting) -> str:
    if setting.choices:
        return "{" + ",".join(setting.choices) + "}"
    return {int: "N", float: "X", str: "TEXT", list: "NAMES"}[setting.kind]


def add_parameter_options(parser: argparse.ArgumentParser, targets: tuple[str, ...],
                          title: str) -> argparse._ArgumentGroup:
    """The table's command-line options for the given targets, as one group."""
    group = parser.add_argument_group(title)
    for parameter in in_scope(CLI):
        if parameter.target in targets:
            group.add_argument(*parameter.cli_flags, dest=parameter.name, type=checked(parameter.parse),
                               default=parameter.default, metavar=metavar(parameter), help=help_text(parameter))
    return group


def add_pixel_bound(parser: argparse.ArgumentParser, what: str) -> None:
    """--max-image-pixels for commands that read images without a matcher (training images, textures):
    the matcher's setting, with its range and default."""
    from ..inference.preprocess import MAX_IMAGE_PIXELS

    parser.add_argument("--max-image-pixels", type=checked(MAX_IMAGE_PIXELS.parse), default=MAX_IMAGE_PIXELS.default,
                        metavar="N", help=f"{what} with more pixels are refused before they are decoded "
                                          f"({MAX_IMAGE_PIXELS.range_text}; default: %(default)s)")


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
    pair_list = getattr(args, "command", None) == "eval" and getattr(args, "images", None) is not None
    check_resize(args.resize, getattr(args, "max_image_pixels", None), pair_list)
    values = {**DEFAULTS, **{name: getattr(args, name) for name in DEFAULTS if hasattr(args, name)}}
    kwargs = matcher_arguments(values)
    if not pair_list:  # a pair list's --resize is the source's, not the matcher's
        kwargs["resize"] = None if args.resize is None else args.resize[0] if len(
            args.resize) == 1 else tuple(args.resize)
    return kwargs


def check_resize(resize: list[int] | None, max_pixels: int | None, pair_list: bool = False) -> None:
    """The one check of --resize for every command: W H or the longer side, each within the network's
    range (a pair list may also keep the size with -1, as the reference does), and no larger an image
    than max_image_pixels allows (one number: its square, whatever the aspect)."""
    from ..inference.preprocess import RESIZE_WIDTH

    if resize is None:
        return
    text = " ".join(map(str, resize))
    if len(resize) not in (1, 2):
        raise CommandError(f"--resize takes W H or a single number (the longer side), got {text}")
    keeps = pair_list and (resize == [-1] or (len(resize) == 2 and resize[1] == -1))
    sides = resize[:-1] if keeps else resize
    if not all(RESIZE_WIDTH.low <= side <= RESIZE_WIDTH.high for side in sides):
        raise CommandError(f"--resize sides must be between {RESIZE_WIDTH.low} and {RESIZE_WIDTH.high} pixels"
                           f"{' (or -1 to keep the size)' if pair_list else ''}, got {text}")
    pixels = sides[0] * sides[-1] if sides else 0
    if max_pixels is not None and pixels > max_pixels:
        raise CommandError(f"--resize {text} makes images of up to {pixels} pixels, above --max-image-pixels "
                           f"({max_pixels})")


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
