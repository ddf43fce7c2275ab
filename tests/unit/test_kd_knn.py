"""Chunked KNN of the distillation graphs against brute force; per-sample graphs never cross samples."""
import pytest
import torch

from pcdet.kd.knn import knn, knn_per_sample, knn_self


def _brute(query, ref, k):
    d = torch.cdist(query.double(), ref.double()) ** 2
    return d.sort(dim=1).values[:, :k]


def _dist_of(query, ref, idx):
    return ((query.double().unsqueeze(1) - ref.double()[idx]) ** 2).sum(-1)


@pytest.mark.parametrize("selector", ["numba", "torch"])
@pytest.mark.parametrize("chunk", [2000, 1 << 22])  # 8 rows per chunk, or one chunk
def test_knn_matches_brute_force_distances(selector, chunk):
    g = torch.Generator().manual_seed(0)
    query, ref = torch.randn(300, 9, generator=g), torch.randn(250, 9, generator=g)
    idx, dist = knn(query, ref, 17, max_chunk_elems=chunk, selector=selector)
    assert idx.shape == (300, 17) and dist.shape == (300, 17)
    assert (idx >= 0).all() and (idx < 250).all()
    # every row's indices are distinct and their true distances are the k smallest (ties: compare distances)
    assert all(len(set(r.tolist())) == 17 for r in idx)
    got = _dist_of(query, ref, idx).sort(dim=1).values
    torch.testing.assert_close(got, _brute(query, ref, 17), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dist.double().sort(dim=1).values, got, rtol=1e-4, atol=1e-4)


def test_knn_with_ties_compares_distances():
    # integer grid coordinates: many equal distances
    ys, xs = torch.meshgrid(torch.arange(12), torch.arange(12), indexing="ij")
    pts = torch.stack([ys.flatten(), xs.flatten()], 1).float()
    idx, _ = knn_self(pts, 9, max_chunk_elems=100)
    got = _dist_of(pts, pts, idx).sort(dim=1).values
    torch.testing.assert_close(got, _brute(pts, pts, 9))


def test_self_is_always_a_neighbour_even_with_duplicates():
    x = torch.randn(40, 5).repeat(3, 1)  # every row appears three times
    idx, dist = knn_self(x, 2)
    assert (idx == torch.arange(120).unsqueeze(1)).any(dim=1).all()
    assert torch.all(dist.min(dim=1).values == 0)


def test_per_sample_graph_stays_in_its_sample():
    g = torch.Generator().manual_seed(1)
    # two samples whose features are interleaved clusters: the nearest rows of a sample-0 row
    # in the whole batch would include sample-1 rows
    a = torch.randn(70, 4, generator=g)
    b = a + 0.01 * torch.randn(70, 4, generator=g)
    x = torch.cat([a, b[:30]])
    ptr = [0, 70, 100]
    nbr, kcnt = knn_per_sample(x, ptr, 40)
    assert nbr.shape == (100, 40)
    assert (kcnt[:70] == 40).all() and (kcnt[70:] == 30).all()
    for lo, hi in zip(ptr[:-1], ptr[1:]):
        rows = nbr[lo:hi]
        valid = rows[rows >= 0]
        assert ((valid >= lo) & (valid < hi)).all()
    assert (nbr[70:, 30:] == -1).all()  # sample 1 has only 30 nodes: padding
    # exact within the sample
    idx1 = nbr[70:, :30] - 70
    torch.testing.assert_close(_dist_of(x[70:], x[70:], idx1).sort(1).values, _brute(x[70:], x[70:], 30))


@pytest.mark.parametrize("values", ["continuous", "ties"])
def test_selection_kernel_returns_the_k_smallest_with_lower_index_on_ties(values):
    from pcdet.kd.knn import _select

    g = torch.Generator().manual_seed(2)
    d = torch.rand(60, 3000, generator=g) if values == "continuous" else torch.randint(0, 40, (60, 3000), generator=g).float()
    d[5, :] = 7.0  # a row of equal values
    idx, val = _select(d, 40, selector="numba")
    order = torch.from_numpy(__import__("numpy").argsort(d.numpy(), axis=1, kind="stable"))[:, :40]
    assert torch.equal(idx.sort(dim=1).values, order.sort(dim=1).values)
    assert torch.equal(val.sort(dim=1).values, d.gather(1, order).sort(dim=1).values)
