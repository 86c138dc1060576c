"""Projection heads whose intermediate activations are exposed by name."""

from __future__ import annotations

from torch import Tensor, nn


class MLPHead(nn.Module):
    """``in → hidden → hidden → out`` with BatchNorm and ReLU (Aubret et al., ICDL 2024 heads).

    :meth:`forward_all` returns ``{"relu1": (B, hidden), "relu2": (B, hidden), "out": (B, out)}``.
    """

    def __init__(self, in_dim: int, hidden: int = 1024, out_dim: int = 512):
        super().__init__()
        self.fc1 = nn.Linear(in_dim, hidden)
        self.bn1 = nn.BatchNorm1d(hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.bn2 = nn.BatchNorm1d(hidden)
        self.fc3 = nn.Linear(hidden, out_dim)

    def forward_all(self, x: Tensor) -> dict[str, Tensor]:
        r1 = (self.bn1(self.fc1(x))).relu()
        r2 = (self.bn2(self.fc2(r1))).relu()
        return {"relu1": r1, "relu2": r2, "out": self.fc3(r2)}

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_all(x)["out"]
