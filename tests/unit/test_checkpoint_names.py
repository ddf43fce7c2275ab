"""Training checkpoint names (``pcdet.train_utils.train_utils``): where epoch N's checkpoint lives, which
epoch a file holds, and the newest one by epoch number (not by name: epoch 10 after epoch 9)."""
from pcdet.train_utils.train_utils import checkpoint_epoch, checkpoint_path, epoch_checkpoints, latest_checkpoint


def test_checkpoints_are_ordered_by_their_epoch_number(tmp_path):
    assert epoch_checkpoints(tmp_path) == [] and latest_checkpoint(tmp_path) is None
    for epoch in (2, 10, 9):
        checkpoint_path(tmp_path, epoch).write_bytes(b"")
    (tmp_path / "student_epoch_11.pth").write_bytes(b"")  # an exported student is not a training checkpoint
    assert checkpoint_path(tmp_path, 9).name == "checkpoint_epoch_9.pth"
    assert [checkpoint_epoch(p) for p in epoch_checkpoints(tmp_path)] == [2, 9, 10]
    assert latest_checkpoint(tmp_path) == str(tmp_path / "checkpoint_epoch_10.pth")
