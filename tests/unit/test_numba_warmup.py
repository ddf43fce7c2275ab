"""numba first-run compilation: ``kernels_cached`` tells a cached kernel from one that will compile,
``announce_compile`` says so once, ``warm`` fills the cache (checked on a tiny kernel of a
throw-away module, in child processes with their own cache folder)."""
import subprocess
import sys
import textwrap

import pytest

from pcdet.utils import numba_warmup

CHILD = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[1])
    import tiny_kernels
    from pcdet.utils.numba_warmup import announce_compile, kernels_cached
    print("cached" if kernels_cached(tiny_kernels.add) else "not cached")
    announce_compile("tiny", tiny_kernels.add, stream=sys.stdout)
    announce_compile("tiny", tiny_kernels.add, stream=sys.stdout)  # once per process
    print(tiny_kernels.add(1.0, 2.0))
""")


def test_compile_is_announced_once_and_only_before_the_cache_exists(tmp_path):
    (tmp_path / "tiny_kernels.py").write_text("from numba import njit\n\n@njit(cache=True)\ndef add(a, b):\n"
                                              "    return a + b\n")
    env = {"NUMBA_CACHE_DIR": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin"}

    def run():
        out = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path)], env=env, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        return out.stdout.splitlines()

    first, second = run(), run()
    assert first[0] == "not cached" and sum("[numba] compiling the tiny kernels" in ln for ln in first) == 1
    assert second[0] == "cached" and not any("[numba]" in ln for ln in second)
    assert first[-1] == second[-1] == "3.0"


def test_unknown_objects_count_as_not_cached():
    assert numba_warmup.kernels_cached(object()) is False
    assert numba_warmup.kernels_cached() is True  # nothing to compile


def test_warm_runs_every_step_and_reports_it(capsys):
    calls = []
    numba_warmup.warm(steps=(("one", lambda: calls.append(1)), ("two", lambda: calls.append(2))))
    out = capsys.readouterr().out
    assert calls == [1, 2] and "[numba] one ..." in out and "[numba] two ..." in out and "kernels ready" in out


def test_warm_in_worker_processes_runs_every_step(tmp_path, capsys):
    import functools
    import pathlib

    steps = tuple((name, functools.partial(pathlib.Path.touch, tmp_path / name)) for name in ("one", "two", "three"))
    numba_warmup.warm(steps=steps, jobs=2)
    out = capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "three", "two"]
    assert "families in 2 processes" in out and all(f"[numba] {n}:" in out for n in ("one", "two", "three"))
    assert "kernels ready" in out
    assert out.index("[numba] one:") < min(out.index("[numba] two:"), out.index("[numba] three:"))  # first alone
    with pytest.raises(FileNotFoundError):  # a failing family fails the warm-up
        numba_warmup.warm(steps=(("ok", functools.partial(pathlib.Path.touch, tmp_path / "ok")),
                                 ("fails", functools.partial(pathlib.Path.touch, tmp_path / "no" / "dir"))), jobs=2)
