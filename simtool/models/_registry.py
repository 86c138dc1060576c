"""The model registry: ``@register_model("name")`` on an ``nn.Module`` class or factory (timm style).

Members import :func:`register_model` from here (never from the package face); the package is
scanned for them, so a new model is one registration in its own file.
"""

from __future__ import annotations

from simtool.registry import Registry

MODELS = Registry("model", "simtool.models", unknown="Unknown model {name!r}; registered models: {choices}.")


def register_model(name: str, build_only: tuple[str, ...] = ("pretrained",)):
    """Decorator registering a model class or factory under ``name``.

    ``build_only`` names constructor arguments that are used when the model is first created but
    not when it is rebuilt from its card (the weights come from the file then).
    """
    return MODELS.register(name, build_only=tuple(build_only))
