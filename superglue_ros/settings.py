"""Configuration knobs, each declared once with its type, default, range and meaning.

A model file declares its own settings (``models/superpoint.py`` its
``SETTINGS``, and so on) and validates through them; the parameter table of
the node and the command line (:mod:`superglue_ros.parameters`) is built
from the same objects, so a range or a description cannot disagree between
a model, a YAML file, a launch argument and the README. Every error names
the setting and what it accepts, so a bad value is fixed without reading
the source.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

KINDS = (bool, int, float, str, list)  # list: of strings


@dataclass(frozen=True)
class Setting:
    """One knob. ``default`` None means "not set": the owner's own value applies (a model file's
    trained threshold, say). ``special`` values are accepted outside [low, high] (-1: no limit)."""

    name: str
    kind: type
    default: Any
    description: str
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()
    special: tuple[Any, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise TypeError(f"setting {self.name}: kind must be one of {KINDS}, got {self.kind}")
        if self.default is not None:
            self.check(self.default)

    def check(self, value: Any) -> Any:
        """``value`` as the setting holds it (an int given for a float becomes a float); ValueError
        naming the setting and what it accepts otherwise. NaN and infinities are never accepted."""
        if self.kind is bool:
            if not isinstance(value, bool):
                raise ValueError(f"{self.name} must be true or false, got {value!r}")
            return value
        if self.kind is list:
            if not isinstance(value, (list, tuple)) or not all(isinstance(item, str) for item in value):
                raise ValueError(f"{self.name} must be a list of strings, got {value!r}")
            return list(value)
        if self.kind is str:
            if not isinstance(value, str):
                raise ValueError(f"{self.name} must be a string, got {value!r}")
            if self.choices and value not in self.choices:
                raise ValueError(f"{self.name} must be one of {', '.join(map(repr, self.choices))}; got {value!r}")
            return value
        if self.kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, bool) or not isinstance(value, self.kind) or (
                self.kind is int and isinstance(value, float)):
            raise ValueError(f"{self.name} must be {self.accepted_text}, got {value!r}")
        if value in self.special:
            return value
        if (isinstance(value, float) and not math.isfinite(value)) or (self.low is not None and value < self.low) or (
                self.high is not None and value > self.high):
            raise ValueError(f"{self.name} must be {self.accepted_text}, got {value!r}")
        return value

    def parse(self, text: str) -> Any:
        """A value from its text (a command-line option, a launch argument), then checked."""
        if self.kind is str:
            return self.check(text)
        if self.kind is list:
            return self.check([item for item in text.replace(",", " ").split() if item])
        if self.kind is bool:
            lowered = text.strip().lower()
            if lowered not in ("true", "false"):
                raise ValueError(f"{self.name} must be true or false, got {text!r}")
            return lowered == "true"
        try:
            value = int(text) if self.kind is int else float(text)
        except ValueError:
            raise ValueError(f"{self.name} must be {self.accepted_text}, got {text!r}") from None
        return self.check(value)

    @property
    def range_text(self) -> str:
        """Allowed values for tables: choices, or the interval with any special values."""
        if self.choices:
            return ", ".join(self.choices)
        if self.low is None and self.high is None:
            return ""
        special = "".join(f" or {value}" for value in self.special)
        return f"[{_bound(self.low, '-inf')}, {_bound(self.high, 'inf')}]{special}"

    @property
    def accepted_text(self) -> str:
        kind = "an integer" if self.kind is int else "a number"
        special = "".join(f"{value} or " for value in self.special)
        return f"{special}{kind} in [{_bound(self.low, '-inf')}, {_bound(self.high, 'inf')}]"


SEED = Setting("seed", int, 0, "random seed", 0, (1 << 32) - 1)  # what numpy and torch both take as a seed
MAX_THREADS = 1024  # far above any machine's cores; a larger count makes OpenMP allocate without end


def defaults(settings: Iterable[Setting]) -> dict[str, Any]:
    return {setting.name: setting.default for setting in settings}


def check_all(settings: Iterable[Setting], config: Mapping[str, Any]) -> dict[str, Any]:
    """The config with every declared setting checked (and coerced); other keys pass unchanged."""
    checked = dict(config)
    for setting in settings:
        if setting.name in checked:
            checked[setting.name] = setting.check(checked[setting.name])
    return checked


def merge_config(defaults: Mapping[str, Any], overrides: Mapping[str, Any], owner: str) -> dict[str, Any]:
    """Defaults updated with overrides; unknown names are an error, not silently ignored."""
    unknown = sorted(set(overrides) - set(defaults))
    if unknown:
        raise ValueError(f"unknown {owner} parameter(s) {unknown}; known: {sorted(defaults)}")
    return {**defaults, **overrides}


def reconfigure(config: Mapping[str, Any], settings: Iterable[Setting], changes: Mapping[str, Any], owner: str,
                fixed: Iterable[str] = ()) -> dict[str, Any]:
    """``config`` with run-time ``changes`` checked: a setting the owner does not have, or one its
    weights fix, is refused with the reason; the old config stays untouched on any error."""
    settings = tuple(settings)
    names = {setting.name for setting in settings}
    fixed = tuple(fixed)
    for name in changes:
        if name in fixed:
            raise ValueError(f"{name} is fixed by the weights of {owner}")
        if name not in names:
            changeable = ", ".join(sorted(names - set(fixed)))
            raise ValueError(f"{name} does not apply to {owner} (its settings: {changeable})")
    return check_all(settings, {**config, **changes})


def check_number(name: str, value: Any, low: float | None = None, high: float | None = None,
                 integer: bool = False) -> None:
    """A one-off check of a finite number in [low, high], for arguments that are not settings."""
    Setting(name, int if integer else float, None, "", low, high).check(value)


def check_choice(name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")


def _bound(value: float | None, infinite: str) -> str:
    return infinite if value is None else repr(value)
