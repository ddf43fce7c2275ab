"""Simulated 64-beam spinning LiDAR: beam table, azimuth-sector culling and the numba ray caster.

The sensor sits at the LiDAR origin (x forward, y left, z up), 1.73 m above the road. Rays are cast
against an analytic ground (sloped road plane, sidewalks/terrain raised by a curb) and a list of
primitives (oriented boxes, vertical cylinders, vertical-axis ellipsoids). Each primitive carries
a semantic id, an instance id and a reflectivity; the caster returns per ray the range, the hit
primitive (negative codes for the ground kinds) and the cosine of the incidence angle, and counts
per labelled object how many rays pass through it before reaching the ground (for occlusion).

Every ray is independent (random numbers are counter-based hashes of the frame key and the ray
index), so the column loop could run as a ``prange``; it is compiled serially because one frame's
sweep takes only ~10 ms: thread start-up made the parallel kernel slower per frame, and compiling
it took ~15 s instead of ~4 s. Parallelism comes from generating frames in worker processes.
"""
import numba
import numpy as np

# Primitive table columns.
CX, CY, CZ, HX, HY, HZ, COS, SIN, TYPE, REFL, DROP = range(11)
N_COLS = 11
BOX, CYLINDER, ELLIPSOID = 0, 1, 2

# Ground hit codes (hit_id < 0).
HIT_NONE, HIT_ROAD, HIT_SIDEWALK, HIT_TERRAIN, HIT_CURB = -1, -2, -3, -4, -5

MOUNT_HEIGHT = 1.73
MAX_RANGE = 120.0
N_SECTORS = 720


def hdl64_elevations():
    """64 beam elevations in degrees, +2.0 (top) to -24.9 (bottom), HDL-64E-like two blocks.

    Upper block: 32 beams from +2.0 to -8.33 deg (about 1/3 deg apart); lower block: 32 beams
    from -8.83 to -24.9 deg (about 1/2 deg apart).
    """
    upper = np.linspace(2.0, -8.33, 32)
    lower = np.linspace(-8.83, -24.9, 32)
    return np.concatenate([upper, lower])


def beam_azimuth_offsets():
    """Fixed small per-beam azimuth offsets (degrees), as the lasers of a real head are staggered."""
    k = np.arange(64)
    return 0.06 * np.sin(2.399963 * k)  # golden-angle pattern, deterministic, |offset| <= 0.06 deg


class LidarModel:
    """Beam table of the simulated sensor (``n_cols`` azimuth steps over 360 degrees)."""

    def __init__(self, n_cols=2000):
        self.n_cols = int(n_cols)
        self.elev = np.deg2rad(hdl64_elevations())
        self.az_offset = np.deg2rad(beam_azimuth_offsets())
        # Columns sweep counter-clockwise from the rear (-pi), so the front is in the middle.
        self.az_cols = -np.pi + (np.arange(self.n_cols) + 0.5) * (2.0 * np.pi / self.n_cols)
        az = self.az_cols[None, :] + self.az_offset[:, None]
        ce = np.cos(self.elev)[:, None]
        # Unit ray directions (64, n_cols, 3), plus the sector of every ray.
        self.dirs = np.ascontiguousarray(
            np.stack([ce * np.cos(az), ce * np.sin(az), np.broadcast_to(np.sin(self.elev)[:, None], az.shape)], axis=-1))
        self.ray_sector = (np.floor((np.mod(az + np.pi, 2 * np.pi)) / (2 * np.pi) * N_SECTORS).astype(np.int32)
                           % N_SECTORS)

    @property
    def n_rays(self):
        return 64 * self.n_cols

    @property
    def azimuth_step_deg(self):
        return 360.0 / self.n_cols


def build_sectors(prims, n_sectors=N_SECTORS):
    """Azimuth-sector lists of the primitives, sorted by their nearest possible hit distance.

    Returns (start (S+1,), items (K,), near (K,), el_lo (K,), el_hi (K,)): items of sector ``s`` are
    ``items[start[s]:start[s+1]]``; ``near`` is a lower bound on the hit distance and
    ``el_lo``/``el_hi`` bound the elevation angle of rays that can hit the primitive.
    """
    n = len(prims)
    if n == 0:
        z = np.zeros(0)
        return np.zeros(n_sectors + 1, np.int64), np.zeros(0, np.int32), z, z, z
    c = prims[:, CX:CZ + 1]
    h = prims[:, HX:HZ + 1]
    is_box = prims[:, TYPE] == BOX
    r_xy = np.where(is_box, np.hypot(h[:, 0], h[:, 1]), h[:, 0]) + 1e-3
    r_3d = np.sqrt(r_xy ** 2 + h[:, 2] ** 2)
    d_xy = np.hypot(c[:, 0], c[:, 1])
    d_3d = np.linalg.norm(c, axis=1)
    width = 2.0 * np.pi / n_sectors
    phi = np.arctan2(c[:, 1], c[:, 0])
    inside = d_xy <= r_xy * 1.01
    half = np.where(inside, np.pi, np.arcsin(np.clip(r_xy / np.maximum(d_xy, 1e-9), 0, 1)))
    lo = np.floor((phi - half + np.pi) / width).astype(np.int64)
    hi = np.floor((phi + half + np.pi) / width).astype(np.int64)
    nsec = np.where(inside, n_sectors, hi - lo + 1)
    lo = np.where(inside, 0, lo)
    prim_idx = np.repeat(np.arange(n), nsec)
    offs = np.arange(nsec.sum()) - np.repeat(np.cumsum(nsec) - nsec, nsec)
    sector = (lo[prim_idx] + offs) % n_sectors
    near = np.maximum(d_3d - r_3d, 0.0)
    inside3 = d_3d <= r_3d
    el_c = np.arcsin(np.clip(c[:, 2] / np.maximum(d_3d, 1e-9), -1, 1))
    el_h = np.arcsin(np.clip(r_3d / np.maximum(d_3d, 1e-9), 0, 1))
    el_lo = np.where(inside3, -np.pi, el_c - el_h)
    el_hi = np.where(inside3, np.pi, el_c + el_h)
    order = np.lexsort((prim_idx, near[prim_idx], sector))
    sector, prim_idx = sector[order], prim_idx[order]
    start = np.zeros(n_sectors + 1, np.int64)
    start[1:] = np.cumsum(np.bincount(sector, minlength=n_sectors))
    return start, prim_idx.astype(np.int32), near[prim_idx], el_lo[prim_idx], el_hi[prim_idx]


@numba.njit(cache=True, inline="always")
def _hit_primitive(p, dx, dy, dz):
    """Ray from the origin with unit direction d against primitive row ``p`` -> (t, cos_incidence)."""
    ox, oy, oz = -p[CX], -p[CY], -p[CZ]
    kind = int(p[TYPE])
    if kind == BOX:
        c, s = p[COS], p[SIN]
        lo = (c * ox + s * oy, -s * ox + c * oy, oz)
        ld = (c * dx + s * dy, -s * dx + c * dy, dz)
        hx = (p[HX], p[HY], p[HZ])
        tmin, tmax = -1e30, 1e30
        axis = 0
        for k in range(3):
            if abs(ld[k]) < 1e-12:
                if abs(lo[k]) > hx[k]:
                    return np.inf, 0.0
            else:
                t1 = (-hx[k] - lo[k]) / ld[k]
                t2 = (hx[k] - lo[k]) / ld[k]
                if t1 > t2:
                    t1, t2 = t2, t1
                if t1 > tmin:
                    tmin = t1
                    axis = k
                if t2 < tmax:
                    tmax = t2
                if tmin > tmax:
                    return np.inf, 0.0
        if tmin <= 1e-6:
            return np.inf, 0.0
        return tmin, abs(ld[axis])
    if kind == CYLINDER:
        r, hz = p[HX], p[HZ]
        a = dx * dx + dy * dy
        b = 2.0 * (ox * dx + oy * dy)
        cc = ox * ox + oy * oy - r * r
        if a > 1e-12:
            disc = b * b - 4.0 * a * cc
            if disc < 0.0:
                return np.inf, 0.0
            t = (-b - np.sqrt(disc)) / (2.0 * a)
            if t > 1e-6:
                z = oz + t * dz
                if -hz <= z <= hz:
                    nx = (ox + t * dx) / r
                    ny = (oy + t * dy) / r
                    return t, abs(nx * dx + ny * dy)
        # Top cap, seen from above.
        if dz < 0.0 and oz > hz:
            t = (hz - oz) / dz
            x = ox + t * dx
            y = oy + t * dy
            if x * x + y * y <= r * r and t > 1e-6:
                return t, abs(dz)
        return np.inf, 0.0
    # Ellipsoid with radii (HX, HX, HZ).
    r, hz = p[HX], p[HZ]
    k = r / hz
    ez, edz = oz * k, dz * k
    a = dx * dx + dy * dy + edz * edz
    b = 2.0 * (ox * dx + oy * dy + ez * edz)
    cc = ox * ox + oy * oy + ez * ez - r * r
    disc = b * b - 4.0 * a * cc
    if disc < 0.0:
        return np.inf, 0.0
    t = (-b - np.sqrt(disc)) / (2.0 * a)
    if t <= 1e-6:
        return np.inf, 0.0
    nx = (ox + t * dx) / (r * r)
    ny = (oy + t * dy) / (r * r)
    nz = (oz + t * dz) / (hz * hz)
    nn = np.sqrt(nx * nx + ny * ny + nz * nz)
    return t, abs(nx * dx + ny * dy + nz * dz) / nn


@numba.njit(cache=True, inline="always")
def _splitmix64(x):
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


@numba.njit(cache=True, inline="always")
def _uniform(h):
    return ((h >> np.uint64(11)) + np.uint64(1)) * (1.0 / 9007199254740994.0)


@numba.njit(cache=True, inline="always")
def _normal(h):
    """Approximately standard normal from one 64-bit hash (sum of four 16-bit uniforms, Irwin-Hall)."""
    m = np.uint64(0xFFFF)
    s = float(h & m) + float((h >> np.uint64(16)) & m) + float((h >> np.uint64(32)) & m) + float(h >> np.uint64(48))
    return (s / 65535.0 - 2.0) * 1.7320508075688772


@numba.njit(cache=True)
def cast_sweep(dirs, ray_sector, elev, ground, wave, prims, prim_obj, prim_sem, prim_inst, n_obj, start, items, near,
               el_lo, el_hi,
               ground_refl, ground_drop, ground_sem, marking_sem, key, max_range):
    """Cast all rays of one sweep and turn the hits into returns.

    ``dirs`` (B, C, 3) unit directions, ``ray_sector`` (B, C) their azimuth sectors (as in
    :func:`build_sectors`), ``elev`` (B,) beam elevations. ``ground`` = [g0, sx, sy,
    cos_road, sin_road, road_offset, road_half, curb_h, sidewalk_w]: the road surface is
    ``z = g0 + sx*x + sy*y``; with the lateral coordinate ``v = -sin*x + cos*y - offset``, beyond
    ``|v| > road_half`` the surface is raised by ``curb_h`` (sidewalk up to ``road_half + sidewalk_w``,
    then terrain). ``wave`` = [amp, kx, ky, phase_x, phase_y] is the ground undulation added to
    ground returns; ``ground_refl/drop/sem`` are indexed by ``-hit - 2`` (road, sidewalk, terrain, curb).

    Return model: dropout with probability material + 0.25 (r / max_range)^2 (+0.5 at grazing
    incidence), Gaussian-like range noise of 1.5 cm + 0.02 % of the range, intensity
    ``refl * (0.3 + 0.7 cos_incidence) * (1 - 0.25 r / max_range)`` plus noise, in 0.01 steps.
    Random numbers are counter-based hashes of (key, ray index): every ray is independent.

    Returns (xyzi (B, C, 4) float32, keep (B, C) bool, sem (B, C) uint16, inst (B, C) uint16,
    hit (B, C) int32 (primitive index, or a negative ground / no-hit code, before dropout),
    through (C, n_obj) int32: rays of column c that cross object o before reaching the ground).
    """
    n_b, n_c = dirs.shape[0], dirs.shape[1]
    out = np.zeros((n_b, n_c, 4), np.float32)
    keep = np.zeros((n_b, n_c), np.bool_)
    sem = np.zeros((n_b, n_c), np.uint16)
    inst = np.zeros((n_b, n_c), np.uint16)
    hit_out = np.full((n_b, n_c), -1, np.int32)
    through = np.zeros((n_c, max(n_obj, 1)), np.int32)
    g0, sx, sy, cr, sr, voff, rhalf, curb = ground[0], ground[1], ground[2], ground[3], ground[4], ground[5], ground[6], ground[7]
    swalk = ground[8]
    nrm = np.sqrt(1.0 + sx * sx + sy * sy)
    for ci in range(n_c):
        stamp = np.full(max(n_obj, 1), -1, np.int64)
        for bi in range(n_b):
            dx, dy, dz = dirs[bi, ci, 0], dirs[bi, ci, 1], dirs[bi, ci, 2]
            el = elev[bi]
            # Ground: road plane, raised sidewalk/terrain plane, curb face.
            tg = np.inf
            gcode = -1
            gcos = 0.0
            den = dz - sx * dx - sy * dy
            if den < -1e-9:
                t_road = g0 / den
                t_up = (g0 + curb) / den
                dv = -sr * dx + cr * dy
                v_up = t_up * dv - voff
                v_road = t_road * dv - voff
                if abs(v_up) > rhalf:
                    tg = t_up
                    gcode = HIT_SIDEWALK if abs(v_up) < rhalf + swalk else HIT_TERRAIN
                    gcos = -den / nrm
                elif abs(v_road) <= rhalf:
                    tg = t_road
                    gcode = HIT_ROAD
                    gcos = -den / nrm
                elif abs(dv) > 1e-12:
                    side = rhalf if v_road > 0 else -rhalf
                    tg = (side + voff) / dv
                    gcode = HIT_CURB
                    gcos = abs(dv)
            best = tg
            bhit = gcode
            bcos = gcos
            lim = tg if tg < max_range else max_range
            s = ray_sector[bi, ci]
            for k in range(start[s], start[s + 1]):
                if near[k] > lim:
                    break
                if el < el_lo[k] or el > el_hi[k]:
                    continue
                pi = items[k]
                obj = prim_obj[pi]
                if obj < 0 and near[k] >= best:
                    continue
                t, cs = _hit_primitive(prims[pi], dx, dy, dz)
                if t == np.inf:
                    continue
                if obj >= 0 and t < tg and stamp[obj] != bi:
                    stamp[obj] = bi
                    through[ci, obj] += 1
                if t < best:
                    best = t
                    bhit = pi
                    bcos = cs
            if not best < max_range:
                continue
            hit_out[bi, ci] = bhit
            # Return model.
            if bhit >= 0:
                refl, drop = prims[bhit, REFL], prims[bhit, DROP]
                s_id, i_id = prim_sem[bhit], prim_inst[bhit]
            else:
                g = -bhit - 2
                refl, drop, s_id, i_id = ground_refl[g], ground_drop[g], ground_sem[g], 0
            ray = np.uint64(bi * n_c + ci)
            h0 = _splitmix64(key ^ _splitmix64(ray * np.uint64(4)))
            p_drop = drop + 0.25 * (best / max_range) ** 2
            if bcos < 0.05:
                p_drop += 0.5
            if _uniform(h0) < p_drop:
                continue
            n1 = _normal(_splitmix64(h0 ^ np.uint64(0x5851F42D4C957F2D)))
            n2 = _normal(_splitmix64(h0 ^ np.uint64(0x14057B7EF767814F)))
            r = best + n1 * (0.015 + 0.0002 * best)
            x, y, z = r * dx, r * dy, r * dz
            if bhit <= HIT_ROAD and bhit >= HIT_TERRAIN:
                z += wave[0] * np.sin(wave[1] * x + wave[3]) * np.sin(wave[2] * y + wave[4])
            if bhit == HIT_ROAD:
                u_r = cr * x + sr * y
                v_r = -sr * x + cr * y - voff
                if abs(v_r) < 0.08 and (u_r % 9.0) < 3.0:
                    refl = 0.75
                    s_id = marking_sem
            inten = refl * (0.3 + 0.7 * bcos) * (1.0 - 0.25 * best / max_range) + 0.03 * n2
            inten = min(max(inten, 0.0), 0.99)
            out[bi, ci, 0] = x
            out[bi, ci, 1] = y
            out[bi, ci, 2] = z
            out[bi, ci, 3] = np.floor(inten * 100.0 + 0.5) / 100.0
            keep[bi, ci] = True
            sem[bi, ci] = s_id
            inst[bi, ci] = i_id
    return out, keep, sem, inst, hit_out, through


@numba.njit(cache=True)
def rect_overlap_nb(a, b, margin):
    """(M, 5) and (K, 5) rectangles [x, y, half_l, half_w, yaw] -> (M, K) overlap (separating axes)."""
    m, k = a.shape[0], b.shape[0]
    out = np.zeros((m, k), np.bool_)
    for i in range(m):
        ca, sa = np.cos(a[i, 4]), np.sin(a[i, 4])
        for j in range(k):
            cb, sb = np.cos(b[j, 4]), np.sin(b[j, 4])
            dx, dy = b[j, 0] - a[i, 0], b[j, 1] - a[i, 1]
            sep = False
            for ax in range(4):
                if ax == 0:
                    nx, ny = ca, sa
                elif ax == 1:
                    nx, ny = -sa, ca
                elif ax == 2:
                    nx, ny = cb, sb
                else:
                    nx, ny = -sb, cb
                ra = (a[i, 2] + margin) * abs(nx * ca + ny * sa) + (a[i, 3] + margin) * abs(-nx * sa + ny * ca)
                rb = (b[j, 2] + margin) * abs(nx * cb + ny * sb) + (b[j, 3] + margin) * abs(-nx * sb + ny * cb)
                if abs(dx * nx + dy * ny) > ra + rb:
                    sep = True
                    break
            out[i, j] = not sep
    return out
