"""Parameters and multiply-accumulates (MACs) of a detector or segmentor on one frame.

    python -m benchmark.complexity --cfg_file CFG [--frame PATH.bin] [--json OUT]

"GMACs" is what both papers call "FLOPs": multiply-accumulates of the convolution, transposed
convolution and linear layers (BatchNorm, activations, anchor decoding and NMS are not counted).
Dense layers are counted with ``torch.utils.flop_counter.FlopCounterMode`` (which reports 2
FLOPs per MAC); sparse convolutions (spconv) by the active (input site, output site, kernel offset) pairs on the
frame, counted from each layer's own input and output sites: ``pairs * C_in * C_out`` per layer (a
submanifold conv's centre tap included; an inverse conv has its pool's pairs). spconv's own
``indice_pair_num`` is not summed directly: for a submanifold conv spconv 2 stores only half of the
symmetric offsets and computes the centre separately, so its sum is not the pair count (the
relation, pairs = 2 * sum + sites, is checked in the tests). The matrix products spconv's CPU path runs
inside those layers are taken out of the dense count, so nothing is counted twice. Nothing
installed is patched.

Without ``--frame`` the first real KITTI sample frame is used (``PCDET_REALDATA``); the frame's
pillars/voxels decide the VFE cost, the BEV grid decides the backbone cost. For a segmentor give a
SemanticKITTI scan (``sequences/NN/velodyne/*.bin``), processed as the config's test split (e.g.
the cylindrical partition of every point).
"""
import argparse
import itertools
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


def _spconv_types():
    try:
        from pcdet.utils.spconv_utils import spconv
    except ImportError:
        return ()
    return tuple(getattr(spconv, n) for n in ("SubMConv3d", "SparseConv3d", "SparseInverseConv3d", "SubMConv2d",
                                              "SparseConv2d") if hasattr(spconv, n))


def _site_keys(idx, shape):
    """int64 key of each [batch, d0, d1, d2] site (shifted by one so that -1 is encodable)."""
    idx = idx.long()
    s = [int(v) + 2 for v in shape]
    return ((idx[:, 0] * s[0] + idx[:, 1] + 1) * s[1] + idx[:, 2] + 1) * s[2] + idx[:, 3] + 1


def count_kernel_pairs(in_idx, out_idx, out_shape, kernel, stride, padding, dilation):
    """Active (input site, output site, kernel offset) triples of a sparse convolution: those with
    ``out * stride - padding + offset * dilation == in`` per axis, counted from the sites themselves
    (a submanifold conv: output sites = input sites, stride 1, padding kernel // 2; its centre tap
    gives one pair per site)."""
    out_keys = torch.sort(_site_keys(out_idx, out_shape))[0]
    lo_hi = torch.as_tensor(out_shape)
    total = 0
    spatial = in_idx[:, 1:].long()
    for off in itertools.product(*[range(k) for k in kernel]):
        cand = spatial + torch.as_tensor(padding) - torch.as_tensor(off) * torch.as_tensor(dilation)
        stride_t = torch.as_tensor(stride)
        ok = (cand % stride_t == 0).all(1)
        o = torch.div(cand, stride_t, rounding_mode="floor")
        ok &= ((o >= 0) & (o < lo_hi)).all(1)
        if not ok.any():
            continue
        keys = _site_keys(torch.cat([in_idx[ok, :1].long(), o[ok]], 1), out_shape)
        pos = torch.searchsorted(out_keys, keys).clamp(max=len(out_keys) - 1)
        total += int((out_keys[pos] == keys).sum())
    return total


def _sparse_conv_macs(model, batch):
    """MACs of spconv layers, ``{layer: pairs * C_in * C_out}``, from the sites of each layer's input
    and output (:func:`count_kernel_pairs`); an inverse convolution has exactly the pairs of the
    pool whose ``indice_key`` it shares (its rulebook is that pool's, reversed)."""
    conv_types = _spconv_types()
    per_layer, hooks, pool_pairs = {}, [], {}

    def hook(name):
        def fn(module, inputs, output):
            x = inputs[0]
            if module.inverse:
                if module.indice_key not in pool_pairs:
                    raise RuntimeError(f"benchmark.complexity: inverse conv {name} has no pool with indice_key "
                                       f"{module.indice_key!r} before it")
                n = pool_pairs[module.indice_key]
            else:
                stride = [1] * len(module.kernel_size) if module.subm else list(module.stride)
                padding = [k // 2 for k in module.kernel_size] if module.subm else list(module.padding)
                n = count_kernel_pairs(x.indices, output.indices, output.spatial_shape, module.kernel_size, stride,
                                       padding, module.dilation)
                if not module.subm and module.indice_key is not None:
                    pool_pairs[module.indice_key] = n
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
    run = dict(batch)
    with torch.no_grad(), counter:
        model(run)
    flops = counter.get_flop_counts()
    root = type(model).__name__
    sparse_names = {f"{root}.{n}" for n, m in model.named_modules() if _spconv_types() and isinstance(m, _spconv_types())}
    in_spconv = sum(sum(c.values()) for mod, c in flops.items() if mod in sparse_names) / 2
    dense_macs = counter.get_total_flops() / 2 - in_spconv
    sparse_macs, per_sparse = _sparse_conv_macs(model, dict(batch))
    per_module = {}
    for mod, counts in flops.items():
        if mod.count(".") == 1 and mod != "Global":  # top-level children of the model
            name = mod.split(".", 1)[1]
            inside = sum(sum(c.values()) for m, c in flops.items() if m in sparse_names and m.startswith(mod + "."))
            sparse = sum(v for n, v in per_sparse.items() if n.startswith(name + "."))
            per_module[name] = (sum(counts.values()) - inside) / 2 / 1e9 + sparse / 1e9
    num_voxels = int(batch["voxels"].shape[0]) if "voxels" in batch else (
        int(run["voxel_coords"].shape[0]) if "voxel_coords" in run else None)
    return {
        "cfg_file": str(cfg_file),
        "frame": str(frame),
        "num_points": int(batch["points"].shape[0]),
        "num_voxels": num_voxels,
        "grid_size": [int(v) for v in np.asarray(dataset.grid_size)],
        "params_M": params / 1e6,
        "gmacs": (dense_macs + sparse_macs) / 1e9,
        "gmacs_dense": dense_macs / 1e9,
        "gmacs_sparse": sparse_macs / 1e9,
        "gmacs_per_module": per_module,
    }


def main(argv=None):
    p = argparse.ArgumentParser(description="params (M) and GMACs of a detector or segmentor on one frame")
    p.add_argument("--cfg_file", required=True, action="append", help="repeat for several models")
    p.add_argument("--frame", default=None, help="float32 x,y,z,intensity .bin (default: a real KITTI frame; "
                                                 "give a SemanticKITTI scan for a segmentor)")
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
