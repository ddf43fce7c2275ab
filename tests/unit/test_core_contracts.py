"""The core's contracts: one Registry class and its error, the per-key collate rules and point-aligned
keys, model families and feature specs, the benchmark's capability list read from the registries."""
import numpy as np
import pytest
from easydict import EasyDict

from pcdet.config import ConfigError, ConfigKeyError
from pcdet.datasets import data_contract
from pcdet.datasets.augmentor.data_augmentor import DataAugmentor
from pcdet.datasets.data_contract import CollateError, collate, take_points
from pcdet.datasets.dataset import DatasetTemplate
from pcdet.datasets.processor.data_processor import DataProcessor
from pcdet.models import build_model, family_of
from pcdet.train_utils.experiment import load_experiment_cfg
from pcdet.utils.paths import REPO_ROOT
from pcdet.utils.registry import Registry, UnknownNameError


def test_registry_register_get_build_and_one_error_type():
    reg = Registry("test_widget")

    @reg.register()
    class Knob:
        def __init__(self, cfg, scale=1):
            self.cfg, self.scale = cfg, scale

    reg.register("dial")(Knob)
    assert reg.get("Knob") is Knob and "dial" in reg and reg.names() == ["Knob", "dial"]
    built = reg.build(EasyDict(NAME="Knob"), scale=3, where="MODEL.X")
    assert isinstance(built, Knob) and built.scale == 3
    with pytest.raises(UnknownNameError, match=r"MODEL\.X: unknown test_widget 'Nob'; .* knows: Knob, dial") as err:
        reg.get("Nob", "MODEL.X")
    assert isinstance(err.value, KeyError) and isinstance(err.value, ValueError)  # old handlers still catch it
    assert isinstance(err.value, ConfigKeyError)
    with pytest.raises(ValueError, match="registered already"):
        reg.register("dial")(type("Other", (), {}))
    reg.register("dial")(Knob)  # the same object again: fine (a module imported twice)
    reg.lazy("later", "pcdet.utils.registry:Registry")
    assert "later" in reg and reg.get("later") is Registry
    assert reg.unregister("later") is Registry and "later" not in reg
    with pytest.raises(ValueError, match="exists already"):
        Registry("test_widget")


def test_every_package_registry_is_one_registry_class():
    from pcdet.registries import load_all

    regs = load_all()
    for name in ("detector", "segmentor", "vfe", "backbone_2d", "map_to_bev", "dense_head", "roi_head", "seg_head",
                 "dataset", "augmentation", "processor", "evaluator", "dataset_writer", "KD method", "hook"):
        assert isinstance(regs[name], Registry), name
    assert "PointPillar" in regs["detector"] and "PVDDet" in regs["KD method"] and "PVD" in regs["KD method"]
    assert "Cylinder3D" in regs["segmentor"]
    assert {"kitti"} <= set(regs["evaluator"]) and "KittiDataset" in regs["dataset"]


def test_capabilities_come_from_the_registries():
    from benchmark import registry as tables
    from pcdet.models.registries import DETECTORS

    caps = tables.capabilities()
    assert {"detector:PointPillar", "dataset:KittiDataset", "evaluator:kitti", "kd:PointDistiller"} <= caps
    DETECTORS.register("FakeNet")(type("FakeNet", (), {}))
    try:
        assert "detector:FakeNet" in tables.capabilities()
    finally:
        DETECTORS.unregister("FakeNet")
    assert "detector:FakeNet" not in tables.capabilities()


def _samples():
    a = {"points": np.ones((3, 4), np.float32), "point_labels": np.array([0, 1, 2]), "voxels": np.zeros((2, 5, 4)),
         "voxel_coords": np.zeros((2, 3), np.int32), "point_to_voxel": np.array([0, 1, 1]), "frame_id": "a",
         "gt_boxes": np.ones((1, 8), np.float32), "calib": object(), "flip_x": True}
    b = {"points": np.ones((2, 4), np.float32), "point_labels": np.array([3, 4]), "voxels": np.zeros((1, 5, 4)),
         "voxel_coords": np.zeros((1, 3), np.int32), "point_to_voxel": np.array([0, 0]), "frame_id": "b",
         "gt_boxes": np.zeros((0, 8), np.float32), "calib": object(), "flip_x": False}
    return [a, b]


def test_collate_rules_by_key():
    samples = _samples()
    batch = DatasetTemplate.collate_batch(samples)
    assert batch["points"].shape == (5, 5) and batch["points"][:, 0].tolist() == [0, 0, 0, 1, 1]
    assert batch["voxel_coords"][:, 0].tolist() == [0, 0, 1]
    assert batch["point_labels"].tolist() == [0, 1, 2, 3, 4]  # concat, no batch column
    assert batch["point_to_voxel"].tolist() == [0, 1, 1, 2, 2]  # shifted by the voxels of sample 0
    assert batch["gt_boxes"].shape == (2, 1, 8) and batch["frame_id"].tolist() == ["a", "b"]
    assert isinstance(batch["calib"], list) and batch["flip_x"].tolist() == [True, False] and batch["batch_size"] == 2
    # an unknown key of varying length is an error naming it, never a silent list
    for s, n in zip(samples, (4, 7)):
        s["my_feature"] = np.zeros(n)
    with pytest.raises(CollateError, match="'my_feature'.*register_collate_rule"):
        DatasetTemplate.collate_batch(samples)
    data_contract.register_collate_rule("my_feature", "concat")
    try:
        assert DatasetTemplate.collate_batch(samples)["my_feature"].shape == (11,)
    finally:
        data_contract.COLLATE_RULES.pop("my_feature")
    assert collate("voxels_tea", [np.zeros((2, 1)), np.zeros((3, 1))], samples).shape == (5, 1)  # suffix: base rule


def test_point_aligned_keys_follow_masks_and_shuffles():
    d = {"points": np.arange(12, dtype=np.float32).reshape(6, 2), "point_labels": np.arange(6), "gt_boxes": np.zeros((1, 7))}
    take_points(d, np.array([True, False, True, True, False, True]))
    assert d["point_labels"].tolist() == [0, 2, 3, 5] and d["points"][:, 0].tolist() == [0, 4, 6, 10]
    take_points(d, np.array([3, 2, 1, 0]))
    assert d["point_labels"].tolist() == [5, 3, 2, 0] and d["gt_boxes"].shape == (1, 7)
    d["point_labels"] = d["point_labels"][:2]
    with pytest.raises(ValueError, match="'point_labels' has 2 rows but points has 4"):
        take_points(d, np.array([True] * 4))
    # the configured steps keep labels aligned: labels encode the point's x here
    proc = DataProcessor([{"NAME": "mask_points_and_boxes_outside_range"},
                          {"NAME": "shuffle_points", "SHUFFLE_ENABLED": {"train": True, "test": True}}],
                         point_cloud_range=[0, -5, -3, 10, 5, 1], training=True, num_point_features=4)
    rng = np.random.default_rng(0)
    pts = np.concatenate([rng.uniform(-5, 15, (200, 1)), rng.uniform(-4, 4, (200, 2)), rng.uniform(0, 1, (200, 1))], 1)
    out = proc.forward({"points": pts.astype(np.float32), "point_labels": np.floor(pts[:, 0] * 1000).astype(np.int64)})
    assert 0 < len(out["points"]) < 200 and np.array_equal(out["point_labels"], np.floor(out["points"][:, 0] * 1000))


def test_world_augmentations_need_no_boxes_and_gt_sampling_refuses_point_labels(tmp_path):
    aug = DataAugmentor(tmp_path, EasyDict(AUG_CONFIG_LIST=[EasyDict(NAME="random_world_flip", ALONG_AXIS_LIST=["x"]),
                                                          EasyDict(NAME="random_world_rotation", WORLD_ROT_ANGLE=[-1, 1]),
                                                          EasyDict(NAME="random_world_scaling",
                                                                   WORLD_SCALE_RANGE=[0.9, 1.1])]), ["Car"])
    d = aug.forward({"points": np.ones((5, 4), np.float32), "point_labels": np.arange(5)}, rng=np.random.default_rng(0))
    assert "gt_boxes" not in d and d["point_labels"].tolist() == [0, 1, 2, 3, 4] and "noise_rot" in d
    from pcdet.datasets.augmentor.database_sampler import DataBaseSampler

    sampler = DataBaseSampler.__new__(DataBaseSampler)
    with pytest.raises(ConfigError, match=r"gt_sampling .*\['point_labels'\]"):
        sampler({"points": np.ones((5, 4)), "point_labels": np.arange(5), "gt_boxes": np.zeros((0, 7))})


def test_families_and_feature_specs_of_a_built_detector():
    cfg = load_experiment_cfg(REPO_ROOT / "tools" / "cfgs" / "synthetic_models" / "pointpillar_4x.yaml")
    assert family_of(cfg.MODEL) == "detector"
    with pytest.raises(UnknownNameError, match=r"unknown model 'NoNet'; detectors: .*PointPillar.*; segmentors"):
        family_of(EasyDict(NAME="NoNet"))
    from pcdet.datasets.point_cloud_files import PointCloudFileDataset

    frame = REPO_ROOT / "frame.bin"  # never read: the model is built from the dataset's geometry only
    ds = PointCloudFileDataset(cfg.DATA_CONFIG, cfg.CLASS_NAMES, [frame])
    model = build_model(cfg.MODEL, 3, ds)
    specs = model.feature_specs
    assert specs["pillar_features"].channels == 32 and specs["pillar_features"].layout == "sparse_rows"
    assert specs["pillar_features"].coord_key == "voxel_coords" and specs["pillar_features"].count_key == "voxel_num_points"
    assert specs["spatial_features"].layout == "dense_bev" and specs["spatial_features"].stride == 1
    assert specs["spatial_features_2x"].channels == 32 and specs["spatial_features_2x"].stride == 2
    assert specs["spatial_features_8x_preact"].channels == 128
    assert specs["spatial_features_2d"].channels == 192 and specs["spatial_features_2d"].stride == 2
    assert specs["cls_preds"].layout == "head_map" and specs["cls_preds"].channels == 18  # 6 anchors x 3 classes
    assert model.model_info["feature_map_stride"] == 2
    bad = EasyDict(dict(cfg.MODEL, BACKBONE_3D=EasyDict(NAME="VoxelBackBone8x")))
    with pytest.raises(ConfigError, match=r"unknown section 'BACKBONE_3D'; PointPillar builds VFE, MAP_TO_BEV"):
        build_model(bad, 3, ds)
