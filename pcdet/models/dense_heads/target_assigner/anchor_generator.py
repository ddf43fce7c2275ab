"""Per-class anchor grids over the BEV feature map."""
import torch


class AnchorGenerator:
    """Builds anchors for each class config (ANCHOR_SIZES, ANCHOR_ROTATIONS, ANCHOR_BOTTOM_HEIGHTS).

    ``generate_anchors(grid_sizes)`` returns, per class, a tensor (nz=1, ny, nx, num_sizes,
    num_rotations, 7) of LiDAR boxes, and the number of anchors per BEV location.
    """

    def __init__(self, anchor_range, anchor_generator_config):
        self.anchor_range = anchor_range
        self.cfgs = anchor_generator_config
        self.anchor_sizes = [c["anchor_sizes"] for c in self.cfgs]
        self.anchor_rotations = [c["anchor_rotations"] for c in self.cfgs]
        self.anchor_heights = [c["anchor_bottom_heights"] for c in self.cfgs]
        self.align_center = [c.get("align_center", False) for c in self.cfgs]

    def generate_anchors(self, grid_sizes):
        assert len(grid_sizes) == len(self.anchor_sizes)
        all_anchors, num_per_location = [], []
        r = self.anchor_range
        for grid, sizes, rots, heights, align in zip(
            grid_sizes, self.anchor_sizes, self.anchor_rotations, self.anchor_heights, self.align_center
        ):
            nx, ny = int(grid[0]), int(grid[1])
            num_per_location.append(len(rots) * len(sizes) * len(heights))
            if align:
                x_stride, y_stride = (r[3] - r[0]) / nx, (r[4] - r[1]) / ny
                x_off, y_off = x_stride / 2, y_stride / 2
            else:
                x_stride, y_stride = (r[3] - r[0]) / (nx - 1), (r[4] - r[1]) / (ny - 1)
                x_off, y_off = 0.0, 0.0
            xs = torch.arange(r[0] + x_off, r[3] + 1e-5, step=x_stride, dtype=torch.float32)[:nx]
            ys = torch.arange(r[1] + y_off, r[4] + 1e-5, step=y_stride, dtype=torch.float32)[:ny]
            zs = torch.tensor(heights, dtype=torch.float32)
            sizes_t = torch.tensor(sizes, dtype=torch.float32).view(-1, 3)
            rots_t = torch.tensor(rots, dtype=torch.float32)
            gx, gy, gz = torch.meshgrid(xs, ys, zs, indexing="ij")  # (nx, ny, nz)
            ctr = torch.stack([gx, gy, gz], dim=-1)  # (nx, ny, nz, 3)
            ns, nr = sizes_t.shape[0], rots_t.shape[0]
            ctr = ctr[:, :, :, None, None, :].expand(nx, ny, len(heights), ns, nr, 3)
            sz = sizes_t[None, None, None, :, None, :].expand(nx, ny, len(heights), ns, nr, 3)
            rt = rots_t[None, None, None, None, :, None].expand(nx, ny, len(heights), ns, nr, 1)
            anchors = torch.cat([ctr, sz, rt], dim=-1)  # (nx, ny, nz, ns, nr, 7)
            anchors = anchors.permute(2, 1, 0, 3, 4, 5).contiguous()  # (nz, ny, nx, ns, nr, 7)
            anchors[..., 2] += anchors[..., 5] / 2  # bottom height -> centre
            all_anchors.append(anchors)
        return all_anchors, num_per_location
