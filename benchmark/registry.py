"""The table registry (``benchmark/tables/*.yaml``), the presets (``benchmark/presets.yaml``) and the
capabilities a table needs, checked against the code.

Owns :func:`load_tables`, :func:`load_presets`, :func:`capabilities`, :func:`dataset_needs`,
:func:`row_status` and :func:`table_status`. Nothing here says a capability exists because a file
says so: models, datasets, evaluators and KD methods are looked up in the package's registries
(:mod:`pcdet.registries`), config files on disk.
"""
from pathlib import Path

import yaml

from benchmark.metrics import check_metric
from pcdet.config import safe_load_yaml
from pcdet.utils.paths import REPO_ROOT

TABLES_DIR = Path(__file__).resolve().parent / "tables"
PRESETS_FILE = Path(__file__).resolve().parent / "presets.yaml"

#: every table the harness knows; a missing file is an error of ``load_tables``
TABLE_IDS = ("pd_t1", "pd_t2", "pd_t3", "pd_t4", "pd_t5", "pd_app_t1", "pd_app_t2", "pd_app_t3", "pd_app_t4",
             "pd_app_d2", "pvd_t1", "pvd_t2", "pvd_t3", "pvd_t4", "pvd_t5", "pvd_f6", "pd_paired",
             "pd_paired_baselines", "pd_paired_second")
TABLE_KEYS = {"ID", "TITLE", "PAPER_SOURCE", "TASK", "DATASET", "MEASURES", "NEEDS", "NOTES", "ROWS", "TEACHER_MODEL",
              "REFERENCE_ROW"}
ROW_KEYS = {"NAME", "MODEL", "KD", "TEACHER", "TEACHER_MODEL", "NEEDS", "PAPER", "VARIANT", "METRICS", "REFERENCE"}
MEASURES = {"accuracy", "complexity", "latency", "training_cost"}
PRESET_KEYS = {"DESCRIPTION", "FAMILY", "DATA", "EPOCHS", "TEACHER_EPOCHS", "SEEDS", "SEEDS_BY_KD", "JOBS", "LATENCY",
               "KD_OVERHEAD", "EVAL_LAST", "GATE", "KD_DIAGNOSTICS", "ORDER", "MIXED_PRECISION"}


class RegistryError(ValueError):
    """A table or preset file that does not follow the schema (the message names file and key)."""


def _check_keys(d, allowed, where):
    from pcdet.config import ConfigKeyError, check_keys

    try:
        check_keys(d, allowed, where)
    except ConfigKeyError as err:
        raise RegistryError(str(err)) from None


def load_table(path):
    path = Path(path)
    try:
        t = safe_load_yaml(path.read_text())
    except yaml.YAMLError as err:
        raise RegistryError(f"{path}: not valid YAML ({err})") from None
    if not isinstance(t, dict):
        raise RegistryError(f"{path}: expected a mapping")
    _check_keys(t, TABLE_KEYS, str(path))
    if t.get("ID") != path.stem:
        raise RegistryError(f"{path}: ID {t.get('ID')!r} differs from the file name")
    for key in ("TITLE", "PAPER_SOURCE", "TASK", "DATASET", "ROWS"):
        if not t.get(key):
            raise RegistryError(f"{path}: {key} is required")
    measures = t.get("MEASURES") or []
    bad = sorted(set(measures) - MEASURES)
    if bad:
        raise RegistryError(f"{path}: MEASURES {bad} unknown; known: {sorted(MEASURES)}")
    t["MEASURES"] = list(measures)
    t["NEEDS"] = list(t.get("NEEDS") or [])
    names = set()
    for i, row in enumerate(t["ROWS"]):
        where = f"{path}: ROWS[{i}]"
        if not isinstance(row, dict) or not row.get("NAME"):
            raise RegistryError(f"{where}: a row is a mapping with a NAME")
        _check_keys(row, ROW_KEYS, where)
        if row["NAME"] in names:
            raise RegistryError(f"{where}: duplicate row name {row['NAME']!r}")
        names.add(row["NAME"])
        row.setdefault("KD", None)
        row.setdefault("TEACHER", False)
        row.setdefault("REFERENCE", None)
        if row["REFERENCE"] is not None and not (isinstance(row["REFERENCE"], str) and row["REFERENCE"].strip()):
            raise RegistryError(f"{where}: REFERENCE is the reason the row is a paper reference (a sentence)")
        row["NEEDS"] = list(row.get("NEEDS") or [])
        row["PAPER"] = dict(row.get("PAPER") or {})
        row["METRICS"] = list(row.get("METRICS") or [])
        for metric in row["METRICS"]:
            check_metric(metric, f"{where} ({row['NAME']}) METRICS")
        for metric, value in row["PAPER"].items():
            check_metric(metric, f"{where} ({row['NAME']})")
            if value is not None and not isinstance(value, (int, float)):
                raise RegistryError(f"{where}: PAPER.{metric} must be a number or omitted, got {value!r}")
    return t


def load_tables(tables_dir=TABLES_DIR, require_all=True):
    """``{id: table}`` in :data:`TABLE_IDS` order (then any extra files)."""
    tables_dir = Path(tables_dir)
    found = {p.stem: p for p in sorted(tables_dir.glob("*.yaml"))}
    missing = [i for i in TABLE_IDS if i not in found]
    if require_all and missing:
        raise RegistryError(f"{tables_dir}: no table file for {missing}")
    order = [i for i in TABLE_IDS if i in found] + sorted(set(found) - set(TABLE_IDS))
    return {i: load_table(found[i]) for i in order}


def load_presets(path=PRESETS_FILE):
    presets = safe_load_yaml(Path(path).read_text())
    for name, p in presets.items():
        _check_keys(p, PRESET_KEYS, f"{path}: {name}")
        if p["DATA"]["KIND"] not in ("synthetic", "real"):
            raise RegistryError(f"{path}: {name}.DATA.KIND must be synthetic or real")
        from pcdet.train_utils.precision import SETTINGS  # the configs' OPTIMIZATION.MIXED_PRECISION values

        if "MIXED_PRECISION" in p and str(p["MIXED_PRECISION"]).lower() not in SETTINGS:
            raise RegistryError(f"{path}: {name}.MIXED_PRECISION {p['MIXED_PRECISION']!r} unknown; known: "
                                f"{list(SETTINGS)}")
    return presets


# ------------------------------------------------------------------------------ capabilities
def capabilities():
    """The set of ``kind:name`` strings the code provides now, read from the package's registries
    (:func:`pcdet.registries.capabilities`)."""
    from pcdet.registries import capabilities as registered

    return registered()


def dataset_needs(table, preset):
    """``dataset:<class>`` and ``evaluator:<name>`` of the table's data under ``preset``: the
    ``DATA_CONFIG.DATASET`` of the configs the preset's family uses, and the evaluator that dataset
    class declares. Empty when the family has no configs yet (the rows then wait for their configs)."""
    cfg_file = teacher_config(table, preset)
    if table["DATASET"] not in preset["FAMILY"] or not cfg_file.is_file():
        return []
    from pcdet.config import cfg_from_yaml_file
    from pcdet.datasets.registries import DATASETS

    name = cfg_from_yaml_file(cfg_file).DATA_CONFIG.DATASET
    if name not in DATASETS:
        return [f"dataset:{name}"]
    evaluator = DATASETS.get(name).EVALUATOR
    return [f"dataset:{name}"] + ([f"evaluator:{evaluator}"] if evaluator else [])


def config_paths(table, row, preset):
    """(model config, KD config or None) of a row under a preset; paths may not exist."""
    family = preset["FAMILY"].get(table["DATASET"], table["DATASET"])
    model = REPO_ROOT / "tools" / "cfgs" / f"{family}_models" / f"{row['MODEL']}.yaml"
    kd = REPO_ROOT / "kd_cfgs" / family / f"{row['MODEL']}_{row['KD']}.yaml" if row.get("KD") else None
    return model, kd


def teacher_config(table, preset, row=None):
    """The teacher config KD rows distil from: the row's TEACHER_MODEL, else the table's, else pointpillar."""
    family = preset["FAMILY"].get(table["DATASET"], table["DATASET"])
    row = row or {}
    name = (row.get("MODEL") if row.get("TEACHER") else None) or row.get("TEACHER_MODEL") or table.get(
        "TEACHER_MODEL") or "pointpillar"
    return REPO_ROOT / "tools" / "cfgs" / f"{family}_models" / f"{name}.yaml"


def row_status(table, row, preset, caps=None):
    """List of what the row waits for (empty: runnable under ``preset``)."""
    caps = capabilities() if caps is None else caps
    missing = [n for n in table["NEEDS"] + dataset_needs(table, preset) + row["NEEDS"] if n not in caps]
    if table["DATASET"] not in preset["FAMILY"]:
        missing.append(f"preset family for dataset {table['DATASET']}")
    if not row.get("MODEL"):
        missing.append("a model for this row")
        return list(dict.fromkeys(missing))
    model, kd = config_paths(table, row, preset)
    for path in (model, kd) + ((teacher_config(table, preset, row),) if kd else ()):
        if path is not None and not path.is_file():
            missing.append(f"config {path.relative_to(REPO_ROOT)}")
    return list(dict.fromkeys(missing))


def reference_rows(table):
    """Names of the rows that are paper references only (``REFERENCE``: another architecture the paper
    cites for comparison; not reproduced, their figures are printed beside the measured rows)."""
    return [r["NAME"] for r in table["ROWS"] if r.get("REFERENCE")]


def table_status(table, preset, caps=None):
    """(runnable rows, {row name: missing list}) under ``preset``; reference rows are in neither (they
    never run and never keep a table from being runnable)."""
    caps = capabilities() if caps is None else caps
    status = {r["NAME"]: row_status(table, r, preset, caps) for r in table["ROWS"] if not r.get("REFERENCE")}
    return [n for n, m in status.items() if not m], status
