"""The dependency ranges in setup.py: each bounded above, and the versions installed here inside them.

CI installs the newest versions the ranges allow (``.ci/run``), so these are
the versions the suite ran against; a range without an upper bound would let
the next breaking upstream release reach users before CI.
"""
from __future__ import annotations

import ast
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

SETUP = Path(__file__).resolve().parent.parent / "setup.py"
TEST_ONLY = {"pytest", "hypothesis", "pyyaml"}  # tools of the suite, not of the package
# A robot keeps the torch built for its GPU: no upper bound. What could break with a new torch (the oneDNN
# SuperPoint path's use of torch internals) probes itself at run time (test_models.py breaks it on purpose).
UNBOUNDED_ON_PURPOSE = {"torch"}


def setup_keyword(name: str) -> object:
    """The literal value of a keyword argument of setup() in setup.py."""
    for node in ast.walk(ast.parse(SETUP.read_text())):
        if isinstance(node, ast.keyword) and node.arg == name:
            return ast.literal_eval(node.value)
    raise AssertionError(f"setup.py has no {name}=")


def runtime_requirements() -> list[Requirement]:
    extras = setup_keyword("extras_require")
    assert isinstance(extras, dict)
    texts = list(setup_keyword("install_requires")) + [text for group in extras.values() for text in group]
    return [Requirement(text) for text in texts if Requirement(text).name.lower() not in TEST_ONLY]


def test_every_runtime_dependency_has_an_upper_bound():
    requirements = runtime_requirements()
    names = {"torch", "numpy", "opencv-python-headless", "tqdm", "rosbags", "matplotlib", "onnx", "onnxruntime"}
    assert {r.name for r in requirements} >= names
    bounding = ("<", "<=", "==", "~=")
    unbounded = {r.name for r in requirements if not any(spec.operator in bounding for spec in r.specifier)}
    assert unbounded == UNBOUNDED_ON_PURPOSE


@pytest.mark.parametrize("requirement", runtime_requirements(), ids=lambda r: r.name)
def test_installed_version_is_inside_the_tested_range(requirement: Requirement):
    try:
        installed = metadata.version(requirement.name)
    except metadata.PackageNotFoundError:
        pytest.skip(f"{requirement.name} is not installed (an optional extra)")
    assert requirement.specifier.contains(installed, prereleases=True), f"{requirement.name} {installed}"
