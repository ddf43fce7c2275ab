"""Where the benchmark's experiments run: ``--launcher local`` (default) or ``--launcher slurm``.

``local``: :class:`benchmark.harness.PoolRunner`, a thread pool on this machine, each training a child
process (``tools/train.py``). ``slurm``: :class:`SubmititRunner`, one cluster job per experiment through
submitit (``submitit.AutoExecutor``), for replaying the tables at the papers' settings, which takes
hundreds of GPU-days. The scheduler (:func:`benchmark.harness.schedule_trainings`) is the same for both:
a student is submitted once its teacher's job has finished (the teacher -> student dependency), at most
``--jobs`` trainings are queued at once, and the experiment cache (``--cache``) must be on storage the
cluster nodes share, since each job writes its result there and the driver reads it back. The timings
(complexity, latency, KD overhead) run as jobs too, one at a time, on the kind of node the trainings use.

A job's result must be visible to the driver once the job has finished (otherwise the run stops with an
error naming the shared-storage requirement); when the driver stops abnormally it cancels the jobs it
still has queued or running. The nodes import the repository's ``benchmark`` package: run from the
same checkout path on shared storage (or one on ``PYTHONPATH`` there).

Each training job asks for ``cpus_per_task`` = its thread count (``--slurm_cpus_per_training``, default 8,
the same for every training and recorded in its spec; never the driver machine's core count) and, on
CUDA, ``gpus_per_training`` GPUs; with more than one, the job runs
``torchrun --nproc_per_node N tools/train.py --launcher pytorch`` (the spec of such a training records N:
it computes differently from a one-GPU run).

``cluster="local"`` (``--slurm_cluster local``) runs the same code path through submitit's local
executor (jobs as subprocesses of this machine, no scheduler): what CI tests.
"""
import time
from pathlib import Path

from benchmark.experiments import ExperimentError


def _run_experiment(experiment):
    """The job's function (module level, so submitit pickles it by reference)."""
    return experiment.run(log=print)


class _JobFuture:
    """A submitit job with the two methods the scheduler uses of a future."""

    def __init__(self, job, experiment):
        self.job, self.experiment = job, experiment

    def done(self):
        return self.job.done()

    def result(self):
        try:
            out = self.job.result()
        except Exception as err:  # submitit's FailedJobError / UncompletedJobError, with the job's traceback
            raise ExperimentError(f"{self.experiment}: cluster job {self.job.job_id} failed ({type(err).__name__}): "
                                  f"{str(err)[-2000:]}; its logs: {self.job.paths.folder}") from None
        if not self.experiment.cached():
            raise ExperimentError(f"{self.experiment}: cluster job {self.job.job_id} finished but its result is not "
                                  f"in the cache as this machine sees it ({self.experiment.result_file}): the "
                                  f"--cache folder must be on storage the nodes and this machine share")
        return out


class SubmititRunner:
    """Experiments as submitit jobs (``submit`` / ``wait`` / ``close``, as :class:`PoolRunner`)."""

    def __init__(self, folder, device="cpu", cluster="slurm", partition=None, timeout_min=24 * 60,
                 gpus_per_training=1, poll_s=None, extra=None):
        import submitit

        self.folder = Path(folder)
        self.executor = submitit.AutoExecutor(folder=str(self.folder / "%j"), cluster=cluster)
        self.cluster, self.device = cluster, device
        self.partition, self.timeout_min = partition, int(timeout_min)
        self.gpus = int(gpus_per_training) if device == "cuda" else 0
        self.poll_s = float(poll_s if poll_s is not None else (0.5 if cluster == "local" else 15.0))
        self.extra = dict(extra or {})
        self.outstanding = []

    def parameters(self, e):
        """The executor parameters of experiment ``e`` (AutoExecutor names; slurm_* ignored elsewhere)."""
        params = {"name": f"pcdet-{e.label}"[:64], "timeout_min": self.timeout_min, "nodes": 1, "tasks_per_node": 1,
                  "cpus_per_task": int(getattr(e, "threads", None) or 1)}
        if self.gpus and (e.kind == "train" or self.device == "cuda" and e.kind in ("latency", "kd_overhead")):
            params["gpus_per_node"] = self.gpus if e.kind == "train" else 1
        if self.partition:
            params["slurm_partition"] = self.partition
        params.update(self.extra)
        return params

    def submit(self, e):
        self.executor.update_parameters(**self.parameters(e))
        try:
            job = self.executor.submit(_run_experiment, e)
        except Exception as err:  # submitit's FailedSubmissionError (sbatch refused the job) and the like
            raise ExperimentError(f"{e}: the cluster refused the job ({type(err).__name__}): {err}") from None
        self.outstanding.append(job)
        return _JobFuture(job, e)

    def wait(self, futures):
        while True:
            finished = [f for f in futures if f.done()]
            if finished:
                return finished
            time.sleep(self.poll_s)

    def run_alone(self, e):
        """Run one experiment as a job and wait for it (the timings, after the trainings)."""
        return self.wait([self.submit(e)])[0].result()

    def cancel_outstanding(self):
        """Cancel the jobs still queued or running (the driver stops abnormally: nothing would read them)."""
        for job in self.outstanding:
            if not job.done():
                try:
                    job.cancel(check=False)
                except Exception as err:  # a job that ended meanwhile, or a scheduler that refuses: say so
                    print(f"[benchmark] could not cancel cluster job {job.job_id}: {err}")
        self.outstanding = []

    def close(self):
        self.outstanding = [j for j in self.outstanding if not j.done()]


LAUNCHERS = ("local", "slurm")


def make_runner(launcher, jobs, cache_root, device="cpu", **slurm):
    """The runner of ``--launcher``: None for ``local`` (the scheduler's own :class:`PoolRunner`), a
    :class:`SubmititRunner` writing its job folders under ``<cache>/submitit`` for ``slurm``."""
    if launcher == "local":
        return None
    if launcher != "slurm":
        raise SystemExit(f"--launcher {launcher!r}: use one of {LAUNCHERS}")
    try:
        import submitit  # noqa: F401
    except ImportError:
        raise SystemExit("--launcher slurm needs the submitit package (pip install submitit)") from None
    return SubmititRunner(Path(cache_root) / "submitit", device=device, **slurm)
