"""The segmentation baselines of PVD's Tables 1-3 (HintonKD's softmax form, ChannelWise, IFV, SKD,
KnowledgeAdaptation): each loss against a direct transcription of its formula on small tensors, and
one wrapper step of every embedded KD config on a tiny Cylinder3D pair (finite loss, student
gradients, teacher bit-identical)."""
import math

import numpy as np
import pytest
import torch

from pcdet.kd.methods.channel_wise import channel_wise_kl
from pcdet.kd.methods.common import softmax_kl
from pcdet.kd.methods.ifv import ifv_map
from pcdet.kd.methods.skd import pair_wise, pixel_wise, pooled_nodes
from pcdet.utils.paths import REPO_ROOT
from tests.helpers import seg_batch, seg_kd_wrapper

KD_DIR = REPO_ROOT / "kd_cfgs" / "synthetic_seg"


def _softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _cos(a, b):
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    return 0.0 if na == 0 or nb == 0 else float(a @ b / (na * nb))


# ----------------------------------------------------------------------------- formulas
def test_hinton_softmax_form_is_kldivloss_mean_times_t2():
    gen = torch.Generator().manual_seed(0)
    s, t, temp = torch.randn(6, 4, generator=gen), torch.randn(6, 4, generator=gen), 2.0
    ps, pt = _softmax(s.numpy() / temp, 1), _softmax(t.numpy() / temp, 1)
    want = sum(pt[n, c] * math.log(pt[n, c] / ps[n, c]) for n in range(6) for c in range(4)) / 24
    assert abs(temp ** 2 * float(softmax_kl(s, t, temp)) - temp ** 2 * want) < 1e-6
    ref = torch.nn.KLDivLoss()(torch.log_softmax(s / temp, 1), torch.softmax(t / temp, 1))  # IFVD CriterionKD
    assert abs(float(softmax_kl(s, t, temp)) - float(ref)) < 1e-7


def test_channel_wise_is_a_softmax_over_each_samples_voxels_per_channel():
    gen = torch.Generator().manual_seed(1)
    s, t = torch.randn(9, 3, generator=gen), torch.randn(9, 3, generator=gen)
    batch_idx, temp = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 1]), 4.0
    total = 0.0
    for b in (0, 1):
        rows = (batch_idx == b).numpy()
        ps, pt = _softmax(s.numpy()[rows] / temp, 0), _softmax(t.numpy()[rows] / temp, 0)  # over voxels
        total += float((pt * np.log(pt / ps)).sum())
    want = temp ** 2 * total / (2 * 3)
    assert abs(float(channel_wise_kl(s, t, batch_idx, 2, temp)) - want) < 1e-5


def test_ifv_map_is_the_cosine_to_each_samples_class_prototype():
    gen = torch.Generator().manual_seed(2)
    feat = torch.randn(8, 5, generator=gen)
    labels = torch.tensor([1, 1, 2, 0, 1, 2, 2, 1])
    batch_idx = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    got = ifv_map(feat, labels, batch_idx, 2, ignore_label=0).numpy()
    f = feat.numpy()
    for i in range(8):
        if labels[i] == 0:
            assert got[i] == 1.0  # the ignored voxel keeps its own feature: IFV 1 (the reference's rule)
            continue
        same = [j for j in range(8) if labels[j] == labels[i] and batch_idx[j] == batch_idx[i]]
        assert abs(got[i] - _cos(f[i], f[same].mean(0))) < 1e-6


def test_skd_pixel_wise_and_pair_wise_transcribed():
    gen = torch.Generator().manual_seed(3)
    s, t = torch.randn(10, 4, generator=gen), torch.randn(10, 4, generator=gen)
    want = -(_softmax(t.numpy(), 1) * np.log(_softmax(s.numpy(), 1))).sum() / (10 / 2)
    assert abs(float(pixel_wise(s, t, 2)) - want) < 1e-5

    coords = torch.tensor([[0, 0, 0, 0], [0, 1, 1, 0], [0, 5, 0, 0], [0, 6, 3, 1], [1, 0, 0, 0], [1, 7, 7, 1]])
    fs, ft = torch.randn(6, 3, generator=gen), torch.randn(6, 2, generator=gen)
    nodes, node_b = pooled_nodes(fs, coords, (4, 4, 2))  # cells (b, r//4, a//4, h//2)
    groups = [[0, 1], [2, 3], [4], [5]]  # (0,0,0,0) (0,1,0,0) (1,0,0,0) (1,1,1,0)
    assert node_b.tolist() == [0, 0, 1, 1]
    assert torch.allclose(nodes, torch.stack([fs[g].max(0).values for g in groups]))
    want = 0.0
    for sample in ([0, 1], [2, 3]):
        ns = [fs[groups[k]].max(0).values.numpy() for k in sample]
        nt = [ft[groups[k]].max(0).values.numpy() for k in sample]
        n = len(sample)
        want += sum((_cos(nt[i], nt[j]) - _cos(ns[i], ns[j])) ** 2 for i in range(n) for j in range(n)) / n ** 2
    assert abs(float(pair_wise(fs, ft, coords, (4, 4, 2), 2)) - want / 2) < 1e-6


# ----------------------------------------------------------------------------- in the wrapper
@pytest.mark.parametrize("name", ["hinton", "channel_wise", "ifv", "skd", "knowledge_adaptation"])
def test_embedded_config_step_trains_the_student_only(tmp_path, name):
    model = seg_kd_wrapper(tmp_path, KD_DIR / f"cylinder3d_0.5x_{name}.yaml",
                           {"AE_STEPS": 0} if name == "knowledge_adaptation" else None)
    before = {k: v.clone() for k, v in model.teacher.state_dict().items()}
    batch = seg_batch(0)
    model.run_teacher(batch)
    model.student(batch)
    loss, _ = model.kd_methods[0](batch)
    assert torch.isfinite(loss) and float(loss) > 0
    loss.backward()
    grads = [p.grad for p in model.student.parameters() if p.grad is not None]
    assert grads and sum(float(g.abs().sum()) for g in grads) > 0
    assert all(p.grad is None for p in model.teacher.parameters())
    assert all(torch.equal(v, model.teacher.state_dict()[k]) for k, v in before.items())


def test_knowledge_adaptation_trains_the_autoencoder_first_then_freezes_it(tmp_path):
    model = seg_kd_wrapper(tmp_path, KD_DIR / "cylinder3d_0.5x_knowledge_adaptation.yaml", {"AE_STEPS": 1})
    method = model.kd_methods[0]
    batch = seg_batch(1)
    model.run_teacher(batch)
    model.student(batch)
    loss, tb = method(batch)  # step 1: stage 1, the auto-encoder alone
    loss.backward()
    assert tb["stage"] == 1 and method.encoder[0].weight.grad.abs().sum() > 0
    assert all(p.grad is None or float(p.grad.abs().sum()) == 0 for p in model.student.parameters())
    model.zero_grad(set_to_none=True)
    batch = seg_batch(2)
    model.run_teacher(batch)
    model.student(batch)
    loss, tb = method(batch)  # step 2: frozen auto-encoder, the adapted student learns
    loss.backward()
    assert tb["stage"] == 2 and not method.encoder[0].weight.requires_grad and method.encoder[0].weight.grad is None
    assert method.adapter[0].weight.grad.abs().sum() > 0
    assert int(method.state_dict()["steps_done"]) == 2  # a resumed run knows which stage it is in


@pytest.mark.parametrize("name", ["PVD", "HintonKD", "ChannelWise", "IFV", "SKD", "KnowledgeAdaptation"])
def test_segmentation_methods_document_source_loss_and_placement(name):
    import sys

    from pcdet.kd.methods import KD_METHODS

    text = sys.modules[KD_METHODS.get(name, "test").__module__].__doc__
    for part in ("Source:", "Loss implemented", "Applied to"):
        assert part in text, (name, part)
