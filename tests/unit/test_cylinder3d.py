"""Cylinder3D: parameter counts at paper scale, the sparse network against a dense-convolution
reference (with two torch threads: the spconv CPU guard), the cylindrical partition, the point
encoder's max pooling, voxel majority labels, Lovasz-softmax and the losses' ignore rule, all
against values derived by hand or by an independent dense transcription."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from easydict import EasyDict

from pcdet.datasets.processor.cylindrical import cylindrical_partition
from pcdet.models.backbones_3d.cylinder_unet import Asymm3DUNet
from pcdet.models.backbones_3d.vfe.cylinder_vfe import CylinderPointVFE
from pcdet.models.model_template import FeatureSpec
from pcdet.models.seg_heads.cylinder_seg_head import CylinderSegHead, voxel_majority_labels
from pcdet.utils.loss_utils import lovasz_softmax
from pcdet.utils.paths import REPO_ROOT
from tests.helpers import (conv3d_weight, dense_bn, dense_sparse_conv, dense_subm, gather_dense, randomise_bn1d,
                           scatter_dense)


# ----------------------------------------------------------------------------- parameter counts
@pytest.mark.parametrize("name,expected_m", [("cylinder3d", 55.85), ("cylinder3d_0.5x", 14.07)])
def test_paper_scale_parameter_counts(name, expected_m):
    """The design notes' counts from the original code: 55.85 M (init 32) and 14.07 M (init 16), point
    MLP kept; the point refinement adds Linear(4s, 256) + BN + Linear(256, 20) on top."""
    from pcdet.train_utils.experiment import load_experiment_cfg
    from pcdet.models import build_network

    cfg = load_experiment_cfg(REPO_ROOT / "tools" / "cfgs" / "semantickitti_models" / f"{name}.yaml")

    class _Geometry:  # what the model reads of a dataset, without scanning data/semantickitti
        IGNORE_LABEL = 0
        class_names = cfg.CLASS_NAMES

        class point_feature_encoder:
            num_point_features = 4

        class data_processor:
            grid_size = np.array(cfg.DATA_CONFIG.DATA_PROCESSOR[0].GRID_SIZE)
            point_cloud_range = np.array(cfg.DATA_CONFIG.POINT_CLOUD_RANGE, dtype=np.float32)
            voxel_size = None

    model = build_network(cfg.MODEL, len(cfg.CLASS_NAMES), _Geometry())
    total = sum(p.numel() for p in model.parameters())
    refine = sum(p.numel() for n, p in model.seg_head.named_parameters() if n.startswith("refine"))
    s = cfg.MODEL.BACKBONE_3D.INIT_SIZE
    assert refine == (4 * s * 256 + 256) + 2 * 256 + (256 * 20 + 20)
    assert abs((total - refine) / 1e6 - expected_m) < 0.005 * expected_m
    assert model.seg_head.num_class == 20  # 19 classes + the ignored unlabeled


# ----------------------------------------------------------------------------- dense reference
GRID = (24, 20, 8)  # rho, phi, z: four pools (2,2,2), (2,2,2), (2,2,1), (2,2,1) -> 2 x 2 x 2
BATCH = 2


def _dense(coords, feats):
    return scatter_dense(coords, feats, BATCH, GRID)


_gather, _w, d_subm, d_bn = gather_dense, conv3d_weight, dense_subm, dense_bn


def d_cab(m, x, mask):  # conv -> LeakyReLU -> BN
    return d_bn(m.bn, F.leaky_relu(d_subm(m.conv, x, mask)), mask)


d_pool = dense_sparse_conv  # the pools are SparseConv3d 3^3, padding 1


def d_inverse(conv, x, fine_mask, stride):
    weight = conv.weight.permute(4, 0, 1, 2, 3)  # conv_transpose3d: (in, out, k0, k1, k2)
    # output_padding extends the transposed conv to the fine grid (the last fine row can be reached
    # from the last coarse row): size (n - 1) * s - 2 + 3 + output_padding
    extra = tuple(fine_mask.shape[2 + d] - ((x.shape[2 + d] - 1) * stride[d] + 1) for d in range(3))
    y = F.conv_transpose3d(x, weight, stride=stride, padding=1, output_padding=extra)
    return y * fine_mask


def dense_unet(net, x, mask):
    """An independent dense transcription of Asymm_3d_spconv.forward (see the module docstring)."""
    def res_context(b, x):
        return d_cab(b.a2, d_cab(b.a1, x, mask), mask) + d_cab(b.b2, d_cab(b.b1, x, mask), mask)

    def res_block(b, x, m):
        r = d_cab(b.a2, d_cab(b.a1, x, m), m) + d_cab(b.b2, d_cab(b.b1, x, m), m)
        pooled, pm = d_pool(b.pool, r, m)
        return pooled, pm, r

    def up_block(b, x, coarse_mask, skip, fine_mask, stride):
        up = d_inverse(b.up, d_cab(b.trans, x, coarse_mask), fine_mask, stride) + skip
        return d_cab(b.c3, d_cab(b.c2, d_cab(b.c1, up, fine_mask), fine_mask), fine_mask)

    x0 = res_context(net.down_cntx, x)
    d1c, m1, d1b = res_block(net.res2, x0, mask)
    d2c, m2, d2b = res_block(net.res3, d1c, m1)
    d3c, m3, d3b = res_block(net.res4, d2c, m2)
    d4c, m4, d4b = res_block(net.res5, d3c, m3)
    u4 = up_block(net.up0, d4c, m4, d4b, m3, (2, 2, 1))
    u3 = up_block(net.up1, u4, m3, d3b, m2, (2, 2, 1))
    u2 = up_block(net.up2, u3, m2, d2b, m1, (2, 2, 2))
    u1 = up_block(net.up3, u2, m1, d1b, mask, (2, 2, 2))
    total = 0
    for br in net.recon.branches:
        total = total + torch.sigmoid(d_bn(br["bn"], d_subm(br["conv"], u1, mask), mask))
    u0 = total * u1 * mask
    return torch.cat([u0, u1], dim=1)


@pytest.mark.parametrize("seed", [0, 1])
def test_sparse_unet_and_logits_equal_a_dense_convolution_reference(seed, two_threads):
    """In float64, with every weight drawn from the seeded generator: in float32 a pre-activation
    within rounding distance of LeakyReLU's kink can fall on different sides in the two paths (slope
    1 against 0.01), which moves one gradient entry by far more than rounding does, on some weight
    draws and CPUs. A race in the sparse scatter-add changes whole rows and still shows."""
    gen = torch.Generator().manual_seed(seed)
    c_in, init = 6, 4
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = Asymm3DUNet(EasyDict(NAME="Asymm3DUNet", INIT_SIZE=init), input_channels=c_in, grid_size=GRID)
        head = CylinderSegHead(EasyDict(NAME="CylinderSegHead", POINT_REFINEMENT=False), input_channels=4 * init,
                               num_class=5, ignore_index=0)
    randomise_bn1d(net, gen)
    net.double().eval(), head.double().eval()
    flat = torch.randperm(BATCH * math.prod(GRID), generator=gen)[:700]
    b, rest = flat // math.prod(GRID), flat % math.prod(GRID)
    coords = torch.stack([b, rest // (GRID[1] * GRID[2]), (rest // GRID[2]) % GRID[1], rest % GRID[2]], 1).int()
    feats = torch.randn(len(coords), c_in, generator=gen, dtype=torch.float64).requires_grad_(True)
    batch = {"voxel_features": feats, "voxel_coords": coords, "batch_size": BATCH,
             "point_to_voxel": torch.arange(len(coords))}
    out = head(net(batch))
    assert torch.get_num_threads() == 2

    feats_d = feats.detach().clone().requires_grad_(True)
    mask = _dense(coords, torch.ones(len(coords), 1, dtype=torch.float64))
    unet = dense_unet(net, _dense(coords, feats_d), mask)
    logits = F.conv3d(unet, _w(head.logits), padding=1) * mask
    ref_unet, ref_logits = _gather(unet, coords), _gather(logits, coords) + head.logits_bias

    scale = ref_logits.abs().max().item()
    assert (out["unet_features"] - ref_unet).abs().max().item() < 1e-9 * ref_unet.abs().max().item()
    assert (out["voxel_logits"] - ref_logits).abs().max().item() < 1e-9 * scale
    probe = torch.randn(ref_logits.shape, generator=gen, dtype=torch.float64)
    (out["voxel_logits"] * probe).sum().backward()
    (ref_logits * probe).sum().backward()
    assert (feats.grad - feats_d.grad).abs().max().item() < 1e-9 * feats_d.grad.abs().max().item()


# ----------------------------------------------------------------------------- partition and encoder
def test_cylindrical_partition_clips_into_border_cells_and_builds_9d_features():
    grid, lo, hi = (11, 8, 4), (0.0, -math.pi, -4.0), (50.0, math.pi, 2.0)  # intervals 5 m, pi/3.5, 2 m
    pts = np.array([[3.0, 4.0, -1.0, 0.5],     # rho 5, phi atan2(4, 3), z -1
                    [80.0, 0.0, 9.0, 0.1],      # beyond rho and z: the last cells
                    [0.0, 0.0, -7.0, 0.2]], dtype=np.float32)  # below z: z cell 0
    ind, feat = cylindrical_partition(pts, grid, lo, hi)
    phi = math.atan2(4.0, 3.0)
    dphi = 2 * math.pi / 7
    assert ind[0].tolist() == [1, math.floor((phi + math.pi) / dphi), 1]
    assert ind[1].tolist() == [10, 3, 3] and ind[2].tolist() == [0, 3, 0]
    centre = [(1 + 0.5) * 5.0, (ind[0, 1] + 0.5) * dphi - math.pi, (1 + 0.5) * 2.0 - 4.0]
    np.testing.assert_allclose(feat[0], [5.0 - centre[0], phi - centre[1], -1.0 - centre[2], 5.0, phi, -1.0, 3.0, 4.0,
                                         0.5], rtol=1e-5, atol=1e-5)
    assert feat[1, 3] == pytest.approx(80.0)  # features keep the unclipped coordinates
    assert feat.shape == (3, 9) and feat.dtype == np.float32


def test_point_encoder_max_pools_per_cell_of_each_sample():
    torch.manual_seed(0)
    vfe = CylinderPointVFE(EasyDict(NAME="CylinderPointVFE", POINT_MLP=[8, 6], COMPRESSED_CHANNELS=3)).eval()
    grid_ind = torch.tensor([[1, 2, 3], [1, 2, 3], [0, 0, 0], [1, 2, 3], [1, 2, 3]])
    batch_idx = torch.tensor([0, 0, 0, 1, 1]).float()
    batch = {"point_cyl_features": torch.randn(5, 9), "point_grid_ind": grid_ind,
             "points": torch.cat([batch_idx[:, None], torch.randn(5, 4)], 1)}
    out = vfe(batch)
    assert out["voxel_coords"].tolist() == [[0, 0, 0, 0], [0, 1, 2, 3], [1, 1, 2, 3]]
    assert out["point_to_voxel"].tolist() == [1, 1, 0, 2, 2]
    pf = out["point_features"]
    pooled = torch.stack([pf[2], torch.maximum(pf[0], pf[1]), torch.maximum(pf[3], pf[4])])
    torch.testing.assert_close(out["voxel_features"], vfe.compression(pooled))


def test_unique_cells_equals_unique_over_rows():
    from pcdet.models.backbones_3d.vfe.cylinder_vfe import unique_cells

    g = torch.Generator().manual_seed(0)
    grid = torch.stack([torch.randint(0, n, (5000,), generator=g) for n in (40, 30, 8)], 1)
    batch = torch.randint(0, 3, (5000,), generator=g)
    coords, inverse = unique_cells(batch, grid)
    ref, ref_inv = torch.unique(torch.cat([batch[:, None], grid], 1), return_inverse=True, dim=0)
    assert torch.equal(coords, ref) and torch.equal(inverse, ref_inv)


def test_voxel_label_is_the_majority_including_unlabeled_and_ties_go_low():
    p2v = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2])
    labels = torch.tensor([0, 0, 3, 4, 2, 5, 0, 5, 0])
    assert voxel_majority_labels(p2v, labels, 3, 6).tolist() == [0, 2, 0]


# ----------------------------------------------------------------------------- losses
def test_lovasz_softmax_on_one_hot_predictions_is_one_minus_iou():
    # labels: 1 1 2 2 2 0(ignored); predictions: 1 2 2 2 1 2
    labels = torch.tensor([1, 1, 2, 2, 2, 0])
    pred = torch.tensor([1, 2, 2, 2, 1, 2])
    probas = F.one_hot(pred, 3).float()
    # without the ignored point: class 1 tp 1, fp 1, fn 1 -> IoU 1/3; class 2 tp 2, fp 1, fn 1 -> IoU 2/4
    expected = ((1 - 1 / 3) + (1 - 2 / 4)) / 2
    assert lovasz_softmax(probas, labels, ignore=0).item() == pytest.approx(expected)
    assert lovasz_softmax(F.one_hot(labels, 3).float(), labels, ignore=0).item() == pytest.approx(0.0)


def test_lovasz_softmax_binary_soft_case_by_hand():
    # one class present (c = 1), two points both foreground, p_1 = 0.9 and 0.6: errors 0.1, 0.4
    # sorted 0.4, 0.1; gt sorted 1, 1: J = 1 - (2 - [1, 2]) / (2 + [0, 0]) = [0.5, 1.0] -> grad [0.5, 0.5]
    probas = torch.tensor([[0.1, 0.9], [0.4, 0.6]])
    labels = torch.tensor([1, 1])
    assert lovasz_softmax(probas, labels).item() == pytest.approx(0.4 * 0.5 + 0.1 * 0.5)


def test_head_losses_ignore_unlabeled_and_predictions_never_take_it():
    torch.manual_seed(0)
    head = CylinderSegHead(EasyDict(NAME="CylinderSegHead", POINT_REFINEMENT=True), input_channels=4, num_class=4,
                           ignore_index=0, feature_specs={"point_features": FeatureSpec(5, "points")})
    coords = torch.tensor([[0, 1, 1, 1], [0, 1, 2, 1], [0, 3, 3, 1]]).int()
    from pcdet.utils.spconv_utils import spconv

    x = spconv.SparseConvTensor(torch.randn(3, 4), coords, [5, 5, 3], 1)
    p2v = torch.tensor([0, 0, 1, 2, 2])
    labels = torch.tensor([2, 2, 0, 0, 0])  # voxels 1 and 2 are unlabeled: only voxel 0 counts
    batch = {"unet_sparse_tensor": x, "point_to_voxel": p2v, "point_features": torch.randn(5, 5),
             "point_labels": labels, "voxel_coords": coords}
    out = head(batch)
    loss, tb = head.get_loss()
    vl = out["voxel_logits"]
    assert tb["loss_ce"] == pytest.approx(F.cross_entropy(vl[:1], torch.tensor([2])).item(), rel=1e-6)
    assert tb["loss_point_ce"] == pytest.approx(F.cross_entropy(out["point_refine_logits"][:2], labels[:2]).item(),
                                                rel=1e-6)
    assert loss.item() == pytest.approx(tb["loss_ce"] + tb["loss_lovasz"] + tb["loss_point_ce"], rel=1e-6)
    torch.testing.assert_close(out["point_logits"], vl[p2v])  # predictions from the voxel logits
