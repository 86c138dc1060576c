"""Evaluators: embeddings → long-format result records, registered by ``evaluate --type``.

An evaluator knows no training: it reads an :class:`~simtool.formats.embeddings.Embeddings`
(from a file, an array with labels, or a run embedded in memory) and returns records built with
:meth:`Evaluator.record`. Adding one = a new file here with an options spec
(``type: Literal["<name>"]``) and a class registered with :func:`register_evaluator` (see
``_registry.py``); the package is scanned for its members.
"""

from simtool.evaluators._registry import EVALUATORS, Evaluator, get_evaluator, options_type, register_evaluator, role_of, select_layers, validate_evaluate_spec


def load_builtin() -> None:
    EVALUATORS.load_builtin()


__all__ = ["EVALUATORS", "Evaluator", "get_evaluator", "options_type", "register_evaluator", "role_of", "select_layers", "validate_evaluate_spec"]
