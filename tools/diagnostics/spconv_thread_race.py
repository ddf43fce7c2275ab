"""Show spconv's CPU thread race (upstream spconv issue #679) and that the guard removes it.

Runs the same sparse convolutions (SubMConv3d, SparseConv3d stride 1 and stride 2), forward and
backward, on random sparse inputs with N torch threads, once with the single-thread guard of
``pcdet.utils.spconv_utils`` disabled (``cpu_thread_guard_disabled()``) and once guarded, and
compares outputs, input-feature gradients and weight gradients with a dense
``torch.nn.functional.conv3d`` reference built from the same weights. A trial counts as wrong
when any of these differs from the reference by a relative error (max abs diff / max abs ref)
above ``--tol``.

This is a diagnostic, not a test: the race is random, so the unguarded counts vary from run
to run.

    python tools/diagnostics/spconv_thread_race.py [--threads 2] [--trials 20]
"""
import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

try:
    from pcdet.utils import spconv_utils
except ImportError:  # run from a checkout without an installed pcdet
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from pcdet.utils import spconv_utils

spconv = spconv_utils.spconv

CASES = (("subm", 1, 1), ("conv", 1, 1), ("conv", 2, 1))  # (kind, stride, padding)
QUANTITIES = ("output", "grad_input", "grad_weight")


def random_input(gen, n_active, spatial, batch, c_in):
    d, h, w = spatial
    flat = torch.randperm(batch * d * h * w, generator=gen)[:n_active]
    b, rest = flat // (d * h * w), flat % (d * h * w)
    z, y, x = rest // (h * w), (rest // w) % h, rest % w
    indices = torch.stack([b, z, y, x], dim=1).int()
    return indices, torch.randn(n_active, c_in, generator=gen)


def to_dense(indices, features, spatial, batch):
    idx = indices.long()
    grid = torch.zeros(batch, *spatial, features.shape[1], dtype=features.dtype)
    grid = grid.index_put((idx[:, 0], idx[:, 1], idx[:, 2], idx[:, 3]), features)
    return grid.permute(0, 4, 1, 2, 3)


def rel_err(actual, expected):
    return ((actual - expected).abs().max() / expected.abs().max()).item()


def sparse_run(module, indices, features, spatial, batch, grad_seed):
    feats = features.clone().requires_grad_(True)
    module.zero_grad(set_to_none=True)
    out = module(spconv.SparseConvTensor(feats, indices, list(spatial), batch))
    grad_out = torch.randn(out.features.shape, generator=torch.Generator().manual_seed(grad_seed))
    (out.features * grad_out).sum().backward()
    return out.indices, out.features.detach(), feats.grad, module.weight.grad.clone(), grad_out


def dense_run(kind, stride, padding, weight, indices, features, out_indices, grad_out, spatial, batch):
    feats = features.clone().requires_grad_(True)
    w = weight.detach().clone().requires_grad_(True)
    dense_w = w.permute(0, 4, 1, 2, 3)  # spconv (out, kz, ky, kx, in) -> conv3d (out, in, kz, ky, kx)
    if kind == "subm":
        dense_out = F.conv3d(to_dense(indices, feats, spatial, batch), dense_w, padding=1)
    else:
        dense_out = F.conv3d(to_dense(indices, feats, spatial, batch), dense_w, stride=stride, padding=padding)
    o = out_indices.long()
    ref = dense_out.permute(0, 2, 3, 4, 1)[o[:, 0], o[:, 1], o[:, 2], o[:, 3]]
    (ref * grad_out).sum().backward()
    return ref.detach(), feats.grad, w.grad


def one_trial(trial, args):
    """Max relative error per quantity over all cases, unguarded and guarded."""
    gen = torch.Generator().manual_seed(args.seed + trial)
    spatial = (args.grid,) * 3
    indices, features = random_input(gen, args.active, spatial, args.batch, args.cin)
    result = {"unguarded": dict.fromkeys(QUANTITIES, 0.0), "guarded": dict.fromkeys(QUANTITIES, 0.0)}
    case_wrong = {"unguarded": [], "guarded": []}  # per case: any quantity above tolerance
    for kind, stride, padding in CASES:
        if kind == "subm":
            module = spconv.SubMConv3d(args.cin, args.cout, 3, bias=False)
        else:
            module = spconv.SparseConv3d(args.cin, args.cout, 3, stride=stride, padding=padding, bias=False)
        with torch.no_grad():
            module.weight.copy_(torch.randn(module.weight.shape, generator=gen) * 0.2)
        grad_seed = int(torch.randint(0, 2**31 - 1, (1,), generator=gen))
        reference = None
        for mode in ("unguarded", "guarded"):
            if mode == "unguarded":
                with spconv_utils.cpu_thread_guard_disabled():
                    got = sparse_run(module, indices, features, spatial, args.batch, grad_seed)
            else:
                got = sparse_run(module, indices, features, spatial, args.batch, grad_seed)
            assert torch.get_num_threads() == args.threads
            out_indices, out, g_in, g_w, grad_out = got
            if reference is None:  # output sites come from the index generation, not the race
                reference = dense_run(kind, stride, padding, module.weight, indices, features,
                                      out_indices, grad_out, spatial, args.batch)
            errs = dict(zip(QUANTITIES, (rel_err(a, b) for a, b in zip((out, g_in, g_w), reference))))
            for q in QUANTITIES:
                result[mode][q] = max(result[mode][q], errs[q])
            case_wrong[mode].append(max(errs.values()) > args.tol)
    return result, case_wrong


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--active", type=int, default=4000, help="active sites per input")
    parser.add_argument("--grid", type=int, default=30, help="spatial size of each axis")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--cin", type=int, default=16)
    parser.add_argument("--cout", type=int, default=32)
    parser.add_argument("--tol", type=float, default=1e-5, help="relative error counted as wrong")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, torch threads {torch.get_num_threads()}, "
          f"guard active: {spconv_utils.is_cpu_thread_guard_active()}")
    print(f"{args.trials} trials x {len(CASES)} convs {CASES} (kind, stride, padding), "
          f"{args.active} active sites in {args.batch}x{args.grid}^3, {args.cin}->{args.cout} channels, "
          f"forward + backward; wrong = rel err > {args.tol:g}")
    print(f"{'trial':>5}  {'unguarded out / d_in / d_w':>32}  {'guarded out / d_in / d_w':>32}")
    wrong = {"unguarded": 0, "guarded": 0}
    wrong_q = {m: dict.fromkeys(QUANTITIES, 0) for m in wrong}
    worst = {"unguarded": 0.0, "guarded": 0.0}
    wrong_case = {m: [0] * len(CASES) for m in wrong}
    start = time.time()
    for trial in range(args.trials):
        res, case_wrong = one_trial(trial, args)
        for mode in wrong:
            wrong_case[mode] = [a + b for a, b in zip(wrong_case[mode], case_wrong[mode])]
        cols = []
        for mode in ("unguarded", "guarded"):
            errs = res[mode]
            worst[mode] = max(worst[mode], max(errs.values()))
            if max(errs.values()) > args.tol:
                wrong[mode] += 1
            for q in QUANTITIES:
                wrong_q[mode][q] += errs[q] > args.tol
            flag = " WRONG" if max(errs.values()) > args.tol else ""
            cols.append(" / ".join(f"{errs[q]:.1e}" for q in QUANTITIES) + f"{flag:6}")
        print(f"{trial:>5}  {cols[0]:>32}  {cols[1]:>32}")
    print(f"elapsed {time.time() - start:.1f} s")
    for mode in ("unguarded", "guarded"):
        per_q = ", ".join(f"{q} {wrong_q[mode][q]}" for q in QUANTITIES)
        per_case = ", ".join(f"{k} s{st} p{p} {n}/{args.trials}" for (k, st, p), n in zip(CASES, wrong_case[mode]))
        print(f"{mode:>9}: {wrong[mode]}/{args.trials} trials wrong (max rel err {worst[mode]:.2e}; "
              f"wrong per quantity: {per_q}; wrong per conv: {per_case})")
    print(f"guard active after run: {spconv_utils.is_cpu_thread_guard_active()}, "
          f"torch threads {torch.get_num_threads()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
