"""Evaluators: embeddings → long-format result records, registered by ``evaluate --type``.

An evaluator knows no training: it reads an :class:`~simtool.formats.embeddings.Embeddings`
(from a file, an array with labels, or a run embedded in memory) and returns records built with
:func:`simtool.formats.results.make_record`. Adding one = a new file here with an options spec
(``type: Literal["<name>"]``) and a class registered with :func:`register_evaluator`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from simtool.errors import UserError


class Evaluator(ABC):
    """Base class. ``options`` is the evaluator's pydantic options spec; ``device`` is the
    ``--device`` an evaluator that computes on a device (classes) uses."""

    name: str
    options: type

    def __init__(self, device: str = "auto"):
        self.device = device

    @abstractmethod
    def evaluate(self, emb, options, layers: list[str] | None = None) -> list[dict]:
        """Records for every model and layer of ``emb`` (``layers`` filters them)."""

    def tag(self, options, emb) -> str:
        """Short name of this evaluation's condition, used in default result file names."""
        return "default"

    def tables(self, records: list[dict]) -> list[tuple[str, list[str], list[list[str]]]]:
        """(title, header, rows) tables for the terminal."""
        return []


@dataclass
class EvaluatorEntry:
    name: str
    options: type
    cls: type


EVALUATORS: dict[str, EvaluatorEntry] = {}


def register_evaluator(name: str, options: type):
    def deco(cls):
        EVALUATORS[name] = EvaluatorEntry(name, options, cls)
        cls.name, cls.options = name, options
        return cls

    return deco


def load_builtin() -> None:
    from simtool.evaluators import classes, odd_one_out  # noqa: F401
    from simtool.evaluators import triplets  # noqa: F401 - labelled triplets (teachers, students)


def get_evaluator(name: str, device: str = "auto") -> Evaluator:
    load_builtin()
    try:
        return EVALUATORS[name].cls(device)
    except KeyError:
        raise UserError(f"Unknown evaluation --type {name!r}; choose one of: {', '.join(sorted(EVALUATORS))}.") from None


def select_layers(model: dict, layers: list[str] | None) -> list[str]:
    """The model's layers, filtered by ``layers``; an unknown layer is one clear error."""
    available = list(model.get("layers", []))
    if not layers:
        return available
    unknown = [x for x in layers if x not in available]
    if unknown:
        raise UserError(f"Layer {unknown[0]!r} is not in {model['name']}; its layers are: {', '.join(available)}.")
    return [x for x in available if x in layers]
