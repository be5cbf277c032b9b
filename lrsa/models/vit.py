"""A small vision transformer for the embedded 8 x 8 digits, built from torch's own
``nn.TransformerEncoderLayer`` (so ``nn.MultiheadAttention``), as users' transformers are."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["TinyViT", "tiny_vit"]


class TinyViT(nn.Module):
    """Patches -> Linear embedding + learned positions -> ``depth`` pre-norm encoder layers
    (``heads`` heads, MLP of width ``mlp``, GELU) -> LayerNorm -> mean over tokens ->
    Linear ``num_classes``.

    Input (B, C, S, S) with S a multiple of ``patch``: (S / patch)^2 tokens of
    ``patch^2 C`` features.
    """

    def __init__(self, num_classes=10, in_channels=1, image_size=8, patch=2, dim=64, depth=2,
                 heads=4, mlp=128):
        super().__init__()
        if image_size % patch:
            raise ValueError(f"image_size={image_size} must be a multiple of patch={patch}")
        self.arch = "tiny_vit"
        self.patch = patch
        tokens = (image_size // patch) ** 2
        self.embed = nn.Linear(patch * patch * in_channels, dim)
        self.position = nn.Parameter(0.02 * torch.randn(1, tokens, dim))
        layer = nn.TransformerEncoderLayer(dim, heads, mlp, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def tokens(self, x):
        """(B, C, S, S) images -> (B, tokens, patch^2 C) patches, row by row."""
        B, C, H, W = x.shape
        p = self.patch
        if H % p or W % p:
            raise ValueError(f"input of {H} x {W} pixels is not a whole number of "
                             f"{p} x {p} patches")
        x = x.reshape(B, C, H // p, p, W // p, p).permute(0, 2, 4, 1, 3, 5)
        return x.reshape(B, (H // p) * (W // p), C * p * p)

    def forward(self, x):
        h = self.embed(self.tokens(x)) + self.position
        return self.head(self.norm(self.encoder(h)).mean(1))


def tiny_vit(num_classes: int = 10, in_channels: int = 1, image_size: int = 8, patch: int = 2,
             dim: int = 64, depth: int = 2, heads: int = 4, mlp: int = 128) -> TinyViT:
    """A small ViT (about 70k parameters at the defaults) for
    :func:`lrsa.data.load_digits_images`: 16 tokens of 2 x 2 pixels, two encoder layers of
    width 64. Returns :class:`TinyViT`."""
    return TinyViT(num_classes, in_channels, image_size, patch, dim, depth, heads, mlp)
