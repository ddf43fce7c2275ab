"""The per-sample data contract: which keys are point-aligned, and how each key is collated.

Owns :data:`POINT_KEYS`, :data:`COLLATE_RULES`, :func:`take_points`, :func:`point_keys_in`,
:func:`collate_rule` and :func:`collate`, plus :func:`register_point_key` /
:func:`register_collate_rule` for keys a new dataset or model family adds.

Point-aligned keys have one row per point of ``points``, in the same order: every step that drops,
reorders or inserts points (range masking, shuffling, ground-truth sampling) must apply the same
change to every point-aligned key present (:func:`take_points`), and a step that cannot
(``gt_sampling`` has no per-point labels for the objects it pastes) refuses, naming the key.
World flips, rotations and scalings only move coordinates, so the rows stay aligned.

Collate rules (``batch_dict`` from a list of per-sample dicts; a suffixed key such as
``voxel_coords_tea`` follows the rule of its base key ``voxel_coords``):

====================  ==============================================================================
rule                  result
====================  ==============================================================================
``concat_batch_idx``  rows concatenated, a leading column with the sample index (points, voxel_coords)
``concat``            rows concatenated (voxels, per-point labels)
``concat_offset``     index rows concatenated, each sample's values shifted by the number of rows of
                      the referenced key in the samples before it (point -> voxel indices)
``pad_stack``         (B, max(1, max M), W) zero-padded stack (gt_boxes: class 0 = padding)
``stack``             ``np.stack`` (per-sample scalars and fixed-size arrays)
``array``             ``np.array`` of the values (frame ids)
``list``              the Python list (calibration objects, metadata)
====================  ==============================================================================

A key without a rule is stacked when every sample's value has the same shape; a variable-length key
without a rule is an error that names the key (never a silent list).
"""
import numpy as np

#: point-aligned keys: one row per point of ``points``
POINT_KEYS = {"points", "point_labels", "point_inst_labels", "point_to_voxel"}

#: key -> rule (see the module docstring); ("concat_offset", KEY) shifts by the rows of KEY
COLLATE_RULES = {
    "points": "concat_batch_idx",
    "voxel_coords": "concat_batch_idx",
    "voxels": "concat",
    "voxel_num_points": "concat",
    "point_labels": "concat",
    "point_inst_labels": "concat",
    "point_to_voxel": ("concat_offset", "voxels"),
    "gt_boxes": "pad_stack",
    "frame_id": "array",
    "calib": "list",
    "metadata": "list",
}
#: suffixes a key may carry and still follow its base key's rule (the KD teacher's own voxels)
KEY_SUFFIXES = ("_tea",)
RULES = {"concat_batch_idx", "concat", "concat_offset", "pad_stack", "stack", "array", "list"}


class CollateError(ValueError):
    """A key cannot be collated; the message names it and what to declare."""


def register_point_key(key):
    """Declare ``key`` point-aligned (one row per point); returns ``key``."""
    POINT_KEYS.add(key)
    return key


def register_collate_rule(key, rule):
    """Declare how ``key`` is collated (a rule name, or ``("concat_offset", other_key)``)."""
    name = rule[0] if isinstance(rule, tuple) else rule
    if name not in RULES:
        raise ValueError(f"collate rule {rule!r} for {key!r}: use one of {', '.join(sorted(RULES))}")
    COLLATE_RULES[key] = rule
    return rule


def _base_and_suffix(key):
    for sfx in KEY_SUFFIXES:
        if key.endswith(sfx) and key[: -len(sfx)] in COLLATE_RULES:
            return key[: -len(sfx)], sfx
    return key, ""


def collate_rule(key):
    """``(rule, suffix)`` of ``key``; rule None when none is declared."""
    if key in COLLATE_RULES:
        return COLLATE_RULES[key], ""
    base, sfx = _base_and_suffix(key)
    return COLLATE_RULES.get(base), sfx


def point_keys_in(data_dict):
    """The point-aligned keys present in ``data_dict`` (``points`` first)."""
    keys = [k for k in data_dict if k in POINT_KEYS]
    return sorted(keys, key=lambda k: (k != "points", k))


def take_points(data_dict, index):
    """Apply one row selection ``index`` (a boolean mask or an index array over the points) to every
    point-aligned key; a key whose length differs from ``points`` is an error naming it."""
    n = len(data_dict["points"])
    for key in point_keys_in(data_dict):
        val = data_dict[key]
        if len(val) != n:
            raise ValueError(f"point-aligned key {key!r} has {len(val)} rows but points has {n}; every step that "
                             f"drops or reorders points must keep them aligned")
        data_dict[key] = val[index]
    return data_dict


def _stack(key, vals):
    shapes = {np.shape(v) for v in vals}
    if len(shapes) > 1:
        raise CollateError(
            f"collate_batch: key {key!r} varies in shape between samples ({sorted(shapes)[:3]}...) and has no "
            f"collate rule; declare one with pcdet.datasets.data_contract.register_collate_rule({key!r}, ...)"
        )
    return np.stack(vals, axis=0)


def collate(key, vals, samples):
    """Collate ``vals`` (one per sample) of ``key``; ``samples`` are the per-sample dicts."""
    rule, sfx = collate_rule(key)
    name = rule[0] if isinstance(rule, tuple) else rule
    if name == "concat_batch_idx":
        padded = [np.concatenate([np.full((len(v), 1), i, dtype=v.dtype), v], axis=1) for i, v in enumerate(vals)]
        return np.concatenate(padded, axis=0)
    if name == "concat":
        return np.concatenate(vals, axis=0)
    if name == "concat_offset":
        ref = rule[1] + sfx
        offsets = np.cumsum([0] + [len(s[ref]) for s in samples[:-1]])
        return np.concatenate([np.asarray(v) + off for v, off in zip(vals, offsets)], axis=0)
    if name == "pad_stack":
        width = max(v.shape[-1] if v.ndim == 2 else 8 for v in vals)
        max_rows = max(1, max(len(v) for v in vals))
        out = np.zeros((len(vals), max_rows, width), dtype=np.float32)
        for i, v in enumerate(vals):
            if len(v):
                out[i, : len(v), :] = v
        return out
    if name == "array":
        return np.array(vals)
    if name == "list":
        return list(vals)
    return _stack(key, vals)  # "stack", or no rule: equal shapes only
