"""The dataset kinds: ``kind`` of a card → the class that reads it (one module per kind)."""

from __future__ import annotations

from simtool.registry import Registry

DATASET_KINDS = Registry("dataset kind", "simtool.formats.dataset_dir", unknown="this simtool reads the dataset kinds: {choices}")


def register_kind(name: str):
    """Class decorator: the dataset class of cards with ``kind: name``."""

    def deco(cls):
        cls.kind = name
        return DATASET_KINDS.register(name, cls)

    return deco
