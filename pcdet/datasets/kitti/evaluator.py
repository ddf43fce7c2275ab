"""KittiEvaluator: the KITTI object metric (:mod:`pcdet.datasets.kitti.eval`) behind the evaluator protocol.

``process`` converts each batch's predictions with the dataset's ``generate_prediction_dicts``
(writing KITTI result files, 16th column = score, into ``<output_dir>/final_result/data``) and keeps
the annotations; the recall counts of the detector's ``ret_dict`` are summed. ``evaluate`` writes
``result.pkl`` (the list of per-frame prediction annos, LiDAR ``boxes_lidar`` included, as OpenPCDet
writes it; ``tools/visualize.py`` draws it) and returns the devkit's APs (:func:`dataset.evaluation`).
Table metrics: ``bev_map`` / ``3d_map`` (mean of the Car / Pedestrian / Cyclist moderate AP R40, as the
papers report) and ``<bev|3d>_<car|ped|cyc>_<easy|moderate|hard>`` (one AP R40).
"""
import pickle
from pathlib import Path

from pcdet.datasets.evaluation import Evaluator
from pcdet.datasets.registries import EVALUATORS

CLASS_KEYS = {"car": "Car", "ped": "Pedestrian", "cyc": "Cyclist"}


@EVALUATORS.register("kitti")
class KittiEvaluator(Evaluator):
    TABLE_METRICS = ("bev_map", "3d_map")

    def reset(self):
        self.det_annos, self.recall = [], {}

    @property
    def result_dir(self):
        return None if self.output_dir is None else Path(self.output_dir) / "final_result" / "data"

    def process(self, batch_dict, pred_dicts, ret_dict=None):
        for key, val in (ret_dict or {}).items():
            self.recall[key] = self.recall.get(key, 0) + val
        self.det_annos += self.dataset.generate_prediction_dicts(batch_dict, pred_dicts, self.dataset.class_names,
                                                                 output_path=self.result_dir)

    def evaluate(self):
        if self.output_dir is not None:
            Path(self.output_dir).mkdir(parents=True, exist_ok=True)
            with open(Path(self.output_dir) / "result.pkl", "wb") as f:
                pickle.dump(self.det_annos, f)
        return self.dataset.evaluation(self.det_annos, self.dataset.class_names)

    def summary(self):
        gt = max(self.recall.get("gt", 0), 1)
        return {"recall": {k: v / gt for k, v in self.recall.items() if k != "gt"}, "num_gt": self.recall.get("gt", 0),
                "num_frames": len(self.det_annos),
                "num_detections": int(sum(len(a["name"]) for a in self.det_annos))}

    @classmethod
    def metric_value(cls, metrics, name):
        from pcdet.datasets.kitti.eval import moderate_map

        if name in ("bev_map", "3d_map"):
            return moderate_map(metrics, name.split("_")[0])
        kind, cls_key, diff = name.split("_")
        return metrics[f"{CLASS_KEYS[cls_key]}_{kind}/{diff}_R40"]

    @classmethod
    def is_table_metric(cls, name):
        parts = name.split("_")
        return name in cls.TABLE_METRICS or (len(parts) == 3 and parts[0] in ("bev", "3d") and parts[1] in CLASS_KEYS)
