"""Data: dataset builders, the toy-world renderer, the experience stream, rooms, splits, image codecs and batched augmentations."""
