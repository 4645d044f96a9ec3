"""Configuration checks shared by the models, the matcher and the node.

Every error names the parameter and the allowed range, so that a bad value in
a YAML file or on the command line is fixed without reading the source.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def check_number(name: str, value: Any, low: float | None = None, high: float | None = None,
                 integer: bool = False) -> None:
    """Raise ValueError unless ``low <= value <= high`` (bounds optional)."""
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
        raise ValueError(f"{name} must be {kind} in {_range_text(low, high)}, got {value!r}")
    if value != value or (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"{name} must be {kind} in {_range_text(low, high)}, got {value!r}")


def check_choice(name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")


def merge_config(defaults: Mapping[str, Any], overrides: Mapping[str, Any], owner: str) -> dict[str, Any]:
    """Defaults updated with overrides; unknown names are an error, not silently ignored."""
    unknown = sorted(set(overrides) - set(defaults))
    if unknown:
        raise ValueError(f"unknown {owner} parameter(s) {unknown}; known: {sorted(defaults)}")
    return {**defaults, **overrides}


def _range_text(low: float | None, high: float | None) -> str:
    lo = "-inf" if low is None else repr(low)
    hi = "inf" if high is None else repr(high)
    return f"[{lo}, {hi}]"
