"""The evaluator registry, the :class:`Evaluator` base class and the options union of ``evaluate``.

An evaluator registers itself in its own file with everything the house needs to know::

    @register_evaluator("mine", MineOptions, roles={"dim": "count"}, array_reader=read_mine_array)
    class Mine(Evaluator): ...

``options``: its pydantic options spec (``type: Literal["mine"]``), joining the discriminated
union of :func:`options_type`. ``roles``: metric → role for the metrics that are not scores
(``statistic``: describes a representation, e.g. sparsity; ``count``: an integer statistic, e.g.
a dimension); every other metric is a ``score`` (compare takes differences of scores and draws
them). Records made with :meth:`Evaluator.record` carry their role. ``array_reader``: how a plain
``.npy``/``.npz`` target is read for this evaluator (``fn(path, labels, options) -> Embeddings``;
default :func:`simtool.formats.embeddings.read_array`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Annotated, Callable, Union

from pydantic import Field, TypeAdapter, ValidationError

from simtool.errors import UserError
from simtool.formats.results import ROLES, make_record
from simtool.registry import Registry

SCORE = "score"


def _check(name: str, cls, meta: dict) -> None:
    options = meta.get("options")
    field = getattr(options, "model_fields", {}).get("type")
    if field is None or field.default != name:
        raise ValueError(f"the options of evaluator {name!r} need type: Literal[{name!r}] = {name!r}")
    bad = sorted(set((meta.get("roles") or {}).values()) - set(ROLES))
    if bad:
        raise ValueError(f"evaluator {name!r}: unknown role {bad[0]!r} (roles are {', '.join(ROLES)})")
    cls.name, cls.options = name, options


EVALUATORS = Registry("evaluator", "simtool.evaluators", unknown="Unknown evaluation --type {name!r}; choose one of: {choices}.", check=_check,
                      defaults={"roles": {}, "array_reader": None})


def register_evaluator(name: str, options: type, roles: dict[str, str] | None = None, array_reader: Callable | None = None):
    """Class decorator registering an :class:`Evaluator` (see the module docstring)."""
    return EVALUATORS.register(name, options=options, roles=dict(roles or {}), array_reader=array_reader)


def role_of(type_: str, metric: str) -> str:
    """The role the evaluator registered as ``type_`` declares for ``metric`` (``score`` by default)."""
    if type_ not in EVALUATORS:
        return SCORE
    return EVALUATORS.get(type_).roles.get(metric, SCORE)


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

    def record(self, **fields) -> dict:
        """A result record (:func:`~simtool.formats.results.make_record`) of this evaluator, with
        ``type`` and the metric's declared role filled in."""
        fields.setdefault("type", self.name)
        fields.setdefault("role", role_of(self.name, fields.get("metric")))
        return make_record(**fields)

    def tag(self, options, emb) -> str:
        """Short name of this evaluation's condition, used in default result file names."""
        return "default"

    def tables(self, records: list[dict]) -> list[tuple[str, list[str], list[list[str]]]]:
        """(title, header, rows) tables for the terminal."""
        return []


def get_evaluator(name: str, device: str = "auto") -> Evaluator:
    return EVALUATORS.get(name).obj(device)


def select_layers(model: dict, layers: list[str] | None, models: list[dict] | None = None) -> list[str]:
    """The model's layers, filtered by ``layers``; an unknown layer is one clear error.

    ``models``: every model of the file. A layer that another of them has is then not an error
    for this one (``--layers backbone,time.out,label.out`` over runs of different methods); a layer
    that none has still is."""
    available = list(model.get("layers", []))
    if not layers:
        return available
    known = set(available).union(*(m.get("layers", []) for m in models or []))
    unknown = [x for x in layers if x not in known]
    if unknown:
        where = model["name"] if not models or len(models) == 1 else "any model of the file"
        raise UserError(f"Layer {unknown[0]!r} is not in {where}; {model['name']}'s layers are: {', '.join(available)}.")
    return [x for x in available if x in layers]


# -- the options union (``evaluate --type``), next to the registry it is made of ------------------


def options_type():
    """The union of every registered evaluator's options spec, discriminated by ``type``."""
    classes = tuple(e.options for e in EVALUATORS.entries())
    return classes[0] if len(classes) == 1 else Annotated[Union[classes], Field(discriminator="type")]


def validate_evaluate_spec(data: dict, source: str = "evaluate options"):
    """Validate the common part (:class:`~simtool.specs.evaluate.EvaluateSpec`), then ``options``
    against the evaluator named by ``options.type``."""
    from simtool.specs.base import format_validation_error
    from simtool.specs.evaluate import EvaluateSpec

    options = dict(data.get("options") or {})
    kind = options.get("type")
    cls = EVALUATORS.get(kind).options
    unknown = sorted(k for k, v in options.items() if k not in cls.model_fields and v is not None)
    if unknown:
        raise UserError(f"Option {unknown[0]!r} does not apply to --type {kind}; its options are: {', '.join(k for k in cls.model_fields if k != 'type')}.")
    options = {k: v for k, v in options.items() if k in cls.model_fields and v is not None}
    try:
        parsed = TypeAdapter(options_type()).validate_python(options)
    except ValidationError as exc:
        raise UserError(format_validation_error(exc, cls, source, strip_tags=set(EVALUATORS.names()))) from None
    common = {k: v for k, v in data.items() if k != "options"}
    try:
        spec = EvaluateSpec.model_validate({**common, "options": None})
    except ValidationError as exc:
        raise UserError(format_validation_error(exc, EvaluateSpec, source)) from None
    spec.options = parsed
    return spec
