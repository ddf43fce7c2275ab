"""Knowledge-distillation methods, one file per method, registered by ``NAME``.

Owns :func:`build_kd_methods`; the registry is :data:`pcdet.kd.methods.base.KD_METHODS` (re-exported
here). A method is an ``nn.Module`` built as ``cls(cfg, student, teacher, where)`` from one
``KD.METHODS`` entry (its keys are checked against ``cls.ALLOWED_KEYS``); ``forward(batch_dict) ->
(loss, tb_dict)`` reads student keys and teacher ``*_tea`` keys; widths come from the models'
feature specs (:func:`pcdet.kd.nodes.feature_spec`), head outputs from the heads' ``kd_view``
(:func:`pcdet.kd.methods.common.head_view`). A method may also define
``prepare_student_inputs(batch_dict)``, called by the wrapper after the teacher's forward and before
the student's (e.g. SparseKD's label KD adds teacher boxes to ``gt_boxes``). Adapters are
submodules: trained with the student, saved in training checkpoints, left out of the exported
student. The first line of a method's docstring is its one-line summary (``python -m pcdet.kd list``).

A new method is a module here with ``@KD_METHODS.register()`` on its class, imported below; code
outside the package registers the same way.
"""
import torch.nn as nn

# importing a method module registers its class (the proposed method, the plain feature-KD reference
# and the twelve baselines the papers compare against: PointDistiller main Table 3, appendix Tables 1, 4;
# PVD and the segmentation baselines of its Tables 1-3 for segmentors)
from pcdet.kd.methods import (  # noqa: F401
    attention_transfer,
    channel_wise,
    crd,
    feature_kd,
    fitnet,
    hinton_kd,
    ifv,
    knowledge_adaptation,
    multiframe,
    overhaul,
    paint_and_distill,
    pointdistiller,
    pvd,
    pvd_det,
    sessd,
    similarity_preserving,
    skd,
    sparsekd,
    zhang_ma,
)
from pcdet.kd.methods.base import KD_METHODS

__all__ = ["KD_METHODS", "build_kd_methods", "summary"]


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
        out.append(KD_METHODS.get(name, where)(cfg, student, teacher, where))
    return out
