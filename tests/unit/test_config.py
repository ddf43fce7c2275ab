"""Config system: _BASE_CONFIG_ resolution, --set overrides, key checks."""

import pytest

from pcdet.config import ConfigError, ConfigKeyError, cfg_from_list, cfg_from_yaml_file, check_keys


@pytest.fixture
def cfg_tree(tmp_path):
    (tmp_path / "base").mkdir()
    (tmp_path / "models" / "students").mkdir(parents=True)
    (tmp_path / "base" / "dataset.yaml").write_text(
        "DATASET: KittiDataset\nPOINT_CLOUD_RANGE: [0, -40, -3, 70.4, 40, 1]\nNUM_WORKERS: 4\nLR: 0.001\nFLAG: true\n"
    )
    (tmp_path / "models" / "teacher.yaml").write_text(
        "DATA_CONFIG:\n  _BASE_CONFIG_: ../base/dataset.yaml\n  NUM_WORKERS: 2\n"
        "MODEL:\n  NAME: PointPillar\n  BACKBONE_2D:\n    NUM_FILTERS: [64, 128, 256]\n    LAYER_NUMS: [3, 5, 5]\n"
    )
    (tmp_path / "models" / "students" / "s4x.yaml").write_text(
        "_BASE_CONFIG_: ../teacher.yaml\nMODEL:\n  BACKBONE_2D:\n    NUM_FILTERS: [32, 64, 128]\n"
    )
    return tmp_path


def test_base_config_is_relative_to_including_file(cfg_tree, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path / "base")  # the current directory must not matter
    cfg = cfg_from_yaml_file(cfg_tree / "models" / "students" / "s4x.yaml")
    assert cfg.MODEL.NAME == "PointPillar"
    assert cfg.MODEL.BACKBONE_2D.NUM_FILTERS == [32, 64, 128]
    assert cfg.MODEL.BACKBONE_2D.LAYER_NUMS == [3, 5, 5]  # inherited, merged key by key
    assert cfg.DATA_CONFIG.DATASET == "KittiDataset"
    assert cfg.DATA_CONFIG.NUM_WORKERS == 2  # the including section wins
    assert "_BASE_CONFIG_" not in cfg.DATA_CONFIG


def test_missing_base_names_path(cfg_tree):
    bad = cfg_tree / "bad.yaml"
    bad.write_text("_BASE_CONFIG_: nowhere/x.yaml\n")
    with pytest.raises(ConfigError, match="nowhere"):
        cfg_from_yaml_file(bad)


def test_circular_base_detected(tmp_path):
    (tmp_path / "a.yaml").write_text("_BASE_CONFIG_: b.yaml\n")
    (tmp_path / "b.yaml").write_text("_BASE_CONFIG_: a.yaml\n")
    with pytest.raises(ConfigError, match="circular"):
        cfg_from_yaml_file(tmp_path / "a.yaml")


def test_set_overrides_with_types(cfg_tree):
    cfg = cfg_from_yaml_file(cfg_tree / "models" / "teacher.yaml")
    cfg_from_list(["DATA_CONFIG.NUM_WORKERS", "0", "DATA_CONFIG.LR", "3", "MODEL.BACKBONE_2D.NUM_FILTERS", "[8, 16, 32]"], cfg)
    assert cfg.DATA_CONFIG.NUM_WORKERS == 0
    assert cfg.DATA_CONFIG.LR == 3  # int accepted where float was
    assert cfg.MODEL.BACKBONE_2D.NUM_FILTERS == [8, 16, 32]
    with pytest.raises(ConfigError, match="does not match the type"):
        cfg_from_list(["DATA_CONFIG.NUM_WORKERS", "many"], cfg)
    with pytest.raises(ConfigError, match="does not match the type"):
        cfg_from_list(["DATA_CONFIG.FLAG", "1"], cfg)


def test_unknown_override_names_closest_keys(cfg_tree):
    cfg = cfg_from_yaml_file(cfg_tree / "models" / "teacher.yaml")
    with pytest.raises(ConfigKeyError) as info:
        cfg_from_list(["DATA_CONFIG.NUM_WORKER", "1"], cfg)
    assert "DATA_CONFIG.NUM_WORKERS" in str(info.value)
    with pytest.raises(ConfigError, match="odd number"):
        cfg_from_list(["MODEL.NAME"], cfg)


def test_check_keys():
    check_keys({"A": 1}, {"A", "B"}, "MODEL.X")
    with pytest.raises(ConfigKeyError, match="MODEL.X.*'NUM_FILTER'.*NUM_FILTERS"):
        check_keys({"NUM_FILTER": 1}, {"NUM_FILTERS"}, "MODEL.X")


def test_the_fast_yaml_loader_reads_every_config_as_safe_load_does():
    """``safe_load_yaml`` (libyaml's parser where available) gives the value ``yaml.safe_load`` gives,
    for every YAML file the project loads (configs, KD configs, benchmark tables and presets)."""
    import yaml

    from pcdet.config import safe_load_yaml
    from pcdet.utils.paths import REPO_ROOT

    files = [p for d in ("tools/cfgs", "kd_cfgs", "benchmark") for p in sorted((REPO_ROOT / d).rglob("*.yaml"))]
    assert len(files) > 100
    for path in files:
        text = path.read_text()
        assert safe_load_yaml(text) == yaml.safe_load(text), path
    assert safe_load_yaml("a: [1, 2.5, null, yes, '3']") == {"a": [1, 2.5, None, True, "3"]}
