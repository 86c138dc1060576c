"""The model of the self-supervised time/context route (Aubret et al., ICDL 2024).

A timm backbone feeds up to two MLP heads: ``time`` (the SSL head, trained by NT-Xent on the
contrast mode's positive pairs) and ``label`` (aligned with a learned embedding of the category
label). ``label_embedding`` maps a one-hot category to the same space; ``probe_category`` and
``probe_context`` are online linear probes on detached backbone features.

Layer names exposed for evaluation: ``backbone``, ``time.relu1``, ``time.relu2``, ``time.out``,
``label.relu1``, ``label.relu2``, ``label.out`` (heads that the run did not train are absent).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from simtool.models._registry import register_model
from simtool.models.backbone import create_backbone
from simtool.models.heads import MLPHead


@register_model("time_context")
class TimeContextModel(nn.Module):
    def __init__(
        self,
        backbone: str,
        n_categories: int,
        n_rooms: int,
        modules: list[str],
        pretrained: bool | str = False,
        head_hidden: int = 1024,
        head_out: int = 512,
        zero_init_last: bool | None = None,
    ):
        super().__init__()
        self.backbone = create_backbone(backbone, pretrained, zero_init_last)
        dim = int(self.backbone.num_features)
        self.n_categories = n_categories
        self.heads = nn.ModuleDict()
        if "classic" in modules:
            self.heads["time"] = MLPHead(dim, head_hidden, head_out)
        if "labels" in modules:
            self.heads["label"] = MLPHead(dim, head_hidden, head_out)
            self.label_embedding = MLPHead(n_categories, head_hidden, head_out)
        if "linear_eval" in modules:
            self.probe_category = nn.Linear(dim, n_categories)
            self.probe_context = nn.Linear(dim, n_rooms)

    @property
    def layer_names(self) -> list[str]:
        names = ["backbone"]
        for head in self.heads:
            names += [f"{head}.relu1", f"{head}.relu2", f"{head}.out"]
        return names

    def _forward_chunk(self, x: Tensor, layers: tuple[str, ...] | None) -> dict[str, Tensor]:
        feats = self.backbone(x)
        out = {"backbone": feats}
        for name, head in self.heads.items():
            if layers is None:
                out[f"{name}.out"] = head(feats)
            else:
                wanted = [k for k in ("relu1", "relu2", "out") if f"{name}.{k}" in layers]
                if wanted:
                    acts = head.forward_all(feats)
                    out.update({f"{name}.{k}": acts[k] for k in wanted})
        return out

    def forward(
        self,
        x: Tensor,
        layers: tuple[str, ...] | None = None,
        halves: int = 1,
        categories: Tensor | None = None,
        probes: bool = False,
    ) -> dict[str, Tensor]:
        """x: (B, 3, H, W) normalised images → dict of layer name → (B, D).

        ``layers=None`` gives ``backbone`` and every head output. ``halves=2`` runs the two halves
        of the batch (anchors, positives) through the network separately, so BatchNorm statistics
        are computed per half. ``categories`` (B_a,) adds ``label.embed`` (B_a, D); ``probes`` adds
        ``probe.category`` and ``probe.context`` logits computed on detached backbone features.
        Everything is computed in this one call so DistributedDataParallel sees every parameter.
        """
        chunks = x.chunk(halves) if halves > 1 else (x,)
        parts = [self._forward_chunk(c, layers) for c in chunks]
        out = parts[0] if len(parts) == 1 else {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
        if categories is not None and "label" in self.heads:
            out["label.embed"] = self.embed_labels(categories)
        if probes and hasattr(self, "probe_category"):
            feats = out["backbone"].detach()
            out["probe.category"] = self.probe_category(feats)
            out["probe.context"] = self.probe_context(feats)
        return out

    def embed(self, x: Tensor, layers: tuple[str, ...]) -> dict[str, Tensor]:
        """Features of normalised images ``x`` (B, 3, H, W) at ``layers`` → ``{layer: (B, D)}``."""
        return self.forward(x, layers=tuple(layers))

    def embed_labels(self, category: Tensor) -> Tensor:
        """category: (B,) int64 → (B, head_out) label embeddings."""
        onehot = torch.nn.functional.one_hot(category, self.n_categories).to(self.label_embedding.fc1.weight.dtype)
        return self.label_embedding(onehot)
