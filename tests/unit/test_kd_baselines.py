"""Each KD baseline's loss equals a direct (numpy / loop) transcription of its formula on small tensors.

The methods run inside a small PointPillars teacher -> 4x student wrapper on a random batch (so the
batch_dict keys are the real ones); the transcriptions read the same tensors and the methods' own
adapters, and recompute the formula independently of the implementation's vectorised code.
"""
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from pcdet.kd.methods import KD_METHODS as METHODS
from pcdet.kd.methods.crd import nce_loss
from pcdet.kd.methods.overhaul import bn_margin
from pcdet.kd.methods.pvd_det import difficulty_weights
from pcdet.kd.methods.sparsekd import teacher_label_boxes
from pcdet.models import build_network
from pcdet.models.detectors import build_detector
from pcdet.ops.iou3d_nms import boxes_bev_iou_cpu
from pcdet.train_utils.experiment import load_experiment_cfg
from pcdet.utils.paths import REPO_ROOT
from tests.helpers import fake_dataset, random_batch

SMALL_RANGE = "[0, -5.12, -3, 10.24, 5.12, 1]"
PCR = np.array([0, -5.12, -3, 10.24, 5.12, 1], dtype=np.float64)
TWELVE = ["HintonKD", "FitNet", "AttentionTransfer", "SimilarityPreserving", "CRD", "Overhaul", "ZhangMa",
          "SESSDConsistency", "MultiFrameConsistency", "SparseKD", "PVDDet", "PaintAndDistill"]

pytestmark = pytest.mark.usefixtures("single_thread")


def _np(t):
    return t.detach().double().cpu().numpy()


def run(tmp_path, suffix, **method):
    """(method, batch after one wrapper forward, wrapper) for kd_cfgs/kitti/pointpillar_4x_<suffix>.yaml,
    with ``method`` overriding keys of its (only) KD.METHODS entry."""
    path = REPO_ROOT / "kd_cfgs" / "kitti" / f"pointpillar_4x_{suffix}.yaml"
    cfg = load_experiment_cfg(path, ["DATA_CONFIG.POINT_CLOUD_RANGE", SMALL_RANGE,
                                     "KD.TEACHER.DATA_CONFIG.POINT_CLOUD_RANGE", SMALL_RANGE])
    cfg.KD.METHODS[0].update(method)
    ds = fake_dataset(cfg)
    torch.manual_seed(1)
    teacher = build_detector(model_cfg=cfg.KD.TEACHER.MODEL, num_class=3, dataset=ds)
    with torch.no_grad():
        for m in teacher.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    torch.save({"model_state": teacher.state_dict()}, tmp_path / "t.pth")
    cfg.KD.TEACHER.CKPT = str(tmp_path / "t.pth")
    torch.manual_seed(0)
    model = build_network(cfg.MODEL, 3, ds, kd_cfg=cfg.KD)
    model.train()
    batch = random_batch(ds.data_processor.grid_size)
    model(batch)
    return model.kd_methods[0], batch, model


def inside_bev(x, y, box):
    """Transcription of a point-in-rotated-rectangle test."""
    cx, cy, dx, dy, h = box[0], box[1], box[3], box[4], box[6]
    lx = (x - cx) * math.cos(h) + (y - cy) * math.sin(h)
    ly = -(x - cx) * math.sin(h) + (y - cy) * math.cos(h)
    return abs(lx) <= dx / 2 and abs(ly) <= dy / 2


def owner_map(gt_b, h, w):
    """(H, W) index of the first valid box holding each cell centre, -1 if none (loops)."""
    boxes = [b for b in _np(gt_b) if np.abs(b[3:6]).sum() > 0 and b[-1] > 0]
    out = -np.ones((h, w), dtype=np.int64)
    for i in range(h):
        for j in range(w):
            x = PCR[0] + (j + 0.5) * (PCR[3] - PCR[0]) / w
            y = PCR[1] + (i + 0.5) * (PCR[4] - PCR[1]) / h
            for k, b in enumerate(boxes):
                if inside_bev(x, y, b):
                    out[i, j] = k
                    break
    return out, boxes


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


# ---------------------------------------------------------------------------------------------
def test_registry_lists_pointdistiller_and_the_twelve_baselines():
    assert set(TWELVE) | {"PointDistiller"} <= set(METHODS)
    out = subprocess.run([sys.executable, "-m", "pcdet.kd", "list"], capture_output=True, text=True, cwd=REPO_ROOT,
                         check=True).stdout
    for name in TWELVE + ["PointDistiller"]:
        assert any(line.split()[0] == name for line in out.splitlines()), name
    for name in TWELVE:
        doc = METHODS[name].__module__
        text = sys.modules[doc].__doc__
        for part in ("Source:", "Loss implemented", "Applied to"):
            assert part in text, (name, part)


def test_hinton(tmp_path):
    m, batch, _ = run(tmp_path, "hinton")
    zs, zt, t = _np(batch["cls_preds"]), _np(batch["cls_preds_tea"]), 4.0
    ps, pt = sigmoid(zs / t), sigmoid(zt / t)
    kl = pt * np.log(pt / ps) + (1 - pt) * np.log((1 - pt) / (1 - ps))
    assert float(m(batch)[0].detach()) == pytest.approx(t * t * kl.mean() * m.weight, rel=1e-4)


def test_fitnet(tmp_path):
    m, batch, _ = run(tmp_path, "fitnet")
    m.eval()  # BN with running statistics: a deterministic regressor
    r = _np(m.regressor(batch["spatial_features_2d"].float()))
    ft = _np(batch["spatial_features_2d_tea"])
    assert r.shape == ft.shape and r.min() >= 0  # conv + BN + ReLU to the teacher's width
    assert float(m(batch)[0].detach()) == pytest.approx(m.weight * ((r - ft) ** 2).mean(), rel=1e-5)


def test_attention_transfer(tmp_path):
    m, batch, _ = run(tmp_path, "attention_transfer")
    total = 0.0
    for key in ("spatial_features_2x", "spatial_features_4x", "spatial_features_8x"):
        fs, ft = _np(batch[key]), _np(batch[key + "_tea"])
        for b in range(fs.shape[0]):
            a_s = (fs[b] ** 2).mean(0).ravel()
            a_t = (ft[b] ** 2).mean(0).ravel()
            a_s, a_t = a_s / np.linalg.norm(a_s), a_t / np.linalg.norm(a_t)
            total += ((a_s - a_t) ** 2).sum() / (fs.shape[0] * a_s.size)
    assert float(m(batch)[0].detach()) == pytest.approx(m.weight * total, rel=1e-4)


def test_similarity_preserving(tmp_path):
    m, batch, _ = run(tmp_path, "similarity_preserving")
    fs, ft = _np(batch["spatial_features_2d"]), _np(batch["spatial_features_2d_tea"])
    b = fs.shape[0]

    def gram(f):
        q = f.reshape(b, -1)
        g = q @ q.T
        return g / np.linalg.norm(g, axis=1, keepdims=True)

    expected = ((gram(ft) - gram(fs)) ** 2).sum() / b**2
    assert float(m(batch)[0].detach()) == pytest.approx(m.weight * expected, rel=1e-4)


def test_crd_nce_matches_the_formula_and_memory_update():
    torch.manual_seed(0)
    h = torch.rand(3, 6) * 2
    k, n = 5, 50
    expected = 0.0
    for i in range(3):
        expected += -math.log(h[i, 0] / (h[i, 0] + k / n + 1e-7))
        for j in range(1, 6):
            expected += -math.log((k / n) / (h[i, j] + k / n + 1e-7))
    assert float(nce_loss(h, k, n)) == pytest.approx(expected / 3, rel=1e-5)


def test_crd_scores_and_update(tmp_path):
    m, batch, _ = run(tmp_path, "crd", NCE_K=7, BANK_SIZE=64)
    fs, ft = batch["spatial_features_2d"].float(), batch["spatial_features_2d_tea"].float()
    f_s, f_t, slots = m.instances(batch, fs, ft)
    assert f_s.shape[0] == 3 and len(set(slots.tolist())) <= 3  # three valid GT boxes in the batch
    mem_t0, mem_s0 = m.memory_t.clone(), m.memory_s.clone()
    z_s0, z_t0 = float(m.z_s), float(m.z_t)
    torch.manual_seed(5)
    loss = float(m(batch)[0].detach())
    torch.manual_seed(5)  # the same noise draws, transcribed with explicit row gathers
    v_s = torch.nn.functional.normalize(m.embed_s(f_s), dim=1)
    v_t = torch.nn.functional.normalize(m.embed_t(f_t), dim=1)
    total = 0.0
    for v, mem, z0 in ((v_s, mem_t0, z_s0), (v_t, mem_s0, z_t0)):
        noise = torch.randint(0, 64, (v.shape[0], 7))
        rows = torch.cat([slots[:, None], noise], 1)
        hh = np.array([[math.exp(float(mem[r] @ v[i]) / 0.07) for r in rows[i]] for i in range(v.shape[0])])
        z = hh.mean() * 64 if z0 < 0 else z0
        total += float(nce_loss(torch.as_tensor(hh / z), 7, 64))
    assert loss == pytest.approx(m.weight * total, rel=1e-4)
    s = int(slots[0])
    expected = torch.nn.functional.normalize(0.5 * mem_s0[s] + 0.5 * v_s[0].detach(), dim=0)
    if (slots == s).sum() == 1:
        assert torch.allclose(m.memory_s[s], expected, atol=1e-6)


def test_overhaul_margin_and_partial_l2(tmp_path):
    gamma, beta = torch.tensor([1.0, 0.5, 0.2, 2.0]), torch.tensor([0.0, -1.0, 1.0, 7.0])
    for s, mm, got in zip(gamma.tolist(), beta.tolist(), bn_margin(gamma, beta).tolist()):
        cdf = 0.5 * (1 + math.erf((-mm / s) / math.sqrt(2)))
        pdf = math.exp(-((mm / s) ** 2) / 2) / math.sqrt(2 * math.pi)
        want = mm - s * pdf / cdf if cdf > 1e-3 else -3 * s
        assert got == pytest.approx(want, rel=1e-5, abs=1e-6)
    m, batch, model = run(tmp_path, "overhaul")
    m.eval()
    bb = model.teacher.backbone_2d
    n = len(bb.cum_strides)
    total = 0.0
    for i, s in enumerate(bb.cum_strides):
        key = f"spatial_features_{s}x_preact"
        # the pre-activation really is what the stage's ReLU receives
        assert torch.equal(torch.relu(batch[key + "_tea"]), batch[f"spatial_features_{s}x_tea"])
        bn = bb.stage_output_bn(i)
        margin = _np(bn_margin(bn.weight, bn.bias))[None, :, None, None]
        tgt = np.maximum(_np(batch[key + "_tea"]), margin)
        pred = _np(m.connectors[i](batch[key].float()))
        mask = (pred > tgt) | (tgt > 0)
        total += 1 / 2 ** (n - i - 1) * (((pred - tgt) ** 2) * mask).sum() / pred.shape[0]
    assert float(m(batch)[0].detach()) == pytest.approx(m.weight * total, rel=1e-4)


def test_zhang_ma(tmp_path):
    m, batch, _ = run(tmp_path, "zhang_ma", NL_MAX_SIZE=8)
    fs_t = m.adapter(batch["spatial_features_2d"].float())
    fs, ft, t = _np(fs_t), _np(batch["spatial_features_2d_tea"]), 0.1
    b, c, h, w = fs.shape

    def sa(f):
        e = np.abs(f).mean(0).ravel() / t
        e = np.exp(e - e.max())
        return (h * w * e / e.sum()).reshape(h, w)

    def ca(f):
        e = np.abs(f).mean((1, 2)) / t
        e = np.exp(e - e.max())
        return c * e / e.sum()

    feat = at = 0.0
    for i in range(b):
        feat += (((ft[i] - fs[i]) ** 2) * sa(ft[i])[None] * ca(ft[i])[:, None, None]).sum()
        at += np.abs(sa(ft[i]) - sa(fs[i])).sum() + np.abs(ca(ft[i]) - ca(fs[i])).sum()
    pool = torch.nn.functional.adaptive_avg_pool2d
    nl = _np(((m.nl_t(pool(batch["spatial_features_2d_tea"].float(), (8, 8))) - m.nl_s(pool(fs_t, (8, 8)))) ** 2).sum())
    expected = (7e-5 * feat + 4e-3 * at + 7e-5 * nl) / b
    assert float(m(batch)[0].detach()) == pytest.approx(m.weight * expected, rel=1e-3)


def test_multiframe_l2_and_l1(tmp_path):
    for loss_name, p in (("l2", 2), ("l1", 1)):
        m, batch, _ = run(tmp_path, "multiframe", LOSS=loss_name)
        a = _np(m.adapter(batch["spatial_features_2d"].float()))
        expected = (np.abs(a - _np(batch["spatial_features_2d_tea"])) ** p).mean()
        assert float(m(batch)[0].detach()) == pytest.approx(m.weight * expected, rel=1e-5)


def test_paint_and_distill(tmp_path):
    m, batch, _ = run(tmp_path, "paint_and_distill")
    fs, ft = _np(m.adapter(batch["spatial_features_2d"].float())), _np(batch["spatial_features_2d_tea"])
    b, c, h, w = fs.shape
    pix = ((fs - ft) ** 2).mean()
    inst, cls = [], []
    for i in range(b):
        own, boxes = owner_map(batch["gt_boxes"][i], h, w)
        per_class = {}
        for k, box in enumerate(boxes):
            cells = np.argwhere(own == k)
            if len(cells) == 0:
                continue
            s_mean = np.mean([fs[i, :, y, x] for y, x in cells], axis=0)
            t_mean = np.mean([ft[i, :, y, x] for y, x in cells], axis=0)
            inst.append(((s_mean - t_mean) ** 2).mean())
            per_class.setdefault(int(box[-1]), []).extend([tuple(cc) for cc in cells])
        for cells in per_class.values():
            s_mean = np.mean([fs[i, :, y, x] for y, x in cells], axis=0)
            t_mean = np.mean([ft[i, :, y, x] for y, x in cells], axis=0)
            cls.append(((s_mean - t_mean) ** 2).mean())
    assert inst and cls
    expected = pix + np.mean(inst) + np.mean(cls)
    assert float(m(batch)[0].detach()) == pytest.approx(m.weight * expected, rel=1e-4)


def test_sparsekd_logit_and_box_terms(tmp_path):
    m, batch, model = run(tmp_path, "sparsekd", LABEL_KD=False)
    zs, zt = _np(batch["cls_preds"]), _np(batch["cls_preds_tea"])
    rs, rt = _np(batch["box_preds"]), _np(batch["box_preds_tea"])
    b, h, w, _ = zs.shape
    zs, zt = zs.reshape(b, h, w, -1, 3), zt.reshape(b, h, w, -1, 3)
    rs, rt = rs.reshape(b, h, w, -1, 7), rt.reshape(b, h, w, -1, 7)
    beta = 1 / 9
    num_l = num_b = den = 0.0
    for i in range(b):
        own, _ = owner_map(batch["gt_boxes"][i], h, w)
        for y in range(h):
            for x in range(w):
                if own[y, x] < 0:
                    continue
                for a in range(zs.shape[3]):
                    mask = sigmoid(zt[i, y, x, a]).max()
                    num_l += mask * ((sigmoid(zs[i, y, x, a]) - sigmoid(zt[i, y, x, a])) ** 2).sum()
                    d = np.abs(rs[i, y, x, a] - rt[i, y, x, a])
                    num_b += mask * np.where(d < beta, 0.5 * d**2 / beta, d - 0.5 * beta).sum()
                    den += mask
    expected = 10.0 * num_l / den + 0.2 * num_b / den
    assert float(m(batch)[0].detach()) == pytest.approx(m.weight * expected, rel=1e-4)


def test_sparsekd_label_kd_adds_confident_new_teacher_boxes_only():
    gt = torch.tensor([[10.0, 0.0, -1.0, 4.0, 1.6, 1.5, 0.0, 1], [0, 0, 0, 0, 0, 0, 0, 0]])
    box_t = torch.tensor([[10.2, 0.1, -1.0, 4.0, 1.6, 1.5, 0.0],   # duplicates the GT box
                          [20.0, 5.0, -1.0, 0.8, 0.6, 1.7, 0.0],   # new, confident pedestrian
                          [20.1, 5.0, -1.0, 0.8, 0.6, 1.7, 0.0],   # NMS-suppressed copy of it
                          [30.0, -5.0, -1.0, 4.0, 1.6, 1.5, 0.0]])  # new but not confident
    logit = lambda p: math.log(p / (1 - p))  # noqa: E731
    cls_t = torch.tensor([[logit(0.9), -5, -5], [-5, logit(0.8), -5], [-5, logit(0.7), -5], [logit(0.5), -5, -5]])
    out = teacher_label_boxes(cls_t, box_t, gt, 0.6, 0.1, 0.1)
    assert out.shape == (1, 8)
    assert torch.allclose(out[0, :7], box_t[1]) and int(out[0, 7]) == 2


def test_confident_boxes_keeps_the_pre_nms_cap_of_the_detectors_post_processing():
    """Only the ``pre_max`` best-scoring confident anchors enter the NMS (OpenPCDet's NMS_PRE_MAXSIZE);
    non-overlapping boxes all survive it, best first, at most ``max_boxes``."""
    from pcdet.kd.methods.common import NMS_PRE_MAXSIZE, confident_boxes

    n = 12
    boxes = torch.tensor([[5.0 * i, 0.0, -1.0, 4.0, 1.6, 1.5, 0.0] for i in range(n)])  # 5 m apart: no overlap
    probs = torch.tensor([0.35 + 0.05 * ((7 * i) % n) for i in range(n)])  # distinct, all >= 0.3
    cls = torch.stack([torch.logit(probs), torch.full((n,), -6.0), torch.full((n,), -6.0)], dim=1)
    best_first = torch.argsort(probs, descending=True)
    idx, score = confident_boxes(cls, boxes, 0.3, 0.1, 100)  # the default cap (4096) does not bind here
    assert NMS_PRE_MAXSIZE == 4096 and idx.tolist() == best_first.tolist()
    assert torch.allclose(score, probs)
    idx, _ = confident_boxes(cls, boxes, 0.3, 0.1, 100, pre_max=5)
    assert idx.tolist() == best_first[:5].tolist()
    idx, _ = confident_boxes(cls, boxes, 0.5, 0.1, 3, pre_max=5)  # the threshold first, then the cap, then max_boxes
    assert idx.tolist() == [i for i in best_first.tolist() if probs[i] >= 0.5][:3]


def test_sessd_pairs_and_loss_transcribed(tmp_path):
    m, batch, model = run(tmp_path, "sessd")
    head = model.student.dense_head
    cls_s, box_s = head.generate_predicted_boxes(2, batch["cls_preds"], batch["box_preds"], batch["dir_cls_preds"])
    # a confident teacher: its boxes = the student's own boxes shifted by 5 cm at a few anchors
    cls_t = torch.full_like(cls_s, -6.0)
    box_t = box_s.detach().clone()
    picks = [(0, 10), (0, 500), (1, 40)]
    for b, a in picks:
        cls_t[b, a, 0] = 1.0
        box_t[b, a, 0] += 0.05
    batch["batch_cls_preds_tea"], batch["batch_box_preds_tea"] = cls_t, box_t
    loss, tb = m(batch)
    beta = 1 / 9

    def sl1(d):
        d = abs(d)
        return 0.5 * d * d / beta if d < beta else d - 0.5 * beta

    terms = []
    for b, a in picks:  # each confident anchor is its own teacher box (no overlap); IoU with itself shifted > 0.7
        iou = float(boxes_bev_iou_cpu(box_s[b, a:a + 1].detach(), box_t[b, a:a + 1])[0, 0])
        assert iou > 0.7
        s, t = _np(box_s[b, a]), _np(box_t[b, a])
        reg = sum(sl1(s[k] - t[k]) for k in range(6)) + sl1(math.sin(s[6] - t[6]))
        cl = sum(sl1(sigmoid(float(cls_s[b, a, k])) - sigmoid(float(cls_t[b, a, k]))) for k in range(3))
        terms.append((reg, cl))
    assert tb["pairs"] == 3
    expected = np.mean([r for r, _ in terms]) + np.mean([c for _, c in terms])
    assert float(loss) == pytest.approx(m.weight * expected, rel=1e-4)


def test_pvd_difficulty_weights_and_output_terms(tmp_path):
    n_minor = torch.tensor([0, 1, 3, 0])
    dist = torch.tensor([10.0, 20.0, 40.0, 30.0])
    nonempty = torch.tensor([True, True, True, False])
    got = difficulty_weights(n_minor, dist, nonempty)
    for i in range(4):
        f = 4 * math.exp(-2 * int(n_minor[i])) + 1
        want = (1 / f) * (float(dist[i]) / 40.0) * (1 / 4) * bool(nonempty[i])
        assert float(got[i]) == pytest.approx(want, rel=1e-9)
    m, batch, _ = run(tmp_path, "pvd_det")
    zs, zt = _np(batch["cls_preds"]), _np(batch["cls_preds_tea"])
    b, h, w, _ = zs.shape
    ps, pt = sigmoid(zs), sigmoid(zt)
    kl = (pt * np.log(pt / ps) + (1 - pt) * np.log((1 - pt) / (1 - ps)))  # (B, H, W, A*C)
    l_vox = kl.mean()
    coords, npts = _np(batch["voxel_coords"]).astype(int), _np(batch["voxel_num_points"])
    sy = int(m.grid_yx[0]) // h
    num = den = 0.0
    for (bb, _, y, x), n in zip(coords, npts):
        num += n * kl[bb, y // sy, x // sy].mean()
        den += n
    zs_t, zt_t = torch.as_tensor(zs).float().view(b, h, w, -1, 3), torch.as_tensor(zt).float().view(b, h, w, -1, 3)
    l_pt, l_v = m.output_losses(zs_t, zt_t, batch["voxel_coords"], batch["voxel_num_points"])
    assert float(l_v) == pytest.approx(l_vox, rel=1e-4)
    assert float(l_pt) == pytest.approx(num / den, rel=1e-4)


def test_pvd_affinity_term_transcribed_with_one_supervoxel(tmp_path):
    # one supervoxel = the whole map, K = 1: the drawn block is deterministic
    m, batch, _ = run(tmp_path, "pvd_det", SUPERVOXELS=[1, 1], K=1, N_P=400, N_V=2000)
    fs, ft = _np(batch["spatial_features_2d"]), _np(batch["spatial_features_2d_tea"])
    ps, pt = _np(batch["pillar_features"]), _np(batch["pillar_features_tea"])
    coords = _np(batch["voxel_coords"]).astype(int)
    h = fs.shape[2]
    s = int(m.grid_yx[0]) // h

    def aff(f, n):
        f = np.concatenate([f, np.zeros((n - len(f), f.shape[1]))]) if len(f) < n else f
        norm = np.linalg.norm(f, axis=1, keepdims=True)
        g = f / np.where(norm > 0, norm, 1)
        return g @ g.T

    lp = lv = 0.0
    for b in range(2):
        rows = coords[:, 0] == b
        cells = sorted({(y // s, x // s) for _, _, y, x in coords[rows]})
        vs = np.array([fs[b, :, y, x] for y, x in cells])
        vt = np.array([ft[b, :, y, x] for y, x in cells])
        lv += ((aff(vs, 2000) - aff(vt, 2000)) ** 2).sum() / 2000**2
        lp += ((aff(ps[rows], 400) - aff(pt[rows], 400)) ** 2).sum() / 400**2
    l_p, l_v, drawn = m.affinity_losses(batch, fs.shape[2], fs.shape[3])
    assert drawn == 2
    assert float(l_v) == pytest.approx(lv / 2, rel=1e-4)
    assert float(l_p) == pytest.approx(lp / 2, rel=1e-4)
