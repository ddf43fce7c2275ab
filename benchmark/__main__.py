"""``python -m benchmark list | run | report | records``: the papers' tables as cached experiments.

    python -m benchmark list [--preset mini]
    python -m benchmark run --table ID [--preset smoke|mini|paired|paper] [--seeds N] [--rows REGEX] [--out DIR]
                            [--device cpu|cuda] [--cache DIR] [--jobs N] [--launcher local|slurm] [--slurm_partition P]
                            [--slurm_timeout_min M] [--slurm_cpus_per_training N] [--gpus_per_training N]
                            [--records DIR] [--dry_run]
    python -m benchmark report [--out DIR]
    python -m benchmark records --cache DIR --records DIR

``list`` shows every table of ``benchmark/tables/``, whether it runs now under the preset and, if
not, what it waits for. ``run`` writes ``DIR/ID.csv`` (default ``output/benchmark/<preset>/``);
experiments are cached under ``--cache`` (default ``output/benchmark/cache``), shared by every
table and preset. ``report`` turns the CSVs of DIR into ``report.md`` and PNG plots.
``--records DIR`` keeps a small JSON record of every finished training in DIR (the project's:
``benchmark/results/records``, kept in git) and takes recorded trainings from there, so that a run
longer than one machine's cache resumes on another (:mod:`benchmark.records`); ``records`` copies the
finished trainings of an existing cache into such a folder (and adds KD diagnostics to its trainings'
records written before records kept them).
``--launcher slurm`` submits one cluster job per experiment through submitit (teachers before their
students; the cache must be on storage the nodes share; :mod:`benchmark.launchers`).
"""
import argparse
import sys

from benchmark import registry
from pcdet.utils.paths import REPO_ROOT


def cmd_list(args):
    tables = registry.load_tables()
    preset = registry.load_presets()[args.preset]
    caps = registry.capabilities()
    print(f"{len(tables)} tables; runnable = at least one row runs under preset {args.preset!r}")
    print(f"{'id':11s} {'runnable':9s} {'rows':>5s}  title / what it waits for")
    for tid, t in tables.items():
        ok, status = registry.table_status(t, preset, caps)
        flag = "yes" if ok else "no"
        refs = registry.reference_rows(t)
        extra = f" (+{len(refs)} paper reference row(s), not reproduced)" if refs else ""
        print(f"{tid:11s} {flag:9s} {len(ok):>2d}/{len(status):<2d}  {t['TITLE']}{extra}")
        waits = sorted({m for name, ms in status.items() for m in ms})
        caps_missing = [w for w in waits if not w.startswith("config ")]
        configs = [w for w in waits if w.startswith("config ")]
        if waits:
            what = ", ".join(caps_missing) if caps_missing else f"{len(configs)} config file(s): {configs[0][7:]} ..."
            if caps_missing and configs:
                what += f" (and {len(configs)} config files)"
            print(f"{'':20s}{'other rows wait' if ok else 'waits'} for: {what}")
    return 0


def cmd_run(args):
    from benchmark.harness import run_table

    slurm = {"cluster": args.slurm_cluster, "partition": args.slurm_partition, "timeout_min": args.slurm_timeout_min,
             "cpus_per_training": args.slurm_cpus_per_training}
    run_table(args.table, args.preset, args.seeds, args.out, args.device, args.cache, jobs=args.jobs,
              launcher=args.launcher, gpus_per_training=args.gpus_per_training, slurm=slurm, rows=args.rows,
              dry_run=args.dry_run, records=args.records)
    return 0


def cmd_records(args):
    from benchmark.records import export_cache

    n = export_cache(args.cache, args.records)
    print(f"{n} new record(s) in {args.records}")
    return 0


def cmd_report(args):
    from benchmark.report import write_report

    write_report(args.out)
    return 0


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmark", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    pl = sub.add_parser("list", help="every table and whether it runs now")
    pl.add_argument("--preset", default="mini")
    pr = sub.add_parser("run", help="run one table and write its CSV")
    pr.add_argument("--table", required=True)
    pr.add_argument("--preset", default="smoke", choices=list(registry.load_presets()),
                    help="benchmark/presets.yaml: %(choices)s")
    pr.add_argument("--seeds", type=int, default=None, help="seeds 0..N-1 (default: the preset's)")
    pr.add_argument("--rows", default=None, metavar="REGEX",
                    help="run only the rows whose name matches (e.g. 'SECOND'); the other rows are filled from "
                         "the cache where all they need is cached, else left empty")
    pr.add_argument("--out", default=None, help="folder of the CSVs (default output/benchmark/<preset>)")
    pr.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    pr.add_argument("--cache", default=None, help="experiment cache (default output/benchmark/cache)")
    pr.add_argument("--jobs", type=int, default=None,
                    help="trainings run at once, the CPU cores shared out between them (default: the preset's JOBS)")
    pr.add_argument("--launcher", default="local", choices=["local", "slurm"],
                    help="local: this machine (default); slurm: one cluster job per experiment (submitit)")
    pr.add_argument("--slurm_partition", default=None)
    pr.add_argument("--slurm_timeout_min", type=int, default=24 * 60, help="time limit of each job")
    pr.add_argument("--slurm_cpus_per_training", type=int, default=None,
                    help="CPUs (and torch threads) of every training job (default 8), part of each training's "
                         "spec; the driver's own core count is not used")
    pr.add_argument("--slurm_cluster", default="slurm", choices=["slurm", "local"],
                    help="local: submitit's local executor (the slurm code path without a scheduler; for tests)")
    pr.add_argument("--dry_run", action="store_true",
                    help="print each experiment's state (cached, resumes after epoch N, to run) and stop")
    pr.add_argument("--gpus_per_training", type=int, default=1,
                    help="GPUs of each CUDA training; > 1 runs it data-parallel with torchrun inside its job")
    pr.add_argument("--records", default=None, metavar="DIR",
                    help="run records (benchmark/results/records): recorded trainings are not trained again, "
                         "finished ones are recorded")
    pc = sub.add_parser("records", help="record the finished trainings of an experiment cache")
    pc.add_argument("--cache", default=str(REPO_ROOT / "output" / "benchmark" / "cache"))
    pc.add_argument("--records", required=True, metavar="DIR")
    rp = sub.add_parser("report", help="Markdown summary and plots of the CSVs in a folder")
    rp.add_argument("--out", default=str(REPO_ROOT / "output" / "benchmark" / "mini"))
    args = p.parse_args(argv)
    return {"list": cmd_list, "run": cmd_run, "report": cmd_report, "records": cmd_records}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
