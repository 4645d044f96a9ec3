"""SuperPoint's two heads on CPU float32 through oneDNN directly: the same bits as ``SuperPoint.forward``.

On CPU, ``F.conv2d`` already runs these convolutions in oneDNN, but converts
every input and output between torch's NCHW layout and oneDNN's blocked one
and allocates a fresh full-resolution map per layer, whose pages the kernel
faults in on every call. Here the tensors stay in oneDNN's layout from layer to
layer, ReLU runs fused into the convolution, and the three pooled stages run
over strips of rows, so that no full-resolution 64-channel map exists and the
pooled outputs go into buffers reused between calls. Each strip reads two
halo rows on either side, so every row it keeps saw exactly the inputs it sees
in the whole image; oneDNN computes each output pixel the same way whatever the
image height, so the kept rows are bit-identical (checked by the tests at
several sizes and thread counts, against the plain reference forward).

Wherever ``F.conv2d`` itself would not pick oneDNN for a layer (tiny images,
one thread for the 1x1 heads, ``torch.backends.mkldnn`` disabled) or the torch
build lacks the operators, the plain forward runs instead: the choice can never
change a result, only the time. The operators used here are torch internals
that may change in any release, so before the first use a probe runs them on a
small convolution and compares with ``F.conv2d``; any error or difference turns
the fast path off for the process (:func:`available`), and any torch version
installs.

Every operation here runs with one intra-op thread, and the parallelism is
the strips' (and the two heads'): ``torch.get_num_threads()`` workers take
the strips of a stage as they come free. A thread team with a barrier after
every operation waits, at each barrier, for its slowest thread, and a thread
that shares its core with another process is slow: on a busy CPU that made
the extraction slower than with one thread. Workers that pick up the next
strip lose at most one strip's time to a slow core. It also makes the result
one and the same on any machine, load and thread count: that of the
one-thread forward.
"""
from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Executor, ThreadPoolExecutor

import torch
import torch.nn.functional as F
from torch import nn

_ONEDNN_BACKEND = getattr(getattr(torch._C, "_ConvBackend", None), "Mkldnn", None)
_HAS_FUSED = hasattr(torch.ops.mkldnn, "_convolution_pointwise") if hasattr(torch.ops, "mkldnn") else False
ENCODER = tuple(f"conv{stage}{half}" for stage in "1234" for half in "ab")
HEADS = (("convPa", "convPb"), ("convDa", "convDb"))
STRIP_ROWS = 32  # pooled output rows per strip (64 + 4 input rows)
LOG = logging.getLogger(__name__)


@functools.cache
def available() -> bool:
    """Whether this torch has the internal operators in the form used here, and they give ``F.conv2d``'s bits."""
    try:
        return _probe()
    except Exception as error:  # noqa: BLE001 - any failure of an internal API means: use the plain forward
        LOG.info("oneDNN SuperPoint path off (%s: %s); the plain forward runs", type(error).__name__, error)
        return False


def _probe() -> bool:
    generator = torch.Generator().manual_seed(0)
    conv = nn.Conv2d(8, 8, 3, padding=1)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator))
        conv.bias.copy_(torch.randn(conv.bias.shape, generator=generator))
        x = torch.randn(1, 8, 64, 64, generator=generator)  # large enough for F.conv2d to pick oneDNN
        if not conv_uses_onednn(conv, tuple(x.shape)):
            return False
        same = torch.equal(fused_conv(x.to_mkldnn(), conv, True).to_dense(), F.relu(conv(x)))
    if not same:
        LOG.info("oneDNN SuperPoint path off: its probe convolution differs from F.conv2d")
    return same


def conv_uses_onednn(conv: nn.Conv2d, shape: tuple[int, ...]) -> bool:
    """Whether ``F.conv2d`` dispatches ``conv`` on an input of ``shape`` to oneDNN (torch's own rule)."""
    if _ONEDNN_BACKEND is None or not _HAS_FUSED or not hasattr(torch._C, "_select_conv_backend"):
        return False
    if min(shape) < 1:
        return False
    probe = torch.empty(shape)  # never written or read: no pages are touched
    try:
        backend = torch._C._select_conv_backend(probe, conv.weight, conv.bias, list(conv.stride),
                                                list(conv.padding), list(conv.dilation), False, [0, 0],
                                                conv.groups, None)
    except RuntimeError:  # e.g. a map smaller than the kernel
        return False
    return backend == _ONEDNN_BACKEND


_PLANS: dict[tuple, dict[str, bool] | None] = {}


def plan(model: nn.Module, shape: tuple[int, ...]) -> dict[str, bool] | None:
    """Per layer, whether oneDNN runs it for this input shape; None when the encoder cannot stay in oneDNN's
    layout throughout (then the plain forward runs). Cached per shape, thread count and mkldnn switch."""
    if not available():
        return None
    key = (tuple(shape), torch.get_num_threads(), torch.backends.mkldnn.enabled, model.convDb.out_channels)
    if key not in _PLANS:
        batch, _, height, width = shape
        layers = {}
        for stage in "1234":
            for half in "ab":
                conv = getattr(model, f"conv{stage}{half}")
                layers[f"conv{stage}{half}"] = conv_uses_onednn(conv, (batch, conv.in_channels, height, width))
            if stage != "4":
                height, width = height // 2, width // 2
        for first, second in HEADS:
            for name in (first, second):
                conv = getattr(model, name)
                layers[name] = conv_uses_onednn(conv, (batch, conv.in_channels, height, width))
        needed = ENCODER + tuple(first for first, _ in HEADS)
        _PLANS[key] = layers if all(layers[name] for name in needed) else None
    return _PLANS[key]


def fused_conv(x: torch.Tensor, conv: nn.Conv2d, relu: bool) -> torch.Tensor:
    """oneDNN convolution (with ReLU fused in) of a oneDNN-layout tensor; the output stays in that layout."""
    return torch.ops.mkldnn._convolution_pointwise(
        x, conv.weight, conv.bias, list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups,
        "relu" if relu else "none", [], "")


def pooled_stage(x: torch.Tensor, conv_a: nn.Conv2d, conv_b: nn.Conv2d, out: torch.Tensor,
                 rows: int = STRIP_ROWS, workers: Executor | None = None) -> torch.Tensor:
    """out = maxpool2x2(relu(conv_b(relu(conv_a(x))))), computed strip by strip (see the module docstring), on
    ``workers`` when given.

    The two halo rows on either side of a strip saw the strip's zero padding instead of the image; they are
    cut after pooling (a pooled row comes from an even-aligned input row pair, and halos are 2 rows).
    """
    height, pooled = x.shape[2], x.shape[2] // 2

    def strip(q0: int) -> None:
        q1 = min(pooled, q0 + rows)
        r0, r1 = max(0, 2 * q0 - 2), min(height, 2 * q1 + 2)
        y = fused_conv(fused_conv(x[:, :, r0:r1].contiguous().to_mkldnn(), conv_a, True), conv_b, True)
        y = F.max_pool2d(y, 2, 2).to_dense()
        skip = q0 - r0 // 2
        out[:, :, q0:q1].copy_(y[:, :, skip:skip + q1 - q0])

    run_all([functools.partial(strip, q0) for q0 in range(0, pooled, rows)], workers)
    return out


def run_all(tasks: Iterable[Callable[[], object]], workers: Executor | None) -> list:
    """Each task's result, in order: on ``workers`` when given, else one after the other in this thread."""
    if workers is None:
        return [task() for task in tasks]
    inference = torch.is_inference_mode_enabled()
    return [future.result() for future in [workers.submit(_in_mode, task, inference) for task in tasks]]


def _in_mode(task: Callable[[], object], inference: bool) -> object:
    """Grad and inference mode are per thread: the worker takes the caller's (grad off, see heads)."""
    with torch.no_grad(), torch.inference_mode(inference):
        return task()


@functools.cache
def one_thread_workers(count: int) -> ThreadPoolExecutor:
    """``count`` threads that each run torch operations with one intra-op thread, shared by every model of
    the process. Torch keeps a thread count per thread, but ``torch.set_num_threads`` also sets the default
    that a thread takes at its first operation: the caller's count is set again once every worker has its
    own (the workers wait at a barrier until then)."""
    before = torch.get_num_threads()
    ready = threading.Barrier(count + 1)
    workers = ThreadPoolExecutor(count, thread_name_prefix="superpoint_onednn", initializer=_one_thread)
    for _ in range(count):  # each waits at the barrier, so each submit starts one more thread
        workers.submit(ready.wait)
    ready.wait()
    torch.set_num_threads(before)
    return workers


def _one_thread() -> None:
    """A worker's initialiser: its operations run on one thread (see the module's text)."""
    torch.get_num_threads()  # this thread's first operation takes the default now, not later
    torch.set_num_threads(1)


def inference_heads(model: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``onednn_heads`` of each image of a (B, 1, H, W) CPU float32 batch on ``torch.get_num_threads()``
    one-thread workers; None where the plain forward must run (see :func:`plan`).

    One image at a time: a strip of several images no longer fits the caches, so a batch would only cost
    (each image's arithmetic is the same either way)."""
    count = torch.get_num_threads()
    workers = one_thread_workers(count) if count > 1 else None
    layers = run_all([functools.partial(plan, model, (1, *images.shape[1:]))], workers)[0]
    if layers is None:
        return None
    heads = [onednn_heads(model, image[None], layers, workers=workers) for image in images]
    return heads[0] if len(heads) == 1 else (torch.cat([h[0] for h in heads]), torch.cat([h[1] for h in heads]))


class Workspace(threading.local):
    """Per-thread buffers for the pooled stage outputs, reused from call to call (a fresh allocation of this
    size costs more in page faults than the arithmetic that fills it). Thread-local so that two matchers in
    two threads never share one; kept outside the model so that the model stays copyable and picklable."""

    def get(self, key: str, shape: tuple[int, ...]) -> torch.Tensor:
        buffer = self.__dict__.get(key)
        if buffer is None or buffer.shape != shape:
            buffer = self.__dict__[key] = torch.empty(shape)
        return buffer


WORKSPACE = Workspace()


def onednn_heads(model: nn.Module, images: torch.Tensor, layers: dict[str, bool],
                 workspace: Workspace = WORKSPACE, workers: Executor | None = None,
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """(detector logits, unit-norm dense descriptors), bit for bit those of ``SuperPoint.forward`` run with
    the intra-op thread count of the threads that compute: ``workers``' when given, else this thread's.
    The last two stages have no strips; the two heads run side by side.

    Inference only: oneDNN-layout tensors carry no autograd. The outputs never alias the workspace."""
    batch = images.shape[0]
    x = images.contiguous()
    for stage in "123":
        conv_a, conv_b = getattr(model, f"conv{stage}a"), getattr(model, f"conv{stage}b")
        shape = (batch, conv_b.out_channels, x.shape[2] // 2, x.shape[3] // 2)
        x = pooled_stage(x, conv_a, conv_b, workspace.get(f"pool{stage}", shape), workers=workers)
    x = run_all([functools.partial(_last_stage, model, x)], workers)[0]
    logits, raw = run_all([functools.partial(_head, model, x, first, second, layers[second])
                           for first, second in HEADS], workers)
    return logits, raw


def _last_stage(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The encoder's unpooled fourth stage, one task: it is too small to split into strips."""
    return fused_conv(fused_conv(x.to_mkldnn(), model.conv4a, True), model.conv4b, True)


def _head(model: nn.Module, x: torch.Tensor, first: str, second: str, onednn: bool) -> torch.Tensor:
    """One head on the oneDNN-layout encoder output: detector logits, or the descriptors unit-normed."""
    hidden = fused_conv(x, getattr(model, first), True)
    conv = getattr(model, second)
    if onednn:
        out = fused_conv(hidden, conv, False).to_dense()
    else:
        out = F.conv2d(hidden.to_dense(), conv.weight, conv.bias)
    return F.normalize(out, p=2, dim=1) if second == "convDb" else out
