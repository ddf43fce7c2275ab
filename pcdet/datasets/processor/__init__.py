"""Point feature encoding and config-named point/voxel processing steps."""
