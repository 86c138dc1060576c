"""Tests for simtool.data.augment: batched augmentations vs independent (torchvision) references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF

from simtool.data import augment as A
from simtool.specs.augment import AugmentSpec


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def rand_images(b: int = 8, h: int = 32, w: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, 3, h, w, generator=gen(seed))


def rand_uint8(b: int = 8, h: int = 32, w: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (b, 3, h, w), generator=gen(seed), dtype=torch.uint8)


# ---------------------------------------------------------------------------------------------
# conversion
# ---------------------------------------------------------------------------------------------


def test_to_float_and_normalize():
    x = rand_uint8()
    f = A.to_float(x)
    assert f.dtype == torch.float32
    torch.testing.assert_close(f, x.double().div(255).float())
    y = rand_images()
    assert A.to_float(y) is y
    assert A.to_float(y.double()).dtype == torch.float32
    with pytest.raises(TypeError):
        A.to_float(x.to(torch.int32))
    ref = TF.normalize(f, A.IMAGENET_MEAN, A.IMAGENET_STD)
    torch.testing.assert_close(A.normalize(x), ref, atol=1e-6, rtol=0)


# ---------------------------------------------------------------------------------------------
# random_resized_crop
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [16, 32, 48])
def test_full_crop_equals_interpolate(size):
    x = rand_images(4, 32, 32)
    out = A.random_resized_crop(x, size, scale=(1.0, 1.0), ratio=(1.0, 1.0), generator=gen(1))
    ref = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    assert out.shape == (4, 3, size, size) and out.dtype == torch.float32
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


def coordinate_image(b: int, h: int, w: int) -> torch.Tensor:
    """Channel 0 holds the column index, channel 1 the row index of each pixel centre."""
    cols = torch.arange(w, dtype=torch.float32).view(1, w).expand(h, w)
    rows = torch.arange(h, dtype=torch.float32).view(h, 1).expand(h, w)
    img = torch.stack([cols, rows, torch.zeros(h, w)])
    return img.unsqueeze(0).expand(b, -1, -1, -1).contiguous()


def test_crop_boxes_from_coordinates():
    b, h, w, size = 256, 64, 64, 16
    scale, ratio = (0.25, 1.0), (3 / 4, 4 / 3)
    x = coordinate_image(b, h, w)
    out = A.random_resized_crop(x, size, scale=scale, ratio=ratio, generator=gen(3))
    cols, rows = out[:, 0], out[:, 1]
    # every sampled location lies inside the image (pixel-centre coordinates)
    assert cols.min() >= -1e-4 and cols.max() <= w - 1 + 1e-4
    assert rows.min() >= -1e-4 and rows.max() <= h - 1 + 1e-4
    # bilinear sampling of a linear ramp is exact: output pixel centres span (1 - 1/size) of the box
    span = 1.0 - 1.0 / size
    w_est = (cols.amax(dim=(1, 2)) - cols.amin(dim=(1, 2))) / span
    h_est = (rows.amax(dim=(1, 2)) - rows.amin(dim=(1, 2))) / span
    x0_est = cols.amin(dim=(1, 2)) + 0.5 - w_est / (2 * size)
    y0_est = rows.amin(dim=(1, 2)) + 0.5 - h_est / (2 * size)
    frac = w_est * h_est / (h * w)
    assert frac.min() >= scale[0] - 1e-3 and frac.max() <= scale[1] + 1e-3
    aspect = w_est / h_est
    assert aspect.min() >= ratio[0] - 1e-3 and aspect.max() <= ratio[1] + 1e-3
    assert x0_est.min() >= -1e-3 and (x0_est + w_est).max() <= w + 1e-3
    assert y0_est.min() >= -1e-3 and (y0_est + h_est).max() <= h + 1e-3
    # the sampled boxes (same generator seed) are what was resampled
    boxes = A._sample_crop_boxes(b, h, w, scale, ratio, gen(3))
    torch.testing.assert_close(frac, boxes[:, 2] * boxes[:, 3] / (h * w), atol=1e-3, rtol=0)
    torch.testing.assert_close(x0_est, boxes[:, 0], atol=1e-3, rtol=0)
    torch.testing.assert_close(y0_est, boxes[:, 1], atol=1e-3, rtol=0)
    # area fractions spread over the range (not stuck at one value); positions vary
    assert frac.std() > 0.1 and x0_est.std() > 1.0


def test_crop_grid_equals_affine_grid():
    boxes = A._sample_crop_boxes(16, 40, 60, (0.08, 1.0), (3 / 4, 4 / 3), gen(8))
    grid = A._crop_grid(boxes, 40, 60, 24)
    ref = F.affine_grid(A._crop_theta(boxes, 40, 60), [16, 3, 24, 24], align_corners=False)
    torch.testing.assert_close(grid, ref, atol=1e-6, rtol=0)


def test_crop_fallback_is_centred():
    # aspect ratios >= 3 never fit a square image at this scale -> torchvision's fallback, continuous
    # (not rounded to whole pixels), the same rule as the worker-side sampler
    from simtool.data.images import sample_crop_box

    b, h, w = 8, 64, 64
    boxes = A._sample_crop_boxes(b, h, w, (0.9, 1.0), (3.0, 4.0), gen(0))
    expected_h = w / 3.0
    torch.testing.assert_close(boxes[:, 2], torch.full((b,), float(w)))
    torch.testing.assert_close(boxes[:, 3], torch.full((b,), float(expected_h)))
    torch.testing.assert_close(boxes[:, 1], torch.full((b,), (h - expected_h) / 2))
    x0, y0, bw, bh = sample_crop_box(w, h, (0.9, 1.0), (3.0, 4.0), np.random.default_rng(0))
    assert (bw * w, bh * h, y0 * h) == pytest.approx((w, expected_h, (h - expected_h) / 2)), "one fallback rule for both samplers"
    out = A.random_resized_crop(coordinate_image(b, h, w), 16, scale=(0.9, 1.0), ratio=(3.0, 4.0), generator=gen(0))
    assert out.shape == (b, 3, 16, 16)


def test_crop_non_square_and_uint8():
    x = rand_uint8(4, 40, 60)
    out = A.random_resized_crop(x, 24, generator=gen(0))
    assert out.shape == (4, 3, 24, 24) and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1
    torch.testing.assert_close(out, A.random_resized_crop(A.to_float(x), 24, generator=gen(0)))


# ---------------------------------------------------------------------------------------------
# flip / grayscale
# ---------------------------------------------------------------------------------------------


def test_hflip():
    x = rand_images()
    torch.testing.assert_close(A.random_hflip(x, 1.0, gen()), torch.flip(x, dims=[3]), atol=0, rtol=0)
    assert torch.equal(A.random_hflip(x, 0.0, gen()), x)
    big = rand_images(2000, 4, 4)
    out = A.random_hflip(big, 0.5, gen(5))
    flipped = (out == big.flip(3)).flatten(1).all(1)
    kept = (out == big).flatten(1).all(1)
    assert bool((flipped ^ kept).all())  # each sample either flipped or untouched
    assert 0.45 < flipped.float().mean().item() < 0.55


def test_grayscale():
    x = rand_images()
    out = A.random_grayscale(x, 1.0, gen())
    # ITU-R 601 weights, computed independently in float64
    luma = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).double()
    torch.testing.assert_close(out.double(), luma.unsqueeze(1).expand(-1, 3, -1, -1), atol=1e-6, rtol=0)
    # torchvision's tensor kernel uses 0.2989 for red (not 0.299): differs by at most 1e-4 * R
    ref = TF.rgb_to_grayscale(x, num_output_channels=3)
    torch.testing.assert_close(out, ref, atol=1.1e-4, rtol=0)
    assert torch.equal(A.random_grayscale(x, 0.0, gen()), x)
    big = rand_images(1000, 4, 4)
    out = A.random_grayscale(big, 0.2, gen(1))
    gray = (out[:, 0] == out[:, 1]).flatten(1).all(1) & (out[:, 1] == out[:, 2]).flatten(1).all(1)
    assert 0.15 < gray.float().mean().item() < 0.25
    assert torch.equal(out[~gray], big[~gray])


# ---------------------------------------------------------------------------------------------
# colour jitter: internal helpers vs torchvision, sample by sample
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, tv, factors",
    [
        ("_adjust_brightness", TF.adjust_brightness, [0.0, 0.5, 0.9, 1.0, 1.3, 1.6, 2.0, 0.7]),
        ("_adjust_contrast", TF.adjust_contrast, [0.0, 0.5, 0.9, 1.0, 1.3, 1.6, 2.0, 0.7]),
        ("_adjust_saturation", TF.adjust_saturation, [0.0, 0.5, 0.9, 1.0, 1.3, 1.6, 2.0, 0.7]),
    ],
)
def test_adjust_vs_torchvision(name, tv, factors):
    x = rand_images(len(factors), 16, 16)
    f = torch.tensor(factors)
    out = getattr(A, name)(x, f)
    # tolerance 1.5e-4: torchvision's grayscale (used by contrast/saturation) weighs red 0.2989, not 0.299
    for i, fi in enumerate(factors):
        torch.testing.assert_close(out[i], tv(x[i], fi), atol=1.5e-4, rtol=0)


def test_adjust_hue_vs_torchvision():
    shifts = [-0.5, -0.3, -0.1, -0.01, 0.0, 0.05, 0.2, 0.5]
    x = rand_images(len(shifts), 16, 16, seed=2)
    # include greys, pure colours and saturated extremes
    x[0, :, :2, :2] = 0.5
    x[1, :, :2, :2] = torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1)
    x[2, :, :2, :2] = torch.tensor([0.0, 0.0, 0.0]).view(3, 1, 1)
    x[3, :, :2, :2] = torch.tensor([1.0, 1.0, 0.0]).view(3, 1, 1)
    out = A._adjust_hue(x, torch.tensor(shifts))
    for i, s in enumerate(shifts):
        torch.testing.assert_close(out[i], TF.adjust_hue(x[i], s), atol=1e-3, rtol=0)


def test_hue_rotates_primaries():
    red = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1).expand(3, 3, 2, 2)
    out = A._adjust_hue(red, torch.tensor([1 / 3, 2 / 3, 1.0]))
    torch.testing.assert_close(out[0, :, 0, 0], torch.tensor([0.0, 1.0, 0.0]), atol=1e-5, rtol=0)
    torch.testing.assert_close(out[1, :, 0, 0], torch.tensor([0.0, 0.0, 1.0]), atol=1e-5, rtol=0)
    torch.testing.assert_close(out[2, :, 0, 0], torch.tensor([1.0, 0.0, 0.0]), atol=1e-5, rtol=0)


def test_color_jitter_brightness_factor_range():
    x = rand_images(64, 8, 8) * 0.5  # no clamping for factors <= 2
    out = A.color_jitter(x, 1.0, 0.4, 0.0, 0.0, 0.0, generator=gen(0))
    ratio = out / x
    per_sample = ratio.flatten(1)
    assert (per_sample.std(1) < 1e-5).all()  # one factor per image
    f = per_sample.mean(1)
    assert f.min() >= 0.6 - 1e-5 and f.max() <= 1.4 + 1e-5 and f.std() > 0.1


def test_color_jitter_probability_and_identity():
    x = rand_images(1000, 4, 4)
    assert torch.equal(A.color_jitter(x, 0.0, 0.4, 0.4, 0.4, 0.1, gen()), x)
    assert torch.equal(A.color_jitter(x, 1.0, 0.0, 0.0, 0.0, 0.0, gen()), x)
    out = A.color_jitter(x, 0.8, 0.4, 0.4, 0.4, 0.1, gen(4))
    changed = (out != x).flatten(1).any(1)
    assert 0.75 < changed.float().mean().item() < 0.85
    assert out.min() >= 0 and out.max() <= 1
    # p=1 touches every sample
    assert (A.color_jitter(x, 1.0, 0.4, 0.4, 0.4, 0.1, gen(4)) != x).flatten(1).any(1).all()


def test_color_jitter_vs_torchvision_in_documented_order():
    # p=1 draws no mask; factors are drawn brightness, contrast, saturation, hue, one per sample
    b, strength, hue = 6, 0.4, 0.1
    x = rand_images(b, 8, 8, seed=3)
    out = A.color_jitter(x, 1.0, strength, strength, strength, hue, generator=gen(21))
    g = gen(21)
    f_b, f_c, f_s = ((1 - strength) + (2 * strength) * torch.rand(b, generator=g) for _ in range(3))
    f_h = -hue + (2 * hue) * torch.rand(b, generator=g)
    for i in range(b):
        img = TF.adjust_brightness(x[i], f_b[i].item())
        img = TF.adjust_contrast(img, f_c[i].item())
        img = TF.adjust_saturation(img, f_s[i].item())
        img = TF.adjust_hue(img, f_h[i].item())
        torch.testing.assert_close(out[i], img, atol=1e-3, rtol=0)


# ---------------------------------------------------------------------------------------------
# blur
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [3, 5, 7])
def test_gaussian_blur_vs_torchvision(k):
    sigmas = [0.1, 0.5, 1.0, 1.7, 2.0, 3.0]
    x = rand_images(len(sigmas), 20, 24, seed=7)
    out = A._gaussian_blur(x, torch.tensor(sigmas), k)
    for i, s in enumerate(sigmas):
        torch.testing.assert_close(out[i], TF.gaussian_blur(x[i], [k, k], [s, s]), atol=1e-4, rtol=0)


def test_random_gaussian_blur():
    x = rand_images(200, 32, 32)
    assert torch.equal(A.random_gaussian_blur(x, 0.0, generator=gen()), x)
    out = A.random_gaussian_blur(x, 0.5, generator=gen(2))
    changed = (out != x).flatten(1).any(1)
    assert 0.4 < changed.float().mean().item() < 0.6
    # blurring reduces pixel variance
    assert (out[changed].flatten(1).var(1) < x[changed].flatten(1).var(1)).all()
    const = torch.full((4, 3, 32, 32), 0.3)
    torch.testing.assert_close(A.random_gaussian_blur(const, 1.0, generator=gen()), const, atol=1e-6, rtol=0)
    assert A._blur_kernel_size(64, 64, 0.1) == 7
    assert A._blur_kernel_size(16, 16, 0.1) == 3


# ---------------------------------------------------------------------------------------------
# center crop
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("hw, size, frac", [((40, 60), 32, 1.0), ((64, 48), 32, 0.875), ((32, 32), 32, 1.0), ((50, 50), 24, 0.8)])
def test_center_crop_vs_torchvision(hw, size, frac):
    x = rand_images(3, *hw)
    out = A.center_crop(x, size, frac)
    assert out.shape == (3, 3, size, size) and out.dtype == torch.float32
    ref = TF.center_crop(TF.resize(x, round(size / frac), antialias=True), [size, size])
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


def test_center_crop_constant_and_identity():
    const = torch.full((2, 3, 50, 70), 0.42)
    out = A.center_crop(const, 32, 0.875)
    assert out.shape == (2, 3, 32, 32)
    torch.testing.assert_close(out, torch.full_like(out, 0.42), atol=1e-6, rtol=0)
    x = rand_images(2, 32, 32)
    assert torch.equal(A.center_crop(x, 32), x)


# ---------------------------------------------------------------------------------------------
# pipeline
# ---------------------------------------------------------------------------------------------

LO = torch.tensor([(0 - m) / s for m, s in zip(A.IMAGENET_MEAN, A.IMAGENET_STD)]).view(1, 3, 1, 1)
HI = torch.tensor([(1 - m) / s for m, s in zip(A.IMAGENET_MEAN, A.IMAGENET_STD)]).view(1, 3, 1, 1)
SPEC = AugmentSpec(blur=0.5)


@pytest.mark.parametrize("mode", ["crop", "classic", "eval"])
def test_batch_augment_shape_dtype_range(mode):
    aug = A.BatchAugment(24, mode, spec=SPEC, min_crop=0.3)
    x = rand_uint8(6, 40, 48)
    out = aug(x, gen(0))
    assert out.shape == (6, 3, 24, 24) and out.dtype == torch.float32
    assert (out >= LO - 1e-5).all() and (out <= HI + 1e-5).all()
    # uint8 and the equivalent float input give the same result
    torch.testing.assert_close(out, aug(A.to_float(x), gen(0)), atol=1e-6, rtol=0)
    assert x.dtype == torch.uint8  # input untouched


@pytest.mark.parametrize("mode", ["crop", "classic"])
def test_batch_augment_determinism_and_global_rng(mode):
    aug = A.BatchAugment(16, mode, spec=SPEC)
    x = rand_uint8(16, 32, 32)
    state = torch.get_rng_state()
    a = aug(x, gen(123))
    b = aug(x, gen(123))
    assert torch.equal(torch.get_rng_state(), state)  # explicit generator leaves the global RNG alone
    assert torch.equal(a, b)
    assert not torch.equal(a, aug(x, gen(124)))
    # generator=None draws from torch's global RNG (so manual_seed makes it reproducible)
    torch.manual_seed(7)
    c = aug(x)
    torch.manual_seed(7)
    assert torch.equal(c, aug(x))


def test_batch_augment_eval_is_deterministic_and_validates():
    aug = A.BatchAugment(16, "eval")
    x = rand_uint8(2, 20, 20)
    assert torch.equal(aug(x), aug(x))
    with pytest.raises(ValueError):
        A.BatchAugment(16, "bogus")
    with pytest.raises(ValueError):
        aug(torch.zeros(3, 20, 20, dtype=torch.uint8))


def test_classic_with_all_probabilities_zero_is_a_resized_crop():
    spec = AugmentSpec(flip=0, jitter=0, grayscale=0, blur=0, min_crop=0.5)
    x = rand_uint8(8, 32, 32)
    out = A.BatchAugment(16, "classic", spec=spec)(x, gen(9))
    ref = A.normalize(A.random_resized_crop(x, 16, scale=(0.5, 1.0), generator=gen(9)))
    assert torch.equal(out, ref)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_same_parameters_on_cuda():
    aug = A.BatchAugment(16, "classic", spec=SPEC)
    x = rand_uint8(16, 32, 32)
    cpu = aug(x, gen(11))
    gpu = aug(x.cuda(), gen(11))
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-3, rtol=0)
