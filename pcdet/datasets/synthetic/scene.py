"""Scene model of the synthetic dataset: ground/road layout, static clutter and multi-part objects.

A scene is a list of primitives (see :mod:`.sensor` for the table layout) with a semantic id
(SemanticKITTI numbering), an instance id and, for objects that may be labelled, an object index.
Objects are described by their enclosing LiDAR box ``[x, y, z, l, w, h, heading]`` and built from
several parts that fill that box (car: wheels, lower body, cabin; pedestrian: legs, arms, torso,
head; cyclist: bicycle wheels and frame plus a rider, ...).
"""
import numpy as np

from . import sensor as S

# SemanticKITTI label ids.
SEM = {
    "unlabeled": 0, "car": 10, "bicycle": 11, "truck": 18, "other-vehicle": 20, "person": 30,
    "bicyclist": 31, "road": 40, "sidewalk": 48, "building": 50, "fence": 51, "lane-marking": 60,
    "vegetation": 70, "trunk": 71, "terrain": 72, "pole": 80, "traffic-sign": 81,
}


class SceneBuilder:
    """Accumulates primitives; ``finish()`` returns the arrays the ray caster needs."""

    def __init__(self):
        self.rows, self.sem, self.inst, self.obj = [], [], [], []

    def add(self, kind, c, half, yaw, refl, drop, sem, inst=0, obj=-1):
        self.rows.append((c[0], c[1], c[2], half[0], half[1], half[2], np.cos(yaw), np.sin(yaw), kind, refl, drop))
        self.sem.append(sem)
        self.inst.append(inst)
        self.obj.append(obj)

    def add_object(self, parts, box, inst, obj):
        """Place local ``parts`` (kind, u, v, z_bottom, z_top, hu, hv, refl, drop, sem) in ``box``."""
        x, y, zb, yaw = box[0], box[1], box[2] - box[5] / 2.0, box[6]
        c, s = np.cos(yaw), np.sin(yaw)
        for kind, u, v, z0, z1, hu, hv, refl, drop, sem in parts:
            self.add(kind, (x + c * u - s * v, y + s * u + c * v, zb + 0.5 * (z0 + z1)), (hu, hv, 0.5 * (z1 - z0)),
                     yaw, refl, drop, sem, inst, obj)

    def finish(self):
        if not self.rows:
            return np.zeros((0, S.N_COLS)), np.zeros(0, np.uint16), np.zeros(0, np.uint16), np.zeros(0, np.int32)
        return (np.array(self.rows, dtype=np.float64), np.array(self.sem, np.uint16), np.array(self.inst, np.uint16),
                np.array(self.obj, np.int32))


# ----------------------------------------------------------------------------------------------
# Ground
# ----------------------------------------------------------------------------------------------
class Ground:
    """Sloped road plane, sidewalks/terrain raised by a curb, with small random undulation."""

    def __init__(self, rng):
        self.g0 = -S.MOUNT_HEIGHT
        self.sx, self.sy = rng.normal(0.0, 0.008, size=2)
        self.road_yaw = rng.normal(0.0, np.deg2rad(4.0))
        self.road_half = rng.uniform(3.5, 8.0)
        self.road_offset = rng.uniform(-0.4, 0.4) * self.road_half
        self.curb = rng.uniform(0.08, 0.16)
        self.sidewalk = rng.uniform(1.5, 4.0)
        self.wave_amp = rng.uniform(0.0, 0.04)
        self.wave_k = rng.uniform(0.05, 0.2, size=2)
        self.wave_phase = rng.uniform(0, 2 * np.pi, size=2)

    def params(self):
        return np.array([self.g0, self.sx, self.sy, np.cos(self.road_yaw), np.sin(self.road_yaw), self.road_offset,
                         self.road_half, self.curb, self.sidewalk])

    def road_frame(self, x, y):
        """LiDAR (x, y) -> (u along the road, v across it, measured from the road centre)."""
        c, s = np.cos(self.road_yaw), np.sin(self.road_yaw)
        return c * x + s * y, -s * x + c * y - self.road_offset

    def from_road_frame(self, u, v):
        c, s = np.cos(self.road_yaw), np.sin(self.road_yaw)
        v = v + self.road_offset
        return c * u - s * v, s * u + c * v

    def height(self, x, y):
        """Surface height (LiDAR z) at (x, y), curb and undulation included."""
        _, v = self.road_frame(x, y)
        z = self.g0 + self.sx * x + self.sy * y + np.where(np.abs(v) > self.road_half, self.curb, 0.0)
        return z + self.undulation(x, y)

    def undulation(self, x, y):
        return self.wave_amp * np.sin(self.wave_k[0] * x + self.wave_phase[0]) * np.sin(self.wave_k[1] * y + self.wave_phase[1])


# ----------------------------------------------------------------------------------------------
# Object part templates: (kind, u, v, z_bottom, z_top, half_u, half_v, refl, drop, sem)
# ----------------------------------------------------------------------------------------------
def _wheels(l, w, h, n_axles, sem, rng):
    r = min(0.38, 0.24 * h)
    us = np.linspace(0.34 * l, -0.34 * l, n_axles) if n_axles > 2 else np.array([0.34 * l, -0.34 * l])
    out = []
    for u in us:
        for side in (-1, 1):
            out.append((S.BOX, u, side * (w / 2 - 0.11), 0.0, 2 * r, r * 0.9, 0.11, 0.08, 0.1, sem))
    return out, r


def car_parts(l, w, h, rng, sem=SEM["car"]):
    paint = rng.uniform(0.15, 0.6)
    wheels, r = _wheels(l, w, h, 2, sem, rng)
    split = rng.uniform(0.5, 0.6) * h
    return wheels + [
        (S.BOX, 0.0, 0.0, 0.55 * r, split, l / 2, w / 2, paint, 0.03, sem),
        (S.BOX, rng.uniform(-0.12, -0.02) * l, 0.0, split, h, rng.uniform(0.27, 0.33) * l, 0.43 * w, 0.08, 0.3, sem),
    ]


def van_parts(l, w, h, rng, sem=SEM["car"]):
    paint = rng.uniform(0.2, 0.6)
    wheels, r = _wheels(l, w, h, 2, sem, rng)
    return wheels + [
        (S.BOX, -0.1 * l, 0.0, 0.5 * r, h, 0.4 * l, w / 2, paint, 0.03, sem),
        (S.BOX, 0.4 * l, 0.0, 0.5 * r, 0.5 * h, 0.1 * l, w / 2 - 0.05, paint, 0.03, sem),
        (S.BOX, 0.28 * l, 0.0, 0.5 * h, 0.95 * h, 0.03 * l, w / 2 - 0.1, 0.08, 0.3, sem),
    ]


def truck_parts(l, w, h, rng, sem=SEM["truck"]):
    paint = rng.uniform(0.25, 0.7)
    wheels, r = _wheels(l, w, h, 3, sem, rng)
    cab = min(2.2, 0.25 * l)
    return wheels + [
        (S.BOX, l / 2 - cab / 2, 0.0, 0.6 * r, rng.uniform(0.7, 0.9) * h, cab / 2, w / 2 - 0.05, paint, 0.05, sem),
        (S.BOX, -cab / 2 - 0.1, 0.0, 1.6 * r, h, l / 2 - cab / 2 - 0.1, w / 2, paint, 0.03, sem),
    ]


def tram_parts(l, w, h, rng, sem=SEM["other-vehicle"]):
    paint = rng.uniform(0.3, 0.7)
    return [
        (S.BOX, 0.0, 0.0, 0.12 * h, 0.9 * h, l / 2, w / 2, paint, 0.05, sem),
        (S.BOX, 0.0, 0.0, 0.9 * h, h, 0.15 * l, 0.3 * w, 0.4, 0.05, sem),
        (S.BOX, 0.3 * l, 0.0, 0.0, 0.12 * h, 0.08 * l, 0.4 * w, 0.2, 0.05, sem),
        (S.BOX, -0.3 * l, 0.0, 0.0, 0.12 * h, 0.08 * l, 0.4 * w, 0.2, 0.05, sem),
    ]


def misc_parts(l, w, h, rng, sem=SEM["other-vehicle"]):
    refl = rng.uniform(0.2, 0.6)
    return [
        (S.BOX, 0.0, 0.0, 0.2 * h, h, l / 2, w / 2, refl, 0.05, sem),
        (S.BOX, 0.3 * l, 0.0, 0.0, 0.2 * h, 0.1 * l, 0.4 * w, 0.2, 0.05, sem),
        (S.BOX, -0.3 * l, 0.0, 0.0, 0.2 * h, 0.1 * l, 0.4 * w, 0.2, 0.05, sem),
    ]


def pedestrian_parts(l, w, h, rng, sem=SEM["person"]):
    cloth = rng.uniform(0.1, 0.45)
    stride = rng.uniform(0.3, 1.0) * (l / 2 - 0.07)
    leg_v = min(0.1, w / 2 - 0.07)
    arm_v = w / 2 - 0.05
    swing = rng.uniform(0.3, 1.0) * (l / 2 - 0.05)
    hip, shoulder = 0.48 * h, 0.82 * h
    head_r = 0.1
    return [
        (S.BOX, stride * 0.5, leg_v, 0.0, hip, 0.07, 0.07, cloth, 0.05, sem),
        (S.BOX, -stride * 0.5, -leg_v, 0.0, hip, 0.07, 0.07, cloth, 0.05, sem),
        (S.BOX, l / 2 - 0.07 if stride > 0 else 0.0, leg_v, 0.0, 0.08, 0.07, 0.05, 0.1, 0.05, sem),
        (S.BOX, -(l / 2 - 0.07), -leg_v, 0.0, 0.08, 0.07, 0.05, 0.1, 0.05, sem),
        (S.BOX, 0.0, 0.0, hip, shoulder, min(0.13, l / 2), min(0.2, w / 2 - 0.1), cloth, 0.04, sem),
        (S.BOX, swing, arm_v, 0.5 * h, shoulder, 0.05, 0.05, cloth, 0.05, sem),
        (S.BOX, -swing, -arm_v, 0.5 * h, shoulder, 0.05, 0.05, cloth, 0.05, sem),
        (S.ELLIPSOID, 0.0, 0.0, h - 2.4 * head_r, h, head_r, head_r, 0.3, 0.05, sem),
    ]


def sitting_parts(l, w, h, rng, sem=SEM["person"]):
    cloth = rng.uniform(0.1, 0.45)
    seat = 0.38 * h
    return [
        (S.BOX, -0.05 * l, 0.0, 0.0, seat, l / 2 - 0.05, w / 2, 0.2, 0.05, sem),  # chair / bench
        (S.BOX, 0.15 * l, 0.0, seat, seat + 0.15, 0.3 * l, min(0.18, w / 2), cloth, 0.05, sem),  # thighs
        (S.BOX, l / 2 - 0.06, 0.0, 0.0, seat, 0.06, min(0.15, w / 2), cloth, 0.05, sem),  # shins
        (S.BOX, -0.25 * l, 0.0, seat, h - 0.22, min(0.13, l / 4), min(0.2, w / 2), cloth, 0.04, sem),
        (S.ELLIPSOID, -0.22 * l, 0.0, h - 0.22, h, 0.1, 0.1, 0.3, 0.05, sem),
    ]


def cyclist_parts(l, w, h, rng, sem=SEM["bicyclist"], bike_sem=SEM["bicycle"]):
    cloth = rng.uniform(0.1, 0.45)
    r = min(0.35, l / 4)
    hip = rng.uniform(0.5, 0.56) * h
    return [
        (S.BOX, l / 2 - r, 0.0, 0.0, 2 * r, r, 0.02, 0.25, 0.25, bike_sem),
        (S.BOX, -(l / 2 - r), 0.0, 0.0, 2 * r, r, 0.02, 0.25, 0.25, bike_sem),
        (S.BOX, 0.0, 0.0, r, 2.2 * r, l / 2 - r, 0.03, 0.4, 0.15, bike_sem),
        (S.BOX, 0.05 * l, 0.0, 0.2 * h, hip, 0.12, min(0.12, w / 2), cloth, 0.05, sem),  # legs
        (S.BOX, -0.05 * l, 0.0, hip, 0.86 * h, 0.16, min(0.2, w / 2), cloth, 0.04, sem),  # torso
        (S.BOX, 0.15 * l, 0.0, 0.68 * h, 0.76 * h, 0.15 * l, w / 2, cloth, 0.05, sem),  # arms to the bars
        (S.ELLIPSOID, 0.02 * l, 0.0, 0.86 * h, h, 0.1, 0.1, 0.3, 0.05, sem),
    ]


PART_BUILDERS = {"Car": car_parts, "Van": van_parts, "Truck": truck_parts, "Tram": tram_parts, "Misc": misc_parts,
                 "Pedestrian": pedestrian_parts, "Person_sitting": sitting_parts, "Cyclist": cyclist_parts}


# ----------------------------------------------------------------------------------------------
# 2D footprint overlap (separating axis test on oriented rectangles)
# ----------------------------------------------------------------------------------------------
def rect_overlap(a, b, margin=0.0):
    """(M, 5) and (K, 5) rectangles [x, y, half_l, half_w, yaw] -> (M, K) bool overlap matrix."""
    a = np.ascontiguousarray(np.asarray(a, np.float64).reshape(-1, 5))
    b = np.ascontiguousarray(np.asarray(b, np.float64).reshape(-1, 5))
    return S.rect_overlap_nb(a, b, float(margin))


# ----------------------------------------------------------------------------------------------
# Static clutter
# ----------------------------------------------------------------------------------------------
def static_clutter(rng, ground):
    """Buildings, trees, bushes, poles and signs along both sides of the road.

    Returns a list of (kind, centre(3,), half(3,), yaw, refl, drop, sem) with centre z relative to
    the local ground surface (added by the caller), plus the footprint rectangles (N, 5).
    """
    items = []
    road_yaw = ground.road_yaw
    for side in (-1.0, 1.0):
        style = rng.choice(["urban", "suburban", "rural"], p=[0.45, 0.35, 0.2])
        edge = ground.road_half + ground.sidewalk
        # Buildings (facade segments)
        if style != "rural":
            setback = rng.uniform(0.0, 1.5) if style == "urban" else rng.uniform(3.0, 9.0)
            u = rng.uniform(-75, -55)
            while u < 75:
                length = rng.uniform(8, 30)
                if rng.random() < (0.85 if style == "urban" else 0.55):
                    depth = rng.uniform(8, 15)
                    height = rng.uniform(5, 18)
                    v = side * (edge + setback + depth / 2)
                    x, y = ground.from_road_frame(u + length / 2, v)
                    items.append((S.BOX, (x, y, height / 2), (length / 2, depth / 2, height / 2), road_yaw,
                                  rng.uniform(0.15, 0.5), 0.03, SEM["building"]))
                u += length + rng.uniform(0, 8 if style == "urban" else 15)
        # Trees along the sidewalk / verge
        u = rng.uniform(-70, -60)
        spacing = rng.uniform(7, 16) if style != "urban" else rng.uniform(12, 30)
        while u < 70:
            if rng.random() < 0.7:
                v = side * (ground.road_half + rng.uniform(0.6, ground.sidewalk + (4.0 if style == "rural" else 0.5)))
                x, y = ground.from_road_frame(u, v)
                trunk_h = rng.uniform(1.8, 3.0)
                tr = rng.uniform(0.1, 0.25)
                items.append((S.CYLINDER, (x, y, trunk_h / 2), (tr, tr, trunk_h / 2), 0.0, 0.35, 0.05, SEM["trunk"]))
                cr, cz = rng.uniform(1.2, 3.0), rng.uniform(1.2, 2.5)
                items.append((S.ELLIPSOID, (x, y, trunk_h + cz * 0.8), (cr, cr, cz), 0.0, 0.45, 0.25, SEM["vegetation"]))
            u += spacing * rng.uniform(0.7, 1.3)
        # Bushes / hedges on the terrain
        n_bush = rng.integers(2, 10) if style != "urban" else rng.integers(0, 3)
        for _ in range(n_bush):
            u = rng.uniform(-70, 70)
            v = side * (edge + rng.uniform(0.5, 8.0))
            x, y = ground.from_road_frame(u, v)
            if rng.random() < 0.5:
                hl, hw, hh = rng.uniform(1, 6), rng.uniform(0.4, 1.0), rng.uniform(0.4, 0.8)
                items.append((S.BOX, (x, y, hh), (hl, hw, hh), road_yaw, 0.4, 0.2, SEM["vegetation"]))
            else:
                r = rng.uniform(0.5, 1.5)
                items.append((S.ELLIPSOID, (x, y, r * 0.6), (r, r, r * 0.7), 0.0, 0.4, 0.2, SEM["vegetation"]))
        # Poles and signs at the kerb
        u = rng.uniform(-70, -50)
        while u < 70:
            v = side * (ground.road_half + rng.uniform(0.3, 0.8))
            x, y = ground.from_road_frame(u, v)
            ph, pr = rng.uniform(3.0, 8.0), rng.uniform(0.05, 0.12)
            items.append((S.CYLINDER, (x, y, ph / 2), (pr, pr, ph / 2), 0.0, 0.5, 0.05, SEM["pole"]))
            if rng.random() < 0.35:
                items.append((S.BOX, (x, y, min(ph, 2.8) - 0.3), (0.03, 0.35, 0.3), road_yaw + np.pi / 2, 0.95, 0.02,
                              SEM["traffic-sign"]))
            u += rng.uniform(12, 40)
    rects = []
    for kind, c, half, yaw, *_ in items:
        rects.append((c[0], c[1], half[0], half[1], yaw if kind == S.BOX else 0.0))
    return items, np.array(rects, np.float64).reshape(-1, 5)
