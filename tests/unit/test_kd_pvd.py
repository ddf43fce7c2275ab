"""PVD for segmentors (pcdet/kd/methods/pvd.py) against direct transcriptions of the paper's equations
(Hou et al., CVPR 2022, eqs. 1-6) on small tensors, the sampling weights of eq. 3 on a hand-made
partition, the fixed N_P / N_V sizes, and one wrapper step of the embedded KD config on a tiny
Cylinder3D pair: the loss is finite, reaches the student, and the teacher stays bit-identical."""
import math

import numpy as np
import pytest
import torch

from pcdet.config import ConfigError
from pcdet.kd.methods.common import supervoxel_weights
from pcdet.kd.methods.pvd import affinity_mse, keep_at_most, output_kl, supervoxel_layout, supervoxel_of
from pcdet.utils.paths import REPO_ROOT
from tests.helpers import seg_batch, seg_kd_wrapper

KD_CFG = REPO_ROOT / "kd_cfgs" / "synthetic_seg" / "cylinder3d_0.5x_pvd.yaml"


# ----------------------------------------------------------------------------- equations
def test_output_kl_is_eq1_transcribed():
    gen = torch.Generator().manual_seed(0)
    s, t = torch.randn(7, 5, generator=gen), torch.randn(7, 5, generator=gen)
    ps, pt = np.exp(s.numpy()), np.exp(t.numpy())
    ps, pt = ps / ps.sum(1, keepdims=True), pt / pt.sum(1, keepdims=True)
    want = sum(pt[n, c] * (math.log(pt[n, c]) - math.log(ps[n, c])) for n in range(7) for c in range(5)) / (7 * 5)
    assert abs(float(output_kl(s, t)) - want) < 1e-6
    assert float(output_kl(t, t)) == pytest.approx(0.0, abs=1e-7)


def test_affinity_equals_the_zero_padded_eq5():
    gen = torch.Generator().manual_seed(1)
    fs, ft, n = torch.randn(5, 3, generator=gen), torch.randn(5, 4, generator=gen), 8  # widths may differ
    pad = lambda f: np.concatenate([f.numpy(), np.zeros((n - f.shape[0], f.shape[1]), np.float32)])  # noqa: E731

    def cos(f):
        out = np.zeros((n, n))
        for i in range(n):
            for j in range(n):
                ni, nj = np.linalg.norm(f[i]), np.linalg.norm(f[j])
                out[i, j] = 0.0 if ni == 0 or nj == 0 else f[i] @ f[j] / (ni * nj)
        return out

    want = ((cos(pad(fs)) - cos(pad(ft))) ** 2).sum() / n ** 2
    assert abs(float(affinity_mse(fs, ft, n)) - want) < 1e-6
    with pytest.raises(ValueError, match="at most N"):
        affinity_mse(torch.randn(9, 3), torch.randn(9, 3), n)


def test_supervoxel_partition_and_outer_arc():
    splits, outer = supervoxel_layout((480, 360, 32), (120, 60, 8))
    assert splits == [4, 6, 4] and len(outer) == 96  # the paper's N_s
    splits, outer = supervoxel_layout((10, 4, 2), (4, 3, 2))  # ceil: 3 x 2 x 1
    assert splits == [3, 2, 1]
    assert outer.tolist() == [0.4, 0.4, 0.8, 0.8, 1.0, 1.0]  # min((i_r + 1) R_s, R) / R
    coords = torch.tensor([[0, 0, 0, 0], [0, 3, 2, 1], [1, 4, 3, 0], [0, 9, 0, 1], [0, 8, 3, 1]])
    assert supervoxel_of(coords, (4, 3, 2), splits).tolist() == [0, 0, 3, 4, 5]


def test_sampling_weights_are_eq3_and_fig6_on_a_hand_made_partition():
    n_minor = torch.tensor([0, 2, 1, 0, 5])
    outer = torch.tensor([0.25, 0.5, 0.75, 1.0, 1.0], dtype=torch.float64)
    nonempty = torch.tensor([True, True, True, True, False])
    f = [4 * math.exp(-2 * m) + 1 for m in n_minor.tolist()]
    for strategy, factor in (("difficulty", lambda i: outer[i] / f[i]), ("distance", lambda i: outer[i]),
                             ("category", lambda i: 1 / f[i]), ("random", lambda i: 1.0)):
        got = supervoxel_weights(n_minor, outer, nonempty, strategy)
        want = [float(factor(i)) / 5 * bool(nonempty[i]) for i in range(5)]
        assert np.allclose(got.numpy(), want, rtol=1e-12), strategy
    assert f[0] == 5.0  # no minority voxel: f_class = 5
    with pytest.raises(ValueError, match="sampling"):
        supervoxel_weights(n_minor, outer, nonempty, "uniform")


def test_keep_at_most_drops_majority_rows_first_and_keeps_exactly_n():
    torch.manual_seed(0)
    rows = torch.arange(20)
    minority = rows % 5 == 0  # 4 minority rows
    kept = keep_at_most(rows, minority, 10)
    assert kept.numel() == 10 and len(set(kept.tolist())) == 10
    assert set(rows[minority].tolist()) <= set(kept.tolist())
    assert keep_at_most(rows, minority, 25).tolist() == rows.tolist()  # fewer: all (padding is in the loss)
    kept = keep_at_most(rows, rows < 15, 6)  # minority alone exceeds n: a subset of them only
    assert kept.numel() == 6 and (kept < 15).all()


# ----------------------------------------------------------------------------- the method in the wrapper
def _wrapper(tmp_path, **method):
    return seg_kd_wrapper(tmp_path, KD_CFG, {"SUPERVOXEL_SIZE": [6, 6, 4], "N_P": 64, "N_V": 32, **method})


def _batch(seed):
    return seg_batch(seed)


def test_wrapper_step_trains_the_student_and_leaves_the_teacher_bit_identical(tmp_path):
    model = _wrapper(tmp_path)
    before = {k: v.clone() for k, v in model.teacher.state_dict().items()}
    batch = _batch(0)
    ret, tb, _ = model(batch)
    ret["loss"].backward()
    tag = model.method_tags[0]
    for key in ("out_p", "out_v", "aff_p", "aff_v"):
        assert math.isfinite(tb[f"{tag}/{key}"]) and tb[f"{tag}/{key}"] > 0, key
    assert 1 <= tb[f"{tag}/supervoxels"] <= 2 * 4
    assert all(p.grad is None for p in model.teacher.parameters())
    grads = [p.grad for p in model.student.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    after = model.teacher.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN statistics included

    # the KD part alone reaches the student's point MLP through the affinity and output terms
    model.zero_grad()
    batch = _batch(1)
    model.run_teacher(batch)
    model.student(batch)
    loss, _ = model.kd_methods[0](batch)
    loss.backward()
    assert model.student.vfe.point_mlp[1].weight.grad.abs().sum() > 0


def test_a_zero_weight_term_is_not_computed_and_misuse_is_refused(tmp_path):
    model = _wrapper(tmp_path, ALPHA_VOXEL=0.0, BETA_POINT=0.0, BETA_VOXEL=0.0)
    _, tb, _ = model(_batch(2))
    tag = model.method_tags[0]
    assert f"{tag}/out_p" in tb and not {f"{tag}/{k}" for k in ("out_v", "aff_p", "aff_v", "supervoxels")} & set(tb)
    with pytest.raises(ConfigError, match="all 0"):
        _wrapper(tmp_path, ALPHA_POINT=0.0, ALPHA_VOXEL=0.0, BETA_POINT=0.0, BETA_VOXEL=0.0)
    with pytest.raises(ConfigError, match="MINORITY_CLASSES"):
        _wrapper(tmp_path, MINORITY_CLASSES=["pedestrian"])
    with pytest.raises(ConfigError, match="SAMPLING"):
        _wrapper(tmp_path, SAMPLING="uniform")


def test_method_weights_follow_eq3_and_refuse_unaligned_voxels(tmp_path):
    model = _wrapper(tmp_path)  # SUPERVOXEL_SIZE (6, 6, 4) on the 24 x 18 x 8 test grid: 4 x 3 x 2 = 24 supervoxels
    method = model.kd_methods[0]
    assert method.num_supervoxels == 24
    sv = torch.tensor([0, 0, 7, 23, 23, 23])  # i_r = sv // 6: 0, 1, 3
    minority = torch.tensor([True, False, False, True, True, False])
    want = np.zeros(24)
    want[0] = 1 / (4 * math.exp(-2) + 1) * (6 / 24) / 24
    want[7] = 1 / 5 * (12 / 24) / 24
    want[23] = 1 / (4 * math.exp(-4) + 1) * (24 / 24) / 24
    assert np.allclose(method.sampling_weights(sv, minority).numpy(), want, rtol=1e-12)

    batch = _batch(3)
    model.run_teacher(batch)
    model.student(batch)
    batch["voxel_coords_tea"] = batch["voxel_coords_tea"][1:]
    with pytest.raises(ValueError, match="same grid"):
        method(batch)


def test_affinity_losses_on_a_hand_built_batch_equal_a_loop_over_its_supervoxels(tmp_path):
    """K >= the non-empty supervoxels of every scan and N above any supervoxel's size: every supervoxel
    is drawn and nothing is dropped, so the sampled loss is deterministic; scan 2 is empty."""
    model = _wrapper(tmp_path, K=4, N_P=50, N_V=40)  # SUPERVOXEL_SIZE (6, 6, 4): splits 4 x 3 x 2
    method = model.kd_methods[0]
    assert method.minority_lut[2] and not method.minority_lut[0] and not method.minority_lut[1]  # bicycle; -, car
    coords = torch.tensor([[0, 0, 0, 0], [0, 1, 1, 1], [0, 7, 0, 0], [0, 20, 17, 7], [1, 5, 5, 5], [1, 2, 3, 6]],
                          dtype=torch.int32)
    supervoxel = {(0, 0): [0, 1], (0, 6): [2], (0, 23): [3], (1, 1): [4, 5]}  # (scan, id): voxel rows, by hand
    gen = torch.Generator().manual_seed(5)
    p2v = torch.tensor([0, 0, 1, 2, 2, 2, 3, 4, 5, 5])
    batch = {"voxel_coords": coords, "point_to_voxel": p2v, "batch_size": 3,
             "points": torch.cat([coords[p2v, :1].float(), torch.randn(10, 4, generator=gen)], 1),
             "point_labels": torch.randint(0, 20, (10,), generator=gen)}
    for key, c_s, c_t, n in (("decoder_features", 8, 16, 6), ("point_features", 5, 7, 10)):
        batch[key], batch[key + "_tea"] = torch.randn(n, c_s, generator=gen), torch.randn(n, c_t, generator=gen)

    def cos(f):
        f = f.numpy().astype(np.float64)
        f = f / np.linalg.norm(f, axis=1, keepdims=True)
        return f @ f.T

    want_v = want_p = 0.0
    for voxels in supervoxel.values():
        vs, vt = batch["decoder_features"][voxels], batch["decoder_features_tea"][voxels]
        want_v += ((cos(vs) - cos(vt)) ** 2).sum() / 40 ** 2
        pts = [i for i in range(10) if int(p2v[i]) in voxels]
        ps, pt = batch["point_features"][pts], batch["point_features_tea"][pts]
        want_p += ((cos(ps) - cos(pt)) ** 2).sum() / 50 ** 2
    l_p, l_v, drawn = method.affinity_losses(batch, coords)
    assert drawn == 4
    assert abs(float(l_v) - want_v / 4) < 1e-6 and abs(float(l_p) - want_p / 4) < 1e-6


def test_dense_voxel_normalisation_is_the_papers_constant(tmp_path):
    batch = _batch(4)
    out = {}
    for norm in ("nonempty", "dense"):
        model = _wrapper(tmp_path, VOXEL_NORMALISATION=norm, ALPHA_POINT=0.0, BETA_POINT=0.0, BETA_VOXEL=0.0)
        view = dict(batch)
        model.run_teacher(view)
        model.student(view)
        out[norm] = model.kd_methods[0](view)[1]["out_v"]
        m = int(view["voxel_coords"].shape[0])
    assert out["dense"] == pytest.approx(out["nonempty"] * m / (2 * 24 * 18 * 8), rel=1e-6)
