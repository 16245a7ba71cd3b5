import torch

from trainables.augment import AugmentSpec, augment_batch


def test_augmentation_is_seeded_and_changes_images():
    x = torch.randn(8, 3, 16, 16)
    a = augment_batch(x, torch.Generator().manual_seed(1))
    b = augment_batch(x, torch.Generator().manual_seed(1))
    assert a.shape == x.shape and torch.equal(a, b)
    assert (a - x).abs().mean() > 0.1


def test_flip_only_mirrors_some_images_exactly():
    x = torch.randn(64, 1, 8, 8)
    spec = AugmentSpec(rotation_deg=0, shift=0, shear=0, zoom=0, hflip=True)
    y = augment_batch(x, torch.Generator().manual_seed(0), spec)
    mirrored = [torch.allclose(y[i], x[i].flip(-1), atol=1e-5) for i in range(64)]
    same = [torch.allclose(y[i], x[i], atol=1e-5) for i in range(64)]
    assert all(m or s for m, s in zip(mirrored, same, strict=True))
    assert 16 < sum(mirrored) < 48
