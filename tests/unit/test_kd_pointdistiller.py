"""PointDistiller and FeatureKD on hand-made batches: per-sample sampling and graphs, order
invariance, reweighting, the ablation switches, BEV maps, config checks."""
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn
from easydict import EasyDict

import pcdet.kd.methods.pointdistiller as pd_module
from pcdet.config import ConfigError, ConfigKeyError
from pcdet.kd.graph_ops import EdgeGraph, graph_distill_loss
from pcdet.kd.methods import KD_METHODS as METHODS, build_kd_methods
from pcdet.kd.nodes import reweight, sample_nodes
from pcdet.models.model_template import FeatureSpec

C_S, C_T = 4, 8
#: what PillarVFE declares for its output (the layout and keys sample_nodes reads)
PILLARS = FeatureSpec(C_S, "sparse_rows", coord_key="voxel_coords", count_key="voxel_num_points")


pytestmark = pytest.mark.usefixtures("single_thread")


def detector(c, stride_blocks=None):
    """A stand-in model: only the feature specs its modules would declare."""
    specs = {"pillar_features": FeatureSpec(c, "sparse_rows", coord_key="voxel_coords", count_key="voxel_num_points")}
    for stride, channels in (stride_blocks or {}).items():
        specs[f"spatial_features_{stride}x"] = FeatureSpec(channels, "dense_bev", stride=stride)
    return SimpleNamespace(feature_specs=specs)


def method(**cfg):
    base = {"NAME": "PointDistiller", "WEIGHT": 2.0, "FEATURE": "pillar_features", "N": 30, "K": 6, "TAU": 0.5}
    base.update(cfg)
    return build_kd_methods([EasyDict(base)], detector(C_S, {2: C_S}), detector(C_T, {2: C_T}))[0]


def pillar_batch(sizes=(40, 25), seed=0, grid=16, feats_t=None):
    g = torch.Generator().manual_seed(seed)
    coords, counts = [], []
    for b, n in enumerate(sizes):
        cells = torch.randperm(grid * grid, generator=g)[:n]
        coords.append(torch.stack([torch.full((n,), b), torch.zeros(n, dtype=torch.long), cells // grid, cells % grid], 1))
        counts.append(torch.randint(1, 6, (n,), generator=g))  # many ties in the importance
    v = sum(sizes)
    return {"batch_size": len(sizes), "voxel_coords": torch.cat(coords), "voxel_num_points_tea": torch.cat(counts),
            "pillar_features": torch.randn(v, C_S, generator=g).requires_grad_(True),
            "pillar_features_tea": feats_t if feats_t is not None else torch.randn(v, C_T, generator=g).relu()}


def test_registry_and_options_are_checked():
    assert {"PointDistiller", "FeatureKD"} <= set(METHODS)
    with pytest.raises(ConfigKeyError, match="TAUU"):
        method(TAUU=1.0)
    with pytest.raises(ConfigError, match="K is required"):
        method(K=None)
    with pytest.raises(ConfigKeyError, match="unknown KD method"):
        build_kd_methods([EasyDict(NAME="NoSuchKD")], detector(C_S), detector(C_T))


def test_top_n_per_sample_by_points_with_position_tie_break():
    batch = pillar_batch(sizes=(40, 25))
    nodes = sample_nodes(batch, "pillar_features", 30, "num_points", spec=PILLARS)
    assert nodes.ptr == [0, 30, 55]  # sample 1 has fewer than N: all of its 25 pillars
    coords, counts = batch["voxel_coords"], batch["voxel_num_points_tea"]
    s0 = counts[:40]
    # the selected pillars of sample 0 are the 30 with most points; ties resolved by position
    pos = coords[:40, 2] * 16 + coords[:40, 3]
    expected = sorted(range(40), key=lambda i: (-int(s0[i]), int(pos[i])))[:30]
    assert torch.equal(nodes.feat_t[:30], batch["pillar_features_tea"][expected])
    assert torch.equal(nodes.score[:30], s0[expected].float())


def test_graph_never_crosses_samples(monkeypatch):
    # two samples with the same feature distribution: a batch-pooled KNN would mix them
    g = torch.Generator().manual_seed(3)
    base = torch.randn(40, C_T, generator=g).relu()
    feats_t = torch.cat([base, base + 1e-3 * torch.rand(40, C_T, generator=g)])
    batch = pillar_batch(sizes=(40, 40), feats_t=feats_t)
    seen = {}

    def spy(x, ptr, k, **kw):
        seen["ptr"], seen["out"] = ptr, pd_module.knn_per_sample.__wrapped__(x, ptr, k, **kw)
        return seen["out"]

    spy.__wrapped__ = pd_module.knn_per_sample
    monkeypatch.setattr(pd_module, "knn_per_sample", spy)
    m = method(N=100, K=10)
    m(batch)
    nbr, kcnt = seen["out"]
    ptr = seen["ptr"]
    assert ptr == [0, 40, 80] and (kcnt == 10).all()
    for lo, hi in zip(ptr[:-1], ptr[1:]):
        assert ((nbr[lo:hi] >= lo) & (nbr[lo:hi] < hi)).all()
    # a pooled search would have crossed (sanity check of the test itself)
    d = torch.cdist(feats_t, feats_t)
    pooled = d.topk(10, largest=False).indices
    assert ((pooled[:40] >= 40).any())


@pytest.mark.parametrize("local", [True, False])
def test_loss_is_invariant_to_pillar_order_within_a_sample(local):
    batch = pillar_batch(sizes=(40, 25), seed=4)
    torch.manual_seed(0)
    m = method(LOCAL_DISTILLATION=local)
    loss_a, _ = m(batch)
    # permute the pillars of sample 0 (rows of every per-pillar tensor alike)
    perm = torch.cat([torch.randperm(40, generator=torch.Generator().manual_seed(9)), torch.arange(40, 65)])
    permuted = dict(batch)
    for key in ("voxel_coords", "voxel_num_points_tea", "pillar_features_tea"):
        permuted[key] = batch[key][perm]
    permuted["pillar_features"] = batch["pillar_features"].detach()[perm].requires_grad_(True)
    loss_b, _ = m(permuted)
    assert abs(loss_a.item() - loss_b.item()) <= 1e-5 * abs(loss_a.item())
    loss_a.backward()
    loss_b.backward()
    torch.testing.assert_close(batch["pillar_features"].grad[perm], permuted["pillar_features"].grad,
                               rtol=1e-4, atol=1e-7)


def test_reweighting_off_means_uniform_phi_and_on_follows_the_softmax():
    batch = pillar_batch(seed=5)
    torch.manual_seed(0)
    m = method(REWEIGHT=False, TAU=None)
    loss, _ = m(batch)
    nodes = sample_nodes(batch, "pillar_features", 30, "num_points", spec=PILLARS)
    nbr, kcnt = pd_module.knn_per_sample(nodes.feat_t, nodes.ptr, 6)
    uniform = graph_distill_loss(nodes.feat_t, nodes.feat_s, EdgeGraph(nbr, kcnt), m.adapter_t, m.adapter_s,
                                 torch.ones(nodes.num_nodes))
    assert abs(loss.item() - 2.0 * uniform.item()) <= 1e-6 * abs(loss.item())
    phi = reweight(nodes.score, nodes.ptr, tau=0.5)
    for lo, hi in zip(nodes.ptr[:-1], nodes.ptr[1:]):
        assert abs(phi[lo:hi].sum().item() - (hi - lo)) < 1e-4
        expected = torch.softmax(nodes.score[lo:hi].double() / 0.5, 0) * (hi - lo)
        torch.testing.assert_close(phi[lo:hi].double(), expected, rtol=1e-6, atol=1e-6)
    assert torch.equal(reweight(nodes.score, nodes.ptr, tau=0.5, enabled=False), torch.ones(nodes.num_nodes))
    # more points -> larger weight
    assert phi[0] > phi[29] or nodes.score[0] == nodes.score[29]


def test_local_distillation_off_is_reweighted_adapted_feature_distillation():
    batch = pillar_batch(seed=6)
    m = method(LOCAL_DISTILLATION=False, K=None)
    assert not hasattr(m, "adapter_t") and isinstance(m.adapter_s, nn.Linear)
    loss, tb = m(batch)
    nodes = sample_nodes(batch, "pillar_features", 30, "num_points", spec=PILLARS)
    phi = reweight(nodes.score, nodes.ptr, 0.5)
    expected = 2.0 * (phi.unsqueeze(1) * (m.adapter_s(nodes.feat_s) - nodes.feat_t) ** 2).mean()
    assert abs(loss.item() - expected.item()) <= 1e-6 * abs(expected.item())
    loss.backward()
    assert m.adapter_s.weight.grad.abs().sum() > 0 and batch["pillar_features"].grad.abs().sum() > 0
    assert tb["nodes"] == 55


def test_bev_map_channel_max_importance_max_pool_and_coordinate_knn():
    g = torch.Generator().manual_seed(7)
    fs = torch.randn(2, C_S, 6, 5, generator=g).requires_grad_(True)
    ft = torch.randn(2, C_T, 6, 5, generator=g)
    batch = {"batch_size": 2, "spatial_features_2x": fs, "spatial_features_2x_tea": ft}
    nodes = sample_nodes(batch, "spatial_features_2x", 7, "auto")
    assert nodes.ptr == [0, 7, 14]
    top = ft[1].amax(0).flatten().topk(7).indices
    assert torch.equal(nodes.feat_t[7:], ft[1].flatten(1)[:, top].t())
    assert torch.equal(nodes.coords[7:], torch.stack([top // 5, top % 5], 1).float())
    for extra in ({"MAX_POOL_K": True}, {"KNN_SPACE": "coordinate"}, {"N": 1000}):
        m = method(**{"FEATURE": "spatial_features_2x", "N": 7, "K": 4, "TAU": 1e-4, **extra})
        loss, tb = m(batch)
        assert torch.isfinite(loss) and loss.item() > 0
        loss.backward()
        assert fs.grad.abs().sum() > 0 and all(p.grad is not None for p in m.parameters())
        fs.grad = None
    assert tb["nodes"] == 60  # N larger than the map: every cell


def test_empty_sample_and_empty_batch():
    batch = pillar_batch(sizes=(30, 0))
    loss, tb = method()(batch)
    assert torch.isfinite(loss) and tb["nodes"] == 30
    empty = pillar_batch(sizes=(0, 0))
    loss, tb = method()(empty)
    assert loss.item() == 0.0 and tb["nodes"] == 0


def test_feature_kd_dense_all_cells_and_sampled_nodes():
    g = torch.Generator().manual_seed(8)
    fs = torch.randn(2, C_S, 6, 5, generator=g).requires_grad_(True)
    ft = torch.randn(2, C_T, 6, 5, generator=g)
    batch = {"batch_size": 2, "spatial_features_2x": fs, "spatial_features_2x_tea": ft}
    def make(**kw):
        cfg = EasyDict({"NAME": "FeatureKD", "WEIGHT": 3.0, "FEATURE": "spatial_features_2x", **kw})
        return build_kd_methods([cfg], detector(C_S, {2: C_S}), detector(C_T, {2: C_T}))[0]

    m = make()
    loss, tb = m(batch)
    pred = torch.einsum("oc,bchw->bohw", m.adapter.weight, fs) + m.adapter.bias.view(1, -1, 1, 1)
    assert abs(loss.item() - 3.0 * ((pred - ft) ** 2).mean().item()) < 1e-5 and tb["nodes"] == 60
    m2 = make(N=7)
    loss2, tb2 = m2(batch)
    nodes = sample_nodes(batch, "spatial_features_2x", 7)
    assert abs(loss2.item() - 3.0 * ((m2.adapter(nodes.feat_s) - nodes.feat_t) ** 2).mean().item()) < 1e-5
    assert tb2["nodes"] == 14


def _materialised_graph_features(m, batch):
    """G_T, G_S on every edge, by the adapters' own modules on concat[x_j, x_i] (the reference)."""
    from pcdet.kd.knn import knn_per_sample

    nodes = sample_nodes(batch, "pillar_features", m.n, m.importance, spec=m.spec)
    nbr, kcnt = knn_per_sample(nodes.feat_t.detach(), nodes.ptr, m.k)
    rows, cols = torch.nonzero(torch.arange(nbr.shape[1])[None] < kcnt[:, None], as_tuple=True)

    def side(x, adapter):
        edges = torch.cat([x[nbr[rows, cols]], x[rows]], dim=1).t().unsqueeze(0)  # (1, 2C, E)
        return adapter(edges)[0].t()

    return side(nodes.feat_t, m.adapter_t), side(nodes.feat_s, m.adapter_s)


def test_release_ld_only_loss_form_is_the_l2_norm_of_the_graph_difference():
    """LD_LOSS l2_norm (the release's local distillation without reweighting): WEIGHT * ||G_T - G_S||_2
    over all edges and channels, against the materialised graph features."""
    batch = pillar_batch(sizes=(40, 25), seed=5)
    torch.manual_seed(0)
    m = method(REWEIGHT=False, LD_LOSS="l2_norm", WEIGHT=5e-4, TAU=None)
    loss, _ = m(batch)
    torch.manual_seed(0)
    ref = method(REWEIGHT=False, LD_LOSS="l2_norm", WEIGHT=5e-4, TAU=None)
    g_t, g_s = _materialised_graph_features(ref, batch)
    expected = 5e-4 * torch.dist(g_t, g_s)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-4)
    grad = torch.autograd.grad(loss, m.adapter_s.conv.weight)[0]
    grad_ref = torch.autograd.grad(expected, ref.adapter_s.conv.weight)[0]
    assert torch.allclose(grad, grad_ref, rtol=1e-3, atol=1e-9)
    # the default form is the paper's mean square
    torch.manual_seed(0)
    ms, _ = method(REWEIGHT=False, TAU=None)(batch)
    assert ms.item() == pytest.approx(2.0 * ((g_t - g_s) ** 2).mean().item(), rel=1e-4)
    with pytest.raises(ConfigError, match="l2_norm .*REWEIGHT false"):
        method(LD_LOSS="l2_norm")
    with pytest.raises(ConfigError, match="LD_LOSS must be one of"):
        method(LD_LOSS="l1")


def test_frozen_random_teacher_adapter_is_not_trained_and_has_no_affine_bn():
    m = method(TEACHER_ADAPTER="frozen_random")
    assert not m.adapter_t.bn.affine and not any(p.requires_grad for p in m.adapter_t.parameters())
    assert m.adapter_s.bn.affine and all(p.requires_grad for p in m.adapter_s.parameters())
    loss, _ = m(pillar_batch(seed=6))
    loss.backward()
    assert m.adapter_t.conv.weight.grad is None and m.adapter_s.conv.weight.grad is not None
    with pytest.raises(ConfigError, match="TEACHER_ADAPTER must be one of"):
        method(TEACHER_ADAPTER="frozen")


def test_diagnostics_are_computed_on_schedule_and_change_nothing():
    from pcdet.kd.diagnostics import linear_cka

    batch = pillar_batch(sizes=(40, 25), seed=7)
    torch.manual_seed(0)
    plain = method()
    torch.manual_seed(0)
    diag = method()
    diag.diagnostics_every = 2
    for step in range(3):
        lp, _ = plain(dict(batch))
        ld, tb = diag(dict(batch))
        assert lp.item() == ld.item()  # diagnostics do not touch the loss ...
        assert ("diag/cka" in tb) == (step % 2 == 0)
    for a, b in zip(plain.state_dict().values(), diag.state_dict().values()):
        assert torch.equal(a, b)  # ... nor the BatchNorm running statistics
    d = diag.last_diagnostics
    assert 0.0 <= d["t_active"] <= 1.0 and 0.0 <= d["s_active"] <= 1.0 and -1e-9 <= d["cka"] <= 1.0 + 1e-9
    assert d["t_bn_gamma_mean"] == pytest.approx(1.0) and d["nodes"] == pytest.approx((30 + 25) / 2)
    assert 1.0 <= d["ess"] <= 30.0
    x = torch.randn(50, 4, generator=torch.Generator().manual_seed(0))
    q, _ = torch.linalg.qr(torch.randn(4, 4, generator=torch.Generator().manual_seed(1)))
    assert linear_cka(x, 3.0 * x @ q) == pytest.approx(1.0)  # invariant to rotation and scale
