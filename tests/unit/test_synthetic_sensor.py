"""Synthetic LiDAR sensor model: beam table, ray casting against primitives and the ground, culling."""
import numpy as np

from pcdet.datasets.synthetic import scene as SC
from pcdet.datasets.synthetic import sensor as S


def _cast(builder, ground_params, lidar, n_obj=0):
    prims, sem, inst, obj = builder.finish()
    start, items, near, lo, hi = S.build_sectors(prims)
    return S.cast_sweep(lidar.dirs, lidar.ray_sector, lidar.elev, ground_params, np.zeros(5), prims, obj, sem, inst,
                        n_obj, start, items, near, lo, hi, np.array([0.2, 0.3, 0.35, 0.3]), np.zeros(4),
                        np.array([40, 48, 72, 48], np.uint16), 60, np.uint64(1), S.MAX_RANGE)


def _flat_ground():
    return np.array([-S.MOUNT_HEIGHT, 0.0, 0.0, 1.0, 0.0, 0.0, 50.0, 0.1, 3.0])


def test_beam_table():
    el = S.hdl64_elevations()
    assert len(el) == 64 and el.max() == 2.0 and el.min() == -24.9
    lid = S.LidarModel()
    assert 0.17 <= lid.azimuth_step_deg <= 0.2
    np.testing.assert_allclose(np.linalg.norm(lid.dirs, axis=-1), 1.0)


def test_ground_range_and_box_hit():
    lid = S.LidarModel(n_cols=720)
    b = SC.SceneBuilder()
    b.add(S.BOX, (10.0, 0.0, -0.5), (1.0, 1.0, 1.0), 0.0, 0.5, 0.0, 10, inst=1, obj=0)
    xyzi, keep, sem, inst, hit, through = _cast(b, _flat_ground(), lid, n_obj=1)
    pts = xyzi[keep]
    # Ground points lie on z = -1.73 (within the range noise).
    g = sem[keep] == 40
    assert abs(np.median(pts[g, 2]) + S.MOUNT_HEIGHT) < 0.02
    # The box's near face is at x = 9.
    on_box = inst[keep] == 1
    assert on_box.sum() > 20
    assert np.all(np.abs(pts[on_box, 0] - 9.0) < 0.1)
    assert through.sum() >= on_box.sum()


def test_occluder_blocks_rays():
    lid = S.LidarModel(n_cols=720)
    b = SC.SceneBuilder()
    b.add(S.BOX, (20.0, 0.0, -0.7), (1.0, 1.0, 1.0), 0.0, 0.5, 0.0, 10, inst=1, obj=0)
    b.add(S.BOX, (8.0, 0.0, 0.0), (0.2, 3.0, 3.0), 0.0, 0.5, 0.0, 50)  # wall in front
    _, _, _, _, hit, through = _cast(b, _flat_ground(), lid, n_obj=1)
    assert through.sum() > 0
    assert not np.any(hit == 0)  # the object (primitive 0) is never the first hit


def test_sector_culling_matches_brute_force():
    rng = np.random.default_rng(0)
    lid = S.LidarModel(n_cols=360)
    b = SC.SceneBuilder()
    for _ in range(40):
        kind = int(rng.integers(3))
        c = (rng.uniform(-30, 30), rng.uniform(-30, 30), rng.uniform(-1.5, 1.0))
        b.add(kind, c, tuple(rng.uniform(0.2, 2.0, 3)), rng.uniform(-np.pi, np.pi), 0.5, 0.0, 50)
    ground = _flat_ground()
    prims, sem, inst, obj = b.finish()
    start, items, near, lo, hi = S.build_sectors(prims)
    args = (np.zeros(5), prims, obj, sem, inst, 0)
    tail = (np.array([0.2, 0.3, 0.35, 0.3]), np.zeros(4), np.array([40, 48, 72, 48], np.uint16), 60, np.uint64(1),
            S.MAX_RANGE)
    culled = S.cast_sweep(lid.dirs, lid.ray_sector, lid.elev, ground, *args, start, items, near, lo, hi, *tail)[4]
    # One sector holding every primitive with no distance/elevation bounds = brute force.
    n = len(prims)
    all_start = np.zeros(S.N_SECTORS + 1, np.int64)
    all_start[1:] = n
    sec = np.zeros_like(lid.ray_sector)
    brute = S.cast_sweep(lid.dirs, sec, lid.elev, ground, *args, all_start, np.arange(n, dtype=np.int32),
                         np.zeros(n), np.full(n, -np.pi), np.full(n, np.pi), *tail)[4]
    assert np.array_equal(culled, brute)


def test_rect_overlap():
    a = np.array([[0, 0, 2, 1, 0.0]])
    b = np.array([[3.9, 0, 2, 1, 0], [4.1, 0, 2, 1, 0], [0, 2.05, 2, 1, 0], [2.9, 2.9, 2, 1, np.pi / 4]])
    assert SC.rect_overlap(a, b).tolist() == [[True, False, False, True]]
    assert SC.rect_overlap(a, b[1:2], margin=0.1).tolist() == [[True]]
