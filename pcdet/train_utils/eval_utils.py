"""Inference over a dataloader through the dataset's evaluator; ``metrics.json``.

``eval_one_epoch`` runs the model in eval mode and feeds every batch's predictions to the dataset's
evaluator (:mod:`pcdet.datasets.evaluation`: KITTI writes result files with a 16th score column and
``result.pkl``; a segmentation evaluator accumulates a confusion matrix), then writes
``metrics.json`` (the evaluator's metrics, its summary counts, the inference time and
``extra_info``) into ``result_dir``. It knows no task.
"""
import json
import time
from pathlib import Path

import torch
import tqdm

from pcdet.config import to_plain
from pcdet.models import load_data_to_device


def eval_one_epoch(model, dataloader, result_dir, device, logger=None, progress=True, extra_info=None):
    """Returns the metrics dict (also written to ``result_dir/metrics.json``)."""
    dataset = dataloader.dataset
    result_dir = Path(result_dir)
    result_dir.mkdir(parents=True, exist_ok=True)
    evaluator = dataset.build_evaluator(result_dir)
    evaluator.reset()
    model.eval()
    frames = 0
    t0 = time.perf_counter()
    for batch in tqdm.tqdm(dataloader, desc="eval", leave=False, dynamic_ncols=True, disable=not progress):
        load_data_to_device(batch, device)
        with torch.no_grad():
            pred_dicts, ret_dict = model(batch)
        evaluator.process(batch, pred_dicts, ret_dict)
        frames += int(batch["batch_size"])
    seconds = time.perf_counter() - t0
    text, metrics = evaluator.evaluate()
    out = {"metrics": to_plain(metrics), "num_frames": frames, **to_plain(evaluator.summary()),
           "inference_seconds": seconds}
    if extra_info:
        out.update(extra_info)
    (result_dir / "metrics.json").write_text(json.dumps(out, indent=2))
    if logger is not None:
        note = getattr(dataset, "dataset_note", "")
        logger.info((f"evaluation on the {note}:" if note else "evaluation:") + "\n" + text)
        logger.info(f"metrics in {result_dir / 'metrics.json'}")
    return out
