"""HintonKD: logit distillation of the dense head's class map with a temperature.

Source: Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural Network" (2015).
Loss implemented: L = WEIGHT * T^2 * mean_{b, anchor, class} KL(p_t || p_s), p = sigmoid(z / T),
with the per-class *binary* KL because the anchor head's classifier is a sigmoid (focal) one:
KL = p_t log(p_t / p_s) + (1 - p_t) log((1 - p_t) / (1 - p_s)).
Applied to: ``cls_preds`` (B, ny, nx, A*C) of the student against ``cls_preds_tea`` (same shape:
same anchors, same classes). Left open by the paper and chosen here: the mean over every anchor
and class (not only positives); T = 4 as published (``TEMPERATURE``).
"""
from pcdet.kd.keys import tea
from pcdet.kd.methods.base import KD_METHODS, KDMethod
from pcdet.kd.methods.common import sigmoid_kl, student_map


@KD_METHODS.register()
class HintonKD(KDMethod):
    """Hinton KD: T^2 * per-class binary KL between sigmoid(logits / T) of teacher and student class maps."""

    ALLOWED_KEYS = {"NAME", "WEIGHT", "FEATURE", "TEMPERATURE"}

    def __init__(self, cfg, student, teacher, where):
        super().__init__(cfg, where)
        self.feature = str(cfg.get("FEATURE", "cls_preds"))
        self.temperature = float(cfg.get("TEMPERATURE", 4.0))

    def forward(self, batch_dict):
        zs = student_map(batch_dict, self.feature)
        zt = batch_dict[tea(self.feature)].detach().float()
        if zs.shape != zt.shape:
            raise ValueError(f"{self.where}: student {self.feature} {tuple(zs.shape)} vs teacher {tuple(zt.shape)}")
        t = self.temperature
        loss = t * t * sigmoid_kl(zs, zt, t).mean()
        return self.weight * loss, {}
