"""Base class of KD methods (option checking, the weight) and their registry :data:`KD_METHODS`."""
import torch.nn as nn

from pcdet.config import ConfigError, check_keys
from pcdet.utils.registry import Registry

#: ``KD.METHODS[i].NAME`` -> method class; each method module registers its class with ``@KD_METHODS.register()``
KD_METHODS = Registry("KD method", "KD.METHODS[i].NAME: knowledge-distillation methods")


class KDMethod(nn.Module):
    """Base class: checks the method's config keys and holds ``WEIGHT``."""

    ALLOWED_KEYS = {"NAME", "WEIGHT"}
    REQUIRED_KEYS = ()

    def __init__(self, cfg, where):
        super().__init__()
        check_keys(cfg, self.ALLOWED_KEYS, where)
        for key in self.REQUIRED_KEYS:
            if cfg.get(key, None) is None:
                raise ConfigError(f"{where}: {key} is required")
        self.where = where
        self.weight = float(cfg.get("WEIGHT", 1.0))

    @staticmethod
    def feature_keys(cfg, default=None):
        """``(student key, teacher key)`` of the ``batch_dict`` feature a method distils: ``FEATURE``
        (required when ``default`` is None) and ``TEACHER_FEATURE`` (default: the student's key)."""
        feature = str(cfg.FEATURE if default is None else cfg.get("FEATURE", default))
        return feature, str(cfg.get("TEACHER_FEATURE", None) or feature)

    @staticmethod
    def require_segmentor(student, where, what):
        """ConfigError unless ``student`` is a segmentor (``what``: what the method distils there)."""
        if getattr(student, "family", None) != "segmentor":
            raise ConfigError(f"{where}: {what}; the student is a "
                              f"{getattr(student, 'family', None) or type(student).__name__}")

    @staticmethod
    def zero_loss(*tensors):
        """A zero that keeps the autograd graph of ``tensors`` (for batches with nothing to distil)."""
        total = None
        for t in tensors:
            if t is not None and t.requires_grad:
                total = t.sum() * 0.0 if total is None else total + t.sum() * 0.0
        return total
