"""ONNX export of a BEV detector's dense part and inference through ONNX Runtime.

A deployment runtime cannot run everything of a LiDAR detector: point grouping, voxelisation, the
pillar scatter and spconv's sparse convolutions have no ONNX operators (deployments such as NVIDIA's
CUDA-PointPillars keep them as custom kernels in front of the TensorRT engine). What it runs is the
dense part, from the scattered BEV map ``spatial_features`` (PointPillars: the PointPillarScatter
output; SECOND: the HeightCompression output) to the head's raw maps:

    spatial_features (B, C, ny, nx) -> backbone_2d -> dense head 1x1 convs
        -> cls_preds, box_preds[, dir_cls_preds]  (B, ny', nx', A * k), as the head writes them

The graph's input takes the map in the memory order the detector produces it (``input_layout``):
NCHW, or NHWC when the map is channels-last (the deploy-mode pillar scatter writes a cell-major
canvas): then the graph reads (B, ny, nx, C) and transposes it itself, instead of PyTorch copying
the map to NCHW first. On a 2-core CPU that strided copy cost the PointPillars teacher's 55 MB map
about 160 ms, while the session took as long with the transpose in its graph as without it
(``benchmark/results``, latency run 7).

:func:`export_dense_part` exports that module (:class:`DenseBEVPart`) with ``torch.onnx.export``;
:class:`OnnxRuntimeDetector` runs a detector with it: the modules before ``backbone_2d`` in PyTorch,
the dense part in an ONNX Runtime session, then the head's box decoding and the detector's
post-processing (NMS) in PyTorch, so its predictions are the detector's own (tested to a stated
tolerance). ``providers`` chooses the execution providers; ``TensorrtExecutionProvider`` (ONNX
Runtime's TensorRT path) is used when it is installed and asked for, CPU otherwise.
"""
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

#: the slot the exported part starts at, and the key it reads
DENSE_INPUT_KEY = "spatial_features"
OUTPUT_NAMES = ("cls_preds", "box_preds", "dir_cls_preds")
INPUT_LAYOUTS = ("nchw", "nhwc")


def input_layout_of(spatial_features):
    """``"nhwc"`` for a channels-last (B, C, ny, nx) map that is not also NCHW-contiguous, else ``"nchw"``."""
    x = spatial_features
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return "nhwc"
    return "nchw"


def layout_input(spatial_features, layout):
    """The (B, C, ny, nx) map as the graph of ``layout`` reads it: contiguous NCHW, or (B, ny, nx, C)
    contiguous (a view without a copy when the map is channels-last)."""
    x = spatial_features.detach().float()
    if layout == "nhwc":
        return x.permute(0, 2, 3, 1).contiguous()
    if layout != "nchw":
        raise ValueError(f"input layout {layout!r}: expected one of {INPUT_LAYOUTS}")
    return x.contiguous()


class OnnxExportError(RuntimeError):
    pass


class DenseBEVPart(nn.Module):
    """``spatial_features`` -> (cls_preds, box_preds[, dir_cls_preds]) of ``detector`` (shared modules, no copy);
    with ``input_layout="nhwc"`` the input is the map as (B, ny, nx, C)."""

    def __init__(self, detector, input_layout="nchw"):
        super().__init__()
        if input_layout not in INPUT_LAYOUTS:
            raise ValueError(f"input layout {input_layout!r}: expected one of {INPUT_LAYOUTS}")
        self.input_layout = input_layout
        head = getattr(detector, "dense_head", None)
        if getattr(detector, "backbone_2d", None) is None or head is None or not hasattr(head, "conv_cls"):
            raise OnnxExportError(f"{type(detector).__name__}: the ONNX export covers BEV detectors with a "
                                  f"backbone_2d and an anchor head (conv_cls / conv_box)")
        self.backbone_2d, self.head = detector.backbone_2d, head
        # a new module starts in training mode, and the export restores the mode it found: left so, it
        # would put the detector's own backbone and head (shared, not copied) back in training mode
        self.train(detector.training)

    @property
    def output_names(self):
        return list(OUTPUT_NAMES[:3 if self.head.conv_dir_cls is not None else 2])

    def forward(self, spatial_features):
        if self.input_layout == "nhwc":
            spatial_features = spatial_features.permute(0, 3, 1, 2)
        x = self.backbone_2d({DENSE_INPUT_KEY: spatial_features})["spatial_features_2d"]
        h = self.head
        outs = [h.conv_cls(x).permute(0, 2, 3, 1), h.conv_box(x).permute(0, 2, 3, 1)]
        if h.conv_dir_cls is not None:
            outs.append(h.conv_dir_cls(x).permute(0, 2, 3, 1))
        return tuple(o.contiguous() for o in outs)


def modules_before_dense_part(detector):
    """The detector's modules that run in PyTorch, in order (those before ``backbone_2d``)."""
    names = list(detector.module_topology)
    if "backbone_2d" not in names or "dense_head" not in names:
        raise OnnxExportError(f"{type(detector).__name__} has no backbone_2d and dense_head slots to export")
    mods = [getattr(detector, n) for n in names[:names.index("backbone_2d")]]
    after = [n for n in names[names.index("dense_head") + 1:] if getattr(detector, n, None) is not None]
    if after:
        raise OnnxExportError(f"{type(detector).__name__}: modules after the dense head ({after}) are not exported")
    return [m for m in mods if m is not None]


def export_dense_part(detector, spatial_features, path, opset=17, input_layout=None):
    """Export :class:`DenseBEVPart` of ``detector`` (eval mode) traced on ``spatial_features`` (B, C, ny, nx)
    to ``path``, with a dynamic batch axis; returns the path. ``input_layout``: ``"nchw"`` or ``"nhwc"``
    (the graph's input, see the module docstring); default: the sample map's memory order
    (:func:`input_layout_of`). Uses the TorchScript-based exporter (``dynamo=False``:
    deprecated since torch 2.9 and warning so, still present in 2.13; the torch.export-based default
    needs the extra onnxscript package), whose ONNX graph holds the same convolutions as the module."""
    if detector.training:
        raise OnnxExportError("export an eval-mode detector (model.eval()): the export traces eval-mode layers")
    layout = input_layout or input_layout_of(spatial_features)
    part = DenseBEVPart(detector, layout)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        torch.onnx.export(part, (layout_input(spatial_features, layout),), str(path), input_names=[DENSE_INPUT_KEY],
                          output_names=part.output_names, opset_version=opset, dynamo=False,
                          dynamic_axes={DENSE_INPUT_KEY: {0: "batch"}, **{n: {0: "batch"} for n in part.output_names}})
    return path


def _session(path, threads, providers):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")  # no busy threads between runs
    available = ort.get_available_providers()
    chosen = [p for p in (providers or ["CPUExecutionProvider"]) if p in available] or ["CPUExecutionProvider"]
    return ort.InferenceSession(str(path), sess_options=opts, providers=chosen)


class OnnxRuntimeDetector:
    """A detector whose dense part runs in ONNX Runtime: ``__call__(batch_dict)`` returns what the
    detector's eval-mode forward returns (``pred_dicts, recall_dict``); the batch gets the head maps,
    not the backbone's intermediate maps (``spatial_features_2d`` and the per-stage ones).

    ``detector`` must be in eval mode (a :func:`prepare_for_inference` copy is fine: its folded
    layers are what gets exported). ``spatial_features`` is a sample input for the export (shape, dtype
    and memory order: ``input_layout``, default :func:`input_layout_of` the sample); ``path`` where the
    model is written (default: a temporary folder's ``dense.onnx``); ``io_binding``: see :meth:`dense_part`.
    """

    def __init__(self, detector, spatial_features, path=None, threads=None, providers=None, io_binding=True,
                 input_layout=None):
        import tempfile

        if detector.training:
            raise OnnxExportError("export an eval-mode detector (model.eval())")
        self.detector = detector
        self.front = modules_before_dense_part(detector)
        self._tmp = None
        if path is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="pcdet_onnx_")
            path = Path(self._tmp.name) / "dense.onnx"
        self.input_layout = input_layout or input_layout_of(spatial_features)
        self.path = export_dense_part(detector, spatial_features, path, input_layout=self.input_layout)
        self.session = _session(self.path, threads if threads is not None else torch.get_num_threads(), providers)
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.providers = self.session.get_providers()
        self.io_binding = bool(io_binding)
        self.last_dense_s = 0.0

    def _binding_device(self, x):
        """``(device_type, device_id)`` ONNX Runtime can read ``x`` from in place, or None (host feed):
        a CPU tensor always; a CUDA tensor when the session's CUDA or TensorRT provider runs on its GPU."""
        if x.device.type == "cpu":
            return "cpu", 0
        if not x.is_cuda:
            return None
        index = x.device.index or 0
        options = self.session.get_provider_options()
        for provider in ("TensorrtExecutionProvider", "CUDAExecutionProvider"):
            if provider in self.providers and int(options.get(provider, {}).get("device_id", 0)) == index:
                return "cuda", index  # the session runs on the tensor's GPU
        return None

    def _output_shapes(self, batch):
        """Output shapes for a batch of ``batch`` maps (the exported graph's, its symbolic batch axis
        filled in); None when another axis is symbolic."""
        shapes = []
        for out in self.session.get_outputs():
            dims = [batch if i == 0 else d for i, d in enumerate(out.shape)]
            if not all(isinstance(d, int) for d in dims):
                return None
            shapes.append(tuple(dims))
        return shapes

    def dense_part(self, spatial_features):
        """ONNX Runtime's outputs for ``spatial_features`` as torch tensors, keyed by output name.

        With ``io_binding`` (default) the session reads the input tensor's memory and writes into torch
        tensors allocated on the input's device (``IOBinding``: no host round trip on a GPU, no numpy
        conversion on the CPU); a CUDA input needs the session's CUDA or TensorRT provider on the same
        GPU. The map is handed over in the graph's input layout (:func:`layout_input`: no copy when
        its memory order is the graph's, else one on its own device). Otherwise
        (or ``io_binding=False``) the map goes through host memory as a numpy feed, and on a GPU
        ``last_dense_s`` includes its two copies."""
        import time

        x = layout_input(spatial_features, self.input_layout)
        where = self._binding_device(x) if self.io_binding else None
        shapes = self._output_shapes(x.shape[0]) if where else None
        if x.is_cuda:
            torch.cuda.synchronize(x.device)  # the producer's kernels are done before the session reads
        t0 = time.perf_counter()
        if shapes is None:
            outs = self.session.run(self.output_names, {DENSE_INPUT_KEY: x.cpu().numpy()})
            maps = {n: torch.from_numpy(np.ascontiguousarray(o)).to(x.device) for n, o in zip(self.output_names, outs)}
        else:
            kind, index = where
            maps = {n: torch.empty(shape, dtype=torch.float32, device=x.device)
                    for n, shape in zip(self.output_names, shapes)}
            io = self.session.io_binding()
            io.bind_input(DENSE_INPUT_KEY, kind, index, np.float32, tuple(x.shape), x.data_ptr())
            for n, t in maps.items():
                io.bind_output(n, kind, index, np.float32, tuple(t.shape), t.data_ptr())
            self.session.run_with_iobinding(io)
        self.last_dense_s = time.perf_counter() - t0  # the session's run (and the copies of a host feed)
        return maps

    @torch.no_grad()
    def __call__(self, batch_dict):
        for m in self.front:
            batch_dict = m(batch_dict)
        maps = self.dense_part(batch_dict[DENSE_INPUT_KEY])
        batch_dict.update(maps)
        head = self.detector.dense_head
        cls, box = head.generate_predicted_boxes(batch_size=batch_dict["batch_size"], cls_preds=maps["cls_preds"],
                                                 box_preds=maps["box_preds"], dir_cls_preds=maps.get("dir_cls_preds"))
        batch_dict.update(batch_cls_preds=cls, batch_box_preds=box, cls_preds_normalized=False)
        return self.detector.post_processing(batch_dict)
