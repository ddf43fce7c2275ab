"""Frame generator: samples a scene, casts the LiDAR sweep and derives KITTI-style labels.

Every frame's randomness comes from ``numpy.random.SeedSequence([seed, frame_index])`` only, so
frames can be generated in any order or in parallel processes with identical results.
"""
import json
from functools import lru_cache
from pathlib import Path

import numpy as np

from pcdet.utils import box_utils
from pcdet.utils.calibration_kitti import Calibration

from . import scene as SC
from . import sensor as S
from .scene import rect_overlap

GENERATOR_VERSION = "1.0"
STATS_FILE = Path(__file__).resolve().parent / "kitti_label_stats.json"
IMAGE_SHAPE = (375, 1242)  # (H, W) of KITTI image_2

# Calibration of a real KITTI frame (object training set, frame 000000).
KITTI_CALIB = {
    "P0": [7.070493e02, 0.0, 6.040814e02, 0.0, 0.0, 7.070493e02, 1.805066e02, 0.0, 0.0, 0.0, 1.0, 0.0],
    "P1": [7.070493e02, 0.0, 6.040814e02, -3.797842e02, 0.0, 7.070493e02, 1.805066e02, 0.0, 0.0, 0.0, 1.0, 0.0],
    "P2": [7.070493e02, 0.0, 6.040814e02, 4.575831e01, 0.0, 7.070493e02, 1.805066e02, -3.454157e-01, 0.0, 0.0, 1.0,
           4.981016e-03],
    "P3": [7.070493e02, 0.0, 6.040814e02, -3.341081e02, 0.0, 7.070493e02, 1.805066e02, 2.330660e00, 0.0, 0.0, 1.0,
           3.201153e-03],
    "R0_rect": [9.999128e-01, 1.009263e-02, -8.511932e-03, -1.012729e-02, 9.999406e-01, -4.037671e-03, 8.470675e-03,
                4.123522e-03, 9.999556e-01],
    "Tr_velo_to_cam": [6.927964e-03, -9.999722e-01, -2.757829e-03, -2.457729e-02, -1.162982e-03, 2.749836e-03,
                       -9.999955e-01, -6.127237e-02, 9.999753e-01, 6.931141e-03, -1.143899e-03, -3.321029e-01],
    "Tr_imu_to_velo": [9.999976e-01, 7.553071e-04, -2.035826e-03, -8.086759e-01, -7.854027e-04, 9.998898e-01,
                       -1.482298e-02, 3.195559e-01, 2.024406e-03, 1.482454e-02, 9.998881e-01, -7.997231e-01],
}

LABEL_CLASSES = ("Tram", "Truck", "Van", "Car", "Misc", "Cyclist", "Pedestrian", "Person_sitting")
DONTCARE_MIX = (("Car", 0.7), ("Van", 0.1), ("Pedestrian", 0.12), ("Cyclist", 0.08))
# Ego vehicle footprint in the LiDAR frame [x, y, half_l, half_w, yaw]: nothing is placed there.
EGO_RECT = np.array([[-0.5, 0.0, 2.6, 1.0, 0.0]])
# Occlusion levels from the fraction of an object's rays blocked by other geometry.
OCCLUSION_BOUNDS = (0.1, 0.5, 0.85)
# Ground materials, indexed by -hit_code - 2: road, sidewalk, terrain, curb.
GROUND_REFL = np.array([0.22, 0.3, 0.35, 0.3])
GROUND_DROP = np.array([0.02, 0.02, 0.03, 0.02])
GROUND_SEM_TABLE = np.array([SC.SEM["road"], SC.SEM["sidewalk"], SC.SEM["terrain"], SC.SEM["sidewalk"]], np.uint16)


def _shadows(boxes):
    """Per LiDAR box: azimuth interval, nearest/farthest ground distance and top z seen from the sensor."""
    corners = box_utils.boxes_to_corners_3d(boxes)
    az = np.arctan2(corners[..., 1], corners[..., 0])
    dist = np.hypot(corners[..., 0], corners[..., 1])
    return np.stack([az.min(1), az.max(1), dist.min(1), dist.max(1), corners[..., 2].max(1)], axis=1)


def _hidden(cand, placed, samples=24, min_visible=0.2):
    """Per candidate: True when nearer, taller-looking placed objects cover > 1 - min_visible of its azimuths."""
    out = np.zeros(len(cand), bool)
    if len(placed) == 0:
        return out
    elev_occ = np.arctan2(placed[:, 4], placed[:, 3])
    for i, (az_lo, az_hi, d_min, _, top) in enumerate(cand):
        occ = placed[(placed[:, 2] < d_min) & (elev_occ >= np.arctan2(top, d_min))]
        if len(occ) == 0:
            continue
        a = np.linspace(az_lo, az_hi, samples)
        covered = ((a[:, None] >= occ[None, :, 0]) & (a[:, None] <= occ[None, :, 1])).any(axis=1)
        out[i] = covered.mean() > 1.0 - min_visible
    return out


def _draw(rng, cdf, edges, n):
    """n values from a histogram given by its CDF: a bin by inverse CDF, then uniform inside it."""
    b = np.minimum(np.searchsorted(cdf, rng.random(n), side="right"), len(cdf) - 1)
    return rng.uniform(edges[b], edges[b + 1])


def calib_matrices():
    return {k: np.array(v, np.float64).reshape((3, 3) if k == "R0_rect" else (3, 4)) for k, v in KITTI_CALIB.items()}


@lru_cache(maxsize=1)
def default_calibration():
    return Calibration(calib_matrices())


@lru_cache(maxsize=4)
def load_stats(path=str(STATS_FILE)):
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"label statistics file not found: {path} (run python -m pcdet.datasets.synthetic.derive_stats)")
    return json.loads(path.read_text())


def frame_rng(seed, index):
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(index)]))


def _sample_dims(rng, entry):
    """(h, w, l) resampled from the class's stored real size sample (mean-corrected, see derive_stats)."""
    samples = entry["hwl_samples"]
    return np.array(samples[int(rng.integers(len(samples)))], np.float64)


# Per-class additive-recurrence constants (quadratic irrationals with small continued-fraction terms).
COUNT_ALPHA = {"Car": 0.6180339887, "Pedestrian": 0.7320508076, "Cyclist": 0.6457513111, "DontCare": 0.4142135624,
               "Van": 0.2360679775, "Truck": 0.8284271247, "Tram": 0.4641016151, "Misc": 0.3166247904,
               "Person_sitting": 0.1622776602}
COUNT_CLASSES = LABEL_CLASSES + ("DontCare",)


def _count_offsets(seed):
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(2,))).random(len(COUNT_CLASSES))


def count_table(seed, n_frames, stats):
    """(n_frames, n_classes) objects per class for frames 0..n_frames-1 (columns: COUNT_CLASSES).

    Frame ``i`` uses the inverse CDF of the real count histogram at ``frac(offset + (i + 1) * alpha)``:
    a function of (seed, i) only, yet consecutive frames cover the count distribution evenly, so
    per-class frequencies over a few hundred frames match the real ones far better than independent draws.
    """
    offset = _count_offsets(seed)
    i = np.arange(int(n_frames), dtype=np.float64)[:, None] + 1.0
    u = np.mod(offset[None] + i * np.array([COUNT_ALPHA[c] for c in COUNT_CLASSES])[None], 1.0)
    out = np.zeros(u.shape, np.int64)
    for k, name in enumerate(COUNT_CLASSES):
        hist = np.asarray(stats["classes"][name]["count_hist"], np.float64)
        cdf = np.cumsum(hist) / hist.sum()
        out[:, k] = np.minimum(np.searchsorted(cdf, u[:, k], side="right"), len(hist) - 1)
    return out


def frame_counts(seed, index, stats):
    """Objects per class in frame ``index`` (dict; see :func:`count_table`)."""
    row = count_table(seed, int(index) + 1, stats)[-1]
    return {name: int(row[k]) for k, name in enumerate(COUNT_CLASSES)}


def balanced_order(samples, rng):
    """Order of ``samples`` (N, D) whose running means approach the overall mean as fast as possible.

    Starts at a random sample, then greedily adds the sample that brings the running mean (in units
    of the per-dimension standard deviation) closest to the overall mean. Any prefix of the order is
    thus a stratified draw from the sample, and the full cycle reproduces it exactly.
    """
    x = np.asarray(samples, np.float64)
    x = (x - x.mean(axis=0)) / np.maximum(x.std(axis=0), 1e-9)
    n = len(x)
    left = np.ones(n, bool)
    order = [int(rng.integers(n))]
    left[order[0]] = False
    total = x[order[0]].copy()
    for _ in range(n - 1):
        cand = np.nonzero(left)[0]
        k = cand[np.argmin(((total[None] + x[cand]) ** 2).sum(axis=1))]
        order.append(int(k))
        left[k] = False
        total += x[k]
    return np.array(order)


class FrameGenerator:
    """Generates frames ``index -> dict`` for one seed (see :meth:`generate`)."""

    def __init__(self, seed=0, stats=None, lidar=None, calib=None):
        self.seed = int(seed)
        self.stats = stats if stats is not None else load_stats()
        self.lidar = lidar or S.LidarModel()
        self.calib = calib or default_calibration()
        self.calib_mats = calib_matrices()
        cls = self.stats["classes"]
        self.depth_edges = np.array(self.stats["depth_edges"])
        self.angle_edges = np.deg2rad(np.array(self.stats["angle_edges_deg"]))
        self.ry_edges = np.deg2rad(np.array(self.stats["ry_edges_deg"]))
        self.cls_stats = cls
        # Stratified per-object draws: the k-th object of a class over the whole dataset (k counted
        # with count_table, hence still a function of (seed, frame index)) takes the k-th size of a
        # balanced order of the real size sample and a low-discrepancy depth quantile.
        srng = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(3,)))
        self.dim_order = {c: balanced_order(cls[c]["hwl_samples"], srng) for c in LABEL_CLASSES}
        self.depth_offset = dict(zip(LABEL_CLASSES, srng.random(len(LABEL_CLASSES))))
        self.depth_cdf = {}
        for c in LABEL_CLASSES:
            hist = np.asarray(cls[c]["depth_hist"], np.float64)
            self.depth_cdf[c] = np.cumsum(hist) / hist.sum()
        self._hist_cdf = {}
        for c in LABEL_CLASSES:
            self._hist_cdf[c] = {k: np.cumsum(cls[c][k + "_hist"]) / np.sum(cls[c][k + "_hist"])
                                 for k in ("depth", "angle", "ry")}
        self._counts = np.zeros((0, len(COUNT_CLASSES)), np.int64)
        self._cum = np.zeros((1, len(COUNT_CLASSES)), np.int64)

    def counts(self, index):
        """(counts of frame ``index``, objects of each class in frames before it), as dicts."""
        if index >= len(self._counts):
            self._counts = count_table(self.seed, max(2 * index + 1, 256), self.stats)
            self._cum = np.concatenate([np.zeros((1, len(COUNT_CLASSES)), np.int64), np.cumsum(self._counts, axis=0)])
        now, before = self._counts[index], self._cum[index]
        return ({c: int(now[k]) for k, c in enumerate(COUNT_CLASSES)},
                {c: int(before[k]) for k, c in enumerate(COUNT_CLASSES)})

    def _object_draw(self, rng, name, k):
        """Size (h, w, l) and camera depth of the k-th object of class ``name`` in the dataset."""
        entry = self.cls_stats[name]
        order = self.dim_order[name]
        dims = np.array(entry["hwl_samples"][order[k % len(order)]], np.float64)
        u = np.mod(self.depth_offset[name] + k * 0.6180339887498949, 1.0)
        b = min(int(np.searchsorted(self.depth_cdf[name], u, side="right")), len(self.depth_cdf[name]) - 1)
        depth = rng.uniform(self.depth_edges[b], self.depth_edges[b + 1])
        return dims, depth

    # ------------------------------------------------------------------------------------------
    def _sample_objects(self, rng, ground, counts, before):
        """Objects to place: list of (class, LiDAR box (7,), dontcare flag), plus footprints (N, 5).

        Sizes and depths are drawn first; objects are then placed nearest first, each at a viewing
        angle / heading drawn from the real statistics, rejecting positions that collide, that fall
        outside camera 2's image, or that nearer objects would hide completely.
        """
        todo = []
        for name in LABEL_CLASSES:
            entry = self.cls_stats[name]
            for j in range(counts[name]):
                dims, depth = self._object_draw(rng, name, before[name] + j)
                todo.append((name, dims, depth, False))
        names, probs = zip(*DONTCARE_MIX)
        for _ in range(counts["DontCare"]):
            name = names[rng.choice(len(names), p=probs)]
            todo.append((name, _sample_dims(rng, self.cls_stats[name]), rng.uniform(35.0, 80.0), True))
        todo.sort(key=lambda o: o[2])
        objs, rects = [], [EGO_RECT[0]]
        shadows = np.zeros((0, 5))  # (az_lo, az_hi, min_dist, max_dist, top_z) of placed objects
        cam_y = self.calib.lidar_to_rect(np.array([[0.0, 0.0, -S.MOUNT_HEIGHT]]))[0, 1]
        n_try = 16
        for name, (h, w, l), depth, dontcare in todo:
            entry = self._hist_cdf[name]
            # All candidate positions at once: the drawn depth first, then fresh depths.
            z = np.full(n_try, depth)
            if dontcare:
                z[n_try // 2:] = rng.uniform(35.0, 80.0, n_try - n_try // 2)
            else:
                z[n_try // 2:] = _draw(rng, entry["depth"], self.depth_edges, n_try - n_try // 2)
            ang = _draw(rng, entry["angle"], self.angle_edges, n_try)
            ry = _draw(rng, entry["ry"], self.ry_edges, n_try)
            p = self.calib.rect_to_lidar(np.stack([z * np.tan(ang), np.full(n_try, cam_y), z], axis=1))
            heading = -(ry + np.pi / 2)
            cand = np.stack([p[:, 0], p[:, 1], np.full(n_try, l / 2), np.full(n_try, w / 2), heading], axis=1)
            ok = ~rect_overlap(cand, np.array(rects), margin=0.25).any(axis=1)
            boxes = np.stack([p[:, 0], p[:, 1], ground.height(p[:, 0], p[:, 1]) + h / 2, np.full(n_try, l),
                              np.full(n_try, w), np.full(n_try, h), heading], axis=1)
            ok &= self._in_image(boxes)
            if not ok.any():
                continue
            shadow = _shadows(boxes)
            ok &= ~_hidden(shadow, shadows)
            if not ok.any():
                continue
            k = int(np.argmax(ok))
            rects.append(cand[k])
            shadows = np.concatenate([shadows, shadow[k:k + 1]])
            objs.append((name, boxes[k], dontcare))
        return objs, np.array(rects[1:]).reshape(-1, 5)

    def _in_image(self, boxes):
        """Per LiDAR box: all corners in front of camera 2 and > 5 % of its projected 2D box inside the image."""
        cam = box_utils.boxes3d_lidar_to_kitti_camera(boxes, self.calib)
        corners = box_utils.boxes3d_to_corners3d_kitti_camera(cam)
        uv, depth = self.calib.rect_to_img(corners.reshape(-1, 3))
        uv, depth = uv.reshape(-1, 8, 2), depth.reshape(-1, 8)
        lo, hi = uv.min(axis=1), uv.max(axis=1)
        H, W = IMAGE_SHAPE
        inter = np.clip(np.minimum(hi[:, 0], W - 1) - np.maximum(lo[:, 0], 0), 0, None) * np.clip(
            np.minimum(hi[:, 1], H - 1) - np.maximum(lo[:, 1], 0), 0, None)
        area = np.maximum((hi[:, 0] - lo[:, 0]) * (hi[:, 1] - lo[:, 1]), 1e-9)
        return (depth.min(axis=1) >= 0.1) & (inter / area > 0.05)

    def _background_objects(self, rng, ground, rects):
        """Unlabelled vehicles and people behind the sensor (outside the camera's view)."""
        out = []
        rects = [EGO_RECT[0]] + list(rects)
        for _ in range(int(rng.poisson(5.0))):
            name = rng.choice(["Car", "Car", "Car", "Van", "Pedestrian", "Cyclist", "Truck"])
            entry = self.cls_stats[name]
            h, w, l = _sample_dims(rng, entry)
            for _ in range(6):
                u = rng.uniform(-60, -4)
                v = rng.uniform(-ground.road_half - ground.sidewalk, ground.road_half + ground.sidewalk)
                x, y = ground.from_road_frame(u, v)
                heading = ground.road_yaw + (0.0 if rng.random() < 0.5 else np.pi) + rng.normal(0, 0.05)
                rect = np.array([x, y, l / 2, w / 2, heading])
                if x > -3.0 or rect_overlap(rect, np.array(rects), margin=0.3).any():
                    continue
                rects.append(rect)
                out.append((name, np.array([x, y, float(ground.height(x, y)) + h / 2, l, w, h, heading])))
                break
        return out, np.array(rects[1:]).reshape(-1, 5)

    # ------------------------------------------------------------------------------------------
    def generate(self, index):
        """Frame ``index`` as a dict: ``points`` (N, 4) float32 (x, y, z, intensity; LiDAR frame),
        ``semantic`` / ``instance`` (N,) uint16 per point, ``labels`` (list of dicts with the KITTI
        fields plus ``lidar_box``, ``visible_rays``, ``blocked_fraction``), ``calib`` (matrices)."""
        rng = frame_rng(self.seed, index)
        ground = SC.Ground(rng)
        objs, obj_rects = self._sample_objects(rng, ground, *self.counts(index))
        bg, all_rects = self._background_objects(rng, ground, obj_rects)
        clutter, clutter_rects = SC.static_clutter(rng, ground)

        builder = SC.SceneBuilder()
        # Static clutter that collides with an object, the ego car, or (for buildings) stands in
        # the line of sight to a labelled object is removed.
        keep = np.ones(len(clutter), bool)
        if len(clutter):
            blockers = np.concatenate([EGO_RECT, all_rects]) if len(all_rects) else EGO_RECT
            keep &= ~rect_overlap(clutter_rects, blockers, margin=0.3).any(axis=1)
            if len(obj_rects):
                samples = np.linspace(0.15, 0.95, 12)[:, None, None] * obj_rects[None, :, :2]
                sight = np.concatenate([samples.reshape(-1, 2), np.zeros((samples.shape[0] * samples.shape[1], 3))], 1)
                sight[:, 2:4] = 0.05
                is_building = np.array([c[-1] == SC.SEM["building"] for c in clutter])
                keep &= ~(is_building & rect_overlap(clutter_rects, sight).any(axis=1))
        for k in np.nonzero(keep)[0]:
            kind, c, half, yaw, refl, drop, sem = clutter[k]
            zg = float(ground.height(c[0], c[1]))
            builder.add(kind, (c[0], c[1], zg + c[2]), half, yaw, refl, drop, sem)

        boxes, names, dontcare = [], [], []
        for i, (name, box, dc) in enumerate(objs):
            parts = SC.PART_BUILDERS[name](box[3], box[4], box[5], rng)
            builder.add_object(parts, box, inst=i + 1, obj=i)
            boxes.append(box)
            names.append(name)
            dontcare.append(dc)
        for j, (name, box) in enumerate(bg):
            parts = SC.PART_BUILDERS[name](box[3], box[4], box[5], rng)
            builder.add_object(parts, box, inst=len(objs) + j + 1, obj=-1)
        prims, sem, inst, prim_obj = builder.finish()

        # Ray casting and return model.
        start, items, near, el_lo, el_hi = S.build_sectors(prims)
        lid = self.lidar
        key = np.uint64(rng.integers(0, 2 ** 63, dtype=np.int64))
        wave = np.array([ground.wave_amp, ground.wave_k[0], ground.wave_k[1], ground.wave_phase[0], ground.wave_phase[1]])
        xyzi, keep, p_sem, p_inst, hit, through = S.cast_sweep(
            lid.dirs, lid.ray_sector, lid.elev, ground.params(), wave, prims, prim_obj, sem, inst, len(objs), start,
            items, near, el_lo, el_hi, GROUND_REFL, GROUND_DROP, GROUND_SEM_TABLE, SC.SEM["lane-marking"], key,
            S.MAX_RANGE)
        through = through.sum(axis=0)[: len(objs)]
        hit_obj = prim_obj[hit[hit >= 0]]
        visible = np.bincount(hit_obj[hit_obj >= 0], minlength=len(objs))[: len(objs)]
        keep = keep.reshape(-1)
        points, p_sem, p_inst = xyzi.reshape(-1, 4)[keep], p_sem.reshape(-1)[keep], p_inst.reshape(-1)[keep]
        labels = self._labels(np.array(boxes).reshape(-1, 7), names, dontcare, visible, through)
        return {
            "index": int(index), "points": points, "semantic": p_sem, "instance": p_inst, "labels": labels,
            "calib": self.calib_mats,
        }

    # ------------------------------------------------------------------------------------------
    def _labels(self, boxes, names, dontcare, visible, through):
        """KITTI label dicts of the objects seen by camera 2 (see README for the rules)."""
        if len(boxes) == 0:
            return []
        cam = box_utils.boxes3d_lidar_to_kitti_camera(boxes, self.calib)
        corners = box_utils.boxes3d_to_corners3d_kitti_camera(cam)
        uv, depth = self.calib.rect_to_img(corners.reshape(-1, 3))
        uv, depth = uv.reshape(-1, 8, 2), depth.reshape(-1, 8)
        raw = np.concatenate([uv.min(axis=1), uv.max(axis=1)], axis=1)
        clipped = box_utils.boxes3d_kitti_camera_to_imageboxes(cam, self.calib, image_shape=IMAGE_SHAPE)
        H, W = IMAGE_SHAPE
        area_raw = np.maximum(raw[:, 2] - raw[:, 0], 1e-9) * np.maximum(raw[:, 3] - raw[:, 1], 1e-9)
        ix = np.clip(np.minimum(raw[:, 2], W - 1) - np.maximum(raw[:, 0], 0), 0, None)
        iy = np.clip(np.minimum(raw[:, 3], H - 1) - np.maximum(raw[:, 1], 0), 0, None)
        trunc = 1.0 - ix * iy / area_raw
        labels = []
        for i in range(len(boxes)):
            if depth[i].min() < 0.1 or trunc[i] >= 0.99 or visible[i] == 0:
                continue
            if clipped[i, 2] - clipped[i, 0] < 1.0 or clipped[i, 3] - clipped[i, 1] < 1.0:
                continue
            if dontcare[i]:
                labels.append({"name": "DontCare", "truncated": -1.0, "occluded": -1, "alpha": -10.0,
                               "bbox": clipped[i].tolist(), "hwl": (-1.0, -1.0, -1.0), "loc": (-1000.0, -1000.0, -1000.0),
                               "ry": -10.0, "lidar_box": None})
                continue
            blocked = 1.0 - visible[i] / max(through[i], visible[i], 1)
            occ = int(np.searchsorted(OCCLUSION_BOUNDS, blocked, side="right"))
            x, y, z, l, h, w, ry = cam[i]
            ry = float(np.arctan2(np.sin(ry), np.cos(ry)))
            alpha = ry - np.arctan2(x, z)
            alpha = float(np.arctan2(np.sin(alpha), np.cos(alpha)))
            labels.append({"name": names[i], "truncated": float(trunc[i]), "occluded": occ, "alpha": alpha,
                           "bbox": clipped[i].tolist(), "hwl": (h, w, l), "loc": (x, y, z), "ry": ry,
                           "lidar_box": boxes[i].tolist(), "visible_rays": int(visible[i]),
                           "blocked_fraction": float(blocked)})
        return labels

