"""Datasets: the dataset-directory format, builders, the experience stream and augmentations."""
