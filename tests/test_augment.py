"""Tests of helpers.xray.augment.GpuAugment: per-image transforms, reproducibility, geometry only, frozen
settings."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torchvision.transforms.functional as TF
from torchvision.transforms import InterpolationMode

from helpers.xray.augment import AffineParams, GpuAugment, affine_theta


def _params(angle=0.0, shift_x=0.0, shift_y=0.0, scale=1.0, flip=0.0) -> AffineParams:
    def t(v):
        return torch.tensor([float(v)])

    return AffineParams(t(angle), t(shift_x), t(shift_y), t(scale), t(flip))


def test_every_image_of_the_batch_gets_its_own_transform():
    torch.manual_seed(0)
    image = torch.rand(1, 1, 24, 24)
    batch = image.expand(6, 1, 24, 24).contiguous()
    out = GpuAugment(rotation=20.0)(batch, torch.Generator().manual_seed(0))
    assert out.shape == batch.shape and out.dtype == batch.dtype
    for i in range(6):
        for j in range(i + 1, 6):
            assert (out[i] - out[j]).abs().max() > 1e-2, (i, j)


def test_identity_parameters_and_a_zero_range_augment_leave_images_unchanged():
    torch.manual_seed(0)
    x = torch.rand(4, 2, 16, 20)
    augment = GpuAugment()
    torch.testing.assert_close(augment.apply(x, AffineParams.identity(4)), x, rtol=0, atol=1e-5)
    still = GpuAugment(rotation=0.0, translate=0.0, scale=(1.0, 1.0))
    torch.testing.assert_close(still(x, torch.Generator().manual_seed(3)), x, rtol=0, atol=1e-5)


def test_same_seed_same_output_other_seed_other_output():
    x = torch.rand(5, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    augment = GpuAugment(hflip=True)
    a = augment(x, torch.Generator().manual_seed(7))
    b = augment(x, torch.Generator().manual_seed(7))
    c = augment(x, torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


@pytest.mark.parametrize(
    ("angle", "shift_x", "shift_y", "scale"),
    [(12.0, 0.0, 0.0, 1.0), (0.0, 0.125, -0.25, 1.0), (0.0, 0.0, 0.0, 1.2), (-20.0, 0.125, 0.25, 0.9)],
)
def test_matches_torchvision_affine_on_a_non_square_image(angle, shift_x, shift_y, scale):
    # Known answer: torchvision's functional affine (rotate counter-clockwise by `angle` = affine(-angle)).
    x = torch.rand(1, 1, 32, 48, generator=torch.Generator().manual_seed(2))
    ours = GpuAugment().apply(x, _params(angle, shift_x, shift_y, scale))
    reference = TF.affine(
        x,
        angle=-angle,
        translate=[shift_x * 48, shift_y * 32],
        scale=scale,
        shear=[0.0, 0.0],
        interpolation=InterpolationMode.BILINEAR,
    )
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-4)


def test_flip_mirrors_the_input_before_the_other_transforms():
    x = torch.rand(1, 1, 20, 30, generator=torch.Generator().manual_seed(4))
    ours = GpuAugment().apply(x, _params(angle=8.0, shift_x=0.1, flip=1.0))
    reference = TF.affine(
        TF.hflip(x),
        angle=-8.0,
        translate=[3.0, 0.0],
        scale=1.0,
        shear=[0.0, 0.0],
        interpolation=InterpolationMode.BILINEAR,
    )
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-4)


def test_never_flips_vertically_and_flips_horizontally_only_when_asked():
    g = torch.Generator().manual_seed(0)
    no_flip = GpuAugment(rotation=10.0).sample(500, g)
    assert torch.equal(no_flip.flip, torch.zeros(500))
    flips = GpuAugment(rotation=10.0, hflip=True).sample(500, g)
    assert 200 < int(flips.flip.sum()) < 300
    theta = affine_theta(flips, 64, 64)
    assert (theta[:, 1, 1] > 0).all()  # the y axis keeps its direction: no upside-down films
    assert torch.equal(theta[:, 0, 0] < 0, flips.flip.bool())


def test_sampled_parameters_stay_in_their_ranges():
    p = GpuAugment(rotation=15.0, translate=0.05, scale=(0.8, 1.25)).sample(
        2000, torch.Generator().manual_seed(0)
    )
    assert p.angle_deg.abs().max() <= 15.0 and p.angle_deg.abs().max() > 14.0
    assert p.shift_x.abs().max() <= 0.05 and p.shift_y.abs().max() <= 0.05
    assert p.scale.min() >= 0.8 and p.scale.max() <= 1.25


def test_geometry_only_intensities_are_not_changed():
    g = torch.Generator().manual_seed(0)
    constant = torch.full((3, 1, 16, 16), 0.7)
    torch.testing.assert_close(GpuAugment(padding_mode="border")(constant, g), constant)
    x = torch.rand(8, 1, 16, 16, generator=g) * 0.5 + 0.25  # values in [0.25, 0.75]
    out = GpuAugment(rotation=30.0)(x, g)
    assert out.max() <= x.max() + 1e-6  # bilinear interpolation never leaves the input's range ...
    assert out.min() >= 0.0  # ... except for the black (zero) border that comes into view
    assert (out == 0).any()


def test_channels_of_one_image_get_the_same_transform():
    one = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(5))
    three = one.repeat(1, 3, 1, 1)
    out = GpuAugment(rotation=25.0)(three, torch.Generator().manual_seed(9))
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 0], out[:, 2])


def test_bad_input_gives_clear_errors():
    augment = GpuAugment()
    with pytest.raises(
        ValueError, match=r"expects a float B x C x H x W batch, got torch.uint8 \(2, 1, 8, 8\)"
    ):
        augment(torch.zeros(2, 1, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"expects a B x C x H x W batch, got shape \(8, 8\)"):
        augment(torch.zeros(8, 8))
    with pytest.raises(ValueError, match="parameters are for 1 images, the batch has 2"):
        augment.apply(torch.zeros(2, 1, 8, 8), AffineParams.identity(1))
    with pytest.raises(ValueError, match=r"scale must be \(low, high\)"):
        GpuAugment(scale=(1.1, 0.9))
    with pytest.raises(ValueError, match="padding_mode"):
        GpuAugment(padding_mode="constant")


def test_replace_changes_only_the_named_settings():
    augment = GpuAugment(rotation=7.0, translate=0.2, scale=(0.8, 1.2), hflip=True)
    bordered = augment.replace(padding_mode="border")
    assert bordered is not augment and augment.padding_mode == "zeros"
    assert (bordered.rotation, bordered.translate, bordered.scale, bordered.hflip) == (
        7.0,
        0.2,
        (0.8, 1.2),
        True,
    )
    assert bordered.padding_mode == "border"
    with pytest.raises(ValueError, match="no setting"):
        augment.replace(degrees=5)
    with pytest.raises(ValueError, match="padding_mode"):
        augment.replace(padding_mode="constant")


def test_settings_are_frozen_plain_values_that_compare_equal():
    augment = GpuAugment(rotation=5, translate=0, scale=[1, 1.2], hflip=1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        augment.rotation = 30.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        augment.padding_mode = "border"
    assert augment.rotation == 5.0 and augment.padding_mode == "zeros"  # unchanged
    settings = dataclasses.asdict(augment)
    assert settings == {
        "rotation": 5.0,
        "translate": 0.0,
        "scale": (1.0, 1.2),
        "hflip": True,
        "padding_mode": "zeros",
    }
    assert [type(settings[k]) for k in ("rotation", "translate", "scale", "hflip")] == [
        float,
        float,
        tuple,
        bool,
    ]
    # The same settings written another way are the same augmentation (what a resumed training run compares).
    assert augment == GpuAugment(rotation=5.0, translate=0.0, scale=(1.0, 1.2), hflip=True)
    assert hash(augment) == hash(GpuAugment(rotation=5.0, translate=0.0, scale=(1.0, 1.2), hflip=True))
    assert augment != augment.replace(padding_mode="border")
    assert GpuAugment() == GpuAugment(10.0, 0.1, (0.9, 1.1), False, "zeros")  # the documented defaults
    with pytest.raises(ValueError, match=r"GpuAugment has no setting\(s\) \['degrees', 'p'\]"):
        augment.replace(degrees=5, p=0.5)
    with pytest.raises(ValueError, match="need rotation >= 0"):
        augment.replace(rotation=-1.0)
