"""MIXED_PRECISION resolution (pcdet.train_utils.precision): bf16 only where it is native.

The machine is mocked both ways: an AVX2-only CPU (bf16 emulated: fp32 under ``auto``), an
AVX512 CPU with AVX512-BF16 / AMX (bf16 under ``auto``), CUDA devices below and above compute
capability 8.0.
"""
import pytest
import torch
from easydict import EasyDict

from pcdet.train_utils import precision as P

AVX2 = {"capability": "AVX2", "avx512_bf16": False, "amx_tile": False, "onednn_max_isa": ""}
AVX512_NO_BF16 = {"capability": "AVX512", "avx512_bf16": False, "amx_tile": False, "onednn_max_isa": ""}
AMX = {"capability": "AVX512", "avx512_bf16": True, "amx_tile": True, "onednn_max_isa": ""}
# a CPU with AMX on which ATen was told to dispatch its AVX2 kernels (ATEN_CPU_CAPABILITY=avx2)
AMX_ATEN_AVX2 = dict(AMX, capability="AVX2")
AMX_ONEDNN_AVX2 = dict(AMX, onednn_max_isa="AVX2")


def cfg(value=None):
    return EasyDict({} if value is None else {"MIXED_PRECISION": value})


@pytest.mark.parametrize("features,native", [
    (AVX2, False), (AVX512_NO_BF16, False), (AMX, True), (AMX_ATEN_AVX2, False), (AMX_ONEDNN_AVX2, False),
    (dict(AMX, amx_tile=False), True), (dict(AMX, onednn_max_isa="avx512_core_amx"), True),
])
def test_native_bf16_on_cpu(features, native):
    ok, reason = P.native_bf16("cpu", features)
    assert ok is native and reason


def test_auto_picks_fp32_without_native_bf16_and_bf16_with_it():
    slow = P.resolve_precision(cfg("auto"), torch.device("cpu"), AVX2)
    assert slow.name == "fp32" and slow.autocast_dtype is None and "AVX2" in slow.reason
    fast = P.resolve_precision(cfg("auto"), torch.device("cpu"), AMX)
    assert fast.name == "bf16" and fast.autocast_dtype is torch.bfloat16 and "AMX" in fast.reason
    assert "auto" in str(fast) and "bf16" in str(fast)


def test_explicit_settings_are_kept_everywhere():
    for features in (AVX2, AMX):
        forced = P.resolve_precision(cfg("bf16"), torch.device("cpu"), features)
        assert forced.name == "bf16" and forced.autocast_dtype is torch.bfloat16
        assert P.resolve_precision(cfg("none"), torch.device("cpu"), features).name == "fp32"
    # on an emulating CPU a forced bf16 says so
    assert "although" in P.resolve_precision(cfg("bf16"), torch.device("cpu"), AVX2).reason
    assert P.resolve_precision(cfg(None), torch.device("cpu"), AMX).name == "fp32"  # key absent: fp32
    assert P.resolve_precision(cfg("BF16"), torch.device("cpu"), AMX).name == "bf16"  # case-insensitive


def test_unknown_setting_is_an_error_naming_the_key():
    with pytest.raises(ValueError, match="MIXED_PRECISION.*fp16.*auto, bf16, none"):
        P.resolve_precision(cfg("fp16"), torch.device("cpu"), AMX)


def test_default_path_reads_the_cpu_capability(monkeypatch):
    """Without ``features`` the decision reads torch's own CPU report (mocked here both ways)."""
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    assert P.resolve_precision(cfg("auto"), torch.device("cpu")).name == "fp32"
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    assert P.resolve_precision(cfg("auto"), torch.device("cpu")).name == "bf16"
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert P.resolve_precision(cfg("auto"), torch.device("cpu")).name == "fp32"


@pytest.mark.parametrize("cc,expected", [((7, 5), "fp32"), ((8, 0), "bf16"), ((9, 0), "bf16")])
def test_cuda_needs_compute_capability_8(monkeypatch, cc, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: cc)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "GPU")
    choice = P.resolve_precision(cfg("auto"), torch.device("cuda", 0))
    assert choice.name == expected and f"{cc[0]}.{cc[1]}" in choice.reason
