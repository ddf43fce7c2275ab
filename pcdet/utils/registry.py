"""One registry class for every name -> class table of the toolkit.

Owns :class:`Registry` and :class:`UnknownNameError`. A registry maps the ``NAME`` a config writes
to the class (or factory) that builds it::

    DENSE_HEADS = Registry("dense_head", "MODEL.DENSE_HEAD.NAME: detection heads")

    @DENSE_HEADS.register()
    class AnchorHeadSingle(AnchorHeadTemplate): ...

    head = DENSE_HEADS.build(cfg, where="MODEL.DENSE_HEAD", input_channels=384, ...)

``register(name=None)`` works as a decorator or a call (``REG.register()(cls)``, ``REG.register("x")(fn)``);
registering another object under a taken name is an error, re-registering the same one is not (a
module imported twice). ``get`` and ``build`` raise :class:`UnknownNameError`, which names the
registry, the config place and the known names (it is a :class:`pcdet.config.ConfigKeyError`, so
both ``KeyError`` and ``ValueError`` handlers catch it). ``lazy(name, "module:attr")`` registers an
entry that is imported on first use (the dataset registry keeps ``import pcdet.datasets`` light).

Registries of the package (each in the package that owns the entries): ``pcdet.models.registries``
(models and their parts), ``pcdet.datasets.registries`` (datasets, augmentations, processors,
evaluators, dataset writers), ``pcdet.kd.methods`` (``KD_METHODS``), ``pcdet.train_utils.hooks``
(``HOOKS``). :func:`all_registries` lists every one created, for ``python -m pcdet.registries``
and the benchmark's capability list.
"""
import importlib

from pcdet.config import ConfigKeyError

_ALL = {}


class UnknownNameError(ConfigKeyError):
    """A name no registry entry has; the message names the registry and lists the known names."""


class Registry:
    """``name -> object`` with a helpful error; see the module docstring."""

    def __init__(self, name, doc=""):
        if name in _ALL:
            raise ValueError(f"a registry named {name!r} exists already")
        self.name, self.doc = name, doc
        self._entries = {}
        self._lazy = {}
        _ALL[name] = self

    # ------------------------------------------------------------------ registering
    def register(self, name=None):
        """Decorator: ``@REG.register()`` (the object's ``__name__``) or ``@REG.register("name")``."""
        def deco(obj):
            key = name or obj.__name__
            known = self._entries.get(key)
            if known is not None and known is not obj:
                raise ValueError(f"{self.name} registry: {key!r} is registered already ({known!r})")
            self._entries[key] = obj
            self._lazy.pop(key, None)
            return obj

        return deco

    def unregister(self, name):
        """Remove ``name`` (a plugin or a test undoing its registration); returns what was registered."""
        self._lazy.pop(name, None)
        return self._entries.pop(name, None)

    def lazy(self, name, target):
        """Register ``"package.module:attr"`` under ``name``, imported on first :meth:`get`."""
        if name not in self._entries:
            self._lazy[name] = target

    # ------------------------------------------------------------------ looking up
    def names(self):
        return sorted(set(self._entries) | set(self._lazy))

    def __contains__(self, name):
        return name in self._entries or name in self._lazy

    def __iter__(self):
        return iter(self.names())

    def __len__(self):
        return len(self.names())

    def get(self, name, where=None):
        """The object registered as ``name``; :class:`UnknownNameError` otherwise."""
        if name in self._entries:
            return self._entries[name]
        if name in self._lazy:
            module, _, attr = self._lazy[name].partition(":")
            obj = getattr(importlib.import_module(module), attr)
            self._entries.setdefault(name, obj)
            self._lazy.pop(name, None)
            return self._entries[name]
        place = f"{where}: " if where else ""
        known = ", ".join(self.names()) or "none registered yet"
        raise UnknownNameError(f"{place}unknown {self.name} {name!r}; the {self.name} registry knows: {known}")

    __getitem__ = get

    def build(self, cfg, *args, where=None, **kwargs):
        """``get(cfg.NAME)(cfg, *args, **kwargs)``."""
        name = cfg.get("NAME", None) if hasattr(cfg, "get") else None
        if name is None:
            raise UnknownNameError(f"{where or self.name}: a NAME is required (the {self.name} registry knows: "
                                   f"{', '.join(self.names())})")
        return self.get(name, where)(cfg, *args, **kwargs)

    def items(self):
        return [(n, self.get(n)) for n in self.names()]

    def __repr__(self):
        return f"Registry({self.name!r}, {len(self)} entries)"


def all_registries():
    """``{registry name: Registry}`` of every registry created so far (import the packages first:
    :func:`pcdet.registries.load_all`)."""
    return dict(_ALL)
