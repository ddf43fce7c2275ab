"""Knowledge-distillation methods, one file per method, registered by ``NAME``.

Owns the registry :data:`METHODS` and :func:`build_kd_methods`. A method is an ``nn.Module``
built as ``cls(cfg, student, teacher, where)`` from one ``KD.METHODS`` entry (its keys are checked
against ``cls.ALLOWED_KEYS``); ``forward(batch_dict) -> (loss, tb_dict)`` reads student keys and
teacher ``*_tea`` keys. Adapters are submodules: trained with the student, saved in training
checkpoints, left out of the exported student. The first line of a method's docstring is its
one-line summary (``python -m pcdet.kd list``).
"""
import torch.nn as nn

from pcdet.config import ConfigKeyError
from pcdet.kd.methods.feature_kd import FeatureKD
from pcdet.kd.methods.pointdistiller import PointDistiller

METHODS = {
    "PointDistiller": PointDistiller,
    "FeatureKD": FeatureKD,
}


def summary(cls):
    """One-line summary of a method (first docstring line)."""
    doc = (cls.__doc__ or "").strip().splitlines()
    return doc[0].strip() if doc else ""


def build_kd_methods(methods_cfg, student, teacher):
    """``nn.ModuleList`` of the methods listed in ``KD.METHODS``."""
    out = nn.ModuleList()
    for i, cfg in enumerate(methods_cfg):
        name = cfg.get("NAME", None)
        where = f"KD.METHODS[{i}] ({name})"
        if name not in METHODS:
            raise ConfigKeyError(f"{where}: unknown KD method {name!r}; registered: {', '.join(sorted(METHODS))}")
        out.append(METHODS[name](cfg, student, teacher, where))
    return out
