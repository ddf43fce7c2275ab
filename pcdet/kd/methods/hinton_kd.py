"""HintonKD: logit distillation with a temperature (a detector's class map, a segmentor's point logits).

Source: Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural Network" (2015).
Loss implemented, detectors (``FORM: sigmoid``, their default):
L = WEIGHT * T^2 * mean_{b, anchor, class} KL(p_t || p_s), p = sigmoid(z / T),
with the per-class *binary* KL because the anchor head's classifier is a sigmoid (focal) one:
KL = p_t log(p_t / p_s) + (1 - p_t) log((1 - p_t) / (1 - p_s)).
Applied to: ``cls_preds`` (B, ny, nx, A*C) of the student against ``cls_preds_tea`` (same shape:
same anchors, same classes). Left open by the paper and chosen here: the mean over every anchor
and class (not only positives); T = 4 as published (``TEMPERATURE``).
Loss implemented, segmentors (``FORM: softmax``, their default): the "KD" baseline of PVD (Hou et al., CVPR 2022,
Tables 1-3, "pointwise output"): L = WEIGHT * T^2 * 1/(N C) sum_n sum_c KL, p = softmax(z / T) over
the C logits of ``FEATURE`` (default ``point_refine_logits``, the pointwise output O^p that PVD's
eq. 1 distils, every point of the batch; with Cylinder3D's ``PREDICT_FROM: voxel``, ``point_logits``
would be each point's voxel logits), the reference
code's form (YukangWang/IFVD ``CriterionKD``: ``KLDivLoss`` with its default mean over all N x C
elements, T = 1, weight 10, the defaults of the segmentation configs).
"""
from pcdet.kd.keys import tea
from pcdet.kd.methods.base import KD_METHODS, KDMethod
from pcdet.config import ConfigError
from pcdet.kd.methods.common import sigmoid_kl, softmax_kl, student_map


@KD_METHODS.register()
class HintonKD(KDMethod):
    """Hinton KD: T^2 * KL between the softened outputs (binary per class for sigmoid heads, softmax for segmentors)."""

    ALLOWED_KEYS = {"NAME", "WEIGHT", "FEATURE", "TEMPERATURE", "FORM"}
    FORMS = ("sigmoid", "softmax")

    def __init__(self, cfg, student, teacher, where):
        super().__init__(cfg, where)
        segmentor = getattr(student, "family", None) == "segmentor"
        self.form = str(cfg.get("FORM", "softmax" if segmentor else "sigmoid"))
        if self.form not in self.FORMS:
            raise ConfigError(f"{where}: FORM {self.form!r}: expected one of {self.FORMS}")
        self.feature = str(cfg.get("FEATURE", "point_refine_logits" if segmentor else "cls_preds"))
        self.temperature = float(cfg.get("TEMPERATURE", 1.0 if segmentor else 4.0))

    def forward(self, batch_dict):
        zs = student_map(batch_dict, self.feature)
        zt = batch_dict[tea(self.feature)].detach().float()
        if zs.shape != zt.shape:
            raise ValueError(f"{self.where}: student {self.feature} {tuple(zs.shape)} vs teacher {tuple(zt.shape)}")
        t = self.temperature
        if self.form == "softmax":
            loss = t * t * softmax_kl(zs.reshape(-1, zs.shape[-1]), zt.reshape(-1, zt.shape[-1]), t)
        else:
            loss = t * t * sigmoid_kl(zs, zt, t).mean()
        return self.weight * loss, {}
