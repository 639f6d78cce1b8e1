"""PE-Core (Meta's Perception Encoder, CLIP-style), in plain PyTorch.

Facts from facebookresearch/perception_models and timm/open_clip's PE-Core
configs, written anew here (timm and open_clip need torchvision, which we
cannot load):

- Vision: 14 px patches (conv, no bias), a class token, learned absolute
  position embeddings, a LayerNorm before the blocks, 2D rotary position
  embeddings in every attention layer (each head's dims split between x and
  y; the class token sits at position 0, patches start at 1), pre-norm
  blocks (optionally with layer scale), a LayerNorm after, attention pooling
  (one learned probe, 8 heads, then an MLP with a residual), a projection.
- Text: CLIP's causal text transformer; the feature of the end-of-text token
  (the highest token id) is projected.
- Preprocessing: squash-resize to the square input size (bilinear), RGB,
  mean = std = 0.5. Text context: 32 tokens for L14-336.

Architecture, weight loading (key mapping, strict checks) and preprocessing
are separate: `PECoreModel`, `load_official_state_dict`, `perception_models.preprocess`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class VisionConfig:
    image_size: int = 336
    patch_size: int = 14
    width: int = 1024
    layers: int = 24
    heads: int = 16
    mlp_ratio: float = 4.0
    output_dim: int = 1024
    pool_heads: int = 8
    layer_scale: float | None = None  # initial gamma; None: no layer scale


@dataclass(frozen=True)
class TextConfig:
    context_length: int = 32
    vocab_size: int = 49408
    width: int = 1024
    heads: int = 16
    layers: int = 24
    mlp_ratio: float = 4.0
    output_dim: int = 1024
    layer_scale: float | None = None


@dataclass(frozen=True)
class PECoreConfig:
    vision: VisionConfig = field(default_factory=VisionConfig)
    text: TextConfig = field(default_factory=TextConfig)


PE_CORE_L14_336 = PECoreConfig()


# ---------------------------------------------------------------- rotary position embedding


def rope_2d_angles(grid_h: int, grid_w: int, head_dim: int, device=None) -> torch.Tensor:
    """Rotation angles for a class token followed by a grid_h x grid_w patch grid.

    Half of each head's dims rotate with the column (x), half with the row (y);
    within each half, dims pair up as (0, 1), (2, 3), ... with the usual
    1 / 10000^(2i / d) frequencies. Returns (1 + grid_h * grid_w, head_dim).
    """
    axis_dim = head_dim // 2
    inv_freq = 1.0 / (10000 ** (torch.arange(0, axis_dim, 2, device=device).float() / axis_dim))
    rows = torch.arange(grid_h, device=device).float() + 1  # 0 is the class token's
    cols = torch.arange(grid_w, device=device).float() + 1
    angle_y = (rows[:, None] * inv_freq).repeat_interleave(2, dim=-1)  # (h, axis_dim)
    angle_x = (cols[:, None] * inv_freq).repeat_interleave(2, dim=-1)  # (w, axis_dim)
    grid = torch.cat(
        [angle_x[None, :, :].expand(grid_h, -1, -1), angle_y[:, None, :].expand(-1, grid_w, -1)],
        dim=-1,
    ).reshape(grid_h * grid_w, head_dim)
    return torch.cat([torch.zeros(1, head_dim, device=device), grid], dim=0)


def apply_rope(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Rotate pairs of dims of x (batch, heads, seq, head_dim), in float32."""
    x32 = x.float()
    pairs = x32.unflatten(-1, (-1, 2))
    rotated = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
    return (x32 * angles.cos() + rotated * angles.sin()).to(x.dtype)


# ---------------------------------------------------------------- building blocks


class Attention(nn.Module):
    """Multi-head self-attention with one fused qkv projection, through SDPA."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)

    def forward(self, x, *, angles=None, causal: bool = False):
        batch, seq, width = x.shape
        # (batch, seq, 3 * width) -> 3 x (batch, heads, seq, head_dim)
        q, k, v = self.qkv(x).view(batch, seq, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        if angles is not None:
            q, k = apply_rope(q, angles), apply_rope(k, angles)
        x = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        return self.out(x.transpose(1, 2).reshape(batch, seq, width))


class MLP(nn.Module):
    def __init__(self, width: int, ratio: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, int(width * ratio))
        self.fc2 = nn.Linear(int(width * ratio), width)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class LayerScale(nn.Module):
    def __init__(self, width: int, init: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((width,), init))

    def forward(self, x):
        return x * self.gamma


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, layer_scale: float | None):
        super().__init__()
        self.norm1 = nn.LayerNorm(width, eps=1e-5)
        self.attention = Attention(width, heads)
        self.norm2 = nn.LayerNorm(width, eps=1e-5)
        self.mlp = MLP(width, mlp_ratio)
        scale = (lambda: LayerScale(width, layer_scale)) if layer_scale else nn.Identity
        self.layer_scale1, self.layer_scale2 = scale(), scale()

    def forward(self, x, *, angles=None, causal: bool = False):
        x = x + self.layer_scale1(self.attention(self.norm1(x), angles=angles, causal=causal))
        return x + self.layer_scale2(self.mlp(self.norm2(x)))


class AttentionPool(nn.Module):
    """One learned probe attends over all tokens; then an MLP with a residual."""

    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.heads = heads
        self.probe = nn.Parameter(torch.zeros(1, 1, width))
        self.attention = Attention(width, heads)
        self.norm = nn.LayerNorm(width, eps=1e-5)
        self.mlp = MLP(width, mlp_ratio)

    def forward(self, x):
        batch, seq, width = x.shape
        w_q, w_kv = self.attention.qkv.weight.split([width, 2 * width])
        b_q, b_kv = self.attention.qkv.bias.split([width, 2 * width])
        q = F.linear(self.probe.expand(batch, -1, -1).to(x.dtype), w_q, b_q)
        k, v = F.linear(x, w_kv, b_kv).view(batch, seq, 2, self.heads, -1).permute(2, 0, 3, 1, 4)
        q = q.view(batch, 1, self.heads, -1).transpose(1, 2)  # (batch, heads, 1, head_dim)
        pooled = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(batch, 1, width)
        pooled = self.attention.out(pooled)
        return (pooled + self.mlp(self.norm(pooled))).squeeze(1)


# ---------------------------------------------------------------- towers


class VisionTower(nn.Module):
    def __init__(self, config: VisionConfig) -> None:
        super().__init__()
        self.config = config
        width = config.width
        self.grid = config.image_size // config.patch_size
        self.patch_embed = nn.Conv2d(3, width, config.patch_size, config.patch_size, bias=False)
        self.class_token = nn.Parameter(torch.zeros(width))
        self.position_embedding = nn.Parameter(torch.zeros(1 + self.grid**2, width))
        self.norm_pre = nn.LayerNorm(width, eps=1e-5)
        self.blocks = nn.ModuleList(
            Block(width, config.heads, config.mlp_ratio, config.layer_scale)
            for _ in range(config.layers)
        )
        self.norm_post = nn.LayerNorm(width, eps=1e-5)
        self.pool = AttentionPool(width, config.pool_heads)
        self.projection = nn.Parameter(torch.zeros(width, config.output_dim))

    def positions(self, grid_h: int, grid_w: int) -> torch.Tensor:
        """Absolute position embeddings, interpolated when the grid differs from training."""
        if (grid_h, grid_w) == (self.grid, self.grid):
            return self.position_embedding
        cls, grid = self.position_embedding[:1], self.position_embedding[1:]
        grid = grid.reshape(1, self.grid, self.grid, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(grid_h, grid_w), mode="bilinear", align_corners=False)
        return torch.cat([cls, grid.permute(0, 2, 3, 1).reshape(grid_h * grid_w, -1)])

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(pixels)  # (batch, width, grid_h, grid_w)
        batch, width, grid_h, grid_w = x.shape
        x = x.flatten(2).transpose(1, 2)  # (batch, patches, width)
        x = torch.cat([self.class_token.expand(batch, 1, -1).to(x.dtype), x], dim=1)
        x = self.norm_pre(x + self.positions(grid_h, grid_w).to(x.dtype))
        angles = rope_2d_angles(grid_h, grid_w, width // self.config.heads, x.device)
        for block in self.blocks:
            x = block(x, angles=angles)
        pooled = self.pool(self.norm_post(x))  # (batch, width)
        return pooled @ self.projection.to(pooled.dtype)


class TextTower(nn.Module):
    def __init__(self, config: TextConfig) -> None:
        super().__init__()
        self.config = config
        self.token_embedding = nn.Embedding(config.vocab_size, config.width)
        self.position_embedding = nn.Parameter(torch.zeros(config.context_length, config.width))
        self.blocks = nn.ModuleList(
            Block(config.width, config.heads, config.mlp_ratio, config.layer_scale)
            for _ in range(config.layers)
        )
        self.norm_final = nn.LayerNorm(config.width, eps=1e-5)
        self.projection = nn.Parameter(torch.zeros(config.width, config.output_dim))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.token_embedding(tokens) + self.position_embedding[: tokens.shape[1]]
        for block in self.blocks:
            x = block(x, causal=True)
        x = self.norm_final(x)
        # The end-of-text token has the highest id: its feature stands for the text.
        pooled = x[torch.arange(x.shape[0], device=x.device), tokens.argmax(dim=-1)]
        return pooled @ self.projection.to(pooled.dtype)


class PECoreModel(nn.Module):
    def __init__(self, config: PECoreConfig = PE_CORE_L14_336) -> None:
        super().__init__()
        self.config = config
        self.vision = VisionTower(config.vision)
        self.text = TextTower(config.text)
        self.logit_scale = nn.Parameter(torch.tensor(4.6052))

    def init_random(self, seed: int = 0) -> PECoreModel:
        """Random weights at CLIP-like scales (for tests and benchmarks)."""
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, parameter in self.named_parameters():
                if name.endswith(".gamma"):
                    continue
                if "norm" in name:
                    parameter.fill_(1.0 if name.endswith("weight") else 0.0)
                elif name.endswith("bias"):
                    parameter.normal_(0, 0.02, generator=generator)
                else:
                    fan_in = parameter.shape[-1] if parameter.ndim > 1 else parameter.numel()
                    parameter.normal_(0, fan_in**-0.5, generator=generator)
        return self


# ---------------------------------------------------------------- the official checkpoint layout

# Official (facebookresearch/perception_models CLIP) names -> ours, applied in order.
_RENAMES = [
    (r"^visual\.conv1\.", "vision.patch_embed."),
    (r"^visual\.class_embedding$", "vision.class_token"),
    (r"^visual\.positional_embedding$", "vision.position_embedding"),
    (r"^visual\.ln_pre\.", "vision.norm_pre."),
    (r"^visual\.ln_post\.", "vision.norm_post."),
    (r"^visual\.proj$", "vision.projection"),
    (r"^visual\.attn_pool\.probe$", "vision.pool.probe"),
    (r"^visual\.attn_pool\.layernorm\.", "vision.pool.norm."),
    (r"^visual\.attn_pool\.mlp\.", "vision.pool.mlp."),
    (r"^visual\.attn_pool\.attn\.", "vision.pool.attn."),
    (r"^visual\.transformer\.resblocks\.", "vision.blocks."),
    (r"^transformer\.resblocks\.", "text.blocks."),
    (r"^token_embedding\.", "text.token_embedding."),
    (r"^positional_embedding$", "text.position_embedding"),
    (r"^ln_final\.", "text.norm_final."),
    (r"^text_projection$", "text.projection"),
    (r"^logit_scale$", "logit_scale"),
    # inside blocks and the pool
    (r"\.ln_1\.", ".norm1."),
    (r"\.ln_2\.", ".norm2."),
    (r"\.ls_1\.gamma$", ".layer_scale1.gamma"),
    (r"\.ls_2\.gamma$", ".layer_scale2.gamma"),
    (r"\.attn\.in_proj_weight$", ".attention.qkv.weight"),
    (r"\.attn\.in_proj_bias$", ".attention.qkv.bias"),
    (r"\.attn\.out_proj\.", ".attention.out."),
    (r"\.mlp\.c_fc\.", ".mlp.fc1."),
    (r"\.mlp\.c_proj\.", ".mlp.fc2."),
]
_KNOWN_PREFIXES = ("vision.", "text.", "logit_scale")


class CheckpointError(ValueError):
    """A checkpoint that does not fit the architecture; says which keys and why."""


def official_to_ours(name: str) -> str:
    for pattern, replacement in _RENAMES:
        name = re.sub(pattern, replacement, name)
    return name


def ours_to_official(name: str) -> str:
    """The inverse mapping (to write a checkpoint in the official layout)."""
    inverse = [
        (r"\.attention\.qkv\.weight$", ".attn.in_proj_weight"),
        (r"\.attention\.qkv\.bias$", ".attn.in_proj_bias"),
        (r"\.attention\.out\.", ".attn.out_proj."),
        (r"\.norm1\.", ".ln_1."),
        (r"\.norm2\.", ".ln_2."),
        (r"\.layer_scale1\.gamma$", ".ls_1.gamma"),
        (r"\.layer_scale2\.gamma$", ".ls_2.gamma"),
        (r"\.mlp\.fc1\.", ".mlp.c_fc."),
        (r"\.mlp\.fc2\.", ".mlp.c_proj."),
        (r"^vision\.pool\.probe$", "visual.attn_pool.probe"),
        (r"^vision\.pool\.norm\.", "visual.attn_pool.layernorm."),
        (r"^vision\.pool\.attn\.", "visual.attn_pool.attn."),
        (r"^vision\.pool\.mlp\.", "visual.attn_pool.mlp."),
        (r"^vision\.patch_embed\.", "visual.conv1."),
        (r"^vision\.class_token$", "visual.class_embedding"),
        (r"^vision\.position_embedding$", "visual.positional_embedding"),
        (r"^vision\.norm_pre\.", "visual.ln_pre."),
        (r"^vision\.norm_post\.", "visual.ln_post."),
        (r"^vision\.projection$", "visual.proj"),
        (r"^vision\.blocks\.", "visual.transformer.resblocks."),
        (r"^text\.blocks\.", "transformer.resblocks."),
        (r"^text\.token_embedding\.", "token_embedding."),
        (r"^text\.position_embedding$", "positional_embedding"),
        (r"^text\.norm_final\.", "ln_final."),
        (r"^text\.projection$", "text_projection"),
    ]
    for pattern, replacement in inverse:
        name = re.sub(pattern, replacement, name)
    return name


def load_official_state_dict(model: PECoreModel, state_dict: dict[str, torch.Tensor]) -> None:
    """Load a checkpoint in the official layout; any missing or unexpected key fails."""
    for wrapper in ("state_dict", "weights", "model"):
        if isinstance(state_dict.get(wrapper), dict):
            state_dict = state_dict[wrapper]
    mapped = {}
    for key, tensor in state_dict.items():
        name = official_to_ours(key.removeprefix("module."))
        if not name.startswith(_KNOWN_PREFIXES):
            raise CheckpointError(f"unexpected key in checkpoint: {key}")
        mapped[name] = tensor
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(mapped)), sorted(set(mapped) - expected)
    if missing or unexpected:
        raise CheckpointError(
            "checkpoint does not match PE-Core: "
            + (f"missing {', '.join(missing[:5])}" if missing else "")
            + ("; " if missing and unexpected else "")
            + (f"unexpected {', '.join(unexpected[:5])}" if unexpected else "")
            + (
                f" (+{len(missing) + len(unexpected) - 10} more)"
                if len(missing) + len(unexpected) > 10
                else ""
            )
        )
    for name, tensor in mapped.items():
        target = model.state_dict()[name]
        if tensor.shape != target.shape:
            raise CheckpointError(
                f"{name}: shape {tuple(tensor.shape)}, expected {tuple(target.shape)}"
            )
    model.load_state_dict(mapped, strict=True)


def from_official_state_dict(
    state_dict: dict[str, torch.Tensor], config: PECoreConfig = PE_CORE_L14_336
) -> PECoreModel:
    """A model holding a checkpoint's weights (in float32), built without first filling
    its 430M parameters with an initialisation the checkpoint replaces."""
    with torch.device("meta"):
        model = PECoreModel(config)
    model.to_empty(device="cpu")  # no buffers: every tensor is a parameter loaded below
    load_official_state_dict(model, state_dict)
    return model


def official_state_dict(model: PECoreModel) -> dict[str, torch.Tensor]:
    """The model's weights under the official names (the inverse of loading)."""
    return {ours_to_official(name): tensor for name, tensor in model.state_dict().items()}
