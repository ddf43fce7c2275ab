"""Score filtering + rotated NMS for detector post-processing (class-agnostic or class-aware)."""
import torch

from pcdet.ops.iou3d_nms import nms


def _nms(boxes, scores, nms_config):
    """Rotated BEV NMS on the boxes' device (numba on the CPU, torch on CUDA); returns indices into
    ``boxes`` sorted by descending score. The greedy scan stops at NMS_POST_MAXSIZE kept boxes: the
    same boxes as a full scan cut to that many (greedy NMS keeps boxes in score order)."""
    if boxes.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    order = torch.argsort(scores, descending=True)[: nms_config.NMS_PRE_MAXSIZE]
    keep = nms(boxes[order].detach(), scores[order].detach(), nms_config.NMS_THRESH,
               post_max_size=nms_config.NMS_POST_MAXSIZE)
    keep = torch.as_tensor(keep, dtype=torch.long)
    return order[keep.to(boxes.device)]


def class_agnostic_nms(box_scores, box_preds, nms_config, score_thresh=None):
    """(N,) scores, (N, 7) boxes -> (kept indices into the inputs, their scores)."""
    idx = torch.arange(box_scores.shape[0], device=box_scores.device)
    if score_thresh is not None:
        mask = box_scores >= score_thresh
        idx, box_scores, box_preds = idx[mask], box_scores[mask], box_preds[mask]
    keep = _nms(box_preds, box_scores, nms_config)
    return idx[keep], box_scores[keep]


def multi_classes_nms(cls_scores, box_preds, nms_config, score_thresh=None):
    """Class-aware NMS: (N, C) scores, (N, 7) boxes -> (scores, labels 0-based, boxes) of the kept boxes."""
    scores_out, labels_out, boxes_out = [], [], []
    for k in range(cls_scores.shape[1]):
        idx, scores = class_agnostic_nms(cls_scores[:, k], box_preds, nms_config, score_thresh)
        scores_out.append(scores)
        labels_out.append(torch.full_like(idx, k))
        boxes_out.append(box_preds[idx])
    scores = torch.cat(scores_out)
    order = torch.argsort(scores, descending=True)[: nms_config.NMS_POST_MAXSIZE]
    return scores[order], torch.cat(labels_out)[order], torch.cat(boxes_out)[order]
