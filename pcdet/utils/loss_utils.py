"""Detection losses (torch): sigmoid focal classification, weighted smooth-L1, weighted cross entropy."""
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
