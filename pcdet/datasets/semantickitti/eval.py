"""SemanticKITTI semantic-segmentation metric, equal to the official semantic-kitti-api.

The api's ``evaluate_semantics.py`` with ``auxiliary/np_ioueval.py`` (``iouEval``):

* a confusion matrix ``conf`` (20 x 20, rows = prediction, columns = ground truth, learning classes)
  accumulated over every scan; ground truth and predictions are raw ids mapped with ``learning_map``;
* ``conf[:, 0] = 0``: points whose ground truth is class 0 (unlabeled and everything mapped to it)
  are dropped entirely; a prediction of 0 on a labelled point is a false negative of its class;
* ``tp = diag(conf)``, ``fp = row sums - tp``, ``fn = column sums - tp``,
  ``IoU_c = tp / (tp + fp + fn + 1e-15)``;
* ``miou`` = the mean of IoU over the 19 classes 1..19: **a class absent from the ground truth and
  never predicted scores 0 and is averaged in** (the official figure);
* ``acc`` = sum(tp) / (sum(tp) + sum(fp)) over the 19 classes (+1e-15).

Reported besides (not in the api): ``miou_present``, the mean IoU over the classes whose union
tp + fp + fn is not empty (what nanmean-style in-training evaluators report), and per class
``iou/<name>`` and ``acc/<name>`` = tp / (tp + fn). All values in percent. Class names are the
api's (``label_map.CLASS_NAMES``).

Owns :class:`ConfusionMatrix`, :func:`miou_metrics`, :class:`SemanticKittiEvaluator` (registered as
``miou``: the streaming evaluator of the SemanticKITTI dataset class, which also writes test-split
predictions in the submission layout) and the command line::

    python -m pcdet.datasets.semantickitti.eval --dataset ROOT --predictions PRED_ROOT --sequences 08 --out metrics.json

(both roots hold ``sequences/NN/...``: ``labels/*.label`` under ``--dataset``, ``predictions/*.label``
under ``--predictions``; raw SemanticKITTI ids, mapped with the learning map).
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np

from pcdet.datasets.evaluation import Evaluator
from pcdet.datasets.registries import EVALUATORS
from pcdet.datasets.semantickitti.label_map import (
    CLASS_NAMES,
    IGNORE_CLASS,
    NUM_CLASSES,
    LabelFileError,
    read_label_file,
    to_learning,
    to_raw,
    write_label_file,
)

EPS = 1e-15


class ConfusionMatrix:
    """``conf[pred, gt]`` over learning classes 0..``n_classes - 1``."""

    def __init__(self, n_classes=NUM_CLASSES, ignore=(IGNORE_CLASS,)):
        self.n, self.ignore = int(n_classes), tuple(ignore)
        self.conf = np.zeros((self.n, self.n), dtype=np.int64)

    def add(self, pred, gt):
        pred, gt = np.asarray(pred, dtype=np.int64).reshape(-1), np.asarray(gt, dtype=np.int64).reshape(-1)
        if pred.shape != gt.shape:
            raise ValueError(f"{pred.size} predictions for {gt.size} labelled points")
        if pred.size and (pred.min() < 0 or pred.max() >= self.n or gt.min() < 0 or gt.max() >= self.n):
            raise ValueError(f"classes must be in 0..{self.n - 1}")
        self.conf += np.bincount(pred * self.n + gt, minlength=self.n * self.n).reshape(self.n, self.n)

    def stats(self):
        conf = self.conf.copy()
        conf[:, list(self.ignore)] = 0
        tp = np.diag(conf).astype(np.float64)
        return tp, conf.sum(axis=1) - tp, conf.sum(axis=0) - tp


def miou_metrics(cm, class_names=CLASS_NAMES):
    """The metrics of a :class:`ConfusionMatrix` (see the module docstring), in percent."""
    tp, fp, fn = cm.stats()
    include = [c for c in range(cm.n) if c not in cm.ignore]
    union = tp + fp + fn
    iou = tp / (union + EPS)
    present = [c for c in include if union[c] > 0]
    out = {"miou": float(iou[include].mean() * 100),
           "miou_present": float(iou[present].mean() * 100) if present else 0.0,
           "acc": float(tp[include].sum() / (tp[include].sum() + fp[include].sum() + EPS) * 100)}
    for c, name in zip(include, class_names):
        out[f"iou/{name}"] = float(iou[c] * 100)
        out[f"acc/{name}"] = float(tp[c] / (tp[c] + fn[c] + EPS) * 100)
    out["points"] = int(tp[include].sum() + fn[include].sum())
    return out


def format_metrics(m, class_names=CLASS_NAMES):
    lines = [f"mIoU {m['miou']:.2f} (official: 19 classes, an absent class counts 0); present-class mIoU "
             f"{m['miou_present']:.2f}; accuracy {m['acc']:.2f}; {m['points']} labelled points"]
    lines += [f"  {name:14s} IoU {m[f'iou/{name}']:6.2f}  acc {m[f'acc/{name}']:6.2f}" for name in class_names]
    return "\n".join(lines) + "\n"


@EVALUATORS.register("miou")
class SemanticKittiEvaluator(Evaluator):
    """Streaming mIoU of a segmentor on a dataset of SemanticKITTI classes (``point_labels`` = learning
    classes of ``points``; predictions ``point_labels`` of every sample). On a split without labels it
    writes the predictions in the submission layout instead
    (``<output_dir>/sequences/NN/predictions/FFFFFF.label``, raw ids)."""

    TABLE_METRICS = ("miou", "miou_present")

    def reset(self):
        self.cm = ConfusionMatrix(NUM_CLASSES)
        self.frames = 0
        self.written = 0

    def process(self, batch_dict, pred_dicts, ret_dict=None):
        idx = _np(batch_dict["points"][:, 0]).astype(np.int64)
        gt = batch_dict.get("point_labels", None)
        gt = None if gt is None else _np(gt).astype(np.int64)
        for b, pred in enumerate(pred_dicts):
            p = _np(pred["point_labels"]).astype(np.int64)
            if gt is not None:
                self.cm.add(p, gt[idx == b])
            frame = str(batch_dict["frame_id"][b])
            if gt is None and self.output_dir is not None:
                raw_n = batch_dict.get("num_points_raw", None)
                if raw_n is not None and int(_np(raw_n)[b]) != len(p):
                    raise ValueError(
                        f"frame {frame}: {len(p)} predictions for a scan of {int(_np(raw_n)[b])} points; a submission "
                        f"needs one per scan point in file order (no FOV_ANGLE crop, range mask or shuffling in "
                        f"test mode)")
                seq, scan = frame.split("/") if "/" in frame else ("00", frame)
                write_label_file(Path(self.output_dir) / "sequences" / seq / "predictions" / f"{scan}.label",
                                 to_raw(p))
                self.written += 1
            self.frames += 1

    def evaluate(self):
        if self.cm.conf.sum() == 0 and self.written:
            where = Path(self.output_dir) / "sequences"
            return f"no labels: {self.written} prediction files written under {where} (submission layout)\n", {}
        m = miou_metrics(self.cm)
        return format_metrics(m), m

    def summary(self):
        return {"num_frames": self.frames, "predictions_written": self.written}

    @classmethod
    def metric_value(cls, metrics, name):
        if name in metrics:
            return metrics[name]
        if name.startswith("iou_"):
            return metrics[f"iou/{name[4:].replace('_', '-')}"]
        raise KeyError(name)

    @classmethod
    def is_table_metric(cls, name):
        return name in cls.TABLE_METRICS or name.startswith("iou_")


def _np(x):
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


# ------------------------------------------------------------------------------------------ command line
def evaluate_folders(dataset_root, predictions_root, sequences):
    """The metrics of the prediction files under ``predictions_root`` against the labels under
    ``dataset_root`` (every labelled scan of ``sequences``)."""
    cm = ConfusionMatrix(NUM_CLASSES)
    scans = 0
    for seq in sequences:
        seq = f"{int(seq):02d}"
        label_dir = Path(dataset_root) / "sequences" / seq / "labels"
        labels = sorted(label_dir.glob("*.label"))
        if not labels:
            raise LabelFileError(f"no label files in {label_dir}")
        for lab in labels:
            pred_file = Path(predictions_root) / "sequences" / seq / "predictions" / lab.name
            gt_raw, _ = read_label_file(lab)
            pred_raw, _ = read_label_file(pred_file, num_points=len(gt_raw))
            cm.add(to_learning(pred_raw, str(pred_file)), to_learning(gt_raw, str(lab)))
            scans += 1
    return miou_metrics(cm), scans


def main(argv=None):
    p = argparse.ArgumentParser(description="SemanticKITTI semantic segmentation evaluation (semantic-kitti-api rules)")
    p.add_argument("--dataset", required=True, help="root holding sequences/NN/labels/*.label")
    p.add_argument("--predictions", required=True, help="root holding sequences/NN/predictions/*.label")
    p.add_argument("--sequences", nargs="+", default=["08"], help="sequences to evaluate (default: 08, the val split)")
    p.add_argument("--out", default=None, help="write the metrics as JSON here")
    args = p.parse_args(argv)
    try:
        metrics, scans = evaluate_folders(args.dataset, args.predictions, args.sequences)
    except (LabelFileError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{scans} scans of sequences {', '.join(args.sequences)}")
    print(format_metrics(metrics), end="")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(metrics, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
