"""A new task family from outside the package: a toy point-label dataset, a toy mIoU evaluator and a
toy segmentor (its encoder and head too) are registered here, in the test, and trained and
evaluated end to end by ``tools/train.py`` (3 steps) with hooks. Nothing in ``pcdet`` names them:
this is the proof that a new family needs no edit of the core (templates, registries, the data
contract, the evaluator protocol, the epoch loop and its hooks)."""
import importlib.util
import json

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import yaml

from pcdet.config import check_keys
from pcdet.datasets.dataset import DatasetTemplate
from pcdet.datasets.evaluation import Evaluator
from pcdet.datasets.registries import DATASETS, EVALUATORS
from pcdet.models.model_template import FeatureSpec
from pcdet.models.registries import SEG_HEADS, SEGMENTORS, VFES
from pcdet.models.segmentors import Segmentor3DTemplate
from pcdet.utils.paths import REPO_ROOT

CLASSES = ["ground", "wall", "pole"]
RANGE = [0.0, -10.0, -3.0, 20.0, 10.0, 1.0]


class ToyPointLabels(DatasetTemplate):
    """Random clouds whose label is a function of the point: below z = -1.5 ground, else wall or pole
    by the sign of y; 6 frames per split."""

    EVALUATOR = "toy_miou"
    FORMAT_NAME = "toy point labels"

    def __len__(self):
        return 6

    def __getitem__(self, index):
        rng = np.random.default_rng(index + (0 if self.training else 100))
        lo, hi = np.array(RANGE[:3]), np.array(RANGE[3:])
        xyz = rng.uniform(lo - 1.0, hi + 1.0, (400, 3))  # some points outside the range: masking must keep labels aligned
        points = np.concatenate([xyz, rng.uniform(0, 1, (400, 1))], axis=1).astype(np.float32)
        labels = np.where(xyz[:, 2] < -1.5, 0, np.where(xyz[:, 1] > 0, 1, 2)).astype(np.int64)
        return self.prepare_data({"points": points, "point_labels": labels, "frame_id": f"{index:06d}"})


class ToyMIoU(Evaluator):
    """Streaming mIoU: a confusion matrix, never a list of predictions."""

    TABLE_METRICS = ("miou",)

    def reset(self):
        self.confusion = np.zeros((len(CLASSES), len(CLASSES)), dtype=np.int64)
        self.batches = 0

    def process(self, batch_dict, pred_dicts, ret_dict=None):
        idx = batch_dict["points"][:, 0].long().cpu().numpy()
        gt = batch_dict["point_labels"].cpu().numpy()
        for b, pred in enumerate(pred_dicts):
            p = pred["point_labels"].cpu().numpy()
            assert p.shape == gt[idx == b].shape  # one prediction per point of the sample
            np.add.at(self.confusion, (gt[idx == b], p), 1)
        self.batches += 1

    def evaluate(self):
        tp = np.diag(self.confusion).astype(np.float64)
        denom = self.confusion.sum(0) + self.confusion.sum(1) - tp
        iou = np.where(denom > 0, tp / np.maximum(denom, 1), 0.0)
        metrics = {"miou": float(iou.mean() * 100), **{f"iou_{c}": float(v * 100) for c, v in zip(CLASSES, iou)}}
        return f"mIoU {metrics['miou']:.2f}", metrics

    def summary(self):
        return {"points": int(self.confusion.sum()), "batches": self.batches}


class ToyPointMLP(nn.Module):
    def __init__(self, model_cfg, num_point_features, **kwargs):
        super().__init__()
        check_keys(model_cfg, {"NAME", "WIDTH"}, "MODEL.VFE")
        self.width = int(model_cfg.WIDTH)
        self.net = nn.Sequential(nn.Linear(num_point_features, self.width), nn.ReLU())

    def get_output_feature_dim(self):
        return self.width

    def feature_specs(self, info):
        return {"point_features": FeatureSpec(self.width, "points", coord_key="points")}

    def forward(self, batch_dict):
        batch_dict["point_features"] = self.net(batch_dict["points"][:, 1:])
        return batch_dict


class ToyLinearHead(nn.Module):
    def __init__(self, model_cfg, input_channels, num_class, **kwargs):
        super().__init__()
        self.fc = nn.Linear(input_channels, num_class)
        self.forward_ret = {}

    def forward(self, batch_dict):
        logits = self.fc(batch_dict["point_features"])
        batch_dict["point_logits"] = logits
        self.forward_ret = {"logits": logits, "labels": batch_dict.get("point_labels")}
        return batch_dict

    def get_loss(self):
        loss = F.cross_entropy(self.forward_ret["logits"], self.forward_ret["labels"])
        return loss, {"loss_seg": float(loss.detach())}


class ToySegmentor(Segmentor3DTemplate):
    module_topology = ["vfe", "seg_head"]


@pytest.fixture
def toy_family():
    """Register the toy family (as a plugin would), and take it out again afterwards."""
    entries = [(DATASETS, "ToyPointLabels", ToyPointLabels), (EVALUATORS, "toy_miou", ToyMIoU),
               (VFES, "ToyPointMLP", ToyPointMLP), (SEG_HEADS, "ToyLinearHead", ToyLinearHead),
               (SEGMENTORS, "ToySegmentor", ToySegmentor)]
    for registry, name, cls in entries:
        registry.register(name)(cls)
    yield
    for registry, name, _ in entries:
        registry.unregister(name)


def _train_main():
    spec = importlib.util.spec_from_file_location("pcdet_tools_train", REPO_ROOT / "tools" / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_a_family_registered_outside_the_package_trains_and_evaluates_through_tools_train(tmp_path, toy_family):
    cfg = {
        "CLASS_NAMES": CLASSES,
        "DATA_CONFIG": {
            "DATASET": "ToyPointLabels", "DATA_PATH": str(tmp_path), "POINT_CLOUD_RANGE": RANGE,
            "DATA_SPLIT": {"train": "train", "test": "val"},
            "POINT_FEATURE_ENCODING": {"encoding_type": "absolute_coordinates_encoding",
                                       "used_feature_list": ["x", "y", "z", "intensity"],
                                       "src_feature_list": ["x", "y", "z", "intensity"]},
            "DATA_AUGMENTOR": {"DISABLE_AUG_LIST": [], "AUG_CONFIG_LIST": [
                {"NAME": "random_world_flip", "ALONG_AXIS_LIST": ["x"]}]},
            "DATA_PROCESSOR": [{"NAME": "mask_points_and_boxes_outside_range"},
                               {"NAME": "shuffle_points", "SHUFFLE_ENABLED": {"train": True, "test": False}}],
        },
        "MODEL": {"NAME": "ToySegmentor", "VFE": {"NAME": "ToyPointMLP", "WIDTH": 16},
                  "SEG_HEAD": {"NAME": "ToyLinearHead"}},
        "OPTIMIZATION": {"BATCH_SIZE_PER_GPU": 2, "NUM_EPOCHS": 1, "OPTIMIZER": "adamw", "LR": 0.01,
                         "WEIGHT_DECAY": 0.0, "GRAD_NORM_CLIP": 10.0, "MIXED_PRECISION": "none"},
        "HOOKS": [{"NAME": "periodic_eval", "INTERVAL": 1}, {"NAME": "best_checkpoint", "METRIC": "miou"}],
    }
    cfg_file = tmp_path / "toy_segmentor.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "out"
    torch.manual_seed(0)
    _train_main()(["--cfg_file", str(cfg_file), "--workers", "0", "--output_root", str(out), "--no_progress"])
    run = out / "toy_segmentor" / "default"
    stats = json.loads((run / "train_stats.json").read_text())
    assert stats["epochs"][0]["iterations"] == 3  # 6 frames, batch 2
    metrics = json.loads((run / "eval" / "epoch_1" / "val" / "metrics.json").read_text())
    assert set(metrics["metrics"]) == {"miou", "iou_ground", "iou_wall", "iou_pole"}
    assert 0.0 <= metrics["metrics"]["miou"] <= 100.0
    assert metrics["points"] > 0 and metrics["batches"] == 3 and metrics["num_frames"] == 6
    assert metrics["dataset_note"] == "toy point labels"
    best = json.loads((run / "ckpt" / "best.json").read_text())  # the hooks ran: evaluation, best checkpoint
    assert best["metric"] == "miou" and best["epoch"] == 1 and (run / "ckpt" / "checkpoint_best.pth").is_file()
