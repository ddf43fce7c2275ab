"""Dataset writers (registered in :data:`pcdet.datasets.registries.DATASET_WRITERS` by format name)
and the output-folder manifest checks.

``kitti`` (the KITTI object layout: boxes) and ``semantickitti`` (the SemanticKITTI layout:
per-point semantic and instance labels, which every frame carries) are registered; another layout
is added with :func:`register_writer`.

Output-folder rules (see :func:`check_output_dir`): a folder that holds our manifest with the same
parameters is regenerated in place (same bytes, since generation is deterministic); a manifest with
other parameters, or dataset files without our manifest, raise :class:`OutputDirError`.
"""
import json
from pathlib import Path

import numpy as np

from pcdet.datasets.registries import DATASET_WRITERS
from pcdet.utils.calibration_kitti import write_calib_file
from pcdet.utils.object3d_kitti import format_label_line

MANIFEST_NAME = "synthetic_dataset.json"


class OutputDirError(ValueError):
    """The output folder holds a different dataset; the message names the path."""


def register_writer(name):
    """Class decorator: register a writer for ``--format name`` (its ``format_name``)."""
    def deco(cls):
        cls.format_name = name
        return DATASET_WRITERS.register(name)(cls)
    return deco


def get_writer(name, out_dir):
    return DATASET_WRITERS.get(name, "--format")(out_dir)


def read_manifest(out_dir):
    path = Path(out_dir) / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise OutputDirError(f"{path}: unreadable manifest ({err}); refusing to write into {out_dir}") from None


MANIFEST_KEYS = ("generator_version", "format", "seed", "frames", "val_fraction")


def check_output_dir(out_dir, manifest, foreign_entries):
    """Raise :class:`OutputDirError` unless ``out_dir`` is new, empty of dataset files, or ours with equal parameters."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputDirError(f"output path exists and is not a folder: {out_dir}")
    old = read_manifest(out_dir)
    if old is not None:
        diff = {k: (old.get(k), manifest[k]) for k in MANIFEST_KEYS if old.get(k) != manifest[k]}
        if diff:
            what = ", ".join(f"{k}: existing {a!r} vs requested {b!r}" for k, (a, b) in diff.items())
            raise OutputDirError(f"{out_dir} already holds a different synthetic dataset ({what}); "
                                 "choose another --out or delete the folder")
        return
    present = [name for name in foreign_entries if (out_dir / name).exists()]
    if present:
        raise OutputDirError(f"{out_dir} already holds dataset files ({', '.join(present)}) without a "
                             f"{MANIFEST_NAME} manifest; refusing to overwrite them")


@register_writer("kitti")
class KittiWriter:
    """KITTI object layout: training/{velodyne,label_2,calib}, ImageSets/{train,val}.txt."""

    foreign_entries = ("training", "testing", "ImageSets")

    def __init__(self, out_dir):
        self.out = Path(out_dir)

    def prepare(self, manifest):
        check_output_dir(self.out, manifest, self.foreign_entries)
        for sub in ("velodyne", "label_2", "calib"):
            (self.out / "training" / sub).mkdir(parents=True, exist_ok=True)
        (self.out / "ImageSets").mkdir(parents=True, exist_ok=True)
        self._write_manifest(dict(manifest, complete=False))

    def write_frame(self, frame):
        idx = "%06d" % frame["index"]
        root = self.out / "training"
        np.ascontiguousarray(frame["points"], dtype=np.float32).tofile(root / "velodyne" / f"{idx}.bin")
        lines = [format_label_line(lb["name"], lb["truncated"], lb["occluded"], lb["alpha"], lb["bbox"], lb["hwl"],
                                   lb["loc"], lb["ry"]) for lb in frame["labels"]]
        (root / "label_2" / f"{idx}.txt").write_text("".join(line + "\n" for line in lines))
        write_calib_file(root / "calib" / f"{idx}.txt", frame["calib"])

    def finalize(self, manifest, train_ids, val_ids):
        for name, ids in (("train", train_ids), ("val", val_ids)):
            (self.out / "ImageSets" / f"{name}.txt").write_text("".join("%06d\n" % i for i in ids))
        self._write_manifest(dict(manifest, complete=True))

    def _write_manifest(self, manifest):
        (self.out / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")


#: where the embedded SemanticKITTI writer puts the train and val frames (one sequence each)
SEMANTICKITTI_SEQUENCES = {"train": "00", "val": "08"}


@register_writer("semantickitti")
class SemanticKittiWriter:
    """SemanticKITTI layout: ``sequences/00`` holds the train frames and ``sequences/08`` the val
    frames (the official val sequence), each ``velodyne/FFFFFF.bin`` (float32 x, y, z, remission) +
    ``labels/FFFFFF.label`` (uint32: raw SemanticKITTI id | instance << 16), numbered 0.. in frame
    order within its sequence; ``frames.json`` maps every frame index to its ``NN/FFFFFF``."""

    foreign_entries = ("sequences",)

    def __init__(self, out_dir):
        self.out = Path(out_dir)
        self._names = None

    def _frame_names(self, manifest):
        from .build import split_ids

        train, val = split_ids(manifest["frames"], manifest["seed"], manifest["val_fraction"])
        names = {}
        for split, ids in (("train", train), ("val", val)):
            for k, i in enumerate(ids):
                names[i] = (SEMANTICKITTI_SEQUENCES[split], "%06d" % k)
        return names

    def prepare(self, manifest):
        check_output_dir(self.out, manifest, self.foreign_entries)
        for seq in SEMANTICKITTI_SEQUENCES.values():
            for sub in ("velodyne", "labels"):
                (self.out / "sequences" / seq / sub).mkdir(parents=True, exist_ok=True)
        self._write_manifest(dict(manifest, complete=False))

    def write_frame(self, frame):
        from pcdet.datasets.semantickitti.label_map import write_label_file

        if self._names is None:
            self._names = self._frame_names(read_manifest(self.out))
        seq, scan = self._names[frame["index"]]
        root = self.out / "sequences" / seq
        np.ascontiguousarray(frame["points"], dtype=np.float32).tofile(root / "velodyne" / f"{scan}.bin")
        write_label_file(root / "labels" / f"{scan}.label", frame["semantic"], frame["instance"])

    def finalize(self, manifest, train_ids, val_ids):
        names = self._frame_names(manifest)
        (self.out / "frames.json").write_text(json.dumps({str(i): "/".join(names[i]) for i in sorted(names)},
                                                         indent=0) + "\n")
        self._write_manifest(dict(manifest, complete=True))

    def _write_manifest(self, manifest):
        (self.out / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
