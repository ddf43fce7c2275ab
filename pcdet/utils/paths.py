"""Where the project's folders are, independent of the current directory."""
import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def realdata_dir():
    """Folder of real sample frames (``PCDET_REALDATA``, else ``<repo>/../shared/realdata``).

    Returns a Path that may not exist: callers decide whether its absence is an error.
    """
    env = os.environ.get("PCDET_REALDATA")
    return Path(env) if env else (REPO_ROOT.parent / "shared" / "realdata").resolve()
