"""Training methods (research lines), registered by name (see ``_registry.py``).

Adding a method takes one registration in its own file and no change to the engine or the CLI::

    class MySpec(CommonSpec):                 # the method's part of the train spec
        method: Literal["mine"] = "mine"
        ...

    @register_method("mine", MySpec, presets={"mine_default": {"description": "...", "loop": {...}}})
    class Mine(Method):                       # simtool.engine.method.Method
        ...

The spec joins the discriminated union of train specs (on ``method``), the presets join
``simtool train --list-presets`` (YAML presets shipped in ``simtool/specs/presets`` name their
method the same way) and ``simtool train --preset mine_default`` trains it. The package is scanned
for its members.
"""

from simtool.methods._registry import METHODS, build_method, get_method, register_method, train_spec_type, unregister_method, validate_train_spec
from simtool.methods._resolve import list_presets, load_preset, resolve_train_spec


def load_builtin() -> None:
    METHODS.load_builtin()


__all__ = [
    "METHODS", "build_method", "get_method", "register_method", "train_spec_type",
    "unregister_method", "validate_train_spec", "list_presets", "load_preset", "resolve_train_spec",
]
