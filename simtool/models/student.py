"""The image student: a timm backbone, a head to E dimensions and L2 normalisation.

Reference: R. Dondera, "Towards Learning Image Similarity from General Triplet Labels", CVPR 2024
workshops (the ResNet-50 / BN-Inception / ViT-B students and the ViT-S class-dataset student).

``forward(x (B, 3, H, W)) -> (B, E)`` unit vectors. Heads:

* ``head: linear`` (default): ``Linear(F, E)``, then ``nonlinear_layers`` x ``[Linear(E, E), ReLU]``.
* ``head: vits`` (the paper's ViT-S head, after Hyp-ViT): ``LayerNorm(F)`` without affine
  parameters, then ``Linear(F, E)`` orthogonally initialised (gain 1) with zero bias (then the
  optional non-linear layers); the backbone's patch embedding is frozen. Needs a ViT backbone
  (one with ``patch_embed``).

Freezing (``frozen``): ``none`` trains everything; ``bn`` keeps every BatchNorm layer in eval mode
(running statistics fixed, even in train mode; its affine weights still train); ``all`` freezes the
whole backbone (eval mode, no gradient) and trains only the head (a linear probe).

``pretrained``: ``false``, ``true`` (timm's weights, a download: a clear error offline) or a local
``.safetensors``/``.pth`` file (see :func:`simtool.models.backbone.create_backbone`); a timm tag in
the name picks the weights (``resnet50.tv_in1k`` = the torchvision weights the paper used). It is a
build-only argument (not in the model card).

:attr:`input_config` holds the backbone's preprocessing constants from timm's pretrained config
(available without a download): ``image_size``, ``input_size``, ``mean``, ``std``,
``interpolation``, ``crop_pct``, ``crop_mode``; a method puts them in the model card's ``input``.

Layers for evaluation: ``backbone`` (the pooled backbone features, ``(B, F)``) and ``embedding``
(the normalised output, ``(B, E)``).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from simtool.errors import UserError
from simtool.models._registry import register_model
from simtool.models.backbone import create_backbone

__all__ = ["StudentModel", "FROZEN", "HEADS"]

FROZEN = ("none", "bn", "all")
HEADS = ("linear", "vits")


def _batchnorms(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@register_model("student")
class StudentModel(nn.Module):
    """timm backbone (``num_classes=0``) + head to ``dim`` + L2 normalisation.

    Args:
        backbone: any timm model name (e.g. ``resnet50.tv_in1k``, ``vit_base_patch16_224``,
            ``vit_small_patch16_224``; ``test_resnet`` / ``test_vit`` for tests).
        dim: embedding dimension E (128; 384 for the paper's ViT-S).
        frozen: ``none``, ``bn`` or ``all`` (see the module docstring).
        nonlinear_layers: number of extra ``Linear(E, E) + ReLU`` layers after the first linear (0).
        head: ``linear`` or ``vits``.
        pretrained: ``False``, ``True`` or a weights file (build-only).
    """

    layer_names = ["backbone", "embedding"]

    def __init__(self, backbone: str, dim: int = 128, frozen: str = "none", nonlinear_layers: int = 0, head: str = "linear", pretrained: bool | str = False):
        super().__init__()
        if frozen not in FROZEN:
            raise UserError(f"Unknown model.frozen {frozen!r}; choose one of: {', '.join(FROZEN)}.")
        if head not in HEADS:
            raise UserError(f"Unknown model.head {head!r}; choose one of: {', '.join(HEADS)}.")
        if int(dim) < 1 or int(nonlinear_layers) < 0:
            raise UserError(f"The student needs dim >= 1 and nonlinear_layers >= 0, got {dim} and {nonlinear_layers}.")
        self.frozen, self.head_type = frozen, head
        self.backbone = create_backbone(backbone, pretrained)
        features = int(self.backbone.num_features)
        self.input_config = self._input_config(self.backbone)
        layers: list[nn.Module] = []
        if head == "vits":
            if not hasattr(self.backbone, "patch_embed"):
                raise UserError(f"model.head 'vits' needs a ViT backbone with a patch embedding, and {backbone!r} has none; use head: linear.")
            layers.append(nn.LayerNorm(features, elementwise_affine=False))
            first = nn.Linear(features, int(dim))
            nn.init.orthogonal_(first.weight, gain=1.0)
            nn.init.zeros_(first.bias)
            layers.append(first)
        else:
            layers.append(nn.Linear(features, int(dim)))
        for _ in range(int(nonlinear_layers)):
            layers += [nn.Linear(int(dim), int(dim)), nn.ReLU()]
        self.head = nn.Sequential(*layers)
        if frozen == "all":
            for p in self.backbone.parameters():
                p.requires_grad_(False)
        if head == "vits":
            for p in self.backbone.patch_embed.parameters():
                p.requires_grad_(False)
        self.train()

    @staticmethod
    def _input_config(backbone: nn.Module) -> dict:
        cfg = dict(getattr(backbone, "pretrained_cfg", None) or {})
        size = tuple(cfg.get("input_size", (3, 224, 224)))
        return {
            "image_size": int(size[-1]),
            "input_size": [int(v) for v in size],
            "mean": [float(v) for v in cfg.get("mean", (0.485, 0.456, 0.406))],
            "std": [float(v) for v in cfg.get("std", (0.229, 0.224, 0.225))],
            "interpolation": str(cfg.get("interpolation", "bilinear")),
            "crop_pct": float(cfg.get("crop_pct", 0.875)),
            "crop_mode": str(cfg.get("crop_mode", "center")),
        }

    def train(self, mode: bool = True) -> StudentModel:
        """Train mode for the trainable parts only: a frozen backbone and (``frozen: bn``) every
        BatchNorm layer stay in eval mode, so their running statistics never change."""
        super().train(mode)
        if self.frozen == "all":
            self.backbone.eval()
        elif self.frozen == "bn":
            for m in _batchnorms(self.backbone):
                m.eval()
        return self

    def features(self, x: Tensor) -> Tensor:
        """Pooled backbone features ``(B, F)``."""
        return self.backbone(x)

    def forward(self, x: Tensor) -> Tensor:
        """``x (B, 3, H, W)`` normalised images -> ``(B, E)`` L2-normalised embeddings."""
        return F.normalize(self.head(self.features(x)), p=2, dim=1)

    def embed(self, x: Tensor, layers: tuple[str, ...] = ("embedding",)) -> dict[str, Tensor]:
        """``{layer: (B, D)}`` for ``layers`` among ``backbone`` and ``embedding``."""
        unknown = [x for x in layers if x not in self.layer_names]
        if unknown:
            raise UserError(f"Layer {unknown[0]!r} is not in the student model; its layers are: {', '.join(self.layer_names)}.")
        feats = self.features(x)
        out = {}
        if "backbone" in layers:
            out["backbone"] = feats
        if "embedding" in layers:
            out["embedding"] = F.normalize(self.head(feats), p=2, dim=1)
        return out

    def extra_repr(self) -> str:
        return f"frozen={self.frozen!r}, head={self.head_type!r}"
