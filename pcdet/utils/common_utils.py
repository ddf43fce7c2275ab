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
    is_numpy = isinstance(points, np.ndarray)
    pts = torch.from_numpy(points) if is_numpy else points
    ang = torch.from_numpy(np.asarray(angle)) if is_numpy else angle
    cosa, sina = torch.cos(ang), torch.sin(ang)
    zeros, ones = ang.new_zeros(pts.shape[0]), ang.new_ones(pts.shape[0])
    rot = torch.stack((cosa, sina, zeros, -sina, cosa, zeros, zeros, zeros, ones), dim=1).view(-1, 3, 3).to(pts.dtype)
    out = torch.cat((torch.matmul(pts[:, :, 0:3], rot), pts[:, :, 3:]), dim=-1)
    return out.numpy() if is_numpy else out


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
