"""Configuration: YAML files with ``_BASE_CONFIG_`` inheritance, ``--set`` overrides, key checks.

* ``cfg_from_yaml_file(path)`` loads a YAML file into an :class:`easydict.EasyDict`. Any mapping
  (the top level or a nested section) may hold ``_BASE_CONFIG_: relative/or/absolute.yaml``: that
  file is loaded first (recursively) and the mapping's other keys are merged over it, key by key.
  ``_BASE_CONFIG_`` may also be a list of files, merged in order (a later one wins), which composes
  a config from fragments (a student model config plus a KD method fragment, ``kd_cfgs/``).
  A relative base path is resolved against the directory of the file that names it, never the
  current directory. A value ``_REPLACE_`` semantics is not needed: a list or scalar always
  replaces, a mapping merges.
* ``cfg_from_list(["A.B", "value", ...], cfg)`` applies ``--set`` overrides. The key must exist;
  otherwise :class:`ConfigKeyError` names the closest existing keys. The value is parsed as YAML
  and must match the type of the value it replaces (int may replace float; ``null`` replaces and is
  replaced by anything).
* ``check_keys(section, allowed, where)`` lets a module reject unknown keys in its own section.

Library code receives its config section as an argument; there is no global mutable config here.
"""
import copy
import difflib
from pathlib import Path

import yaml
from easydict import EasyDict

BASE_KEY = "_BASE_CONFIG_"

#: libyaml's parser where PyYAML was built with it: the same safe constructor as ``yaml.safe_load``
#: (every config of the repository loads to an equal value), about 4x faster on these files
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def safe_load_yaml(text):
    """``yaml.safe_load(text)``, with libyaml's C parser when it is available."""
    return yaml.load(text, Loader=_SAFE_LOADER)


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message names the file or key."""


class ConfigKeyError(ConfigError, KeyError):
    """An override or section names a key that does not exist."""

    def __str__(self):  # KeyError would quote the message
        return self.args[0] if self.args else ""


def _load_yaml(path):
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = safe_load_yaml(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: invalid YAML ({err})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def merge_dicts(base, override):
    """Deep merge: mappings merge key by key, everything else in ``override`` replaces."""
    out = copy.deepcopy(base)
    for key, val in override.items():
        if isinstance(val, dict) and isinstance(out.get(key), dict):
            out[key] = merge_dicts(out[key], val)
        else:
            out[key] = copy.deepcopy(val)
    return out


def _resolve(node, here, stack):
    """Resolve ``_BASE_CONFIG_`` in ``node`` (a mapping read from a file in folder ``here``)."""
    if isinstance(node, list):
        return [_resolve(v, here, stack) for v in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    base_names = node.pop(BASE_KEY, None)
    resolved = {k: _resolve(v, here, stack) for k, v in node.items()}
    if base_names is None:
        return resolved
    merged = {}
    for base_name in base_names if isinstance(base_names, list) else [base_names]:
        base_path = Path(base_name)
        if not base_path.is_absolute():
            base_path = here / base_path
        base_path = base_path.resolve()
        if base_path in stack:
            chain = " -> ".join(str(p) for p in stack + [base_path])
            raise ConfigError(f"circular {BASE_KEY}: {chain}")
        merged = merge_dicts(merged, _resolve(_load_yaml(base_path), base_path.parent, stack + [base_path]))
    return merge_dicts(merged, resolved)


def to_easydict(obj):
    """Nested mappings -> :class:`EasyDict` (lists are walked); the one converter of the package."""
    if isinstance(obj, dict):
        return EasyDict({k: to_easydict(v) for k, v in obj.items()})
    if isinstance(obj, list):
        return [to_easydict(v) for v in obj]
    return obj


def cfg_from_yaml_file(cfg_file, config=None):
    """Load ``cfg_file`` (with its ``_BASE_CONFIG_`` chain) into ``config`` (a new EasyDict by default)."""
    path = Path(cfg_file).resolve()
    data = _resolve(_load_yaml(path), path.parent, [path])
    config = EasyDict() if config is None else config
    config.update(to_easydict(data))
    return config


def flatten_keys(cfg, prefix=""):
    """All dotted key paths of a nested mapping (mappings only; lists are leaves)."""
    keys = []
    for key, val in cfg.items():
        full = f"{prefix}{key}"
        keys.append(full)
        if isinstance(val, dict):
            keys.extend(flatten_keys(val, full + "."))
    return keys


def _type_ok(old, new):
    if old is None or new is None:
        return True
    if isinstance(old, bool) or isinstance(new, bool):
        return isinstance(old, bool) and isinstance(new, bool)
    if isinstance(old, float) and isinstance(new, int):
        return True
    if isinstance(old, (list, tuple)):
        return isinstance(new, (list, tuple))
    if isinstance(old, dict):
        return isinstance(new, dict)
    return isinstance(new, type(old))


def cfg_from_list(cfg_list, config):
    """Apply ``--set`` overrides given as a flat list ``[KEY1, VALUE1, KEY2, VALUE2, ...]``."""
    if len(cfg_list) % 2 != 0:
        raise ConfigError(f"--set expects KEY VALUE pairs, got an odd number of items: {cfg_list}")
    all_keys = flatten_keys(config)
    for key, raw in zip(cfg_list[0::2], cfg_list[1::2]):
        node = config
        parts = key.split(".")
        for depth, part in enumerate(parts):
            if not isinstance(node, dict) or part not in node:
                close = difflib.get_close_matches(key, all_keys, n=3, cutoff=0.5)
                hint = f"; closest existing keys: {', '.join(close)}" if close else ""
                raise ConfigKeyError(f"unknown config key {key!r} (no {'.'.join(parts[: depth + 1])!r}){hint}")
            if depth < len(parts) - 1:
                node = node[part]
        old = node[parts[-1]]
        try:
            new = safe_load_yaml(raw) if isinstance(raw, str) else raw
        except yaml.YAMLError as err:
            raise ConfigError(f"--set {key}: cannot parse value {raw!r} ({err})") from None
        if not _type_ok(old, new):
            raise ConfigError(
                f"--set {key}: value {raw!r} ({type(new).__name__}) does not match the type of "
                f"the current value {old!r} ({type(old).__name__})"
            )
        node[parts[-1]] = to_easydict(new)
    return config


def check_keys(section, allowed, where):
    """Raise :class:`ConfigKeyError` if ``section`` has keys outside ``allowed`` (named in the error)."""
    unknown = [k for k in section if k not in allowed]
    if unknown:
        hints = []
        for k in unknown:
            close = difflib.get_close_matches(k, list(allowed), n=3, cutoff=0.5)
            hints.append(f"{k!r}" + (f" (did you mean {', '.join(close)}?)" if close else ""))
        raise ConfigKeyError(f"{where}: unknown config key(s) {', '.join(hints)}; allowed: {', '.join(sorted(allowed))}")


def log_config_to_file(cfg, logger, pre="cfg"):
    """Log every leaf of ``cfg`` as ``pre.KEY: value``."""
    for key, val in cfg.items():
        if isinstance(val, dict):
            log_config_to_file(val, logger, pre=f"{pre}.{key}")
        else:
            logger.info(f"{pre}.{key}: {val}")


def to_plain(obj, unknown=None):
    """EasyDicts, tuples and numpy values -> plain dicts / lists / Python scalars (for YAML / JSON
    dumps and hashing); the one converter of the package. Mapping keys become strings. Anything else
    is kept, or passed through ``unknown`` when given (``unknown=str`` for a JSON-safe result)."""
    if isinstance(obj, dict):
        return {str(k): to_plain(v, unknown) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v, unknown) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    tolist = getattr(obj, "tolist", None)  # numpy arrays and scalars
    if tolist is not None and type(obj).__module__ == "numpy":
        return tolist()
    return unknown(obj) if unknown is not None else obj
