"""Training-time data augmentation: config-named steps (:mod:`.data_augmentor`) and their helpers."""
