"""The ``KD`` section of an experiment config: its keys, the teacher's config, the teacher's voxels.

Owns :func:`resolve_teacher_cfg_file` (``KD.TEACHER.CFG_FILE`` -> the teacher's sections),
:func:`finalize_kd_cfg` (checks, and a second voxeliser for a teacher that voxelises differently),
:func:`voxeliser_of` / :func:`voxel_settings_differ` (shared with the wrapper) and
:func:`resolve_ckpt_path`. ``pcdet.train_utils.experiment.load_experiment_cfg`` calls the first
before and the second after the ``--set`` overrides.

A KD config is a student config plus::

    KD:
      TEACHER:                      # the teacher's CLASS_NAMES / DATA_CONFIG / MODEL, e.g. via
        _BASE_CONFIG_: teacher.yaml # _BASE_CONFIG_ (relative to this file) or CFG_FILE (same rule)
        CKPT: null                  # teacher weights; tools/train.py --teacher_ckpt wins
      METHODS:
        - {NAME: PointDistiller, WEIGHT: 2.0, FEATURE: pillar_features, ...}

The teacher runs on the student's batches. When its ``transform_points_to_voxels`` settings
(VOXEL_SIZE, MAX_POINTS_PER_VOXEL, MAX_NUMBER_OF_VOXELS) differ from the student's, a copy of its
voxeliser with ``KEY_SUFFIX: _tea`` is appended to the student's ``DATA_PROCESSOR`` and the
teacher reads ``voxels_tea`` etc. (:mod:`pcdet.kd.keys`); otherwise both share the student's voxels. A different
``POINT_CLOUD_RANGE`` or point encoding is an error (points are cropped and encoded once, for the
student).
"""
import copy
from pathlib import Path

import numpy as np

from pcdet.config import ConfigError, cfg_from_yaml_file, check_keys, merge_dicts, to_easydict, to_plain
from pcdet.kd.keys import TEA
from pcdet.utils.paths import REPO_ROOT

KD_KEYS = {"TEACHER", "METHODS"}
TEACHER_KEYS = {"CFG_FILE", "CKPT", "CLASS_NAMES", "DATA_CONFIG", "MODEL", "OPTIMIZATION"}
TEACHER_SUFFIX = TEA  # the teacher's own voxels: voxels_tea, voxel_coords_tea, voxel_num_points_tea
VOXELISER = "transform_points_to_voxels"


def resolve_teacher_cfg_file(cfg, cfg_file):
    """Load ``KD.TEACHER.CFG_FILE`` (relative to the folder of ``cfg_file``) under the other
    TEACHER keys, which override it. The path is stored resolved. No-op without KD/CFG_FILE."""
    kd = cfg.get("KD", None)
    if kd is None or kd.get("TEACHER", None) is None or not kd.TEACHER.get("CFG_FILE", None):
        return cfg
    path = Path(kd.TEACHER.CFG_FILE)
    if not path.is_absolute():
        path = Path(cfg_file).resolve().parent / path
    if not path.is_file():
        raise ConfigError(f"KD.TEACHER.CFG_FILE: {path} not found (relative paths start at the folder of {cfg_file})")
    loaded = to_plain(cfg_from_yaml_file(path))
    overrides = {k: v for k, v in to_plain(kd.TEACHER).items() if k != "CFG_FILE"}
    merged = merge_dicts(loaded, overrides)
    merged["CFG_FILE"] = str(path.resolve())
    kd.TEACHER = to_easydict(merged)
    return cfg


def voxeliser_of(data_cfg, suffix=""):
    """The ``transform_points_to_voxels`` entry of ``data_cfg.DATA_PROCESSOR`` with ``suffix``."""
    for step in (data_cfg or {}).get("DATA_PROCESSOR", []) or []:
        if step.get("NAME") == VOXELISER and str(step.get("KEY_SUFFIX", "") or "") == suffix:
            return step
    return None


def _per_mode(value):
    if isinstance(value, dict):
        return {k: int(v) for k, v in value.items()}
    return {"train": int(value), "test": int(value)}


def voxel_settings_differ(a, b):
    """Names of the voxeliser settings that differ between entries ``a`` and ``b`` (empty if equal)."""
    diff = []
    if not np.allclose(np.asarray(a["VOXEL_SIZE"], dtype=np.float64), np.asarray(b["VOXEL_SIZE"], dtype=np.float64),
                       rtol=0, atol=1e-9):
        diff.append("VOXEL_SIZE")
    if int(a["MAX_POINTS_PER_VOXEL"]) != int(b["MAX_POINTS_PER_VOXEL"]):
        diff.append("MAX_POINTS_PER_VOXEL")
    if _per_mode(a["MAX_NUMBER_OF_VOXELS"]) != _per_mode(b["MAX_NUMBER_OF_VOXELS"]):
        diff.append("MAX_NUMBER_OF_VOXELS")
    return diff


def _check_same(student, teacher, key, where):
    s, t = student.get(key, None), teacher.get(key, None)
    if t is None:
        return
    if key == "POINT_CLOUD_RANGE":
        same = s is not None and np.allclose(np.asarray(s, dtype=np.float64), np.asarray(t, dtype=np.float64), atol=1e-9)
    else:
        same = to_plain(s) == to_plain(t)
    if not same:
        raise ConfigError(
            f"{where}.{key} = {to_plain(t)} differs from the student's {to_plain(s)}; the teacher runs on the student's "
            f"points and must use the same {key}"
        )


def finalize_kd_cfg(cfg):
    """Check the KD section and give a differently voxelising teacher its own ``_tea`` voxeliser.

    Idempotent: an existing ``_tea`` voxeliser is checked against the teacher's settings.
    """
    kd = cfg.get("KD", None)
    if kd is None:
        return cfg
    check_keys(kd, KD_KEYS, "KD")
    if kd.get("TEACHER", None) is None:
        raise ConfigError("KD.TEACHER is missing (the teacher's config, e.g. via _BASE_CONFIG_ or CFG_FILE)")
    check_keys(kd.TEACHER, TEACHER_KEYS, "KD.TEACHER")
    if kd.TEACHER.get("MODEL", None) is None:
        raise ConfigError("KD.TEACHER.MODEL is missing (give the teacher config via _BASE_CONFIG_ or CFG_FILE)")
    methods = kd.get("METHODS", None)
    if not isinstance(methods, list) or not methods:
        raise ConfigError("KD.METHODS must be a non-empty list of {NAME: ..., WEIGHT: ..., ...}")
    if "CKPT" not in kd.TEACHER:
        kd.TEACHER.CKPT = None
    if kd.TEACHER.get("CLASS_NAMES", None) is not None and list(kd.TEACHER.CLASS_NAMES) != list(cfg.CLASS_NAMES):
        raise ConfigError(f"KD.TEACHER.CLASS_NAMES {list(kd.TEACHER.CLASS_NAMES)} differ from CLASS_NAMES "
                          f"{list(cfg.CLASS_NAMES)}")

    t_data = kd.TEACHER.get("DATA_CONFIG", None)
    if t_data is None:
        return cfg
    s_data = cfg.DATA_CONFIG
    _check_same(s_data, t_data, "POINT_CLOUD_RANGE", "KD.TEACHER.DATA_CONFIG")
    _check_same(s_data, t_data, "POINT_FEATURE_ENCODING", "KD.TEACHER.DATA_CONFIG")
    t_vox = voxeliser_of(t_data)
    if t_vox is None:
        return cfg
    s_vox = voxeliser_of(s_data)
    existing = voxeliser_of(s_data, TEACHER_SUFFIX)
    if existing is not None:
        diff = voxel_settings_differ(existing, t_vox)
        if diff:
            raise ConfigError(f"DATA_CONFIG: the {TEACHER_SUFFIX!r} voxeliser differs from the teacher's in {diff}")
        return cfg
    if s_vox is not None and not voxel_settings_differ(s_vox, t_vox):
        return cfg  # shared voxels
    step = copy.deepcopy(to_plain(t_vox))
    step["KEY_SUFFIX"] = TEACHER_SUFFIX
    s_data.DATA_PROCESSOR = list(s_data.get("DATA_PROCESSOR", []) or []) + [to_easydict(step)]
    return cfg


def resolve_ckpt_path(ckpt):
    """``KD.TEACHER.CKPT``: absolute, or relative to the repository root (like ``DATA_PATH``)."""
    path = Path(ckpt)
    return path if path.is_absolute() else REPO_ROOT / path
