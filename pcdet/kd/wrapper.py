"""DistillationWrapper: one model that owns the student, a frozen teacher and the KD methods.

Owns :class:`DistillationWrapper`, :func:`build_kd_network` (what ``pcdet.models.build_network``
returns for a config with a ``KD`` section), :func:`load_teacher_weights`, :func:`load_student_weights`
(the student out of any checkpoint, for evaluation) and the errors
:class:`TeacherCheckpointError` / :class:`TeacherInputError`.

Training (``wrapper.train()``): ``forward(batch_dict)`` runs the teacher once (eval mode, no
gradient) on a shallow copy of the batch and records its outputs under ``<key>_tea``, then each method's optional
``prepare_student_inputs(batch_dict)``, then the student (which writes its own keys into ``batch_dict``)
and every KD method; it returns
``({'loss': task + sum(kd)}, tb_dict, disp_dict)`` like any detector. Evaluation
(``wrapper.eval()``): exactly the student's forward (post-processed predictions).

The teacher is deliberately *not* a registered submodule: it is kept in a plain attribute and moved
with the wrapper by :meth:`DistillationWrapper._apply`. Hence ``parameters()`` (the optimizer,
gradient clipping), ``state_dict()`` (training checkpoints), ``train()``, DDP and SyncBN
conversion never see it. Its parameters do not require gradients and it stays in eval mode, so
its BatchNorm statistics never change. Training checkpoints hold ``student.*`` and
``kd_methods.*`` (adapters); resuming rebuilds the teacher from ``KD.TEACHER.CKPT``.
:meth:`DistillationWrapper.export_state_dict` is the student alone, loadable with the student
config (``tools/test.py --cfg_file <student cfg> --ckpt student_epoch_N.pth``).

Teacher keys (one suffix, :mod:`pcdet.kd.keys`): everything the teacher's ``extract_features``
writes, recorded as ``<key>_tea`` (``pillar_features_tea``, ``spatial_features_2d_tea``,
``cls_preds_tea``, ``batch_box_preds_tea``, ...), plus its inputs ``voxel_coords_tea`` and
``voxel_num_points_tea``. A teacher that voxelises differently reads the keys its own voxeliser
wrote (``KEY_SUFFIX: _tea``; which keys, the data processor says:
``DataProcessor.keys_with_suffix``), so a teacher of another input kind needs no change here.
"""
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn as nn

from pcdet.config import ConfigError
from pcdet.kd.config import TEACHER_SUFFIX, resolve_ckpt_path, voxeliser_of
from pcdet.kd.keys import TEA
from pcdet.kd.methods import build_kd_methods
from pcdet.models.model_template import (
    CheckpointMismatchError,
    load_model_weights,
    read_checkpoint,
)


class TeacherCheckpointError(RuntimeError):
    """The teacher has no weights where training needs them, or the file cannot be used."""


class TeacherInputError(KeyError):
    """The batch lacks the teacher's own (suffixed) voxels."""

    def __str__(self):
        return self.args[0] if self.args else ""


class _TeacherDatasetView:
    """The student's dataset as seen by a teacher with its own voxeliser (grid from that voxeliser)."""

    def __init__(self, dataset, settings):
        self._dataset = dataset
        self.class_names = dataset.class_names
        self.point_feature_encoder = dataset.point_feature_encoder
        self.data_processor = SimpleNamespace(
            grid_size=np.asarray(settings["grid_size"]),
            voxel_size=np.asarray(settings["voxel_size"]),
            point_cloud_range=np.asarray(settings["point_cloud_range"]),
        )

    def __getattr__(self, name):
        return getattr(self.__dict__["_dataset"], name)


class DistillationWrapper(nn.Module):
    def __init__(self, student, teacher, kd_methods, method_tags=None, teacher_suffix="", teacher_loaded=True,
                 teacher_input_keys=()):
        super().__init__()
        self.teacher_input_keys = tuple(teacher_input_keys)  # base keys the teacher reads from '<key>_tea'
        self.student = student
        self.kd_methods = kd_methods if isinstance(kd_methods, nn.ModuleList) else nn.ModuleList(kd_methods)
        self.method_tags = list(method_tags) if method_tags else [f"kd_{i}" for i in range(len(self.kd_methods))]
        self.teacher_suffix = teacher_suffix
        self.teacher_loaded = teacher_loaded
        self.kd_scale = 1.0  # multiplies the sum of the KD losses (the kd_weight_warmup hook sets it)
        self.diagnostics_every = 0  # > 0: diagnostics every so many training steps (the kd_diagnostics hook)
        self.last_diagnostics = {}
        self._train_steps = 0
        self.teacher_calls = 0
        teacher.requires_grad_(False)
        teacher.eval()
        # a plain attribute, not a submodule: invisible to parameters(), state_dict(), train(), DDP
        object.__setattr__(self, "_teacher", teacher)

    # ------------------------------------------------------------------ the teacher stays frozen
    @property
    def teacher(self):
        return self.__dict__["_teacher"]

    def train(self, mode=True):
        super().train(mode)
        self.teacher.eval()
        return self

    def _apply(self, fn, *args, **kwargs):
        super()._apply(fn, *args, **kwargs)
        self.teacher._apply(fn, *args, **kwargs)
        self.teacher.requires_grad_(False)
        return self

    # ------------------------------------------------------------------ student facade
    @property
    def num_class(self):
        return self.student.num_class

    @property
    def class_names(self):
        return self.student.class_names

    @property
    def dataset(self):
        return self.student.dataset

    @property
    def module_list(self):
        return self.student.module_list

    def export_state_dict(self):
        """The student's weights alone (no adapter, no teacher keys), on the CPU."""
        return {k: v.detach().cpu() for k, v in self.student.state_dict().items()}

    def load_params_from_file(self, filename, logger=None, strict=True):
        """Initialise from a wrapper checkpoint (``student.*``/``kd_methods.*`` keys) or a student one."""
        ckpt, state = read_checkpoint(filename)
        target = self if is_wrapper_state(state) else self.student
        load_model_weights(target, state, filename, strict=strict, logger=logger)
        return ckpt

    def start_diagnostics(self, every, step=0):
        """Diagnostics every ``every`` training steps, counted from ``step``: the global step the training
        starts at (a resumed run's), so that they fall on the same global steps as in an uninterrupted
        run and their ``step`` field is the global step. Starts each method that logs its own
        diagnostics (one with a ``start_diagnostics(every, step)`` method) alike."""
        self.diagnostics_every, self._train_steps = int(every), int(step)
        for method in self.kd_methods:
            if callable(getattr(method, "start_diagnostics", None)):
                method.start_diagnostics(every, step)

    # ------------------------------------------------------------------ running
    def _diagnostics(self, batch_dict, task, tb_dict):
        """This step's diagnostics: each method's own (``last_diagnostics`` of this step) and the ratio of
        its KD gradient to the task gradient at its distilled feature (:mod:`pcdet.kd.diagnostics`)."""
        from pcdet.kd.diagnostics import gradient_ratio

        out = {"step": self._train_steps}
        for tag, method in zip(self.method_tags, self.kd_methods):
            # a method with its own diagnostics computed them in this step's forward (same step counter)
            out.update({f"{tag}/{k}": v for k, v in (getattr(method, "last_diagnostics", None) or {}).items()})
            loss, feature = method.__dict__.pop("last_loss", None), batch_dict.get(getattr(method, "feature", None))
            if loss is not None and feature is not None:
                ratio = gradient_ratio(loss, task, feature)
                if ratio is not None:
                    out[f"{tag}/grad_ratio"] = ratio
                    tb_dict[f"{tag}/diag/grad_ratio"] = ratio
        return out

    def run_teacher(self, batch_dict):
        """Teacher forward (eval, no grad) on a shallow copy; its outputs land under ``<key>_tea``."""
        view = dict(batch_dict)
        if self.teacher_suffix:
            missing = [k + self.teacher_suffix for k in self.teacher_input_keys if k + self.teacher_suffix not in batch_dict]
            if missing:
                raise TeacherInputError(
                    f"the teacher voxelises differently from the student and reads {missing}, which the batch lacks; "
                    f"the data config needs a transform_points_to_voxels step with KEY_SUFFIX {self.teacher_suffix!r} "
                    f"(load the KD config with pcdet.train_utils.experiment.load_experiment_cfg, which adds it)"
                )
            for k in self.teacher_input_keys:
                view[k] = batch_dict[k + self.teacher_suffix]
        inputs = {k: view[k] for k in view}
        teacher = self.teacher
        if teacher.training:  # e.g. someone called teacher.train() directly
            teacher.eval()
        with torch.no_grad():
            view = teacher.extract_features(view)
        self.teacher_calls += 1
        for key, val in view.items():
            if key in inputs and inputs[key] is val:
                continue
            batch_dict[key + TEA] = val
        for key in ("voxel_coords", "voxel_num_points"):
            if key in view:
                batch_dict[key + TEA] = view[key]
        return batch_dict

    def forward(self, batch_dict):
        if not self.training:
            return self.student(batch_dict)
        if not self.teacher_loaded:
            raise TeacherCheckpointError(
                "KD training needs teacher weights: set KD.TEACHER.CKPT in the config or pass --teacher_ckpt"
            )
        self.run_teacher(batch_dict)
        for method in self.kd_methods:  # e.g. label KD: teacher boxes join the ground truth
            prepare = getattr(method, "prepare_student_inputs", None)
            if prepare is not None:
                batch_dict = prepare(batch_dict)
        ret, tb_dict, disp_dict = self.student(batch_dict)
        task = ret["loss"]
        tb_dict = dict(tb_dict)
        disp_dict = dict(disp_dict)
        kd_total = task.new_zeros(())
        for tag, method in zip(self.method_tags, self.kd_methods):
            # KD losses in full precision even inside a mixed-precision forward (see kd.nodes.full_precision)
            with torch.autocast(task.device.type, enabled=False):
                loss, method_tb = method(batch_dict)
            if self.diagnostics_every and self._train_steps % self.diagnostics_every == 0:
                method.__dict__["last_loss"] = loss  # for the gradient ratio of this step's diagnostics
            kd_total = kd_total + loss
            tb_dict[tag] = float(loss.detach())
            for key, val in (method_tb or {}).items():
                tb_dict[f"{tag}/{key}"] = val
        if self.kd_scale != 1.0:
            kd_total = kd_total * self.kd_scale
            tb_dict["kd_scale"] = float(self.kd_scale)
        if self.diagnostics_every and self._train_steps % self.diagnostics_every == 0:
            self.last_diagnostics = self._diagnostics(batch_dict, task, tb_dict)
        self._train_steps += 1
        tb_dict["loss_task"] = float(task.detach())
        tb_dict["loss_kd"] = float(kd_total.detach())
        disp_dict["loss_kd"] = f"{float(kd_total.detach()):.4f}"
        return {"loss": task + kd_total}, tb_dict, disp_dict


# ---------------------------------------------------------------------------------- checkpoints
STUDENT_PREFIX = "student."


def is_wrapper_state(state):
    """Is ``state`` a :class:`DistillationWrapper` state dict (``student.*`` / ``kd_methods.*`` keys)?"""
    return any(k.startswith(STUDENT_PREFIX) for k in state)


def student_state_dict(state):
    """The student's own tensors of a checkpoint's state dict: from a wrapper training checkpoint its
    ``student.*`` keys with the prefix removed (the ``kd_methods.*`` adapters are left out); any other
    state dict (an exported ``student_epoch_N.pth``, a plain model checkpoint) unchanged."""
    if not is_wrapper_state(state):
        return state
    n = len(STUDENT_PREFIX)
    return {k[n:]: v for k, v in state.items() if k.startswith(STUDENT_PREFIX)}


def load_student_weights(model, filename, logger=None):
    """Load the weights to evaluate into ``model`` (a bare detector): a plain or exported student
    checkpoint, or the student inside a KD training checkpoint. What ``tools/test.py`` uses, so a KD
    config and its training checkpoints evaluate the student without building the teacher. The
    strict shape/key check names the first key that does not fit."""
    ckpt, state = read_checkpoint(filename)
    wrapper = is_wrapper_state(state)
    load_model_weights(model, student_state_dict(state), filename + (" (its student.* tensors)" if wrapper else ""),
                       logger=logger, what="the student of the KD checkpoint" if wrapper else "checkpoint")
    return ckpt


# ---------------------------------------------------------------------------------- building
def load_teacher_weights(teacher, ckpt_path):
    """Load ``ckpt_path`` (a training checkpoint's ``model_state`` or a bare state dict) into the teacher.

    Raises :class:`CheckpointMismatchError` naming the first mismatching key (and both shapes) when
    the checkpoint was trained with another teacher config.
    """
    path = resolve_ckpt_path(ckpt_path)
    if not path.is_file():
        raise TeacherCheckpointError(f"KD.TEACHER.CKPT / --teacher_ckpt: file not found: {path}")
    try:
        _, state = read_checkpoint(str(path))
    except CheckpointMismatchError as err:
        raise TeacherCheckpointError(str(err)) from None
    load_model_weights(teacher, state, f"teacher checkpoint {path} (KD.TEACHER.MODEL)")
    return teacher


def _student_voxel_settings(dataset):
    proc = dataset.data_processor
    settings = getattr(proc, "voxel_settings", None)
    if settings and "" in settings:
        return settings[""]
    return {"voxel_size": np.asarray(proc.voxel_size), "point_cloud_range": np.asarray(proc.point_cloud_range)}


def _teacher_input(dataset, kd_cfg):
    """(suffix, dataset for building the teacher): the teacher's own voxels if the data has them."""
    settings = getattr(dataset.data_processor, "voxel_settings", None) or {}
    if TEACHER_SUFFIX in settings:
        return TEACHER_SUFFIX, _TeacherDatasetView(dataset, settings[TEACHER_SUFFIX])
    t_data = kd_cfg.TEACHER.get("DATA_CONFIG", None)
    t_vox = voxeliser_of(t_data) if t_data is not None else None
    if t_vox is not None:
        s = _student_voxel_settings(dataset)
        diff = []
        if not np.allclose(np.asarray(t_vox.VOXEL_SIZE, dtype=np.float64), np.asarray(s["voxel_size"], dtype=np.float64)):
            diff.append("VOXEL_SIZE")
        if "max_points_per_voxel" in s and int(t_vox.MAX_POINTS_PER_VOXEL) != int(s["max_points_per_voxel"]):
            diff.append("MAX_POINTS_PER_VOXEL")
        mode = getattr(dataset.data_processor, "mode", None)
        if "max_number_of_voxels" in s and mode is not None:
            t_max = t_vox.MAX_NUMBER_OF_VOXELS
            t_max = t_max[mode] if isinstance(t_max, dict) else t_max
            if int(t_max) != int(s["max_number_of_voxels"]):
                diff.append("MAX_NUMBER_OF_VOXELS")
        if diff:
            raise ConfigError(
                f"the teacher's voxeliser differs from the student's in {diff} but the data has no "
                f"{TEACHER_SUFFIX!r} voxeliser; load the KD config with load_experiment_cfg (it adds one)"
            )
    return "", dataset


def _method_tags(methods_cfg):
    tags, seen = [], {}
    for cfg in methods_cfg:
        base = f"kd_{str(cfg.get('NAME', '?')).lower()}"
        if cfg.get("FEATURE", None):
            base += f"_{cfg.FEATURE}"
        seen[base] = seen.get(base, 0) + 1
        tags.append(base if seen[base] == 1 else f"{base}_{seen[base]}")
    return tags


def build_kd_network(model_cfg, num_class, dataset, kd_cfg):
    """Student from ``model_cfg``, teacher from ``kd_cfg.TEACHER.MODEL`` (weights from its CKPT),
    KD methods from ``kd_cfg.METHODS``, all in one :class:`DistillationWrapper`.

    A missing CKPT is an error when ``dataset`` is a training set; otherwise (evaluation only) the
    wrapper is built and refuses to train.
    """
    teacher_cfg = kd_cfg.get("TEACHER", None)
    if teacher_cfg is None or teacher_cfg.get("MODEL", None) is None:
        raise ConfigError("KD.TEACHER.MODEL is missing (give the teacher config via _BASE_CONFIG_ or CFG_FILE)")
    t_classes = teacher_cfg.get("CLASS_NAMES", None)
    if t_classes is not None and list(t_classes) != list(dataset.class_names):
        raise ConfigError(f"KD.TEACHER.CLASS_NAMES {list(t_classes)} differ from the dataset's {list(dataset.class_names)}")
    from pcdet.models import build_model

    student = build_model(model_cfg, num_class, dataset)
    suffix, teacher_dataset = _teacher_input(dataset, kd_cfg)
    teacher = build_model(teacher_cfg.MODEL, num_class, teacher_dataset)
    ckpt = teacher_cfg.get("CKPT", None)
    if ckpt:
        load_teacher_weights(teacher, ckpt)
    elif getattr(dataset, "training", False):
        raise TeacherCheckpointError(
            "KD.TEACHER.CKPT is not set: KD training needs the teacher's weights; set KD.TEACHER.CKPT in the "
            "config or pass --teacher_ckpt PATH to tools/train.py"
        )
    methods_cfg = kd_cfg.get("METHODS", None) or []
    if not methods_cfg:
        raise ConfigError("KD.METHODS must list at least one method")
    methods = build_kd_methods(methods_cfg, student, teacher)
    keys = dataset.data_processor.keys_with_suffix.get(suffix, ()) if suffix else ()
    if suffix and not keys:
        raise ConfigError(f"the teacher reads '{suffix}' inputs but no data processor step writes any")
    return DistillationWrapper(student, teacher, methods, _method_tags(methods_cfg), teacher_suffix=suffix,
                               teacher_loaded=bool(ckpt), teacher_input_keys=keys)


__all__ = ["DistillationWrapper", "build_kd_network", "load_teacher_weights", "load_student_weights",
           "student_state_dict", "TeacherCheckpointError", "TeacherInputError", "CheckpointMismatchError"]
