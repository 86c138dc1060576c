"""The GPU paths of the engine, checked on the CPU where the op exists there (CUDA-only tests skip).

The ``engine`` spec section (channels-last, torch.compile, TF32, the loaders' pinned memory,
persistent workers, prefetching and JPEG decoding on the device), the throughput figures every
train record carries (images/s, data-wait fraction, peak memory on CUDA), and the batched decode
path against Pillow. Tests whose name holds ``cuda`` need a CUDA GPU (``pytest -k cuda`` runs them;
``scripts/gpu_check.sh`` runs them with the rest of the GPU check).
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Literal

import numpy as np
import pytest
import torch
from PIL import Image
from rich.console import Console

from simtool.data.images import sample_crop_box
from simtool.data.loading import LoaderOptions, StoreLoader, loader_options
from simtool.engine.device import EngineOptions, check_compile, compile_failure, resolve_engine, tf32_matmuls, to_channels_last
from simtool.errors import UserError
from simtool.formats.image_codec import crop_resize, decode_crop, decode_jpegs, draft_scale, encode_image, image_size
from simtool.formats.image_store import ImageSpool, ImageStore
from simtool.formats.run_dir import RunDir
from simtool.specs.common import EngineSpec
from tests.conftest import TINY_TRAIN, cli, sets

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _frame(h: int, w: int, seed: int) -> np.ndarray:
    """A smooth colour gradient with sensor-like noise: uint8 (h, w, 3)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([xx / w * 200 + 20 * (seed % 3), yy / h * 200 + 10, (xx + yy) / (w + h) * 150 + 50], -1)
    return (base + rng.normal(0, 6, size=(h, w, 3))).clip(0, 255).astype(np.uint8)


def _jpeg(h: int, w: int, seed: int, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(_frame(h, w, seed)).save(buf, format="JPEG", quality=90, **kw)
    return buf.getvalue()


def _store(path: Path, frames: list[bytes], size: int) -> ImageStore:
    spool = ImageSpool(path.with_suffix(".raw"))
    for data in frames:
        spool.add(data)
    spool.write_h5(path)
    return ImageStore(path, size)


# -- the engine section -------------------------------------------------------------------------------


def test_engine_defaults_change_nothing_on_the_cpu_and_switch_the_gpu_paths_on_for_gpus():
    cpu = resolve_engine(EngineSpec(), torch.device("cpu"))
    assert cpu == EngineOptions(), "auto leaves a CPU run exactly as it was"
    cuda = resolve_engine(EngineSpec(), torch.device("cuda", 0))
    assert cuda.channels_last and cuda.tf32 and cuda.pin_memory and cuda.persistent_workers and cuda.prefetch == 4
    assert not cuda.compile and cuda.decode == "workers", "compile and decoding on the GPU are opt-in"
    off = resolve_engine(EngineSpec(channels_last=False, tf32=False, pin_memory=False, persistent_workers=False, prefetch=2), torch.device("cuda", 0))
    assert not (off.channels_last or off.tf32 or off.pin_memory or off.persistent_workers) and off.prefetch == 2
    assert not resolve_engine(EngineSpec(tf32=True), torch.device("cpu")).tf32, "TF32 exists on CUDA only"


def test_engine_keys_are_run_only_and_validated():
    from simtool.methods import resolve_train_spec
    from simtool.specs.base import run_only_paths

    spec = resolve_train_spec("normal", sets=["engine.channels_last=true", "engine.compile=true", "engine.decode=device"], device="cpu")
    assert spec.engine.channels_last is True and spec.engine.compile is True and spec.engine.decode == "device"
    paths = set(run_only_paths(type(spec)))
    assert {f"engine.{k}" for k in EngineSpec.model_fields} <= paths, "compare ignores them: they change how fast, not what is learned"
    with pytest.raises(UserError, match="engine.prefetch"):
        resolve_train_spec("normal", sets=["engine.prefetch=0"], device="cpu")
    with pytest.raises(UserError, match="engine.decode"):
        resolve_train_spec("normal", sets=["engine.decode=gpu"], device="cpu")


def test_tf32_settings_are_set_inside_the_block_and_restored():
    matmul = torch.backends.cuda.matmul
    read = (lambda: matmul.fp32_precision) if hasattr(matmul, "fp32_precision") else (lambda: matmul.allow_tf32)
    before = read()
    with tf32_matmuls(True):
        assert read() in ("tf32", True)
    assert read() == before
    with tf32_matmuls(False):
        assert read() in ("ieee", False)
    with tf32_matmuls(None):
        assert read() == before, "None (every device but CUDA) touches nothing"
    assert read() == before


# -- channels-last ------------------------------------------------------------------------------------


def test_channels_last_model_computes_the_same_and_saves_the_same_keys():
    from simtool.engine.checkpoint import model_state
    from simtool.models.time_context import TimeContextModel

    torch.manual_seed(0)
    model = TimeContextModel("test_resnet", 4, 2, ["classic", "labels", "linear_eval"], head_hidden=16, head_out=8).eval()
    ref_state = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        ref = model(x, layers=("backbone",), probes=True)["probe.category"]
    n = to_channels_last(model)
    assert n > 0 and all(p.is_contiguous(memory_format=torch.channels_last) for p in model.parameters() if p.dim() == 4)
    with torch.no_grad():
        out = model(x, layers=("backbone",), probes=True)["probe.category"]
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)
    state = model_state(model)
    assert state.keys() == ref_state.keys() and all(torch.equal(state[k], ref_state[k]) for k in state), "same values, same keys"
    assert all(v.is_contiguous() for v in state.values()), "safetensors files hold contiguous tensors"


def test_channels_last_trains_through_the_engine_like_the_default_and_resumes_exactly(tmp_path, tiny_world, tiny_run):
    from safetensors.torch import load_file

    from simtool.engine.loop import TrainingInterrupted
    from simtool.methods import resolve_train_spec
    from simtool.stages import train as stage

    spec = resolve_train_spec("normal", sets=TINY_TRAIN + ["loop.epochs=1", "engine.channels_last=true"], data=str(tiny_world), device="cpu")
    out, _ = stage.train(spec, str(tmp_path / "cl"), console=Console(file=io.StringIO()))
    assert json.loads((out / "summary.json").read_text())["engine"]["channels_last"] is True
    mine, ref = ([r for r in RunDir(run).read_metrics() if r["type"] == "train"] for run in (out, tiny_run))
    assert len(mine) == len(ref) > 1
    assert mine[0]["loss"] == pytest.approx(ref[0]["loss"], rel=1e-4), "the first step's loss (same weights, same batch) is the same"
    a, b = load_file(RunDir(out).final_weights), load_file(RunDir(tiny_run).final_weights)
    assert a.keys() == b.keys() and all(a[k].shape == b[k].shape and a[k].is_contiguous() for k in a)
    w, v = (torch.cat([t[k].float().flatten() for k in sorted(t) if t[k].is_floating_point()]) for t in (a, b))
    assert torch.corrcoef(torch.stack([w, v]))[0, 1] > 0.999, "channels-last changes only the order of floating-point sums"
    with pytest.raises(TrainingInterrupted):  # the checkpoint holds contiguous moments; the resumed run makes them channels-last again
        stage.train(spec, str(tmp_path / "cut"), console=Console(file=io.StringIO()), stop_after_steps=3)
    stage.resume(tmp_path / "cut", console=Console(file=io.StringIO()))
    c = load_file(RunDir(tmp_path / "cut").final_weights)
    assert all(torch.equal(a[k], c[k]) for k in a), "a resumed channels-last run ends with the uninterrupted run's weights"


# -- torch.compile ------------------------------------------------------------------------------------


def test_compile_refused_in_one_sentence_where_it_cannot_run(tmp_path, tiny_world, monkeypatch):
    import simtool.engine.device as device_mod

    monkeypatch.setenv("CXX", "")
    monkeypatch.setattr(device_mod.shutil, "which", lambda name: None)
    with pytest.raises(UserError, match="C\\+\\+ compiler.*engine.compile=false"):
        check_compile(torch.device("cpu"))
    result = cli("train", "--data", tiny_world, "--out", tmp_path / "r", "--device", "cpu", *sets(TINY_TRAIN + ["engine.compile=true"]))
    assert result.exit_code == 2 and "engine.compile=false" in result.output and "Traceback" not in result.output, result.output
    assert not (tmp_path / "r").exists(), "refused before the run directory exists"


def test_compile_failures_become_one_sentence():
    exc_type = type("BackendCompilerFailed", (RuntimeError,), {"__module__": "torch._dynamo.exc"})
    err = compile_failure(exc_type("backend='inductor' raised:\nCppCompileError: ..."))
    assert isinstance(err, UserError) and "engine.compile=false" in str(err) and "\n" not in str(err)
    assert compile_failure(ValueError("a bug of the method")) is None, "other errors are not blamed on the compiler"


def test_compile_trains_through_the_engine(tmp_path):
    """engine.compile=true on the CPU (inductor's C++ backend): the compiled model trains to the eager run's loss."""
    from simtool.engine.loop import fit

    pytest.importorskip("torch._inductor")
    try:
        check_compile(torch.device("cpu"))
    except UserError as exc:
        pytest.skip(str(exc))
    spec, method = _demo_method(0.0, 0.0)
    eager = fit(spec, RunDir(tmp_path / "eager"), method, console=Console(file=io.StringIO()))
    compiled = spec.model_copy(update={"engine": EngineSpec(compile=True)})
    summary = fit(compiled, RunDir(tmp_path / "compiled"), method, console=Console(file=io.StringIO()))
    assert summary["engine"]["compile"] is True
    assert summary["final_loss"] == pytest.approx(eager["final_loss"], rel=1e-5)


# -- throughput figures in every train record ---------------------------------------------------------


def _demo_method(load_s: float, step_s: float):
    """A method whose batches take ``load_s`` to arrive and whose steps take ``step_s`` of host time."""
    from simtool.engine.method import Method
    from simtool.models import create_model
    from simtool.specs.common import CommonSpec

    class S(CommonSpec):
        method: Literal["waitdemo"] = "waitdemo"

    class M(Method):
        def __init__(self, spec, device, dist, console):
            torch.manual_seed(0)
            self.model = create_model("psycho", n_items=3, dim=2)

        def steps_per_epoch(self):
            return 6

        def batches(self, epoch, start_step):
            for step in range(start_step, 6):
                time.sleep(load_s)
                yield step

        def training_step(self, model, batch, info):
            time.sleep(step_s)
            return model().sum(), {}

        @property
        def images_per_step(self):
            return 4

    return S(loop={"epochs": 1, "batch_size": 4, "log_every": 3, "eval_every": 0}, device="cpu"), M


@pytest.mark.parametrize("load_s, step_s, data_bound", [(0.08, 0.0, True), (0.0, 0.08, False)])
def test_records_carry_images_per_second_and_the_data_wait_fraction(tmp_path, load_s, step_s, data_bound):
    from simtool.engine.loop import fit

    spec, method = _demo_method(load_s, step_s)
    summary = fit(spec, RunDir(tmp_path / "r"), method, console=Console(file=io.StringIO()))
    train = [r for r in RunDir(tmp_path / "r").read_metrics() if r["type"] == "train"]
    assert len(train) == 2 and all(r["images_per_s"] > 0 for r in train)
    waits = [r["data_wait"] for r in train]
    assert all(0 <= w <= 1 for w in waits)
    assert all(w > 0.6 for w in waits) if data_bound else all(w < 0.4 for w in waits), waits
    assert "peak_memory_gib" not in train[0] and "peak_memory_gib" not in summary, "peak memory is a CUDA figure"
    assert summary["engine"] == EngineOptions().to_dict()


def test_every_method_logs_its_rate_and_data_wait(tiny_run, tmp_path):
    from tests.triplet_data import build

    data, _ = build(tmp_path / "t", n_items=30, n_triplets=2000)
    out = tmp_path / "teach"
    result = cli("train", "--preset", "things_p_ste", "--data", data, "--out", out, "--device", "cpu",
                 *sets(["loop.epochs=1", "loop.batch_size=200", "model.dim=4", "loop.log_every=2"]))
    assert result.exit_code == 0, result.output
    for run, rate in ((tiny_run, "images_per_s"), (out, "triplets_per_s")):
        train = [r for r in RunDir(run).read_metrics() if r["type"] == "train"]
        assert train and all(r[rate] > 0 and 0 <= r["data_wait"] <= 1 for r in train), train
    assert "data wait" in result.output, "the progress line shows it too"


def test_out_of_memory_is_one_sentence_naming_the_batch(tmp_path, tiny_world, monkeypatch):
    from simtool.methods.time_ssl import TimeSSL

    def oom(self, model, batch, info):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(TimeSSL, "training_step", oom)
    result = cli("train", "--data", tiny_world, "--out", tmp_path / "r", "--device", "cpu", *sets(TINY_TRAIN))
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    text = " ".join(result.output.split())
    assert "ran out of memory" in text and "loop.batch_size=8" in text and "lower loop.batch_size" in text, text


# -- the loaders' options -----------------------------------------------------------------------------


def _plan(n_steps: int, per_step: int, n_images: int):
    rng = np.random.default_rng(0)
    return [(s, (rng.integers(0, n_images, per_step), rng.integers(0, n_images, per_step))) for s in range(n_steps)]


def test_persistent_workers_serve_every_epoch_with_the_same_images(tmp_path):
    frames = [_jpeg(48, 64, i) for i in range(12)]
    store = _store(tmp_path / "images.h5", frames, 24)
    plain = StoreLoader(store, 24, "none", 0, np.arange(12))
    with loader_options(LoaderOptions(persistent_workers=True, prefetch=3)):
        kept = StoreLoader(store, 24, "none", 2, np.arange(12))
    assert not kept.on_device and kept.num_workers == 2 and kept.options.persistent_workers
    loaders = []
    for epoch in range(3):
        plan = _plan(4, 5, 12)
        ref = list(plain.batches(plan, 0.3, (0, epoch), 7))
        it = kept.batches(plan, 0.3, (0, epoch), 7)
        got = [next(it) for _ in range(len(plan))]  # left unfinished, as zip() leaves a method's loader
        loaders.append(kept._persistent[0])
        assert [b.step for b in got] == [b.step for b in ref] == [0, 1, 2, 3]
        assert all(torch.equal(x, y) for b, r in zip(got, ref) for x, y in zip(b.images, r.images)), "same crops, whoever decodes them"
    assert loaders[0] is loaders[1] is loaders[2], "one DataLoader (and its workers) for every epoch"


# -- decoding on the device ---------------------------------------------------------------------------


def test_batched_jpeg_decode_equals_pillows():
    """torchvision's decode_jpeg (the path nvJPEG takes on CUDA) against Pillow, on the CPU: both use
    libjpeg-turbo with the same settings, and every pixel was measured equal (tolerance 0) for
    4:2:0, 4:2:2 and 4:4:4 chroma, odd sizes, progressive and greyscale JPEGs."""
    gray = io.BytesIO()
    Image.fromarray(_frame(50, 37, 4)).convert("L").save(gray, format="JPEG", quality=85)
    cases = [_jpeg(240, 320, 0), _jpeg(241, 319, 1), _jpeg(120, 160, 2, subsampling=0), _jpeg(120, 160, 3, subsampling=1),
             _jpeg(96, 128, 5, progressive=True), gray.getvalue()]
    decoded = decode_jpegs(cases, "cpu")
    for data, img in zip(cases, decoded):
        ref = torch.from_numpy(np.array(Image.open(io.BytesIO(data)).convert("RGB"))).permute(2, 0, 1)
        assert img.dtype == torch.uint8 and img.shape == ref.shape
        assert int((img.int() - ref.int()).abs().max()) == 0


def test_draft_scale_is_pillows_draft_rule():
    data = _jpeg(720, 1280, 0)
    w, h = image_size(data)
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(40):
        box = sample_crop_box(w, h, (0.05, 1.0), (3 / 4, 4 / 3), rng)
        for size in (64, 224):
            s = draft_scale(w, h, box, size)
            img = Image.open(io.BytesIO(data))
            need = max(size / (box[2] * w), size / (box[3] * h))
            if need < 1:
                img.draft("RGB", (int(np.ceil(w * need)), int(np.ceil(h * need))))
            assert img.size == (-(-w // s), -(-h // s))
            seen.add(s)
    assert seen == {1, 2, 4, 8}


def test_device_crops_match_the_worker_crops(tmp_path):
    """decode="device" (run on the CPU here) against the workers' Pillow crops of the same boxes:
    on these frames the mean absolute difference was measured at 0.19 levels of 255 and the largest
    at 2 (at most 1 where no DCT scaling is used, e.g. 224 px crops of a default 320 px store; on
    frames with sharp edges decoded at 1/2 to 1/8 scale up to about 15, where block means stand in
    for libjpeg's scaled IDCT). PNG frames fall back to the CPU decode: equal."""
    frames = [_jpeg(240, 320, i) for i in range(6)] + [_jpeg(720, 1280, 7), _jpeg(100, 90, 8), encode_image(_frame(64, 80, 9), "png")]
    n, size = len(frames), 56
    store = _store(tmp_path / "images.h5", frames, size)
    plain = StoreLoader(store, size, "none", 0, np.arange(n))
    with loader_options(LoaderOptions(device="cpu", decode="device")):
        dev = StoreLoader(store, size, "none", 0, np.arange(n))
    assert dev.decodes_on_device and not plain.decodes_on_device
    plan = [(s, (np.arange(n), np.arange(n)[::-1])) for s in range(3)]
    diffs = []
    for b, r in zip(dev.batches(plan, 0.08, (0, 0), 3), plain.batches(plan, 0.08, (0, 0), 3)):
        for x, y, order in zip(b.images, r.images, (np.arange(n), np.arange(n)[::-1])):
            assert x.shape == y.shape == (n, 3, size, size) and x.dtype == torch.uint8
            d = (x.int() - y.int()).abs()
            png = int(np.flatnonzero(order == n - 1)[0])
            assert torch.equal(x[png], y[png]), "PNG frames are decoded on the CPU, as before"
            diffs.append(d)
    d = torch.stack(diffs).float()
    assert d.mean() < 0.4 and d.max() <= 8, (float(d.mean()), float(d.max()))


def test_device_decode_of_whole_frames_and_crop_resize_of_full_boxes(tmp_path):
    frames = [_jpeg(32, 32, i) for i in range(4)]
    store = _store(tmp_path / "images.h5", frames, 32)
    with loader_options(LoaderOptions(device="cpu", decode="device")):
        dev = StoreLoader(store, 32, "none", 0, np.arange(4))
    assert dev.on_device and dev.decodes_on_device, "whole frames: decoded on the device, cropped by the method's augmentation"
    (batch,) = list(dev.batches([(0, (np.arange(4), None))], 0.5, (0,), 1))
    assert batch.images[1] is None and torch.equal(batch.images[0], store.load(np.arange(4)))
    imgs = decode_jpegs(frames, "cpu")
    out = crop_resize(imgs, np.tile([0.0, 0.0, 1.0, 1.0], (4, 1)), [1] * 4, 32)
    assert torch.equal(out, torch.stack(imgs)), "the whole frame at its own size is the frame"
    ref = decode_crop(frames[0], (0.25, 0.1, 0.5, 0.7), 20)
    got = crop_resize(imgs[:1], [(0.25, 0.1, 0.5, 0.7)], [1], 20)[0].permute(1, 2, 0).numpy()
    assert np.abs(got.astype(int) - ref.astype(int)).max() <= 1, "Pillow's resize of a sub-pixel box, within rounding"


def test_device_decode_through_the_engine(tmp_path, tiny_world):
    """A JPEG toy world cropped at every step (frames larger than the training size): decode=device
    trains and says so in the summary; the run's crops differ from the workers' by decoder rounding only."""
    from simtool.data.builders import build_dataset, resolve_build_spec
    from tests.conftest import TINY_WORLD

    data = tmp_path / "jpeg"
    build_dataset(resolve_build_spec("toyworld", str(data), sets=TINY_WORLD + ["toyworld.image_format=jpeg"], seed=3))
    extra = ["loop.epochs=1", "data.image_size=24", "data.cache=none", "data.num_workers=0", "engine.decode=device"]
    result = cli("train", "--data", data, "--out", tmp_path / "r", "--device", "cpu", *sets(TINY_TRAIN + extra))
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["engine"]["decode"] == "device" and np.isfinite(summary["final_loss"])


# -- on a CUDA GPU (scripts/gpu_check.sh) -------------------------------------------------------------


@needs_cuda
def test_cuda_decode_and_crops_match_the_cpu(tmp_path):
    """nvJPEG against libjpeg-turbo: printed for the record, bounded loosely (IDCT and chroma
    upsampling differ)."""
    frames = [_jpeg(240, 320, i) for i in range(8)] + [_jpeg(1080, 1920, 9)]
    cpu, gpu = decode_jpegs(frames, "cpu"), decode_jpegs(frames, "cuda")
    full = torch.cat([(g.cpu().int() - c.int()).abs().flatten() for g, c in zip(gpu, cpu)]).float()
    store = _store(tmp_path / "images.h5", frames, 224)
    with loader_options(LoaderOptions(device="cuda", decode="device")):
        dev = StoreLoader(store, 224, "none", 0, np.arange(len(frames)))
    plain = StoreLoader(store, 224, "none", 0, np.arange(len(frames)))
    plan = [(0, (np.arange(len(frames)),))]
    (b,), (r,) = list(dev.batches(plan, 0.08, (0,), 1)), list(plain.batches(plan, 0.08, (0,), 1))
    assert b.images[0].device.type == "cuda"
    crops = (b.images[0].cpu().int() - r.images[0].int()).abs().float()
    print(f"\nnvJPEG vs Pillow: full decode mean {full.mean():.3f} max {full.max():.0f}; 224 px crops mean {crops.mean():.3f} max {crops.max():.0f}")
    assert full.mean() < 1.0 and crops.mean() < 1.0 and crops.max() <= 64


@needs_cuda
def test_cuda_train_step_with_the_gpu_paths(tmp_path, tiny_world):
    """One short run on CUDA with every GPU path on: channels-last, TF32, pinned memory, and the
    peak memory in the records and the summary."""
    out = tmp_path / "r"
    result = cli("train", "--data", tiny_world, "--out", out, "--device", "cuda", *sets(TINY_TRAIN + ["loop.epochs=1"]))
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["engine"]["channels_last"] and summary["engine"]["tf32"] and summary["peak_memory_gib"] > 0
    train = [r for r in RunDir(out).read_metrics() if r["type"] == "train"]
    assert all(r["peak_memory_gib"] > 0 and 0 <= r["data_wait"] <= 1 for r in train)
