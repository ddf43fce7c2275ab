"""SimilarityPreserving: match the batch's sample-to-sample similarity matrices.

Source: Tung & Mori, "Similarity-Preserving Knowledge Distillation", ICCV 2019.
Loss implemented: for a (b, C, H, W) map, Q = reshape(F, (b, C*H*W)), G = row-l2normalize(Q Q^T);
L = WEIGHT * sum_levels ||G_T - G_S||_F^2 / b^2; published weight 3000.
Applied to: ``FEATURES`` (default ``spatial_features_2d``). Channel-free (the b x b Gram matrix does not
depend on C). Note: with a batch of one sample G = [[1]] on both sides and the loss is 0; the method
needs BATCH_SIZE_PER_GPU >= 2 to carry any signal.
"""
import torch.nn.functional as F

from pcdet.kd.methods.base import KD_METHODS, KDMethod
from pcdet.kd.methods.common import student_map, teacher_map


def similarity_matrix(feat):
    q = feat.flatten(1)
    return F.normalize(q @ q.t(), dim=1)


@KD_METHODS.register()
class SimilarityPreserving(KDMethod):
    """Similarity preserving: ||G_T - G_S||_F^2 / b^2 of row-normalised batch Gram matrices."""

    ALLOWED_KEYS = {"NAME", "WEIGHT", "FEATURES"}

    def __init__(self, cfg, student, teacher, where):
        super().__init__(cfg, where)
        self.features = [str(f) for f in (cfg.get("FEATURES", None) or ["spatial_features_2d"])]

    def forward(self, batch_dict):
        loss = 0.0
        for key in self.features:
            fs = student_map(batch_dict, key)
            ft = teacher_map(batch_dict, key, fs)
            b = fs.shape[0]
            loss = loss + (similarity_matrix(ft) - similarity_matrix(fs)).pow(2).sum() / (b * b)
        return self.weight * loss, {}
