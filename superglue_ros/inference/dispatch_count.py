"""Count, at the dispatcher, the tensor operations a region runs and the host synchronisations it forces.

On a GPU every dispatched operation is at least one kernel launch, and every
host synchronisation stalls the pipeline and makes CUDA-graph capture
impossible; both are properties of the code, not of the machine, so they can
be counted on the CPU (where the same ops are dispatched) and asserted in CI.

A synchronisation is an operation whose result the host must wait for: a
tensor read as a Python number (``_local_scalar_dense``: ``item``, ``float``,
``bool``, ``int``), output shapes that depend on values (``nonzero``,
``masked_select``, indexing with a boolean mask, ``unique``,
``repeat_interleave`` without ``output_size``, ``bincount``), a boolean
answer (``equal``) and copies between devices. Tensors built from Python
data inside the region (``torch.tensor``, ``new_tensor``, a Python scalar
wrapped by ``torch.where``, a CPU constant moved onto the device) are
counted apart as "host-built": they cannot be captured in a CUDA graph.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.weak import WeakIdKeyDictionary

# Value-dependent output shapes or values returned to the host, by operator name (overload ignored).
SYNCING_OPS = frozenset({
    "aten::_local_scalar_dense", "aten::nonzero", "aten::masked_select", "aten::equal", "aten::bincount",
    "aten::_unique", "aten::_unique2", "aten::unique_dim", "aten::unique_consecutive",
    "aten::unique_dim_consecutive",
})
HOST_BUILDING_OPS = frozenset({"aten::lift_fresh", "aten::scalar_tensor"})
COPY_OPS = frozenset({"aten::_to_copy", "aten::copy_", "aten::copy"})
BOOL_INDEXING_OPS = frozenset({"aten::index", "aten::index_put", "aten::index_put_", "aten::_index_put_impl_"})


@dataclass
class DispatchCounts:
    """Operations, synchronisations and host-built tensors of a region, each by name."""

    operations: Counter[str] = field(default_factory=Counter)
    views: Counter[str] = field(default_factory=Counter)
    syncs: Counter[str] = field(default_factory=Counter)
    host_built: Counter[str] = field(default_factory=Counter)

    @property
    def total_operations(self) -> int:
        return sum(self.operations.values())

    @property
    def total_views(self) -> int:
        """Operations that only make a new view of existing memory: dispatched, but no kernel runs."""
        return sum(self.views.values())

    @property
    def total_syncs(self) -> int:
        return sum(self.syncs.values())

    @property
    def total_host_built(self) -> int:
        return sum(self.host_built.values())

    def as_dict(self) -> dict[str, Any]:
        """Totals and the per-name tallies (most frequent first), for JSON reports."""
        return {"operations": self.total_operations, "views": self.total_views, "syncs": self.total_syncs,
                "host_built": self.total_host_built,
                "sync_ops": dict(self.syncs.most_common()), "host_built_ops": dict(self.host_built.most_common()),
                "top_operations": dict(self.operations.most_common(20))}


def _tensors(values: Any) -> list[torch.Tensor]:
    return [v for v in tree_flatten(values)[0] if isinstance(v, torch.Tensor)]


def _operator(func: torch._ops.OpOverload) -> str:
    return func._schema.name


def _copy_source(name: str, args: tuple) -> torch.Tensor | None:
    """The tensor a copy op reads, None for any other op."""
    if name == "aten::_to_copy":
        return args[0]
    if name in ("aten::copy_", "aten::copy"):
        return args[1]
    return None


def _copy_devices(name: str, args: tuple, kwargs: dict[str, Any]) -> tuple[torch.device, torch.device] | None:
    """(source, destination) devices of a copy op, None when it is not one or stays on its device."""
    source = _copy_source(name, args)
    if source is None:
        return None
    destination = kwargs.get("device") if name == "aten::_to_copy" else args[0].device
    destination = source.device if destination is None else torch.device(destination)
    return None if source.device == destination else (source.device, destination)


def _has_bool_index(args: tuple) -> bool:
    indices = args[1] if len(args) > 1 else []
    return any(isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in indices or [])


def sync_reason(func: torch._ops.OpOverload, args: tuple, kwargs: dict[str, Any]) -> str | None:
    """Why this operation makes the host wait for the device (a label), or None when it does not."""
    name = _operator(func)
    device = next((t.device.type for t in _tensors(args)), "no tensor")
    if name in SYNCING_OPS:
        return f"{name} ({device})"
    if name in BOOL_INDEXING_OPS and _has_bool_index(args):
        return f"{name} (bool index, {device})"
    if name == "aten::repeat_interleave" and func._overloadname in ("Tensor", "self_Tensor") and \
            kwargs.get("output_size") is None:
        return f"{name} (no output_size)"
    devices = _copy_devices(name, args, kwargs)
    if devices is not None:
        return f"{name} ({devices[0].type}->{devices[1].type})"
    return None


class DispatchCounter(TorchDispatchMode):
    """``with DispatchCounter() as counter:`` counts into ``counter.counts`` every op dispatched inside.

    Composite operations (which inference mode lets through undecomposed)
    are counted as the operations they decompose into, so counts do not
    depend on whether autograd is on. Constants built on the host inside the region (and what is computed from
    them alone on the CPU) are remembered, so that moving one onto the device
    counts as a host-built tensor rather than as an upload of data the region
    was given.
    """

    def __init__(self) -> None:
        super().__init__()
        self.counts = DispatchCounts()
        self._host_constants: WeakIdKeyDictionary = WeakIdKeyDictionary()

    def __torch_dispatch__(self, func: torch._ops.OpOverload, types: tuple, args: tuple = (),
                           kwargs: dict[str, Any] | None = None) -> Any:
        kwargs = kwargs or {}
        if func.has_kernel_for_dispatch_key(torch._C.DispatchKey.CompositeImplicitAutograd):
            with self:  # what the op is made of is what runs: count that (as outside inference mode)
                result = func.decompose(*args, **kwargs)
            if result is not NotImplemented:
                return result
        name = _operator(func)
        self.counts.operations[name] += 1
        if func.is_view:
            self.counts.views[name] += 1
        inputs = _tensors((args, kwargs))
        source = _copy_source(name, args)
        from_constants = all(t in self._host_constants for t in ([source] if source is not None else inputs))
        result = func(*args, **kwargs)
        outputs = _tensors(result)
        reason = None if name in HOST_BUILDING_OPS else sync_reason(func, args, kwargs)
        if name in HOST_BUILDING_OPS:
            self.counts.host_built[f"{name} ({outputs[0].device.type})"] += 1
        elif reason is not None and source is not None and from_constants:
            self.counts.host_built[f"{name} of a host constant ({source.device.type}->{outputs[0].device.type})"] += 1
        elif reason is not None:
            self.counts.syncs[reason] += 1
        if from_constants or name in HOST_BUILDING_OPS:
            for tensor in outputs:
                if tensor.device.type == "cpu":
                    self._host_constants[tensor] = True
        return result


def count_dispatches(function: Any, *args: Any, **kwargs: Any) -> tuple[Any, DispatchCounts]:
    """``function(*args, **kwargs)`` and the counts of what it dispatched."""
    with DispatchCounter() as counter:
        result = function(*args, **kwargs)
    return result, counter.counts
