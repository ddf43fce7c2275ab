"""Bird's-eye-view pictures of frames: points, ground-truth boxes and the predictions of several models.

Owns :func:`plot_bev_grid` (one PNG: a row per frame, a column per model, every panel showing the
frame's points and ground truth with that model's boxes on top), :func:`load_predictions` (a
``result.pkl`` of :func:`pcdet.train_utils.eval_utils.eval_one_epoch`, indexed by frame id) and
:func:`dataset_frames` (points and ground-truth boxes of chosen frames from any dataset built on
``DatasetTemplate``), and for segmentation :func:`plot_semantic_bev` (one frame's points coloured by
the ground-truth classes and by each model's predicted classes, side by side, SemanticKITTI's colour
map). ``tools/visualize.py`` is the command line; ``make demo`` writes one picture.

Everything is in the LiDAR frame the models use (x forward, y left; boxes ``[x, y, z, dx, dy, dz,
heading]``): predictions are read from the ``boxes_lidar`` of the result annos, which every
dataset's ``generate_prediction_dicts`` writes, so the picture does not depend on the dataset's
own label format. matplotlib runs with the Agg backend: no display is needed.
"""
import pickle
from pathlib import Path

import numpy as np

from pcdet.utils.box_utils import boxes_to_corners_3d

GT_COLOR = "#2ca02c"
CLASS_COLORS = ("#d62728", "#1f77b4", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2")


def load_predictions(path):
    """``{frame_id: anno}`` from a ``result.pkl`` (a list of annos with ``frame_id``, ``boxes_lidar``,
    ``name``, ``score``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prediction file not found: {path} (tools/test.py writes eval/.../result.pkl)")
    with open(path, "rb") as f:
        annos = pickle.load(f)
    out = {}
    for k, anno in enumerate(annos):
        missing = [key for key in ("frame_id", "boxes_lidar", "name", "score") if key not in anno]
        if missing:
            raise KeyError(f"{path}: anno {k} lacks {missing}; expected the result.pkl of eval_one_epoch")
        out[str(anno["frame_id"])] = anno
    return out


def dataset_frames(dataset, frame_ids=None, count=3):
    """``[(frame_id, points (N, >=3), gt_boxes (M, 7), gt_names (M,))]`` for ``frame_ids`` (or the
    first ``count`` frames) of a dataset in test mode (no augmentation; points cropped to the range)."""
    wanted = None if frame_ids is None else [str(f) for f in frame_ids]
    frames = []
    for index in range(len(dataset)):
        data = dataset[index]
        fid = str(data["frame_id"])
        if wanted is not None and fid not in wanted:
            continue
        boxes = np.asarray(data.get("gt_boxes", np.zeros((0, 8))), dtype=np.float64).reshape(-1, 8) \
            if "gt_boxes" in data else np.zeros((0, 8))
        names = np.array([dataset.class_names[int(c) - 1] for c in boxes[:, 7]], dtype="<U16") if len(boxes) \
            else np.zeros(0, dtype="<U16")
        frames.append((fid, np.asarray(data["points"]), boxes[:, :7], names))
        if (wanted is None and len(frames) >= count) or (wanted is not None and len(frames) == len(wanted)):
            break
    if wanted is not None:
        found = {f[0] for f in frames}
        absent = [f for f in wanted if f not in found]
        if absent:
            raise KeyError(f"frames {absent} are not in the dataset's {dataset.mode} split")
    return frames


def _draw_boxes(ax, boxes, color, lw=1.2, ls="-", alpha=1.0):
    if len(boxes) == 0:
        return
    corners = boxes_to_corners_3d(np.asarray(boxes, dtype=np.float64)[:, :7])[:, :4, :2]  # bottom face, (x, y)
    heading = np.asarray(boxes)[:, 6]
    for c, b, h in zip(corners, boxes, heading):
        loop = np.vstack([c, c[:1]])
        ax.plot(loop[:, 0], loop[:, 1], color=color, lw=lw, ls=ls, alpha=alpha)
        # a tick from the centre towards the heading
        tip = b[:2] + 0.5 * b[3] * np.array([np.cos(h), np.sin(h)])
        ax.plot([b[0], tip[0]], [b[1], tip[1]], color=color, lw=lw, alpha=alpha)


def plot_bev_grid(frames, predictions, out_path, class_names, pc_range=None, score_thresh=0.3, title=None,
                  max_points=40000):
    """Write one PNG: a row per frame of ``frames`` (from :func:`dataset_frames`), a column per entry
    of ``predictions`` (``{model name: {frame_id: anno}}``, shown in insertion order). Each panel: the
    points (grey, darker = higher), ground truth (green, dashed) and the model's boxes with score
    >= ``score_thresh`` (coloured by class). Returns ``out_path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    names = list(predictions) or ["ground truth"]
    n_rows, n_cols = len(frames), len(names)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(4.2 * n_cols, 4.0 * n_rows), squeeze=False)
    rng = np.random.default_rng(0)
    for r, (fid, points, gt_boxes, _) in enumerate(frames):
        pts = points if len(points) <= max_points else points[rng.choice(len(points), max_points, replace=False)]
        for c, model in enumerate(names):
            ax = axes[r, c]
            ax.scatter(pts[:, 0], pts[:, 1], s=0.3, c=pts[:, 2], cmap="Greys", vmin=-4.0, vmax=0.5, linewidths=0,
                       rasterized=True)
            _draw_boxes(ax, gt_boxes, GT_COLOR, lw=1.6, ls="--")
            n_shown = 0
            anno = predictions.get(model, {}).get(fid) if predictions else None
            if anno is not None and len(anno["name"]):
                keep = np.asarray(anno["score"]) >= score_thresh
                for k, cls in enumerate(class_names):
                    sel = keep & (np.asarray(anno["name"]) == cls)
                    _draw_boxes(ax, np.asarray(anno["boxes_lidar"])[sel], CLASS_COLORS[k % len(CLASS_COLORS)])
                n_shown = int(keep.sum())
            if pc_range is not None:
                ax.set_xlim(pc_range[0], pc_range[3])
                ax.set_ylim(pc_range[1], pc_range[4])
            ax.set_aspect("equal")
            ax.tick_params(labelsize=6)
            label = model if predictions else "ground truth"
            ax.set_title(f"{label} | frame {fid} | {len(gt_boxes)} GT, {n_shown} pred >= {score_thresh:g}",
                         fontsize=7)
    handles = [Line2D([], [], color=GT_COLOR, ls="--", label="ground truth")]
    handles += [Line2D([], [], color=CLASS_COLORS[k % len(CLASS_COLORS)], label=cls) for k, cls in enumerate(class_names)]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0.03, 1, 0.97 if title else 1))
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=110)
    plt.close(fig)
    return out_path


def plot_semantic_bev(points, labels, out_path, title=None, point_size=0.4):
    """One row of bird's-eye views of ``points`` (N, >= 2), one panel per entry of ``labels``
    (``{panel title: (N,) learning classes}``, e.g. ground truth then each model), coloured with the
    semantic-kitti-api colour map (:func:`pcdet.datasets.semantickitti.label_map.colours_rgb`; class 0 =
    unlabeled is black). A legend lists the classes that appear."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    from pcdet.datasets.semantickitti import label_map

    names = list(labels)
    fig, axes = plt.subplots(1, len(names), figsize=(4.6 * len(names), 4.8), squeeze=False)
    present = sorted(set(int(c) for lab in labels.values() for c in np.unique(lab)))
    for ax, name in zip(axes[0], names):
        ax.scatter(points[:, 0], points[:, 1], s=point_size, c=label_map.colours_rgb(labels[name]), linewidths=0)
        ax.set_title(name, fontsize=9)
        ax.set_aspect("equal")
        ax.set_xlabel("x (m)")
        ax.set_ylabel("y (m)")
        ax.set_facecolor("#f4f4f4")
    handles = [Patch(color=label_map.colours_rgb([c])[0],
                     label="unlabeled" if c == 0 else label_map.CLASS_NAMES[c - 1]) for c in present]
    fig.legend(handles=handles, loc="lower center", ncol=min(8, len(handles)), fontsize=7, frameon=False)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0.08, 1, 0.95))
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=110)
    plt.close(fig)
    return out_path
