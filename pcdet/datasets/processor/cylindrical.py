"""Cylindrical partition of a point cloud (Cylinder3D's voxelisation), as a ``DATA_PROCESSOR`` step.

Owns :func:`cylindrical_partition` and the step ``transform_points_to_cylinder_grid`` (registered in
:data:`pcdet.datasets.registries.PROCESSORS`). It follows Cylinder3D (xinge008/Cylinder3D,
``dataloader/dataset_semantickitti.py``, class ``cylinder_dataset`` with ``fixed_volume_space``):

* polar coordinates ``(rho, phi, z)`` with ``rho = sqrt(x^2 + y^2)``, ``phi = atan2(y, x)``;
* ``intervals = (MAX_VOLUME - MIN_VOLUME) / (GRID_SIZE - 1)``;
* ``grid_ind = floor((clip(polar, MIN_VOLUME, MAX_VOLUME) - MIN_VOLUME) / intervals)``: a point outside
  the volume is **clipped into the border cell**, never dropped (so every point gets a prediction);
* the 9 point features ``[rho - rho_c, phi - phi_c, z - z_c, rho, phi, z, x, y, intensity]`` with the
  cell centre ``c = (grid_ind + 0.5) * intervals + MIN_VOLUME`` (unclipped polar coordinates).

Keys: ``GRID_SIZE`` (rho, phi, z cells; default 480, 360, 32), ``MIN_VOLUME`` (default
``[0, -pi, -4]``), ``MAX_VOLUME`` (default ``[50, pi, 2]``). Writes two point-aligned keys (collated
by concatenation): ``point_grid_ind`` (N, 3) int32 ``(rho, phi, z)`` cell of each point and
``point_cyl_features`` (N, 9) float32. The voxels themselves (unique cells per sample, per-voxel max
pooling) are formed by the model (:mod:`pcdet.models.backbones_3d.vfe.cylinder_vfe`), since they
depend on learned point features. Needs ``points`` with x, y, z, intensity in columns 0..3.
"""
import numpy as np

from pcdet.config import check_keys
from pcdet.datasets.data_contract import register_collate_rule, register_point_key
from pcdet.datasets.registries import PROCESSORS

CYLINDER_KEYS = ("point_grid_ind", "point_cyl_features")
for _key in CYLINDER_KEYS:
    register_point_key(_key)
    register_collate_rule(_key, "concat")

DEFAULT_GRID = (480, 360, 32)
DEFAULT_MIN = (0.0, -np.pi, -4.0)
DEFAULT_MAX = (50.0, np.pi, 2.0)


def cart2polar(xyz):
    """(N, 3) x, y, z -> (N, 3) rho, phi, z."""
    rho = np.sqrt(xyz[:, 0] ** 2 + xyz[:, 1] ** 2)
    phi = np.arctan2(xyz[:, 1], xyz[:, 0])
    return np.stack([rho, phi, xyz[:, 2]], axis=1)


def cylindrical_partition(points, grid_size, min_volume, max_volume):
    """``(grid_ind (N, 3) int32, features (N, 9) float32)`` of ``points`` (N, >= 4); see the module docstring."""
    grid = np.asarray(grid_size, dtype=np.float64)
    lo, hi = np.asarray(min_volume, dtype=np.float64), np.asarray(max_volume, dtype=np.float64)
    intervals = (hi - lo) / (grid - 1)
    xyz = points[:, 0:3]
    polar = cart2polar(xyz)  # in the points' dtype (float32), as the original; the rest in float64
    grid_ind = np.floor((np.clip(polar, lo, hi) - lo) / intervals).astype(np.int32)
    centres = (grid_ind.astype(np.float64) + 0.5) * intervals + lo
    feats = np.concatenate([polar - centres, polar, xyz[:, 0:2], points[:, 3:4]], axis=1)
    return grid_ind, feats.astype(np.float32)


@PROCESSORS.register("transform_points_to_cylinder_grid")
class TransformPointsToCylinderGrid:
    allowed = {"NAME", "GRID_SIZE", "MIN_VOLUME", "MAX_VOLUME"}
    OUTPUT_KEYS = CYLINDER_KEYS
    #: the DataProcessor takes grid_size / voxel_size (the model's input geometry) from this step
    DEFINES_GRID = True
    suffix = ""

    def __init__(self, cfg, where, processor):
        check_keys(cfg, self.allowed, where)
        self.grid_size = np.array(cfg.get("GRID_SIZE", DEFAULT_GRID), dtype=np.int64)
        self.min_volume = np.array(cfg.get("MIN_VOLUME", DEFAULT_MIN), dtype=np.float64)
        self.max_volume = np.array(cfg.get("MAX_VOLUME", DEFAULT_MAX), dtype=np.float64)
        if self.grid_size.shape != (3,) or (self.grid_size < 2).any():
            raise ValueError(f"{where}: GRID_SIZE must be three cell counts >= 2, got {cfg.get('GRID_SIZE')}")
        if (self.max_volume <= self.min_volume).any():
            raise ValueError(f"{where}: MAX_VOLUME must exceed MIN_VOLUME per axis")
        if processor.num_point_features < 4:
            raise ValueError(f"{where}: needs x, y, z, intensity point features, got {processor.num_point_features}")
        #: cell size (rho m, phi rad, z m)
        self.voxel_size = (self.max_volume - self.min_volume) / (self.grid_size - 1)

    def settings(self):
        return {"grid_size": self.grid_size.tolist(), "min_volume": self.min_volume.tolist(),
                "max_volume": self.max_volume.tolist()}

    def __call__(self, data_dict):
        data_dict["point_grid_ind"], data_dict["point_cyl_features"] = cylindrical_partition(
            data_dict["points"], self.grid_size, self.min_volume, self.max_volume)
        return data_dict
