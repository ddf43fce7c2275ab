"""KITTI 3D object evaluation, numerically equal to the official KITTI object devkit.

This file owns the KITTI metric: 2D ``bbox``, bird's-eye-view ``bev`` and ``3d`` average precision
plus ``aos`` (average orientation similarity) for Car / Pedestrian / Cyclist at the Easy /
Moderate / Hard difficulties, reported as ``R40`` and ``R11``. All values are percentages.

Both come from one interpolated precision curve sampled at 41 recall positions (score thresholds
chosen at recall 0, 1/40, .., 1, as the devkit's ``N_SAMPLE_PTS = 41``):

* ``R40`` = sum of the curve at positions 1 .. 40, divided by 40 (the devkit's AP; OpenPCDet's
  ``kitti_object_eval_python/eval.py:get_mAP_R40``);
* ``R11`` = sum of the curve at every fourth position 0, 4, .., 40 (recall 0, 0.1, .., 1), divided
  by 11 (OpenPCDet's ``get_mAP_R11`` on the same ``precision`` array). It is *not* the pre-2019
  devkit's 11-point AP, whose score thresholds were themselves chosen at 11 recall positions.

Rules followed (those of the devkit's ``evaluate_object.cpp``):

* Ground truth of the evaluated class counts when it passes the difficulty filter (occlusion
  <= 0/1/2, truncation <= 0.15/0.30/0.50, 2D box height > 40/25/25 px); otherwise it is
  "ignored": a detection matched to it is neither TP nor FP. The neighbouring classes ``Van`` (for
  Car) and ``Person_sitting`` (for Pedestrian) are always ignored ground truth. Names are compared
  case-insensitively.
* Detections whose 2D height (truncated to whole pixels) is below the minimum height are ignored,
  whatever their class; such detections may still be matched to (and so neutralise) ground truth.
* Minimum overlap 0.7 / 0.5 / 0.5 (Car / Pedestrian / Cyclist) for every metric, strictly greater.
* Unmatched detections whose overlap with a ``DontCare`` box, divided by the detection's own size
  (area / volume), exceeds the minimum overlap are not false positives. For bev/3d the DontCare
  box's 3D fields are used, as the devkit does (they are placeholders far away in KITTI labels).
* Score thresholds come from the sorted TP scores at the sampled recall positions; precision (and
  orientation similarity) at each threshold is then made monotone by a running maximum from the
  right. AOS uses the 2D-box matches and ``(1 + cos(alpha_gt - alpha_det)) / 2``.
* BEV / 3D boxes live in the rectified camera frame: the footprint is the rectangle
  ``(x, z, l, w, ry)`` on the ground plane, the height interval is ``[y - h, y]`` along camera y.
* A class/metric is evaluated only when at least one detection of that class is valid for it
  (2D: left >= 0; bev: x, z != -1000 and w, l > 0; 3d: also y != -1000 and h > 0); otherwise its
  APs are 0. AOS is computed only when no detection has ``alpha == -10``; otherwise it is NaN
  (``null`` in JSON).

Differences from the devkit binary, by choice: a missing result file is an error (as in the
devkit) unless ``allow_missing_results`` is set, in which case that frame has no detections.
Result lines with 15 columns (no score) are read with score 0.

Inputs are OpenPCDet-style ``annos`` (dicts of numpy arrays as returned by
``pcdet.utils.object3d_kitti.get_label_anno``). The per-frame overlaps are computed once per
metric; the matching for the 27 (class, metric, difficulty) combinations runs in numba, in
parallel.

Command line::

    python -m pcdet.datasets.kitti.eval --label_dir L --result_dir R --ids 0-999 --out metrics.json
"""
import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
from numba import njit, prange

from pcdet.ops.iou3d_nms.iou3d_nms_kernels import _MAX_VERTS, rect_inter_area
from pcdet.utils.numba_warmup import announce_compile
from pcdet.utils.object3d_kitti import LabelError, get_label_anno

CLASS_NAMES = ("Car", "Pedestrian", "Cyclist")
METRICS = ("bbox", "bev", "3d")
DIFFICULTIES = ("easy", "moderate", "hard")
MIN_HEIGHT = np.array([40.0, 25.0, 25.0])
MAX_OCCLUSION = np.array([0, 1, 2], dtype=np.int64)
MAX_TRUNCATION = np.array([0.15, 0.3, 0.5])
# MIN_OVERLAP[metric, class]
MIN_OVERLAP = np.array([[0.7, 0.5, 0.5], [0.7, 0.5, 0.5], [0.7, 0.5, 0.5]])
N_PTS_R40 = 41
N_PTS_R11 = 11  # recall 0, 0.1, .., 1: every R11_STRIDE-th point of the 41-point curve
R11_STRIDE = 4

# integer codes of object names (lower case)
_CODE = {"car": 0, "pedestrian": 1, "cyclist": 2, "van": 3, "person_sitting": 4, "dontcare": 5}
_OTHER = 6
_DONTCARE = 5
_NO_DETECTION = -10000000.0


def _codes(names):
    names = np.char.lower(np.asarray(names, dtype=str).reshape(-1))
    return np.array([_CODE.get(n, _OTHER) for n in names.tolist()], dtype=np.int64)


def _pack(annos, is_gt):
    """Concatenate the frames' annos into flat float64 / int64 arrays plus frame offsets."""
    counts = np.array([len(a["name"]) for a in annos], dtype=np.int64)
    off = np.zeros(len(annos) + 1, dtype=np.int64)
    np.cumsum(counts, out=off[1:])

    def cat(key, width=None):
        parts = [np.asarray(a[key], dtype=np.float64).reshape(-1, width) if width else
                 np.asarray(a[key], dtype=np.float64).reshape(-1) for a in annos]
        if not parts:
            return np.zeros((0, width)) if width else np.zeros(0)
        return np.ascontiguousarray(np.concatenate(parts, axis=0))

    names = [np.asarray(a["name"]).reshape(-1) for a in annos]
    code = _codes(np.concatenate(names) if names else np.zeros(0, dtype=str))
    bbox = cat("bbox", 4)
    dims = cat("dimensions", 3)  # (l, h, w)
    loc = cat("location", 3)
    ry = cat("rotation_y")
    # camera box as the devkit uses it: t1, t2, t3, l, h, w, ry
    box3d = np.ascontiguousarray(np.concatenate([loc, dims, ry[:, None]], axis=1))
    out = {"off": off, "code": code, "bbox": bbox, "box3d": box3d, "alpha": cat("alpha")}
    if is_gt:
        out["trunc"] = cat("truncated")
        out["occ"] = np.concatenate([np.asarray(a["occluded"]).reshape(-1) for a in annos]).astype(np.int64) \
            if annos else np.zeros(0, dtype=np.int64)
    else:
        out["score"] = cat("score")
    return out


@njit(cache=True, inline="always")
def _ground_rect(box, out):
    """Camera box ``[x, y, z, l, h, w, ry]`` -> its ground-plane rectangle ``[x, z, l, w, -ry]``."""
    out[0] = box[0]
    out[1] = box[2]
    out[2] = box[3]
    out[3] = box[5]
    out[4] = -box[6]


@njit(cache=True, parallel=True, error_model="numpy")
def _frame_overlaps(gt_off, det_off, pair_off, gt_bbox, gt_box3d, det_bbox, det_box3d, ov, ova):
    """Per frame, for every (detection, ground truth) pair and metric (0 bbox, 1 bev, 2 3d):
    ``ov`` = intersection / union, ``ova`` = intersection / size of the detection."""
    n_frames = gt_off.shape[0] - 1
    for f in prange(n_frames):
        g0 = gt_off[f]
        ng = gt_off[f + 1] - g0
        d0 = det_off[f]
        nd = det_off[f + 1] - d0
        p0 = pair_off[f]
        ca = np.empty((4, 2))
        cb = np.empty((4, 2))
        buf0 = np.empty((_MAX_VERTS, 2))
        buf1 = np.empty((_MAX_VERTS, 2))
        ra = np.empty(5)
        rb = np.empty(5)
        for jj in range(nd):
            j = d0 + jj
            dx1 = det_bbox[j, 0]
            dy1 = det_bbox[j, 1]
            dx2 = det_bbox[j, 2]
            dy2 = det_bbox[j, 3]
            d_area = (dx2 - dx1) * (dy2 - dy1)
            dh = det_box3d[j, 4]
            _ground_rect(det_box3d[j], ra)
            d_bev = det_box3d[j, 3] * det_box3d[j, 5]
            d_vol = dh * d_bev
            for ii in range(ng):
                i = g0 + ii
                p = p0 + jj * ng + ii
                # 2D image boxes
                x1 = max(dx1, gt_bbox[i, 0])
                y1 = max(dy1, gt_bbox[i, 1])
                x2 = min(dx2, gt_bbox[i, 2])
                y2 = min(dy2, gt_bbox[i, 3])
                w = x2 - x1
                h = y2 - y1
                if w <= 0 or h <= 0:
                    ov[0, p] = 0.0
                    ova[0, p] = 0.0
                else:
                    inter = w * h
                    g_area = (gt_bbox[i, 2] - gt_bbox[i, 0]) * (gt_bbox[i, 3] - gt_bbox[i, 1])
                    ov[0, p] = inter / (d_area + g_area - inter)
                    ova[0, p] = inter / d_area
                # ground-plane footprint
                gl = gt_box3d[i, 3]
                gh = gt_box3d[i, 4]
                gw = gt_box3d[i, 5]
                _ground_rect(gt_box3d[i], rb)
                inter_area = rect_inter_area(ra, rb, ca, cb, buf0, buf1)
                ov[1, p] = inter_area / (d_bev + gl * gw - inter_area)
                ova[1, p] = inter_area / d_bev
                # height interval [y - h, y] along camera y
                ymax = min(det_box3d[j, 1], gt_box3d[i, 1])
                ymin = max(det_box3d[j, 1] - dh, gt_box3d[i, 1] - gh)
                inter_vol = inter_area * max(0.0, ymax - ymin)
                ov[2, p] = inter_vol / (d_vol + gh * gl * gw - inter_vol)
                ova[2, p] = inter_vol / d_vol


@njit(cache=True)
def _thresholds(scores_desc, n_gt, n_pts):
    """Scores at (approximately) linearly spaced recall positions, as the devkit picks them."""
    n = scores_desc.shape[0]
    out = np.empty(n, dtype=np.float64)
    k = 0
    current = 0.0
    step = 1.0 / (n_pts - 1.0)
    for i in range(n):
        l_recall = (i + 1) / n_gt
        if i < n - 1:
            r_recall = (i + 2) / n_gt
        else:
            r_recall = l_recall
        if (r_recall - current) < (current - l_recall) and i < n - 1:
            continue
        out[k] = scores_desc[i]
        k += 1
        current += step
    return out[:k]


@njit(cache=True, error_model="numpy")
def _curve(c, m, ig_gt, ig_det, gt_code, gt_alpha, det_alpha, det_score, gt_off, det_off, pair_off,
           ov, ova, min_overlap, thresholds, n_pts, compute_aos, max_det):
    """Precision and orientation-similarity curves (length ``n_pts``) at the given thresholds."""
    n_thr = min(thresholds.shape[0], n_pts)  # at most n_pts by construction; guard the writes below
    tp_tot = np.zeros(n_thr, dtype=np.int64)
    fp_tot = np.zeros(n_thr, dtype=np.int64)
    sim_tot = np.zeros(n_thr, dtype=np.float64)
    assigned = np.zeros(max(max_det, 1), dtype=np.bool_)
    n_frames = gt_off.shape[0] - 1
    for f in range(n_frames):
        g0 = gt_off[f]
        ng = gt_off[f + 1] - g0
        d0 = det_off[f]
        nd = det_off[f + 1] - d0
        p0 = pair_off[f]
        for t in range(n_thr):
            thr = thresholds[t]
            for jj in range(nd):
                assigned[jj] = False
            tp = 0
            fp = 0
            sim = 0.0
            for ii in range(ng):
                i = g0 + ii
                if ig_gt[i] == -1:
                    continue
                det_idx = -1
                valid = _NO_DETECTION
                max_ov = 0.0
                assigned_ignored = False
                for jj in range(nd):
                    j = d0 + jj
                    if ig_det[j] == -1 or assigned[jj] or det_score[j] < thr:
                        continue
                    o = ov[m, p0 + jj * ng + ii]
                    if o > min_overlap and (o > max_ov or assigned_ignored) and ig_det[j] == 0:
                        max_ov = o
                        det_idx = jj
                        valid = 1.0
                        assigned_ignored = False
                    elif o > min_overlap and valid == _NO_DETECTION and ig_det[j] == 1:
                        det_idx = jj
                        valid = 1.0
                        assigned_ignored = True
                if valid == _NO_DETECTION:
                    continue  # a false negative when ig_gt == 0; FN are not needed for precision
                if ig_gt[i] == 1 or ig_det[d0 + det_idx] == 1:
                    assigned[det_idx] = True
                else:
                    tp += 1
                    if compute_aos:
                        sim += (1.0 + math.cos(gt_alpha[i] - det_alpha[d0 + det_idx])) / 2.0
                    assigned[det_idx] = True
            for jj in range(nd):
                j = d0 + jj
                if not (assigned[jj] or ig_det[j] != 0 or det_score[j] < thr):
                    fp += 1
            n_stuff = 0
            for ii in range(ng):
                i = g0 + ii
                if gt_code[i] != _DONTCARE:
                    continue
                for jj in range(nd):
                    j = d0 + jj
                    if assigned[jj] or ig_det[j] != 0 or det_score[j] < thr:
                        continue
                    if ova[m, p0 + jj * ng + ii] > min_overlap:
                        assigned[jj] = True
                        n_stuff += 1
            fp -= n_stuff
            tp_tot[t] += tp
            fp_tot[t] += fp
            if compute_aos and (tp > 0 or fp > 0):
                sim_tot[t] += sim
    prec = np.zeros(n_pts, dtype=np.float64)
    aos = np.zeros(n_pts, dtype=np.float64)
    for t in range(n_thr):
        prec[t] = tp_tot[t] / np.float64(tp_tot[t] + fp_tot[t])
        aos[t] = sim_tot[t] / np.float64(tp_tot[t] + fp_tot[t])
    # running maximum from the right (a NaN at the start of a suffix stays, as std::max_element does)
    for t in range(n_thr):
        best = prec[t]
        best_a = aos[t]
        for k in range(t + 1, n_pts):
            if best < prec[k]:
                best = prec[k]
            if best_a < aos[k]:
                best_a = aos[k]
        prec[t] = best
        aos[t] = best_a
    return prec, aos


@njit(cache=True, parallel=True, error_model="numpy")
def _eval_all(combos, gt_code, gt_trunc, gt_occ, gt_height, gt_alpha, det_code, det_hpx, det_score,
              det_alpha, gt_off, det_off, pair_off, ov, ova, compute_aos, max_det):
    """For each (class, metric, difficulty) row of ``combos``: the 41-point precision/AOS curves."""
    n_combo = combos.shape[0]
    prec40 = np.zeros((n_combo, N_PTS_R40))
    aos40 = np.zeros((n_combo, N_PTS_R40))
    n_gt_all = gt_code.shape[0]
    n_det_all = det_code.shape[0]
    n_frames = gt_off.shape[0] - 1
    for q in prange(n_combo):
        c = combos[q, 0]
        m = combos[q, 1]
        d = combos[q, 2]
        mo = MIN_OVERLAP[m, c]
        use_aos = compute_aos and m == 0
        # which ground truth / detections count, for this class and difficulty
        ig_gt = np.empty(n_gt_all, dtype=np.int64)
        n_gt = 0
        for i in range(n_gt_all):
            code = gt_code[i]
            if code == c:
                valid = 1
            elif (c == 0 and code == 3) or (c == 1 and code == 4):
                valid = 0
            else:
                valid = -1
            ignore = (gt_occ[i] > MAX_OCCLUSION[d] or gt_trunc[i] > MAX_TRUNCATION[d]
                      or gt_height[i] <= MIN_HEIGHT[d])
            if valid == 1 and not ignore:
                ig_gt[i] = 0
                n_gt += 1
            elif valid == 0 or (ignore and valid == 1):
                ig_gt[i] = 1
            else:
                ig_gt[i] = -1
        ig_det = np.empty(n_det_all, dtype=np.int64)
        for j in range(n_det_all):
            if det_hpx[j] < MIN_HEIGHT[d]:
                ig_det[j] = 1
            elif det_code[j] == c:
                ig_det[j] = 0
            else:
                ig_det[j] = -1
        # first pass: TP scores (each ground truth takes the best-scoring unassigned candidate)
        v = np.empty(n_gt_all, dtype=np.float64)
        nv = 0
        assigned = np.zeros(max(max_det, 1), dtype=np.bool_)
        for f in range(n_frames):
            g0 = gt_off[f]
            ng = gt_off[f + 1] - g0
            d0 = det_off[f]
            nd = det_off[f + 1] - d0
            p0 = pair_off[f]
            for jj in range(nd):
                assigned[jj] = False
            for ii in range(ng):
                i = g0 + ii
                if ig_gt[i] == -1:
                    continue
                det_idx = -1
                valid_det = _NO_DETECTION
                for jj in range(nd):
                    j = d0 + jj
                    if ig_det[j] == -1 or assigned[jj]:
                        continue
                    o = ov[m, p0 + jj * ng + ii]
                    if o > mo and det_score[j] > valid_det:
                        det_idx = jj
                        valid_det = det_score[j]
                if valid_det == _NO_DETECTION:
                    continue
                if ig_gt[i] == 1 or ig_det[d0 + det_idx] == 1:
                    assigned[det_idx] = True
                else:
                    v[nv] = det_score[d0 + det_idx]
                    nv += 1
                    assigned[det_idx] = True
        scores = -np.sort(-v[:nv])
        thr40 = _thresholds(scores, np.float64(n_gt), np.float64(N_PTS_R40))
        p, a = _curve(c, m, ig_gt, ig_det, gt_code, gt_alpha, det_alpha, det_score, gt_off, det_off,
                      pair_off, ov, ova, mo, thr40, N_PTS_R40, use_aos, max_det)
        prec40[q] = p
        aos40[q] = a
    return prec40, aos40


def ap_r40(prec):
    """AP over recall positions 1/40 .. 1 of a 41-point curve, in percent."""
    return float(np.sum(prec[..., 1:N_PTS_R40], axis=-1) / 40.0 * 100.0)


def ap_r11(prec):
    """AP over recall positions 0, 0.1, .., 1 of a 41-point curve (its every fourth point), in percent.

    OpenPCDet's ``get_mAP_R11``: ``sum(prec[..., 0:41:4]) / 11 * 100``."""
    return float(np.sum(prec[..., 0:N_PTS_R40:R11_STRIDE], axis=-1) / N_PTS_R11 * 100.0)


def _class_index(c):
    if isinstance(c, (int, np.integer)):
        if not 0 <= int(c) < len(CLASS_NAMES):
            raise ValueError(f"class index {c} not in 0..{len(CLASS_NAMES) - 1}")
        return int(c)
    for k, name in enumerate(CLASS_NAMES):
        if str(c).lower() == name.lower():
            return k
    raise ValueError(f"unknown class {c!r}; KITTI evaluates {', '.join(CLASS_NAMES)}")


def evaluate(gt_annos, dt_annos, current_classes=CLASS_NAMES):
    """Compute every AP; returns ``{key: value}`` with keys ``{cls}_{metric}/{diff}_{R11|R40}``.

    ``metric`` is bbox, bev, 3d or aos. Values are percentages; AOS is NaN when some detection has
    ``alpha == -10`` (the devkit then skips AOS).
    """
    if len(gt_annos) != len(dt_annos):
        raise ValueError(f"{len(gt_annos)} ground-truth frames but {len(dt_annos)} detection frames")
    if isinstance(current_classes, (str, int, np.integer)):
        current_classes = [current_classes]
    classes = [_class_index(c) for c in current_classes]
    gt = _pack(gt_annos, True)
    dt = _pack(dt_annos, False)
    n_frames = len(gt_annos)
    ng = np.diff(gt["off"])
    nd = np.diff(dt["off"])
    pair_off = np.zeros(n_frames + 1, dtype=np.int64)
    np.cumsum(ng * nd, out=pair_off[1:])
    n_pairs = int(pair_off[-1])
    ov = np.zeros((3, n_pairs))
    ova = np.zeros((3, n_pairs))
    if n_pairs:
        announce_compile("KITTI evaluation", _frame_overlaps, _eval_all)
        _frame_overlaps(gt["off"], dt["off"], pair_off, gt["bbox"], gt["box3d"], dt["bbox"], dt["box3d"], ov, ova)

    # which (class, metric) the devkit evaluates: at least one valid detection of that class
    b3 = dt["box3d"]
    x_ok = (b3[:, 0] != -1000) & (b3[:, 2] != -1000) & (b3[:, 5] > 0) & (b3[:, 3] > 0)
    valid_m = [dt["bbox"][:, 0] >= 0, x_ok, x_ok & (b3[:, 1] != -1000) & (b3[:, 4] > 0)]
    evaluated = {(c, m): bool(np.any((dt["code"] == c) & valid_m[m])) for c in classes for m in range(3)}
    compute_aos = not bool(np.any(dt["alpha"] == -10))

    combos = np.array([(c, m, d) for c in classes for m in range(3) for d in range(3) if evaluated[(c, m)]],
                      dtype=np.int64).reshape(-1, 3)
    det_hpx = np.trunc(np.abs(dt["bbox"][:, 1] - dt["bbox"][:, 3])) if len(dt["code"]) else np.zeros(0)
    gt_height = gt["bbox"][:, 3] - gt["bbox"][:, 1]
    max_det = int(nd.max()) if len(nd) else 0
    announce_compile("KITTI evaluation", _frame_overlaps, _eval_all)
    if len(combos):
        prec40, aos40 = _eval_all(
            combos, gt["code"], gt["trunc"], gt["occ"], gt_height, gt["alpha"], dt["code"], det_hpx,
            dt["score"], dt["alpha"], gt["off"], dt["off"], pair_off, ov, ova, compute_aos, max_det)
    result = {}
    for c in classes:
        for m in range(4):  # bbox, bev, 3d, aos
            for d in range(3):
                for tag in ("R40", "R11"):
                    name = "aos" if m == 3 else METRICS[m]
                    result[f"{CLASS_NAMES[c]}_{name}/{DIFFICULTIES[d]}_{tag}"] = (
                        float("nan") if m == 3 and not compute_aos else 0.0)
    for q, (c, m, d) in enumerate(combos.tolist()):
        base = f"{CLASS_NAMES[c]}_{METRICS[m]}/{DIFFICULTIES[d]}"
        result[base + "_R40"] = ap_r40(prec40[q])
        result[base + "_R11"] = ap_r11(prec40[q])
        if m == 0 and compute_aos:
            base = f"{CLASS_NAMES[c]}_aos/{DIFFICULTIES[d]}"
            result[base + "_R40"] = ap_r40(aos40[q])
            result[base + "_R11"] = ap_r11(aos40[q])
    return result


def format_results(result, current_classes=CLASS_NAMES):
    """Human-readable table of :func:`evaluate`'s output."""
    if isinstance(current_classes, (str, int, np.integer)):
        current_classes = [current_classes]
    lines = []
    for c in (CLASS_NAMES[_class_index(x)] for x in current_classes):
        mo = MIN_OVERLAP[:, CLASS_NAMES.index(c)]
        for tag in ("R11", "R40"):
            lines.append(f"{c} AP_{tag}@{mo[0]:.2f}, {mo[1]:.2f}, {mo[2]:.2f}:")
            for name in ("bbox", "bev", "3d", "aos"):
                vals = ", ".join(f"{result[f'{c}_{name}/{d}_{tag}']:.4f}" for d in DIFFICULTIES)
                lines.append(f"{name:4s} AP:{vals}")
    return "\n".join(lines) + "\n"


def get_official_eval_result(gt_annos, dt_annos, current_classes):
    """OpenPCDet-style entry point: returns ``(text, {key: AP})``; see :func:`evaluate`."""
    result = evaluate(gt_annos, dt_annos, current_classes)
    return format_results(result, current_classes), result


# ----------------------------------------------------------------------------------------------
# files and command line


def moderate_map(metrics, kind="3d", classes=("Car", "Pedestrian", "Cyclist"), recall="R40"):
    """The papers' KITTI mAP: mean of the classes' Moderate APs (``kind`` bev/3d/bbox/aos) from a
    metrics dict keyed ``<Class>_<kind>/moderate_<recall>`` (as written in ``metrics.json``)."""
    keys = [f"{c}_{kind}/moderate_{recall}" for c in classes]
    missing = [k for k in keys if k not in metrics]
    if missing:
        raise KeyError(f"moderate_map: metrics lack {missing}")
    return float(sum(metrics[k] for k in keys) / len(keys))


def parse_ids(spec):
    """``"0-999"`` or ``"3,7,10-12"`` -> list of ints."""
    ids = []
    for part in str(spec).split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            lo, hi = part.split("-", 1)
            ids.extend(range(int(lo), int(hi) + 1))
        else:
            ids.append(int(part))
    return ids


def read_split_file(path):
    path = Path(path)
    if not path.is_file():
        raise LabelError(f"split file not found: {path}")
    ids = []
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        try:
            ids.append(int(line))
        except ValueError:
            raise LabelError(f"{path}:{lineno}: not a frame id: {line[:40]!r}") from None
    return ids


def _empty_anno():
    z = np.zeros(0)
    return {"name": np.zeros(0, dtype="<U16"), "truncated": z, "occluded": np.zeros(0, dtype=np.int64),
            "alpha": z, "bbox": np.zeros((0, 4)), "dimensions": np.zeros((0, 3)),
            "location": np.zeros((0, 3)), "rotation_y": z, "score": z}


def load_annos(label_dir, result_dir, ids, allow_missing_results=False):
    """Read ``%06d.txt`` label and result files for ``ids`` -> (gt_annos, dt_annos).

    A missing label file raises :class:`LabelError`; so does a missing result file unless
    ``allow_missing_results`` (then the frame has no detections).
    """
    label_dir = Path(label_dir)
    result_dir = Path(result_dir)
    gt_annos, dt_annos = [], []
    for i in ids:
        name = "%06d.txt" % i
        gt_annos.append(get_label_anno(label_dir / name, allow_score=False))
        res = result_dir / name
        if not res.is_file():
            if not allow_missing_results:
                raise LabelError(f"result file not found: {res} (use --allow_missing_results to treat a "
                                 "missing file as a frame without detections)")
            dt_annos.append(_empty_anno())
        else:
            dt_annos.append(get_label_anno(res, allow_score=True))
    return gt_annos, dt_annos


def evaluate_dirs(label_dir, result_dir, ids, classes=CLASS_NAMES, allow_missing_results=False):
    gt_annos, dt_annos = load_annos(label_dir, result_dir, ids, allow_missing_results)
    return evaluate(gt_annos, dt_annos, classes)


def _json_ready(result):
    return {k: (None if isinstance(v, float) and math.isnan(v) else round(v, 6)) for k, v in result.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description="KITTI object evaluation (official devkit rules)")
    parser.add_argument("--label_dir", required=True, help="folder of ground-truth label_2 files")
    parser.add_argument("--result_dir", required=True, help="folder of result files (label format + score)")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--ids", help="frame ids, e.g. 0-999 or 1,5,7-9")
    group.add_argument("--split_file", help="file with one frame id per line (ImageSets/val.txt)")
    parser.add_argument("--classes", default=",".join(CLASS_NAMES))
    parser.add_argument("--out", help="write the APs as JSON here")
    parser.add_argument("--allow_missing_results", action="store_true",
                        help="a missing result file means no detections (the devkit stops with an error)")
    args = parser.parse_args(argv)
    ids = parse_ids(args.ids) if args.ids is not None else read_split_file(args.split_file)
    classes = [c for c in args.classes.split(",") if c.strip()]
    try:
        result = evaluate_dirs(args.label_dir, args.result_dir, ids, classes, args.allow_missing_results)
    except (LabelError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_results(result, classes), end="")
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(_json_ready(result), indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
