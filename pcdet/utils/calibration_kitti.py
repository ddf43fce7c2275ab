"""KITTI calibration: reading/writing ``calib/%06d.txt`` and camera <-> LiDAR transforms.

Frames (KITTI convention):
  * LiDAR (velodyne): x forward, y left, z up.
  * rectified camera ("rect"): x right, y down, z forward.
  * image: pixel (u, v) of camera 2 (``P2``).
"""
from pathlib import Path

import numpy as np

CALIB_KEYS = ("P0", "P1", "P2", "P3", "R0_rect", "Tr_velo_to_cam", "Tr_imu_to_velo")
_SHAPES = {"R0_rect": (3, 3)}


class CalibrationError(ValueError):
    """A calibration file is missing, truncated or malformed; the message names the file."""


def read_calib_file(path):
    """Parse a KITTI calib file into ``{key: np.ndarray}`` (P*: 3x4, R0_rect: 3x3, Tr_*: 3x4)."""
    path = Path(path)
    if not path.is_file():
        raise CalibrationError(f"calibration file not found: {path}")
    values = {}
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        key, sep, rest = line.partition(":")
        if not sep:
            raise CalibrationError(f"{path}:{lineno}: expected 'KEY: numbers', got {line[:60]!r}")
        try:
            values[key.strip()] = np.array([float(v) for v in rest.split()], dtype=np.float64)
        except ValueError as err:
            raise CalibrationError(f"{path}:{lineno}: non-numeric value in {key.strip()} ({err})") from None
    out = {}
    for key in ("P2", "R0_rect", "Tr_velo_to_cam"):
        if key not in values:
            raise CalibrationError(f"{path}: missing required key {key!r} (has {sorted(values)})")
    for key, vec in values.items():
        shape = _SHAPES.get(key, (3, 4))
        if vec.size != shape[0] * shape[1]:
            raise CalibrationError(f"{path}: {key} has {vec.size} values, expected {shape[0] * shape[1]}")
        out[key] = vec.reshape(shape)
    return out


def write_calib_file(path, mats):
    """Write ``mats`` (keys of :data:`CALIB_KEYS`) in KITTI's text layout (``%.12e`` values)."""
    lines = []
    for key in CALIB_KEYS:
        if key in mats:
            vals = " ".join("%.12e" % v for v in np.asarray(mats[key], dtype=np.float64).reshape(-1))
            lines.append(f"{key}: {vals}")
    Path(path).write_text("\n".join(lines) + "\n")


class Calibration:
    """Camera-2 / LiDAR transforms of one KITTI frame.

    Built from a calib file path or from a dict of matrices (as returned by :func:`read_calib_file`).
    """

    def __init__(self, calib):
        mats = read_calib_file(calib) if isinstance(calib, (str, Path)) else calib
        self.P2 = np.asarray(mats["P2"], dtype=np.float64).reshape(3, 4)
        self.R0 = np.asarray(mats["R0_rect"], dtype=np.float64).reshape(3, 3)
        self.V2C = np.asarray(mats["Tr_velo_to_cam"], dtype=np.float64).reshape(3, 4)
        # Camera intrinsics of P2 (for stereo-style uses: baseline offsets tx, ty).
        self.cu, self.cv = self.P2[0, 2], self.P2[1, 2]
        self.fu, self.fv = self.P2[0, 0], self.P2[1, 1]
        self.tx = self.P2[0, 3] / (-self.fu)
        self.ty = self.P2[1, 3] / (-self.fv)
        # 4x4 homogeneous LiDAR -> rect transform and its inverse.
        v2c = np.eye(4)
        v2c[:3, :4] = self.V2C
        r0 = np.eye(4)
        r0[:3, :3] = self.R0
        self._lidar_to_rect4 = r0 @ v2c
        self._rect_to_lidar4 = np.linalg.inv(self._lidar_to_rect4)
        self._lidar_to_img = self.P2 @ self._lidar_to_rect4  # (3, 4): one pass from LiDAR to pixels

    def lidar_to_rect(self, pts_lidar):
        """(N, 3) LiDAR points -> (N, 3) rectified camera points."""
        pts = np.asarray(pts_lidar, dtype=np.float64)[:, :3]
        return pts @ self._lidar_to_rect4[:3, :3].T + self._lidar_to_rect4[:3, 3]

    def rect_to_lidar(self, pts_rect):
        """(N, 3) rectified camera points -> (N, 3) LiDAR points."""
        pts = np.asarray(pts_rect, dtype=np.float64)[:, :3]
        return pts @ self._rect_to_lidar4[:3, :3].T + self._rect_to_lidar4[:3, 3]

    def lidar_to_img(self, pts_lidar):
        """(N, 3) LiDAR points -> ((N, 2) pixels, (N,) rect-frame depth); ``rect_to_img(lidar_to_rect(p))``
        in one matrix product."""
        pts = np.asarray(pts_lidar)
        x, y, z = (pts[:, i].astype(np.float64) for i in range(3))
        m = self._lidar_to_img
        u, v, w = (m[r, 0] * x + m[r, 1] * y + m[r, 2] * z + m[r, 3] for r in range(3))  # faster than a thin matmul
        with np.errstate(divide="ignore", invalid="ignore"):
            uv = np.stack([u / w, v / w], axis=1)
        return uv, w - self.P2[2, 3]

    def rect_to_img(self, pts_rect):
        """(N, 3) rect points -> ((N, 2) pixels, (N,) depth in the rect frame)."""
        pts = np.asarray(pts_rect, dtype=np.float64)
        proj = pts @ self.P2[:, :3].T + self.P2[:, 3]
        depth = proj[:, 2] - self.P2[2, 3]
        with np.errstate(divide="ignore", invalid="ignore"):
            uv = proj[:, :2] / proj[:, 2:3]
        return uv, depth

