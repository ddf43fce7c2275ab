"""The host-copy recorder the GPU tests use (``tests.helpers.host_copies``): what counts as a copy from
a device to the host, checked here without a GPU (meta tensors stand for the device's; the recorder
itself is exercised with the CPU as its device)."""
import torch

from tests.helpers import host_copies, host_copy_numel


def test_a_copy_is_a_host_output_of_an_operation_with_a_device_input():
    dev, host = torch.empty(4, device="meta"), torch.empty(1000)
    assert host_copy_numel((dev,), {}, host, "meta") == 1000
    assert host_copy_numel((host, dev), {}, host, "meta") == 1000  # copy_(host, device) returns its host target
    assert host_copy_numel((host,), {}, host, "meta") == 0  # host to host
    assert host_copy_numel((dev,), {}, torch.empty(3, device="meta"), "meta") == 0  # stays on the device
    assert host_copy_numel((dev,), {}, (torch.empty(2), torch.empty(7)), "meta") == 7  # the largest output
    assert host_copy_numel((), {"src": dev}, host, "meta") == 1000  # keyword inputs count too


def test_the_recorder_sees_copies_of_at_least_min_numel_and_not_scalars():
    x = torch.randn(300)
    with host_copies("cpu", min_numel=256) as h:
        x.to("cpu", copy=True)
        x[:10].to("cpu", copy=True)  # below min_numel
        float(x.sum())  # a scalar read
    assert h.copies == [("aten._to_copy.default", 300)]
