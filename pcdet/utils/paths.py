"""Where the project's folders are, independent of the current directory."""
import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def repo_relative(path):
    """``path`` as a string relative to the repository when it lies inside it (what CSV provenance
    cells and logs record, so that they name the same file on every machine), else absolute."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def realdata_dir():
    """Folder of real sample frames (``PCDET_REALDATA``, else ``<repo>/../shared/realdata``).

    Returns a Path that may not exist: callers decide whether its absence is an error.
    """
    env = os.environ.get("PCDET_REALDATA")
    return Path(env) if env else (REPO_ROOT.parent / "shared" / "realdata").resolve()
