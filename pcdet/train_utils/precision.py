"""Which precision a training runs in: ``OPTIMIZATION.MIXED_PRECISION`` resolved on this machine.

Owns :func:`resolve_precision`, :func:`native_bf16` and :class:`Precision`.

``MIXED_PRECISION`` is one of

* ``auto`` (the default of the synthetic configs): bf16 autocast where bf16 is native, fp32
  everywhere else;
* ``bf16``: bf16 autocast wherever asked (on a CPU without native bf16 every bf16 kernel is
  emulated: measured 7x slower than fp32 there, see ``benchmark/precision_speed.py``);
* ``none``: fp32 (the default when the key is absent).

bf16 counts as native

* on CUDA when the device's compute capability is 8.0 or newer (Ampere: bf16 tensor cores);
* on a CPU when ATen dispatches to its AVX512 kernels (``torch.backends.cpu.get_cpu_capability()``,
  which honours ``ATEN_CPU_CAPABILITY``), the CPU has AVX512-BF16 or AMX tiles, and oneDNN is not
  capped below them (``ONEDNN_MAX_CPU_ISA`` / ``DNNL_MAX_CPU_ISA``). An AVX2-only CPU (most
  laptops) has no bf16 arithmetic: autocast there converts every operand in software.

Autocast keeps weights, optimiser state and losses in fp32 (no loss scaling is needed with bf16).
Evaluation always runs in fp32. The choice and its reason go to the training log and to
``train_stats.json`` (:func:`pcdet.train_utils.train_utils.record_run_info`).
"""
import os
from dataclasses import asdict, dataclass

import torch

SETTINGS = ("auto", "bf16", "none")
_DTYPES = {"bf16": torch.bfloat16, "none": None}
# oneDNN ISA caps (ONEDNN_MAX_CPU_ISA values) that still include bf16 arithmetic
_ONEDNN_BF16_ISAS = ("ALL", "AVX512_CORE_BF16", "AVX512_CORE_AMX", "AVX512_CORE_AMX_FP16", "AVX10_1_512",
                     "AVX10_1_512_AMX", "AVX10_1_512_AMX_FP16")


@dataclass(frozen=True)
class Precision:
    """The resolved choice: ``setting`` as configured, ``name`` ``bf16`` or ``fp32``, and why."""

    setting: str
    name: str
    reason: str

    @property
    def autocast_dtype(self):
        """The ``torch.autocast`` dtype (None: no autocast)."""
        return torch.bfloat16 if self.name == "bf16" else None

    def as_dict(self):
        return asdict(self)

    def __str__(self):
        return f"{self.name} (MIXED_PRECISION: {self.setting}; {self.reason})"


def _cpu_flag(name):
    fn = getattr(torch.cpu, name, None)  # torch.cpu._is_avx512_bf16_supported, _is_amx_tile_supported
    try:
        return bool(fn()) if fn is not None else False
    except RuntimeError:
        return False


def cpu_model_name():
    """The CPU's model name (``model name`` of ``/proc/cpuinfo``, else :func:`platform.processor`), or ``""``."""
    import platform

    try:
        with open("/proc/cpuinfo") as f:
            name = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        name = ""
    return name or platform.processor() or ""


def cpu_features():
    """What the bf16 decision on a CPU reads (also recorded in the benchmark CSVs)."""
    return {
        "capability": str(torch.backends.cpu.get_cpu_capability()),
        "avx512_bf16": _cpu_flag("_is_avx512_bf16_supported"),
        "amx_tile": _cpu_flag("_is_amx_tile_supported"),
        "onednn_max_isa": os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "",
    }


def bf16_units(features):
    """``"AVX512-BF16+AMX"``, one of them, or ``""``: the bf16 units in :func:`cpu_features`."""
    return "+".join(n for n, on in (("AVX512-BF16", features["avx512_bf16"]), ("AMX", features["amx_tile"])) if on)


def native_bf16(device, features=None):
    """``(True/False, reason)``: does ``device`` compute in bf16 natively? ``features`` (CPU only)
    replaces :func:`cpu_features` (tests mock the CPU both ways with it)."""
    device = torch.device(device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return False, "CUDA is not available"
        major, minor = torch.cuda.get_device_capability(device)
        name = torch.cuda.get_device_name(device)
        if major >= 8:
            return True, f"{name} (compute capability {major}.{minor}) has bf16 tensor cores"
        return False, f"{name} (compute capability {major}.{minor} < 8.0) has no native bf16"
    if device.type != "cpu":
        return False, f"no bf16 rule for device type {device.type!r}"
    f = cpu_features() if features is None else features
    cap = f["capability"]
    if not cap.upper().startswith("AVX512"):
        return False, f"CPU capability {cap}: no native bf16, autocast would emulate it"
    if not (f["avx512_bf16"] or f["amx_tile"]):
        return False, f"CPU capability {cap} without AVX512-BF16 or AMX: no native bf16"
    isa = str(f.get("onednn_max_isa") or "").upper()
    if isa and isa not in _ONEDNN_BF16_ISAS:
        return False, f"oneDNN capped at {isa}: its bf16 kernels are not used"
    return True, f"CPU capability {cap} with {bf16_units(f)}: native bf16"


def resolve_precision(optim_cfg, device, features=None):
    """``OPTIMIZATION.MIXED_PRECISION`` -> :class:`Precision` for ``device`` (see the module docstring)."""
    setting = str(optim_cfg.get("MIXED_PRECISION", "none")).lower()
    if setting not in SETTINGS:
        raise ValueError(f"OPTIMIZATION.MIXED_PRECISION: {setting!r} is not one of {', '.join(SETTINGS)}")
    if setting == "none":
        return Precision(setting, "fp32", "full precision as configured")
    native, why = native_bf16(device, features)
    if setting == "bf16":
        return Precision(setting, "bf16", why if native else f"as configured, although {why}")
    return Precision(setting, "bf16" if native else "fp32", why)
