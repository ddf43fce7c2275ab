"""Point feature encoding: selects and orders the per-point features the models see.

Owns :class:`PointFeatureEncoder`, configured by a ``POINT_FEATURE_ENCODING`` section::

    encoding_type: absolute_coordinates_encoding
    used_feature_list: [x, y, z, intensity]   # what the model gets, in this order
    src_feature_list: [x, y, z, intensity]    # columns of the loaded point cloud

``used_feature_list`` must start with x, y, z. ``num_point_features`` is its length.
"""
import numpy as np

from pcdet.config import ConfigError, check_keys

ENCODINGS = ("absolute_coordinates_encoding",)


class PointFeatureEncoder:
    def __init__(self, config, point_cloud_range=None):
        check_keys(config, {"encoding_type", "used_feature_list", "src_feature_list"}, "POINT_FEATURE_ENCODING")
        self.encoding_type = config["encoding_type"]
        if self.encoding_type not in ENCODINGS:
            raise ConfigError(f"POINT_FEATURE_ENCODING.encoding_type: unknown {self.encoding_type!r}; known: {ENCODINGS}")
        self.used_feature_list = list(config["used_feature_list"])
        self.src_feature_list = list(config["src_feature_list"])
        if self.used_feature_list[0:3] != ["x", "y", "z"] or self.src_feature_list[0:3] != ["x", "y", "z"]:
            raise ConfigError("POINT_FEATURE_ENCODING: feature lists must start with x, y, z")
        missing = [f for f in self.used_feature_list if f not in self.src_feature_list]
        if missing:
            raise ConfigError(f"POINT_FEATURE_ENCODING: used features {missing} are not in src_feature_list")
        self.point_cloud_range = point_cloud_range
        self._columns = [self.src_feature_list.index(f) for f in self.used_feature_list]

    @property
    def num_point_features(self):
        return len(self.used_feature_list)

    def forward(self, data_dict):
        """``points`` (N, len(src)) -> (N, len(used)); sets ``use_lead_xyz``."""
        points = data_dict["points"]
        if points.ndim != 2 or points.shape[1] != len(self.src_feature_list):
            raise ValueError(
                f"points have shape {points.shape}, expected (N, {len(self.src_feature_list)}) "
                f"for src_feature_list {self.src_feature_list}"
            )
        data_dict["points"] = np.ascontiguousarray(points[:, self._columns])
        data_dict["use_lead_xyz"] = True
        return data_dict
