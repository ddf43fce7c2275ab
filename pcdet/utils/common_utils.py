"""Small shared helpers: angle wrapping, rotations, seeding, logging."""
import logging
import random

import numpy as np
import torch


def limit_period(val, offset=0.5, period=np.pi):
    """Wrap ``val`` into ``[-offset * period, (1 - offset) * period)``; numpy or torch."""
    if isinstance(val, torch.Tensor):
        return val - torch.floor(val / period + offset) * period
    return val - np.floor(val / period + offset) * period


def rotate_points_along_z(points, angle):
    """Rotate (B, N, 3+C) points by (B,) angles around +z (counter-clockwise); numpy or torch."""
    if isinstance(points, np.ndarray):  # numpy path (data pipeline): no torch round trip
        ang = np.asarray(angle, dtype=np.float64).reshape(-1)
        cosa, sina = np.cos(ang), np.sin(ang)
        rot = np.zeros((len(ang), 3, 3))
        rot[:, 0, 0], rot[:, 0, 1], rot[:, 1, 0], rot[:, 1, 1], rot[:, 2, 2] = cosa, sina, -sina, cosa, 1.0
        out = points.copy()
        out[:, :, 0:3] = np.matmul(points[:, :, 0:3], rot.astype(points.dtype))
        return out
    cosa, sina = torch.cos(angle), torch.sin(angle)
    zeros, ones = angle.new_zeros(points.shape[0]), angle.new_ones(points.shape[0])
    rot = torch.stack((cosa, sina, zeros, -sina, cosa, zeros, zeros, zeros, ones), dim=1).view(-1, 3, 3).to(points.dtype)
    return torch.cat((torch.matmul(points[:, :, 0:3], rot), points[:, :, 3:]), dim=-1)


def set_random_seed(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def create_logger(log_file=None, name="pcdet", level=logging.INFO):
    """A logger writing to the console and, if given, to ``log_file``."""
    logger = logging.getLogger(name)
    logger.setLevel(level)
    logger.propagate = False
    fmt = logging.Formatter("%(asctime)s  %(levelname)5s  %(message)s")
    if not any(isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler) for h in logger.handlers):
        console = logging.StreamHandler()
        console.setFormatter(fmt)
        logger.addHandler(console)
    if log_file is not None:
        fh = logging.FileHandler(filename=str(log_file))
        fh.setFormatter(fmt)
        logger.addHandler(fh)
    return logger
