"""Deployment-style inference optimisations of a trained model (no effect on training code).

``prepare_for_inference(model)`` returns an eval-mode copy in which every BatchNorm that follows a
convolution, transposed convolution or linear layer is folded into that layer's weights and bias
(what TensorRT and other deployment runtimes do), each explicit zero pad in front of an unpadded
convolution is folded into that convolution's padding (no padded copy of the BEV map), an anchor head
decodes only the anchors whose score reaches the post-processing threshold (the others never reach NMS),
and, optionally, the 2D convolutions use the
channels-last memory layout that the CPU (oneDNN) kernels prefer. The predicted boxes, scores and
labels equal the eval-mode model's up to float rounding, and so do the head maps; ``batch_cls_preds`` /
``batch_box_preds`` hold only the anchors above the threshold unless ``decode_above_thresh=False``
(tested). Inside spconv's ``SparseSequential`` a sparse convolution directly
followed by a BatchNorm1d (SECOND's blocks) is folded too: the BN scale goes into the convolution's
weights and its shift becomes a per-channel bias added to the features (:class:`FeatureBias`), since
spconv's CPU convolutions refuse a bias of their own. In Cylinder3D each BatchNorm follows an
activation, not the convolution, so there is nothing to fold there.
``benchmark.latency`` times every model with the same preparation, so speed-ups compare like with like.
"""
import copy

import torch
import torch.nn as nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

class FeatureBias(nn.Module):
    """``x + bias`` per channel of (N, C) features: the shift of a BatchNorm folded into a sparse convolution."""

    def __init__(self, bias):
        super().__init__()
        self.bias = nn.Parameter(bias.detach().clone(), requires_grad=False)

    def forward(self, x):
        return x + self.bias


def _fold_sparse_conv_bn(conv, norm):
    """Scale ``conv``'s weight (spconv 2 layout: out channels first) by the BN scale, in place; returns
    the :class:`FeatureBias` of the BN shift (and the conv's own bias, moved out)."""
    scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
    if conv.weight.shape[0] != scale.numel():
        raise ValueError(f"sparse conv weight {tuple(conv.weight.shape)}: expected out channels first")
    shift = norm.bias - norm.running_mean * scale
    if getattr(conv, "bias", None) is not None:
        shift = shift + conv.bias * scale
        conv.bias = None
    with torch.no_grad():
        conv.weight.mul_(scale.view(-1, *([1] * (conv.weight.dim() - 1))))
    return FeatureBias(shift).train(norm.training)


def _sparse_types():
    from pcdet.utils.spconv_utils import spconv

    return spconv.SparseSequential, (spconv.SubMConv3d, spconv.SparseConv3d, spconv.SparseInverseConv3d)


_FOLDABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def fold_batchnorm_(model):
    """Fold, in place, each ``Conv*/ConvTranspose*`` (or ``Linear``) directly followed by a ``BatchNorm*``
    inside an ``nn.Sequential``, and each module holding a ``linear`` + ``norm`` pair (the PFN layers), into
    one layer; the BatchNorm becomes ``nn.Identity`` (or ``norm = None``). Inside a spconv
    ``SparseSequential``, a sparse convolution followed by a BatchNorm1d: the BN becomes a
    :class:`FeatureBias`. Eval mode only.
    Returns the number of BatchNorms folded."""
    if model.training:
        raise RuntimeError("fold_batchnorm_: call model.eval() first (training-mode BatchNorm cannot be folded)")
    folded = 0
    sparse_seq, sparse_convs = _sparse_types()
    for module in model.modules():
        if isinstance(module, sparse_seq):
            names = list(module._modules)
            for a, b in zip(names[:-1], names[1:]):
                layer, norm = module._modules[a], module._modules[b]
                if isinstance(layer, sparse_convs) and isinstance(norm, nn.BatchNorm1d):
                    module._modules[b] = _fold_sparse_conv_bn(layer, norm)
                    folded += 1
        if isinstance(module, nn.Sequential):
            names = list(module._modules)
            for a, b in zip(names[:-1], names[1:]):
                layer, norm = module._modules[a], module._modules[b]
                if isinstance(layer, _FOLDABLE) and isinstance(norm, _NORMS):
                    transpose = isinstance(layer, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d))
                    module._modules[a] = fuse_conv_bn_eval(layer, norm, transpose=transpose)
                    module._modules[b] = nn.Identity().train(module.training)
                    folded += 1
                elif isinstance(layer, nn.Linear) and isinstance(norm, nn.BatchNorm1d):
                    module._modules[a] = fuse_linear_bn_eval(layer, norm)
                    module._modules[b] = nn.Identity().train(module.training)
                    folded += 1
        linear, norm = getattr(module, "linear", None), getattr(module, "norm", None)
        if isinstance(linear, nn.Linear) and isinstance(norm, nn.BatchNorm1d):
            module.linear = fuse_linear_bn_eval(linear, norm)
            module.norm = None
            folded += 1
    return folded


def fold_zero_padding_(model):
    """Fold, in place, each ``nn.ZeroPad2d`` directly followed by an unpadded ``nn.Conv2d`` inside an
    ``nn.Sequential`` (the stride-2 entry of PointPillars/SECOND BEV blocks) into the convolution's own
    zero padding; the pad becomes ``nn.Identity``, so the Sequential keeps its indices. Only symmetric
    pads fold (left = right, top = bottom: a convolution pads both sides alike); the result is the same
    convolution of the same zero-padded input, without materialising the padded copy. Returns how many
    were folded."""
    folded = 0
    for seq in model.modules():
        if not isinstance(seq, nn.Sequential):
            continue
        names = list(seq._modules)
        for a, b in zip(names, names[1:]):
            pad, conv = seq._modules[a], seq._modules[b]
            if not (isinstance(pad, nn.ZeroPad2d) and isinstance(conv, nn.Conv2d)):
                continue
            left, right, top, bottom = pad.padding
            if left != right or top != bottom or tuple(conv.padding) != (0, 0) or conv.padding_mode != "zeros":
                continue
            conv.padding = (top, left)
            seq._modules[a] = nn.Identity().train(seq.training)
            folded += 1
    return folded


def decode_above_score_thresh_(model):
    """Let an anchor head decode only the anchors that post-processing can keep: those at which some
    class's score reaches the detector's ``POST_PROCESSING.SCORE_THRESH`` (see
    ``AnchorHeadTemplate.predict_score_thresh``). Only where the detector uses the template's
    post-processing (score threshold, then NMS); returns whether it was set."""
    from pcdet.models.detectors.detector3d_template import Detector3DTemplate

    head = getattr(model, "dense_head", None)
    pp = getattr(getattr(model, "model_cfg", None), "POST_PROCESSING", None) or {}
    thresh = pp.get("SCORE_THRESH")
    if (head is None or not hasattr(head, "predict_score_thresh") or thresh is None
            or type(model).post_processing is not Detector3DTemplate.post_processing):
        return False
    head.predict_score_thresh = float(thresh)
    return True


def prepare_for_inference(model, fold_bn=True, channels_last=True, decode_above_thresh=True):
    """An eval-mode deep copy of ``model`` with BatchNorm folded, zero pads folded into the following
    convolution (:func:`fold_zero_padding_`), channels-last 2D convolutions and, with
    ``decode_above_thresh``, an anchor head that decodes only the anchors post-processing can keep
    (:func:`decode_above_score_thresh_`: the predicted boxes are the same, ``batch_cls_preds`` /
    ``batch_box_preds`` hold those anchors only)."""
    model = copy.deepcopy(model).eval()
    if fold_bn:
        fold_batchnorm_(model)
    fold_zero_padding_(model)
    if decode_above_thresh:
        decode_above_score_thresh_(model)
    if channels_last:
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                module.to(memory_format=torch.channels_last)
    return model  # eval mode throughout: the folds insert their modules in the mode of what they replace
