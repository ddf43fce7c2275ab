"""Inference over a dataloader, result files, and the dataset's official metrics.

``eval_one_epoch`` runs the model in eval mode, converts predictions with the dataset's
``generate_prediction_dicts`` (KITTI: result files with a 16th score column), aggregates recall,
calls ``dataset.evaluation`` and writes ``metrics.json`` beside the results, and ``result.pkl``:
the list of per-frame prediction annos (with ``frame_id`` and LiDAR ``boxes_lidar``), as
OpenPCDet writes it (``tools/visualize.py`` draws it).
"""
import json
import pickle
import time
from pathlib import Path

import numpy as np
import torch
import tqdm

from pcdet.models import load_data_to_device


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return obj


def eval_one_epoch(model, dataloader, result_dir, device, logger=None, progress=True, extra_info=None):
    """Returns the metrics dict (also written to ``result_dir/metrics.json``)."""
    dataset = dataloader.dataset
    class_names = dataset.class_names
    result_dir = Path(result_dir)
    final_dir = result_dir / "final_result" / "data"
    final_dir.mkdir(parents=True, exist_ok=True)
    model.eval()
    det_annos, recall = [], {}
    t0 = time.perf_counter()
    for batch in tqdm.tqdm(dataloader, desc="eval", leave=False, dynamic_ncols=True, disable=not progress):
        load_data_to_device(batch, device)
        with torch.no_grad():
            pred_dicts, ret_dict = model(batch)
        for key, val in ret_dict.items():
            recall[key] = recall.get(key, 0) + val
        det_annos += dataset.generate_prediction_dicts(batch, pred_dicts, class_names, output_path=final_dir)
    seconds = time.perf_counter() - t0
    with open(result_dir / "result.pkl", "wb") as f:
        pickle.dump(det_annos, f)
    text, metrics = dataset.evaluation(det_annos, class_names)
    gt = max(recall.get("gt", 0), 1)
    out = {
        "metrics": _jsonable(metrics),
        "recall": {k: v / gt for k, v in recall.items() if k != "gt"},
        "num_gt": recall.get("gt", 0),
        "num_frames": len(det_annos),
        "num_detections": int(sum(len(a["name"]) for a in det_annos)),
        "inference_seconds": seconds,
    }
    if extra_info:
        out.update(extra_info)
    (result_dir / "metrics.json").write_text(json.dumps(out, indent=2))
    if logger is not None:
        note = getattr(dataset, "dataset_note", "")
        logger.info((f"evaluation on the {note}:" if note else "evaluation:") + "\n" + text)
        logger.info(f"recall: {out['recall']}; results in {final_dir}; metrics in {result_dir / 'metrics.json'}")
    return out
