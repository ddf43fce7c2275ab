"""The one teacher-key convention of distillation: ``<key>_tea``.

Owns :data:`TEA` and :func:`tea`. Everything of the teacher's in a ``batch_dict`` carries the
suffix ``_tea``: its own inputs when it voxelises differently from the student (written by the data
pipeline's teacher voxeliser, ``KEY_SUFFIX: _tea``: ``voxels_tea``, ``voxel_coords_tea``,
``voxel_num_points_tea``) and every output of its forward that the wrapper records
(``pillar_features_tea``, ``spatial_features_2d_tea``, ``cls_preds_tea``, ...). A teacher that shares
the student's voxels gets its coordinates and point counts recorded under the same names.
"""
TEA = "_tea"


def tea(key):
    """``key`` of the teacher: ``key + '_tea'``."""
    return key + TEA
