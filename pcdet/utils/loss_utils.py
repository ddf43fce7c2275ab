"""Losses (torch): detection (sigmoid focal classification, weighted smooth-L1, weighted cross entropy)
and segmentation (:func:`lovasz_softmax`, :func:`lovasz_grad`)."""
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


class SigmoidFocalClassificationLoss(nn.Module):
    """Focal loss on logits: ``alpha_t * (1 - p_t)^gamma * BCE``, per anchor and class.

    forward(input (B, A, C) logits, target (B, A, C) one-hot, weights (B, A)) -> (B, A, C)
    """

    def __init__(self, gamma=2.0, alpha=0.25):
        super().__init__()
        self.gamma, self.alpha = gamma, alpha

    def forward(self, input, target, weights):
        pred_sigmoid = torch.sigmoid(input)
        alpha_weight = target * self.alpha + (1 - target) * (1 - self.alpha)
        pt = target * (1.0 - pred_sigmoid) + (1.0 - target) * pred_sigmoid
        bce = F.binary_cross_entropy_with_logits(input, target, reduction="none")
        loss = alpha_weight * torch.pow(pt, self.gamma) * bce
        if weights.dim() == 2:
            weights = weights.unsqueeze(-1)
        return loss * weights


class WeightedSmoothL1Loss(nn.Module):
    """Smooth-L1 with per-code weights; NaN targets (unused codes) contribute zero.

    forward(input (B, A, K), target (B, A, K), weights (B, A)) -> (B, A, K)
    """

    def __init__(self, beta=1.0 / 9.0, code_weights=None):
        super().__init__()
        self.beta = beta
        cw = None if code_weights is None else torch.tensor(np.asarray(code_weights, dtype=np.float32))
        self.register_buffer("code_weights", cw, persistent=False)

    @staticmethod
    def smooth_l1(diff, beta):
        if beta < 1e-5:
            return torch.abs(diff)
        n = torch.abs(diff)
        return torch.where(n < beta, 0.5 * n**2 / beta, n - 0.5 * beta)

    def forward(self, input, target, weights=None):
        target = torch.where(torch.isnan(target), input, target)
        diff = input - target
        if self.code_weights is not None:
            diff = diff * self.code_weights.view(1, 1, -1)
        loss = self.smooth_l1(diff, self.beta)
        if weights is not None:
            loss = loss * weights.unsqueeze(-1)
        return loss


class WeightedCrossEntropyLoss(nn.Module):
    """Softmax cross entropy with per-anchor weights. forward(input (B, A, C), one-hot target, weights (B, A)) -> (B, A)"""

    def forward(self, input, target, weights):
        loss = F.cross_entropy(input.permute(0, 2, 1), target.argmax(dim=-1), reduction="none")
        return loss * weights


def lovasz_grad(gt_sorted):
    """Gradient of the Lovasz extension of the Jaccard loss w.r.t. errors sorted in decreasing order
    (Berman, Rannen Triki, Blaschko, "The Lovasz-Softmax loss", CVPR 2018, Algorithm 1): with
    ``p = sum(gt)``, ``I_k = p - cumsum(gt)_k``, ``U_k = p + cumsum(1 - gt)_k``, ``J_k = 1 - I_k / U_k``,
    the gradient is ``J_1, J_2 - J_1, J_3 - J_2, ...``."""
    p = gt_sorted.sum()
    intersection = p - gt_sorted.cumsum(0)
    union = p + (1.0 - gt_sorted).cumsum(0)
    jaccard = 1.0 - intersection / union
    if gt_sorted.numel() > 1:
        jaccard = torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]])
    return jaccard


def lovasz_softmax(probas, labels, ignore=None, classes="present"):
    """Multi-class Lovasz-softmax loss over a flat set of samples (the paper's ``lovasz_softmax_flat``
    with ``per_image=False``, as Cylinder3D uses it).

    ``probas`` (P, C) class probabilities (softmax outputs), ``labels`` (P,) int in 0..C-1; samples
    whose label is ``ignore`` are left out. For each class c (``"present"``: only the classes present
    in the labels; ``"all"``: every class), the errors ``|1[label = c] - p_c|`` are sorted in
    decreasing order and dotted with :func:`lovasz_grad` of the sorted foreground indicator; the loss is
    the mean over those classes (0 when no sample is left). With one-hot ``probas`` it equals the mean
    over the classes of ``1 - IoU_c`` (the Lovasz extension is exact at the vertices).
    """
    if ignore is not None:
        keep = labels != ignore
        probas, labels = probas[keep], labels[keep]
    if probas.numel() == 0:
        return probas.sum() * 0.0
    n_classes = probas.shape[1]
    losses = []
    for c in range(n_classes):
        fg = (labels == c).to(probas.dtype)
        if classes == "present" and fg.sum() == 0:
            continue
        errors = (fg - probas[:, c]).abs()
        errors_sorted, perm = torch.sort(errors, 0, descending=True)
        losses.append(torch.dot(errors_sorted, lovasz_grad(fg[perm])))
    if not losses:
        return probas.sum() * 0.0
    return torch.stack(losses).mean()
