"""Augmentation and processing steps: geometry stays consistent, gt_sampling rules, config checks.

Also covers the processor steps and ``collate_batch`` (the pieces between augmentation and the model).
"""
import pickle

import numpy as np
import pytest
from easydict import EasyDict

from pcdet.config import ConfigError, ConfigKeyError
from pcdet.datasets.augmentor import augmentor_utils
from pcdet.datasets.augmentor.data_augmentor import DataAugmentor
from pcdet.datasets.augmentor.database_sampler import DataBaseSampler
from pcdet.datasets.dataset import DatasetTemplate
from pcdet.datasets.processor.data_processor import DataProcessor
from pcdet.ops.iou3d_nms import boxes_bev_iou_cpu
from pcdet.ops.points_in_boxes import points_in_boxes_cpu
from pcdet.utils.box_utils import boxes_to_corners_3d, points_in_boxes_mask_reference

CLASSES = ["Car", "Pedestrian", "Cyclist"]


def _box(x, y, z=-0.8, dx=4.0, dy=1.8, dz=1.6, h=0.0):
    return [x, y, z, dx, dy, dz, h]


def _points_in(box, n, rng):
    box = np.asarray(box, dtype=np.float64)
    local = rng.uniform(-0.45, 0.45, size=(n, 3)) * box[3:6]
    c, s = np.cos(box[6]), np.sin(box[6])
    xyz = np.c_[local[:, 0] * c - local[:, 1] * s, local[:, 0] * s + local[:, 1] * c, local[:, 2]] + box[0:3]
    return np.c_[xyz, rng.uniform(0, 1, size=(n, 1))].astype(np.float32)


def _scene(seed=0):
    rng = np.random.default_rng(seed)
    boxes = np.array([_box(10, 3, h=0.4), _box(25, -6, h=-1.2), _box(15, 10, dx=0.8, dy=0.6, dz=1.7, h=2.0)], np.float32)
    pts = [_points_in(b, 200, rng) for b in boxes]
    pts.append(np.c_[rng.uniform([0, -30, -2.5], [60, 30, 0.5], size=(3000, 3)), rng.uniform(0, 1, (3000, 1))])
    return boxes, np.concatenate(pts).astype(np.float32), np.array(["Car", "Car", "Pedestrian"])


def _membership(points, boxes):
    return points_in_boxes_mask_reference(points, boxes)


def _assert_corners(before, after, transform, sort=False):
    """Corners of the transformed boxes == the transform applied to the original corners."""
    ca, cb = boxes_to_corners_3d(after), transform(boxes_to_corners_3d(before).reshape(-1, 3)).reshape(-1, 8, 3)
    if sort:  # a mirror reverses the corner order
        ca, cb = np.sort(ca.round(4), axis=1), np.sort(cb.round(4), axis=1)
    np.testing.assert_allclose(ca, cb, atol=1e-3)


# ------------------------------------------------------------------ global augmentations


@pytest.mark.parametrize("axis", ["x", "y"])
def test_flip_keeps_points_in_boxes(axis):
    boxes, points, _ = _scene()
    fn = augmentor_utils.flip_along_x if axis == "x" else augmentor_utils.flip_along_y
    b2, p2 = fn(boxes, points)
    before = _membership(points, boxes)
    assert before.sum() >= 600
    np.testing.assert_array_equal(_membership(p2, b2), before)
    col = 1 if axis == "x" else 0

    def mirror(c):
        c = c.copy()
        c[:, col] = -c[:, col]
        return c

    _assert_corners(boxes, b2, mirror, sort=True)
    np.testing.assert_array_equal(p2[:, col], -points[:, col])


def test_random_flip_draws_both_outcomes():
    boxes, points, _ = _scene()
    outcomes = set()
    for seed in range(20):
        rng = np.random.RandomState(seed)
        b2, p2, enabled = augmentor_utils.random_flip(boxes, points, "x", rng)
        outcomes.add(enabled)
        np.testing.assert_array_equal(_membership(p2, b2), _membership(points, boxes))
    assert outcomes == {True, False}


def test_rotation_keeps_points_in_boxes():
    boxes, points, _ = _scene()
    rng = np.random.RandomState(0)
    b2, p2, angle = augmentor_utils.global_rotation(boxes, points, [-np.pi / 4, np.pi / 4], rng)
    assert abs(angle) > 1e-3
    np.testing.assert_array_equal(_membership(p2, b2), _membership(points, boxes))
    c, s = np.cos(angle), np.sin(angle)

    def rot(xyz):
        return np.c_[xyz[:, 0] * c - xyz[:, 1] * s, xyz[:, 0] * s + xyz[:, 1] * c, xyz[:, 2]]

    _assert_corners(boxes, b2, rot)


def test_scaling_keeps_points_in_boxes():
    boxes, points, _ = _scene()
    b2, p2, scale = augmentor_utils.global_scaling(boxes, points, [0.95, 1.05], np.random.RandomState(1))
    assert scale != 1.0 and 0.95 <= scale <= 1.05
    np.testing.assert_array_equal(_membership(p2, b2), _membership(points, boxes))
    _assert_corners(boxes, b2, lambda xyz: xyz * scale)
    np.testing.assert_array_equal(p2[:, 3], points[:, 3])  # intensity untouched


def test_scaling_in_x_and_y_only_leaves_heights():
    """SCALE_AXES [x, y] (Cylinder3D's scale_aug): x, y and the box lengths and widths scale, z and the
    heights do not, and points stay in their boxes; other axis sets are refused."""
    boxes, points, _ = _scene()
    b2, p2, scale = augmentor_utils.global_scaling(boxes, points, [0.95, 1.05], np.random.RandomState(1), (0, 1))
    assert scale != 1.0
    np.testing.assert_allclose(p2[:, :2], points[:, :2] * scale, rtol=1e-6)
    np.testing.assert_array_equal(p2[:, 2:], points[:, 2:])
    np.testing.assert_array_equal(b2[:, [2, 5]], boxes[:, [2, 5]])
    np.testing.assert_array_equal(_membership(p2, b2), _membership(points, boxes))
    _assert_corners(boxes, b2, lambda xyz: xyz * np.array([scale, scale, 1.0]))
    with pytest.raises(ValueError, match="scaling axes"):
        augmentor_utils.scale_scene(boxes, points, 1.02, (0,))
    cfg = EasyDict({"AUG_CONFIG_LIST": [{"NAME": "random_world_scaling", "WORLD_SCALE_RANGE": [0.95, 1.05],
                                         "SCALE_AXES": ["x", "y"]}]})
    d = DataAugmentor(None, cfg, CLASSES).forward({"points": points.copy(), "gt_boxes": boxes.copy()},
                                                   rng=np.random.RandomState(1))
    np.testing.assert_array_equal(d["points"][:, 2], points[:, 2])
    cfg.AUG_CONFIG_LIST[0]["SCALE_AXES"] = ["x"]
    with pytest.raises(ConfigError, match="SCALE_AXES"):
        DataAugmentor(None, cfg, CLASSES)


def test_augmentor_pipeline_consistency_and_record():
    boxes, points, names = _scene()
    cfg = EasyDict(
        {
            "DISABLE_AUG_LIST": ["placeholder"],
            "AUG_CONFIG_LIST": [
                {"NAME": "random_world_flip", "ALONG_AXIS_LIST": ["x", "y"]},
                {"NAME": "random_world_rotation", "WORLD_ROT_ANGLE": [-0.78539816, 0.78539816]},
                {"NAME": "random_world_scaling", "WORLD_SCALE_RANGE": [0.95, 1.05]},
            ],
        }
    )
    aug = DataAugmentor(None, cfg, CLASSES)
    assert aug.step_names == ["random_world_flip", "random_world_rotation", "random_world_scaling"]
    for seed in range(5):
        d = aug.forward({"points": points.copy(), "gt_boxes": boxes.copy(), "gt_names": names.copy()},
                        rng=np.random.RandomState(seed))
        np.testing.assert_array_equal(_membership(d["points"], d["gt_boxes"]), _membership(points, boxes))
        assert {"flip_x", "flip_y", "noise_rot", "noise_scale"} <= set(d)
        assert (np.abs(d["gt_boxes"][:, 6]) <= np.pi + 1e-6).all()


def test_disable_list_and_unknown_names_and_keys():
    cfg = EasyDict({"DISABLE_AUG_LIST": ["random_world_flip"],
                    "AUG_CONFIG_LIST": [{"NAME": "random_world_flip", "ALONG_AXIS_LIST": ["x"]}]})
    assert DataAugmentor(None, cfg, CLASSES).step_names == []
    bad_key = EasyDict({"AUG_CONFIG_LIST": [{"NAME": "random_world_rotation", "WORLD_ROT_ANGLES": [-1, 1]}]})
    with pytest.raises(ConfigKeyError, match=r"AUG_CONFIG_LIST\[0\].*WORLD_ROT_ANGLES.*did you mean WORLD_ROT_ANGLE"):
        DataAugmentor(None, bad_key, CLASSES)
    bad_name = EasyDict({"AUG_CONFIG_LIST": [{"NAME": "random_world_twist"}]})
    with pytest.raises(ConfigKeyError, match="unknown augmentation 'random_world_twist'"):
        DataAugmentor(None, bad_name, CLASSES)
    bad_section = EasyDict({"AUG_CONFIG_LIST": [], "AUG_LIST": []})
    with pytest.raises(ConfigKeyError, match="DATA_AUGMENTOR.*AUG_LIST"):
        DataAugmentor(None, bad_section, CLASSES)


# ------------------------------------------------------------------ gt_sampling


def _write_db(root, entries, rng):
    """entries: (name, box, n_points, difficulty) -> writes object files + dbinfos pickle."""
    (root / "gt_database").mkdir(parents=True, exist_ok=True)
    db = {}
    for i, (name, box, n, diff) in enumerate(entries):
        pts = _points_in(box, n, rng)
        pts[:, 0:3] -= np.asarray(box[0:3], np.float32)
        rel = f"gt_database/{i:06d}_{name}_0.bin"
        pts.tofile(root / rel)
        db.setdefault(name, []).append({"name": name, "path": rel, "image_idx": f"{i:06d}", "gt_idx": 0,
                                        "box3d_lidar": np.asarray(box, np.float32), "num_points_in_gt": n,
                                        "difficulty": diff, "bbox": np.zeros(4), "score": -1.0})
    with open(root / "dbinfos.pkl", "wb") as f:
        pickle.dump(db, f)
    return db


def _sampler_cfg(**over):
    cfg = {"NAME": "gt_sampling", "DB_INFO_PATH": ["dbinfos.pkl"],
           "PREPARE": {"filter_by_min_points": ["Car:5", "Pedestrian:5"], "filter_by_difficulty": [-1]},
           "SAMPLE_GROUPS": ["Car:10", "Pedestrian:10"], "NUM_POINT_FEATURES": 4,
           "REMOVE_EXTRA_WIDTH": [0.0, 0.0, 0.0], "LIMIT_WHOLE_SCENE": False, "USE_ROAD_PLANE": False}
    cfg.update(over)
    return EasyDict(cfg)


def test_gt_sampling_rules(tmp_path):
    rng = np.random.default_rng(0)
    scene_boxes, scene_points, scene_names = _scene()
    entries = [
        ("Car", _box(40, 0, h=0.3), 50, 0),          # free spot
        ("Car", _box(40, 1.0, h=0.0), 60, 1),        # collides with the previous one
        ("Car", _box(10.5, 3.2, h=1.0), 80, 0),      # collides with a scene box
        ("Car", _box(30, 15, h=-0.5), 3, 0),         # too few points -> filtered
        ("Car", _box(50, -15, h=0.0), 40, -1),       # difficulty -1 -> filtered
        ("Pedestrian", _box(20, -15, dx=0.8, dy=0.6, dz=1.7), 30, 2),
        ("Car", _box(55, 20, h=2.5), 70, 2),         # free spot
    ]
    _write_db(tmp_path, entries, rng)
    sampler = DataBaseSampler(tmp_path, _sampler_cfg(), CLASSES)
    assert len(sampler.db_infos["Car"]) == 4 and len(sampler.db_infos["Pedestrian"]) == 1
    # Background points placed where sampled objects go must be removed.
    blocker = _points_in(_box(55, 20, h=2.5), 25, rng)
    points = np.concatenate([scene_points, blocker])
    d = sampler({"points": points.copy(), "gt_boxes": scene_boxes.copy(), "gt_names": scene_names.copy()},
                rng=np.random.RandomState(0))
    n_new = d["num_sampled_gt"]
    boxes = d["gt_boxes"]
    assert len(boxes) == len(scene_boxes) + n_new == len(d["gt_names"])
    new = boxes[len(scene_boxes):]
    # Collision rule: no two final boxes overlap in BEV; the colliding / filtered entries never appear.
    iou = boxes_bev_iou_cpu(boxes.astype(np.float32), boxes.astype(np.float32))
    np.fill_diagonal(iou, 0)
    assert iou.max() == 0
    centres = {tuple(np.round(b[:2], 2)) for b in new}
    assert (10.5, 3.2) not in centres and (30.0, 15.0) not in centres and (50.0, -15.0) not in centres
    assert not ({(40.0, 0.0), (40.0, 1.0)} <= centres)  # both colliding ones never together
    assert (55.0, 20.0) in centres and (20.0, -15.0) in centres
    # Inside each sampled box there are exactly the database object's points.
    db = pickle.load(open(tmp_path / "dbinfos.pkl", "rb"))
    by_centre = {tuple(np.round(i["box3d_lidar"][:2], 2)): i for infos in db.values() for i in infos}
    inside = points_in_boxes_cpu(d["points"], new)
    for k, b in enumerate(new):
        info = by_centre[tuple(np.round(b[:2], 2))]
        obj = np.fromfile(tmp_path / info["path"], dtype=np.float32).reshape(-1, 4)
        got = d["points"][inside[k] > 0]
        assert len(got) == info["num_points_in_gt"]
        np.testing.assert_allclose(np.sort(got[:, 3]), np.sort(obj[:, 3]))
    # Scene points inside the original boxes are untouched.
    np.testing.assert_array_equal(points_in_boxes_cpu(d["points"], scene_boxes).sum(1),
                                  points_in_boxes_cpu(points, scene_boxes).sum(1))


def test_gt_sampling_limit_whole_scene_and_stateless_draws(tmp_path):
    rng = np.random.default_rng(1)
    entries = [("Car", _box(30 + 6 * i, -20 + 8 * (i % 5), h=0.1 * i), 20, 0) for i in range(6)]
    _write_db(tmp_path, entries, rng)
    boxes, points, names = _scene()
    sampler = DataBaseSampler(tmp_path, _sampler_cfg(SAMPLE_GROUPS=["Car:3"], LIMIT_WHOLE_SCENE=True), CLASSES)
    d = sampler({"points": points, "gt_boxes": boxes, "gt_names": names}, rng=np.random.RandomState(0))
    assert d["num_sampled_gt"] == 1  # 3 wanted minus the 2 cars already in the scene
    seen, draws = set(), []
    for seed in range(20):  # random draws visit every entry of the database
        d = sampler({"points": points, "gt_boxes": boxes[2:], "gt_names": names[2:]}, rng=np.random.RandomState(seed))
        draws.append(d["gt_boxes"][1:].copy())
        seen |= {tuple(np.round(b[:2], 1)) for b in d["gt_boxes"][1:]}
    assert len(seen) == 6
    # stateless: the same RNG state gives the same draw, whatever was drawn before
    again = sampler({"points": points, "gt_boxes": boxes[2:], "gt_names": names[2:]}, rng=np.random.RandomState(7))
    np.testing.assert_array_equal(again["gt_boxes"][1:], draws[7])


def test_gt_sampling_config_errors(tmp_path):
    _write_db(tmp_path, [("Car", _box(30, 0), 20, 0)], np.random.default_rng(0))
    with pytest.raises(ConfigKeyError, match="gt_sampling.*SAMPLE_GROUP'"):
        DataBaseSampler(tmp_path, _sampler_cfg(SAMPLE_GROUP=["Car:1"]), CLASSES)
    with pytest.raises(ConfigKeyError, match="PREPARE.*filter_by_min_point"):
        DataBaseSampler(tmp_path, _sampler_cfg(PREPARE={"filter_by_min_point": ["Car:5"]}), CLASSES)
    with pytest.raises(ValueError, match="missing_dbinfos.pkl"):
        DataBaseSampler(tmp_path, _sampler_cfg(DB_INFO_PATH=["missing_dbinfos.pkl"]), CLASSES)


def test_gt_sampling_bad_object_file_is_named(tmp_path):
    _write_db(tmp_path, [("Car", _box(30, 0), 20, 0)], np.random.default_rng(0))
    obj = tmp_path / "gt_database" / "000000_Car_0.bin"
    obj.write_bytes(obj.read_bytes()[:-3])
    sampler = DataBaseSampler(tmp_path, _sampler_cfg(SAMPLE_GROUPS=["Car:1"]), CLASSES)
    boxes, points, names = _scene()
    with pytest.raises(ValueError, match="000000_Car_0.bin.*not a multiple of 16"):
        sampler({"points": points, "gt_boxes": boxes, "gt_names": names})


# ------------------------------------------------------------------ processor and collate

PCR = [0, -39.68, -3, 69.12, 39.68, 1]


def _processor_cfg(**vox_over):
    vox = {"NAME": "transform_points_to_voxels", "VOXEL_SIZE": [0.16, 0.16, 4], "MAX_POINTS_PER_VOXEL": 32,
           "MAX_NUMBER_OF_VOXELS": {"train": 16000, "test": 40000}}
    vox.update(vox_over)
    return [EasyDict({"NAME": "mask_points_and_boxes_outside_range", "REMOVE_OUTSIDE_BOXES": True}),
            EasyDict({"NAME": "shuffle_points", "SHUFFLE_ENABLED": {"train": True, "test": False}}),
            EasyDict(vox)]


def test_voxeliser_coords_and_grid():
    _, points, _ = _scene()
    proc = DataProcessor(_processor_cfg(), PCR, training=False, num_point_features=4)
    assert proc.grid_size.tolist() == [432, 496, 1]
    np.testing.assert_allclose(proc.voxel_size, [0.16, 0.16, 4])
    outside = np.array([[-1, 0, 0, 0], [70, 0, 0, 0], [10, 39.68, 0, 0], [10, 0, 1.0, 0], [10, 0, -3.5, 0]], np.float32)
    d = proc.forward({"points": np.concatenate([points, outside])})
    pts = d["points"]
    assert len(pts) == len(points)  # exactly the five outside points are gone (upper bounds exclusive)
    assert d["voxel_num_points"].sum() == len(pts)  # fewer than 32 points per pillar here
    assert d["voxel_coords"].shape == (len(d["voxels"]), 3)
    # coords are (z, y, x) cell indices of the voxel's points
    for v in range(0, len(d["voxels"]), 97):
        p = d["voxels"][v, : d["voxel_num_points"][v], 0:3]
        cell = np.floor((p - np.array(PCR[0:3])) / np.array([0.16, 0.16, 4])).astype(int)[:, ::-1]
        assert (cell == d["voxel_coords"][v]).all()


def test_two_voxelisers_with_suffix_and_collate():
    cfg = _processor_cfg() + [EasyDict({"NAME": "transform_points_to_voxels", "VOXEL_SIZE": [0.32, 0.32, 4],
                                        "MAX_POINTS_PER_VOXEL": 16, "MAX_NUMBER_OF_VOXELS": {"train": 8000, "test": 8000},
                                        "KEY_SUFFIX": "_teacher"})]
    proc = DataProcessor(cfg, PCR, training=True, num_point_features=4)
    assert proc.grid_size.tolist() == [432, 496, 1]
    assert proc.voxel_settings["_teacher"]["grid_size"].tolist() == [216, 248, 1]
    _, points, _ = _scene()
    samples = [proc.forward({"points": points.copy(), "frame_id": "a"}),
               proc.forward({"points": np.zeros((0, 4), np.float32), "frame_id": "b"})]
    assert len(samples[1]["voxels_teacher"]) == 0 and len(samples[1]["voxels"]) == 0
    batch = DatasetTemplate.collate_batch(samples)
    assert batch["batch_size"] == 2
    for sfx in ("", "_teacher"):
        assert batch["voxel_coords" + sfx].shape[1] == 4
        assert (batch["voxel_coords" + sfx][:, 0] == 0).all()
        assert len(batch["voxels" + sfx]) == len(batch["voxel_num_points" + sfx]) == len(samples[0]["voxels" + sfx])
    assert len(batch["voxels_teacher"]) < len(batch["voxels"])
    with pytest.raises(ValueError, match="already configured"):
        DataProcessor(cfg + [cfg[-1]], PCR, training=True, num_point_features=4)


def test_collate_pads_boxes_and_prepends_batch_index():
    samples = [
        {"frame_id": "000001", "points": np.ones((3, 4), np.float32), "gt_boxes": np.ones((2, 8), np.float32),
         "voxels": np.ones((2, 5, 4)), "voxel_coords": np.ones((2, 3), np.int32), "voxel_num_points": np.ones(2, np.int32)},
        {"frame_id": "000002", "points": np.ones((4, 4), np.float32), "gt_boxes": np.zeros((0, 8), np.float32),
         "voxels": np.ones((1, 5, 4)), "voxel_coords": np.ones((1, 3), np.int32), "voxel_num_points": np.ones(1, np.int32)},
    ]
    b = DatasetTemplate.collate_batch(samples)
    assert b["gt_boxes"].shape == (2, 2, 8) and (b["gt_boxes"][1] == 0).all()
    assert b["points"].shape == (7, 5) and b["points"][:, 0].tolist() == [0, 0, 0, 1, 1, 1, 1]
    assert b["voxel_coords"][:, 0].tolist() == [0, 0, 1]
    assert b["voxels"].shape == (3, 5, 4) and b["frame_id"].tolist() == ["000001", "000002"]
    empty = DatasetTemplate.collate_batch([dict(samples[1])])
    assert empty["gt_boxes"].shape == (1, 1, 8)  # at least one (padding) row


def test_processor_config_errors():
    with pytest.raises(ConfigKeyError, match=r"DATA_PROCESSOR\[2\].*MAX_POINT_PER_VOXEL"):
        DataProcessor(_processor_cfg(MAX_POINT_PER_VOXEL=3), PCR, training=True, num_point_features=4)
    with pytest.raises(ConfigKeyError, match="unknown processor 'voxelise'"):
        DataProcessor([EasyDict({"NAME": "voxelise"})], PCR, training=True, num_point_features=4)


def test_range_mask_drops_outside_boxes_in_training_only():
    boxes = np.array([_box(10, 0) + [1], _box(-2, 0) + [1], _box(30, 45) + [2], _box(69.0, 39.0) + [1]], np.float32)
    names = np.array(["Car", "Car", "Pedestrian", "Car"])
    pts = np.zeros((1, 4), np.float32)
    for training, expect in ((True, [0, 3]), (False, [0, 1, 2, 3])):
        proc = DataProcessor(_processor_cfg()[:1], PCR, training=training, num_point_features=4)
        d = proc.forward({"points": pts, "gt_boxes": boxes.copy(), "gt_names": names.copy()})
        np.testing.assert_array_equal(d["gt_boxes"], boxes[expect])
        assert d["gt_names"].tolist() == names[expect].tolist()
