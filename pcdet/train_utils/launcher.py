"""Run ``tools/train.py`` in a child process: the one launcher of ``make demo`` and the benchmark.

Owns :func:`train_command`, :func:`run_training` and :class:`TrainingFailed`.

A child process gives each training its own logger, torch threads and numba state. Two ways to
watch it:

* ``live=False`` (background runs, the benchmark): everything the child prints is appended to
  ``log_file``; nothing reaches the terminal.
* ``live=True`` (``make demo``): the child's progress bars and log lines are shown on this
  terminal as they come, and ``log_file`` receives the same text with each progress bar's
  carriage-return redraws collapsed to its last state, so the log stays readable.

A failed run raises :class:`TrainingFailed` with the exit code and the tail of the log.
"""
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from pcdet.utils.paths import REPO_ROOT

TRAIN_SCRIPT = REPO_ROOT / "tools" / "train.py"


class TrainingFailed(RuntimeError):
    """A ``tools/train.py`` child exited with an error; the message ends with the tail of its log."""


def train_command(cfg_file, *args):
    """``[python, tools/train.py, --cfg_file, CFG, *args]`` (arguments as strings)."""
    return [sys.executable, str(TRAIN_SCRIPT), "--cfg_file", str(cfg_file), *[str(a) for a in args]]


def _tee(stream, log, echo):
    """Copy the child's output to ``echo`` unchanged and to ``log`` line by line, a line being what
    follows its last carriage return (the final state of a redrawn progress bar)."""
    pending = b""
    fd = stream.fileno()
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        echo.write(chunk)
        echo.flush()
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            last = line.rsplit(b"\r", 1)[-1]
            if last.strip() or b"\r" not in line:
                log.write(last + b"\n")
        log.flush()
    if pending.strip():
        log.write(pending.rsplit(b"\r", 1)[-1] + b"\n")


def run_training(cmd, log_file, env=None, cwd=None, live=False, tail_lines=20):
    """Run ``cmd`` (from :func:`train_command`); returns its wall seconds. See the module docstring."""
    log_file = Path(log_file)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ if env is None else env)
    cwd = str(cwd or REPO_ROOT)
    t0 = time.perf_counter()
    with open(log_file, "ab") as log:
        if live:
            # the bars are drawn for this terminal's width although the child writes into a pipe
            env.setdefault("COLUMNS", str(shutil.get_terminal_size((100, 20)).columns))
            if not sys.stderr.isatty():  # a CI log or a file: a redraw every few seconds, not ten a second
                env.setdefault("TQDM_MININTERVAL", "5")
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=cwd, env=env)
            try:
                _tee(proc.stdout, log, getattr(sys.stderr, "buffer", sys.stderr))
            finally:
                proc.stdout.close()
                rc = proc.wait()
        else:
            rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=cwd, env=env).returncode
    seconds = time.perf_counter() - t0
    if rc != 0:
        tail = "".join(log_file.read_text(errors="replace").splitlines(keepends=True)[-tail_lines:])
        raise TrainingFailed(f"tools/train.py failed (exit {rc}); log {log_file}:\n{tail}")
    return seconds
