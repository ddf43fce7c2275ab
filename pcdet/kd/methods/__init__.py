"""Knowledge-distillation methods, one file per method, registered by ``NAME``.

Owns the registry :data:`METHODS` and :func:`build_kd_methods`. A method is an ``nn.Module``
built as ``cls(cfg, student, teacher, where)`` from one ``KD.METHODS`` entry (its keys are checked
against ``cls.ALLOWED_KEYS``); ``forward(batch_dict) -> (loss, tb_dict)`` reads student keys and
teacher ``*_tea`` keys. A method may also define ``prepare_student_inputs(batch_dict)``, called by
the wrapper after the teacher's forward and before the student's (e.g. SparseKD's label KD adds
teacher boxes to ``gt_boxes``). Shared helpers: :mod:`pcdet.kd.methods.common`. Adapters are submodules: trained with the student, saved in training
checkpoints, left out of the exported student. The first line of a method's docstring is its
one-line summary (``python -m pcdet.kd list``).
"""
import torch.nn as nn

from pcdet.config import ConfigKeyError
from pcdet.kd.methods.attention_transfer import AttentionTransfer
from pcdet.kd.methods.crd import CRD
from pcdet.kd.methods.feature_kd import FeatureKD
from pcdet.kd.methods.fitnet import FitNet
from pcdet.kd.methods.hinton_kd import HintonKD
from pcdet.kd.methods.multiframe import MultiFrameConsistency
from pcdet.kd.methods.overhaul import Overhaul
from pcdet.kd.methods.paint_and_distill import PaintAndDistill
from pcdet.kd.methods.pointdistiller import PointDistiller
from pcdet.kd.methods.pvd import PVD
from pcdet.kd.methods.sessd import SESSDConsistency
from pcdet.kd.methods.similarity_preserving import SimilarityPreserving
from pcdet.kd.methods.sparsekd import SparseKD
from pcdet.kd.methods.zhang_ma import ZhangMa

#: name -> class; the proposed method, the plain feature-KD reference, and the twelve baselines the
#: papers compare against (PointDistiller main Table 3, appendix Tables 1 and 4)
METHODS = {
    "PointDistiller": PointDistiller,
    "FeatureKD": FeatureKD,
    "HintonKD": HintonKD,
    "FitNet": FitNet,
    "AttentionTransfer": AttentionTransfer,
    "SimilarityPreserving": SimilarityPreserving,
    "CRD": CRD,
    "Overhaul": Overhaul,
    "ZhangMa": ZhangMa,
    "SESSDConsistency": SESSDConsistency,
    "MultiFrameConsistency": MultiFrameConsistency,
    "SparseKD": SparseKD,
    "PVD": PVD,
    "PaintAndDistill": PaintAndDistill,
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
