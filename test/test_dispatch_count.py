"""The dispatcher counter finds every kind of host synchronisation and counts plain operations."""
from __future__ import annotations

import pytest
import torch

from superglue_ros.inference.dispatch_count import DispatchCounter, count_dispatches


def counted(function) -> "DispatchCounter":
    with DispatchCounter() as counter:
        function()
    return counter


def test_plain_operations_are_counted_by_name_without_syncs():
    x, y = torch.randn(4), torch.randn(4)
    counter = counted(lambda: (x + y).mul(2.0).topk(2).values[1].view(1))
    assert dict(counter.counts.operations) == {"aten::add": 1, "aten::mul": 1, "aten::topk": 1, "aten::select": 1,
                                               "aten::view": 1}
    assert counter.counts.total_operations == 5 and counter.counts.views == {"aten::select": 1, "aten::view": 1}
    assert counter.counts.total_syncs == 0 and counter.counts.total_host_built == 0


@pytest.mark.parametrize("read", [lambda t: t.sum().item(), lambda t: float(t[0]), lambda t: bool(t.all()),
                                  lambda t: int(t.argmax())], ids=["item", "float", "bool", "int"])
def test_reading_a_tensor_as_a_python_value_is_a_sync(read):
    counts = counted(lambda: read(torch.randn(4))).counts
    assert counts.syncs == {"aten::_local_scalar_dense (cpu)": 1}


@pytest.mark.parametrize("operation, reason", [
    (lambda t: (t > 0).nonzero(), "aten::nonzero (cpu)"),
    (lambda t: torch.where(t > 0), "aten::nonzero (cpu)"),
    (lambda t: t.masked_select(t > 0), "aten::masked_select (cpu)"),
    (lambda t: t[t > 0], "aten::index (bool index, cpu)"),
    (lambda t: t.clone().__setitem__(t > 0, torch.zeros(())), "aten::index_put_ (bool index, cpu)"),
    (lambda t: torch.unique(t), "aten::_unique2 (cpu)"),
    (lambda t: t.unique_consecutive(), "aten::unique_consecutive (cpu)"),
    (lambda t: t.repeat_interleave(torch.ones(4, dtype=torch.long)), "aten::repeat_interleave (no output_size)"),
    (lambda t: torch.equal(t, t), "aten::equal (cpu)"),
], ids=["nonzero", "where", "masked_select", "bool_index", "bool_setitem", "unique", "unique_consecutive",
        "repeat_interleave", "equal"])
def test_value_dependent_shapes_are_syncs(operation, reason):
    counts = counted(lambda: operation(torch.randn(4))).counts
    assert counts.syncs == {reason: 1}


def test_fixed_shape_equivalents_are_not_syncs():
    t = torch.randn(4)
    counts = counted(lambda: (t[torch.arange(2)], t.repeat_interleave(torch.ones(4, dtype=torch.long), output_size=4),
                              t.topk(2), torch.where(t > 0, t, t.neg()), t.to(torch.float64))).counts
    assert counts.total_syncs == 0 and counts.operations["aten::repeat_interleave"] == 1


def test_copies_between_devices_are_syncs():
    t = torch.randn(4)  # built outside the region: its upload is data the region was given
    counts = counted(lambda: (t.to("meta"), torch.empty(4, device="meta").copy_(t))).counts
    assert counts.syncs == {"aten::_to_copy (cpu->meta)": 1, "aten::copy_ (cpu->meta)": 1}
    assert counts.total_host_built == 0


def test_tensors_built_from_python_data_are_counted_apart():
    t = torch.randn(4)
    counts = counted(lambda: (torch.tensor([1.0, 2.0]), t.new_tensor([0.5]), torch.where(t > 0, t, 0.0))).counts
    assert counts.host_built == {"aten::lift_fresh (cpu)": 2, "aten::scalar_tensor (cpu)": 1}
    assert counts.total_syncs == 0


def test_a_host_constant_moved_to_the_device_is_host_built_not_an_upload():
    counts = counted(lambda: (torch.tensor([1.0, 2.0]).to("meta"), torch.arange(3).float().to("meta"))).counts
    assert counts.host_built == {"aten::lift_fresh (cpu)": 1, "aten::_to_copy of a host constant (cpu->meta)": 2}
    assert counts.total_syncs == 0


def test_count_dispatches_returns_the_result_and_a_report():
    result, counts = count_dispatches(torch.add, torch.ones(2), torch.ones(2))
    assert torch.equal(result, torch.full((2,), 2.0))
    report = counts.as_dict()
    assert report["operations"] == 1 and report["syncs"] == 0 and report["top_operations"] == {"aten::add": 1}


def test_inference_mode_counts_what_composite_operations_are_made_of():
    x, weight = torch.randn(2, 3), torch.randn(4, 3)
    with torch.inference_mode():
        plain = counted(lambda: torch.nn.functional.linear(x, weight)).counts
        read = counted(lambda: (x.sum().item(), bool(x.any()))).counts
    assert counted(lambda: torch.nn.functional.linear(x, weight)).counts.operations == plain.operations
    assert "aten::linear" not in plain.operations and plain.total_operations >= 1
    assert read.syncs == {"aten::_local_scalar_dense (cpu)": 2}
