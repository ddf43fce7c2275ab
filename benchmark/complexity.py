"""Parameters and multiply-accumulates (MACs) of a detector on one frame.

    python -m benchmark.complexity --cfg_file CFG [--frame PATH.bin] [--json OUT]

"GMACs" is what both papers call "FLOPs": multiply-accumulates of the convolution, transposed
convolution and linear layers (BatchNorm, activations, anchor decoding and NMS are not counted).
Dense layers are counted with ``torch.utils.flop_counter.FlopCounterMode`` (which reports 2
FLOPs per MAC); sparse convolutions (spconv) by their active input-output pairs:
``sum(indice_pair_num) * C_in * C_out`` per layer. Nothing installed is patched.

Without ``--frame`` the first real KITTI sample frame is used (``PCDET_REALDATA``); the frame's
pillars/voxels decide the VFE cost, the BEV grid decides the backbone cost.
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from pcdet.datasets.point_cloud_files import PointCloudFileDataset
from pcdet.models import build_network, load_data_to_device
from pcdet.train_utils.experiment import load_experiment_cfg
from pcdet.utils.paths import realdata_dir


def default_frame():
    return realdata_dir() / "kitti" / "training" / "velodyne" / "000000.bin"


def _sparse_conv_macs(model, batch):
    """MACs of spconv layers, from their indice pairs, collected by forward hooks."""
    try:
        from pcdet.utils.spconv_utils import spconv
    except ImportError:
        return 0, {}
    conv_types = tuple(
        getattr(spconv, n) for n in ("SubMConv3d", "SparseConv3d", "SparseInverseConv3d", "SubMConv2d", "SparseConv2d")
        if hasattr(spconv, n)
    )
    per_layer, hooks = {}, []

    def hook(name):
        def fn(module, inputs, output):
            pairs = None
            key = getattr(module, "indice_key", None)
            if key is not None and key in output.indice_dict:
                pairs = output.indice_dict[key].indice_pair_num
            if pairs is None:
                for val in output.indice_dict.values():
                    pairs = val.indice_pair_num
            n = int(torch.as_tensor(pairs).sum().item()) if pairs is not None else 0
            per_layer[name] = per_layer.get(name, 0) + n * module.in_channels * module.out_channels
        return fn

    for name, m in model.named_modules():
        if conv_types and isinstance(m, conv_types):
            hooks.append(m.register_forward_hook(hook(name)))
    with torch.no_grad():
        model(batch)
    for h in hooks:
        h.remove()
    return sum(per_layer.values()), per_layer


def measure(cfg_file, frame=None, set_cfgs=None):
    cfg = load_experiment_cfg(cfg_file, set_cfgs)
    frame = Path(frame) if frame else default_frame()
    dataset = PointCloudFileDataset(cfg.DATA_CONFIG, cfg.CLASS_NAMES, [frame])
    model = build_network(cfg.MODEL, len(cfg.CLASS_NAMES), dataset)
    model.eval()
    batch = load_data_to_device(dataset.collate_batch([dataset[0]]), torch.device("cpu"))
    params = sum(p.numel() for p in model.parameters())
    counter = FlopCounterMode(display=False, depth=None)
    with torch.no_grad(), counter:
        model(dict(batch))
    dense_macs = counter.get_total_flops() / 2
    per_module = {}
    for mod, counts in counter.get_flop_counts().items():
        if mod.count(".") == 1 and mod != "Global":  # top-level children of the detector
            per_module[mod.split(".", 1)[1]] = sum(counts.values()) / 2 / 1e9
    sparse_macs, _ = _sparse_conv_macs(model, dict(batch))
    return {
        "cfg_file": str(cfg_file),
        "frame": str(frame),
        "num_voxels": int(batch["voxels"].shape[0]) if "voxels" in batch else None,
        "grid_size": [int(v) for v in np.asarray(dataset.grid_size)],
        "params_M": params / 1e6,
        "gmacs": (dense_macs + sparse_macs) / 1e9,
        "gmacs_dense": dense_macs / 1e9,
        "gmacs_sparse": sparse_macs / 1e9,
        "gmacs_per_module": per_module,
    }


def main(argv=None):
    p = argparse.ArgumentParser(description="params (M) and GMACs of a detector on one frame")
    p.add_argument("--cfg_file", required=True, action="append", help="repeat for several models")
    p.add_argument("--frame", default=None, help="float32 x,y,z,intensity .bin (default: a real KITTI frame)")
    p.add_argument("--json", default=None, help="write the results here")
    args = p.parse_args(argv)
    if args.frame is None and not default_frame().is_file():
        sys.exit(f"no --frame given and the default real frame {default_frame()} is absent")
    results = [measure(c, args.frame) for c in args.cfg_file]
    for r in results:
        print(f"{r['cfg_file']}: {r['params_M']:.3f} M params, {r['gmacs']:.2f} GMACs "
              f"(dense {r['gmacs_dense']:.2f}, sparse {r['gmacs_sparse']:.2f}; {r['num_voxels']} voxels)")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results if len(results) > 1 else results[0], indent=2))
    return results


if __name__ == "__main__":
    main()
