"""Embedding models simtool did not train: any timm model (or a registered simtool model) by name,
randomly initialised, with timm's pretrained weights, or with weights from a file.

``save-embeddings --model NAME --data DIR`` embeds a dataset directory without a training run:

* **Which model**: ``timm:NAME`` is always timm's; a bare ``NAME`` is a registered simtool model
  when one has that name (``simtool.models``), else timm's.
* **Which weights**: random initialisation, seeded (``seed``; the same seed gives the same weights);
  ``pretrained`` (timm's weights: from the local Hugging Face cache when they are there, else
  downloaded; without a connection, one sentence saying how to pass ``--weights FILE`` instead); or
  ``weights`` (a ``.safetensors`` file or a ``.pth``/``.pt`` state dict read with
  ``torch.load(weights_only=True)``; a wrapping ``state_dict``/``model`` entry and a common key
  prefix such as ``module.`` or ``backbone.`` are recognised; every tensor of the model must be in
  it, extra ones (a classifier) are ignored).
* **Which layers** (timm models): every feature stage timm lists for the model
  (``model.feature_info``: ``layer1`` … ``layer4`` of a ResNet, ``blocks.0`` … of a ViT, with the
  stem first where timm has one), each the spatial mean of its ``forward_intermediates`` output
  (ViT: the mean of the patch tokens of the block's output), and ``pooled``: the model's pooled
  pre-classifier features (its output with ``num_classes=0``). A registered simtool model exposes
  its own ``layer_names``.
* **Preprocessing** comes from the weights' own config: timm's data config of the model
  (``timm.data.resolve_data_config``: input size, mean, std, ``crop_pct``), or the
  ``pretrained_cfg`` of a ``config.json`` beside a ``--weights`` file (the layout timm publishes on
  the Hugging Face Hub). Images go through the same loader as a trained run's
  (:func:`simtool.embedding.runs.embed_rows`): the central ``crop_pct`` of each side, resized
  (bilinear) to the input size, normalised with the config's mean and std.

The embeddings file records per model the model name, where the weights came from, the SHA-256 of
the state dict as loaded (``weights_sha256``) and the preprocessing, so ``compare`` groups and labels
it like a run: its name is the model's, its settings are the weights and the preprocessing, and
seeds of a random initialisation are replicates.
"""

from __future__ import annotations

import hashlib
import json
import socket
from pathlib import Path
from urllib.parse import urlparse

import torch
from rich.console import Console
from torch import nn

from simtool.data.augment import IMAGENET_MEAN, IMAGENET_STD
from simtool.embedding.runs import LoadedRun, embed_rows, rows_table
from simtool.engine.device import resolve_device
from simtool.errors import UserError
from simtool.formats.dataset_dir import Dataset, TripletsDataset
from simtool.formats.embeddings import Embeddings
from simtool.io import canonical_hash

TIMM_PREFIX = "timm:"
POOLED = "pooled"
HUB_CONFIG = "config.json"  # the config timm publishes beside its weights on the Hugging Face Hub
_CONNECT_TIMEOUT = 3.0


class TimmLayers(nn.Module):
    """A timm model (``num_classes=0``) whose feature stages and pooled output are simtool layers."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        info = getattr(model, "feature_info", None)
        stages = [str(f["module"]) for f in info] if info and hasattr(model, "forward_intermediates") else []
        self.stages = {name: i for i, name in enumerate(stages)}
        self.stage_dims = [int(f["num_chs"]) for f in info] if stages else []
        self.layer_names = [*stages, POOLED]

    def layer_dims(self) -> dict[str, int]:
        return {**dict(zip(self.stages, self.stage_dims)), POOLED: int(self.model.num_features)}

    def embed(self, x: torch.Tensor, layers: tuple[str, ...] = (POOLED,)) -> dict[str, torch.Tensor]:
        """``{layer: (B, D)}``: stages as the spatial (token) mean of their output, ``pooled`` as the model's output."""
        wanted = [self.stages[name] for name in layers if name in self.stages]
        out: dict[str, torch.Tensor] = {}
        if wanted:
            final, inter = self.model.forward_intermediates(x, indices=sorted(wanted), output_fmt="NCHW")
            for i, t in zip(sorted(wanted), inter):
                out[next(n for n, j in self.stages.items() if j == i)] = t.mean((2, 3)) if t.dim() == 4 else t.mean(1)
            if POOLED in layers:
                out[POOLED] = self.model.forward_head(final, pre_logits=True)
        elif POOLED in layers:
            out[POOLED] = self.model(x)
        return {name: out[name] for name in layers}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def _resolve(name: str) -> tuple[str, str]:
    """(``timm`` | ``simtool``, bare name) of ``--model NAME``."""
    import timm

    from simtool.models import MODELS

    if name.startswith(TIMM_PREFIX):
        bare = name[len(TIMM_PREFIX):]
        if not timm.is_model(bare):
            raise UserError(f"timm has no model {bare!r}{_similar(bare)}; see timm.list_models().")
        return "timm", bare
    MODELS.load_builtin()
    if name in MODELS:
        return "simtool", name
    if timm.is_model(name):
        return "timm", name
    raise UserError(f"Unknown model {name!r}: it is neither a registered simtool model ({', '.join(MODELS.names())}) "
                    f"nor a timm model{_similar(name)}; pass a timm name such as resnet50 or timm:vit_small_patch16_224.")


def _similar(name: str) -> str:
    from simtool.models.backbone import similar_timm_names

    close = similar_timm_names(name)
    return f" (similar timm names: {', '.join(close)})" if close else ""


def _weights_source(bare: str) -> tuple[str, str | None, str | None]:
    """(host, Hugging Face repo id or None, file in the local cache or None) of timm's weights of ``bare``."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(bare)
    if cfg is None:
        return "", None, None
    if cfg.hf_hub_id:
        from huggingface_hub import constants, try_to_load_from_cache

        repo = cfg.hf_hub_id.split("@")[0]
        for filename in ([cfg.hf_hub_filename] if cfg.hf_hub_filename else ["model.safetensors", "pytorch_model.bin"]):
            hit = try_to_load_from_cache(repo, filename)
            if isinstance(hit, str):
                return urlparse(constants.ENDPOINT).hostname or "", repo, hit
        return urlparse(constants.ENDPOINT).hostname or "", repo, None
    return (urlparse(cfg.url).hostname or "") if cfg.url else "", None, None


def reachable(host: str, timeout: float = _CONNECT_TIMEOUT) -> bool:
    """Whether a TCP connection to ``host``:443 opens within ``timeout`` seconds."""
    if not host:
        return False
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _offline(bare: str, why: str) -> UserError:
    return UserError(f"Could not download the pretrained weights of {bare} ({why}); download them where there is internet "
                     "and pass the file with --weights FILE (.safetensors or a .pth state dict) instead of --pretrained.")


def _create_timm(bare: str, pretrained: bool) -> nn.Module:
    import timm

    if not pretrained:
        return timm.create_model(bare, pretrained=False, num_classes=0)
    host, repo, cached = _weights_source(bare)
    if cached:
        return timm.create_model(bare, pretrained=True, num_classes=0, pretrained_cfg_overlay={"file": cached})
    if not host:
        raise UserError(f"timm has no pretrained weights for {bare}; pass --weights FILE, or leave --pretrained out for a random initialisation.")
    if not reachable(host):
        raise _offline(bare, f"no connection to {host}")
    try:
        return timm.create_model(bare, pretrained=True, num_classes=0)
    except Exception as exc:  # noqa: BLE001 - downloads fail in many ways
        raise _offline(bare, type(exc).__name__) from None


def _match_prefix(keys: list[str], own: set[str]) -> str:
    """The key prefix (``""``, ``module.``, ``backbone.``, ...) under which most of ``own`` is found in ``keys``."""
    counts: dict[str, int] = {}
    for k in keys:
        for part in range(len(k.split("."))):
            prefix = ".".join(k.split(".")[:part]) + ("." if part else "")
            if k[len(prefix):] in own:
                counts[prefix] = counts.get(prefix, 0) + 1
    return max(counts, key=lambda p: (counts[p], p == "")) if counts else ""


def load_weights_into(model: nn.Module, path: str | Path, what: str) -> dict:
    """Load a weights file into ``model`` (see the module docstring); what it held, for the provenance."""
    from simtool.models.backbone import load_weights_file

    path = Path(path)
    if not path.is_file():
        raise UserError(f"The weights file {path} (--weights) does not exist; pass a .safetensors file or a .pth state dict.")
    state = load_weights_file(path)
    own = model.state_dict()
    prefix = _match_prefix(list(state), set(own))
    mine = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix) and k[len(prefix):] in own}
    if not mine:
        raise UserError(f"No tensor in {path} matches the parameters of {what}; pass weights of the same architecture.")
    missing = [k for k in own if k not in mine and not k.endswith("num_batches_tracked")]
    if missing:
        raise UserError(f"{path} holds {len(own) - len(missing)} of the {len(own)} tensors of {what} (missing, e.g., {missing[0]}); "
                        "pass weights of the same architecture.")
    try:
        model.load_state_dict(mine, strict=False)
    except RuntimeError as exc:
        raise UserError(f"The weights in {path} do not fit {what} ({str(exc).splitlines()[-1].strip()}); pass weights of the same architecture.") from None
    return {"file": str(path.resolve()), "prefix": prefix, "ignored_tensors": len(state) - len(mine)}


def state_sha256(model: nn.Module) -> str:
    """SHA-256 of a state dict: every tensor's name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return "sha256:" + h.hexdigest()


def _hub_config(path: Path) -> dict | None:
    """The ``pretrained_cfg`` of a ``config.json`` beside a weights file (timm's Hub layout), if any."""
    cfg = path.with_name(HUB_CONFIG)
    if not cfg.is_file():
        return None
    try:
        doc = json.loads(cfg.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise UserError(f"{cfg} beside the weights is not valid JSON; fix it or move it away (the preprocessing then comes from timm).") from None
    return doc.get("pretrained_cfg") if isinstance(doc, dict) and isinstance(doc.get("pretrained_cfg"), dict) else None


def preprocessing(model: nn.Module, kind: str, weights: str | None) -> dict:
    """The input the weights expect: image size, crop, mean, std (see the module docstring)."""
    if kind == "timm":
        from timm.data import resolve_data_config

        hub = _hub_config(Path(weights)) if weights else None
        cfg = resolve_data_config(dict(hub), model=model.model) if hub else resolve_data_config({}, model=model.model)
        source = f"{HUB_CONFIG} beside the weights" if hub else "timm:" + str(model.model.pretrained_cfg.get("architecture", "")) + (
            "." + str(model.model.pretrained_cfg["tag"]) if model.model.pretrained_cfg.get("tag") else "")
    else:
        cfg = dict(getattr(model, "input_config", None) or {})
        source = "the model's input_config" if cfg else "defaults (ImageNet statistics, 224 px, the whole image)"
    size = cfg.get("input_size", (3, int(cfg.get("image_size", 224)), int(cfg.get("image_size", 224))))
    return {"image_size": int(size[-1]), "crop_frac": float(cfg.get("crop_pct", 1.0)), "mean": [float(v) for v in cfg.get("mean", IMAGENET_MEAN)],
            "std": [float(v) for v in cfg.get("std", IMAGENET_STD)], "interpolation": "bilinear", "config_interpolation": str(cfg.get("interpolation", "")),
            "source": source}


def build_model(name: str, pretrained: bool = False, weights: str | None = None, seed: int = 0) -> tuple[nn.Module, dict]:
    """The model of ``--model NAME`` in eval mode on the CPU, and its provenance (without layers)."""
    kind, bare = _resolve(name)
    if pretrained and weights:
        raise UserError("--pretrained (timm's weights) and --weights FILE both choose the weights; pass one of them.")
    if pretrained and kind != "timm":
        raise UserError(f"{bare} is a simtool model, and --pretrained takes timm's weights; pass its weights with --weights FILE.")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        if kind == "timm":
            model: nn.Module = TimmLayers(_create_timm(bare, pretrained))
        else:
            from simtool.models import create_model

            model = create_model(bare)
            if not hasattr(model, "embed") or not getattr(model, "layer_names", None):
                raise UserError(f"The simtool model {bare} has no embed() and layer_names, so it cannot be embedded; pass a timm model.")
    loaded = None
    if weights:
        loaded = load_weights_into(model.model if kind == "timm" else model, weights, bare)
    source = "file" if weights else ("timm" if pretrained else "random")
    digest = state_sha256(model.model if kind == "timm" else model)
    what = {"random": f"random (seed {seed})", "timm": "timm pretrained", "file": f"file {Path(weights).name if weights else ''}"}[source]
    prov = {"weights": source, "weights_sha256": digest, "weights_file": loaded, "init_seed": int(seed) if source == "random" else None,
            "model_name": (TIMM_PREFIX if kind == "timm" else "") + bare, "describe": what}
    return model.eval(), prov


def list_layers(name: str, pretrained: bool = False, weights: str | None = None, seed: int = 0) -> list[tuple[str, int]]:
    """(layer, dimension) of every layer ``--model NAME`` exposes (one forward pass of a blank image)."""
    model, prov = build_model(name, pretrained, weights, seed)
    kind = "timm" if isinstance(model, TimmLayers) else "simtool"
    size = preprocessing(model, kind, weights)["image_size"]
    with torch.no_grad():
        out = model.embed(torch.zeros(1, 3, size, size), tuple(model.layer_names))
    return [(layer, int(out[layer].shape[-1])) for layer in model.layer_names]


def embed_model(name: str, data: str, split: str | None, layers: list[str] | None, device_name: str, batch_size: int,
                pretrained: bool = False, weights: str | None = None, seed: int = 0, console: Console | None = None) -> Embeddings:
    """Embed ``split`` (default ``all``) of the dataset directory ``data`` with ``--model NAME``."""
    if not data:
        raise UserError("--model embeds a dataset directory: pass it with --data DIR.")
    model, prov = build_model(name, pretrained, weights, seed)
    kind = "timm" if isinstance(model, TimmLayers) else "simtool"
    pre = preprocessing(model, kind, weights)
    bare = prov["model_name"].removeprefix(TIMM_PREFIX)
    available = list(model.layer_names)
    layers = list(layers or available)
    unknown = [x for x in layers if x not in available]
    if unknown:
        raise UserError(f"Layer {unknown[0]!r} is not in {bare}; its layers are: {', '.join(available)} (see --list-layers).")
    layers = [x for x in available if x in layers]
    ds = Dataset(data)
    split = split or "all"
    rows = ds.export_rows(split, False)
    if len(rows) == 0:
        with_image = " with an image" if isinstance(ds, TripletsDataset) else ""
        raise UserError(f"The dataset {ds.root} has no {split!r} rows{with_image}; choose another --split.")
    card = {"layers": available, "input": {k: pre[k] for k in ("image_size", "crop_frac", "mean", "std")}}
    loaded = LoadedRun(run=None, name=bare, model=model, card=card, spec={}, weights=Path(weights) if weights else None, finished=True)
    if console is not None:
        console.print(f"{bare}: {prov['describe']} weights, {len(rows)} {split} rows at {pre['image_size']} px ({pre['source']}), "
                      f"layers {', '.join(layers)}.", soft_wrap=True, highlight=False)
    embs = embed_rows(loaded, ds, rows, layers, resolve_device(device_name), batch_size)
    spec = {"model": prov["model_name"], "weights": prov["weights"] if prov["weights"] != "file" else f"file {prov['weights_sha256'][:19]}",
            "input": {k: pre[k] for k in ("image_size", "crop_frac", "mean", "std")}}
    model_entry = {
        "name": bare,
        "run": prov["model_name"],
        "method": None,
        "preset": bare,
        "seed": prov["init_seed"],
        "spec": spec,
        "spec_hash": canonical_hash(spec),
        "model": prov["model_name"],
        "layers": layers,
        "finished": True,
        "weights": prov["weights"],
        "weights_sha256": prov["weights_sha256"],
        "weights_file": prov["weights_file"],
        "preprocessing": pre,
        "context": {},
        "dataset": ds.ref(),
        "run_only": [],
    }
    table, info = rows_table(ds, rows)
    tensors = {f"{bare}/{layer}": t.contiguous() for layer, t in embs.items()}
    return Embeddings(rows=table, models=[model_entry], tensors=tensors, dataset=ds.ref(), split=split, info=info, triplets=ds.triplets_of(rows, split))


__all__ = ["TimmLayers", "build_model", "embed_model", "list_layers", "load_weights_into", "preprocessing", "reachable", "state_sha256", "POOLED"]
