"""IP-Adapter "plus" with Fooocus's attention: image tokens joined to the text keys, one softmax.

diffusers' IP-Adapter attention is the decoupled `text_attn + scale * ip_attn`; Fooocus instead
concatenates the (weighted) image keys and values after the text ones (image-prompts.md §2.1):

    w    = cn_weight * C / 1280            C: that attn2 layer's channel width
    k_ip = k_ip * w
    v_ip = (v_ip - mean_tokens(v_ip)) + mean_tokens(v_ip) * w

Cond rows get the image's tokens, uncond rows Fooocus's negative tokens (`fooocus_ip_negative`,
already in the cross-attention space), and every active image prompt's tokens are concatenated.
Weight 0 is therefore not a no-op: its tokens still take softmax mass.

Pieces:
- `Resampler`: the IP-Adapter-plus perceiver (CLIP hidden states -> 16 cross-attention tokens),
  written from the checkpoint's key layout; its dims are read from the tensor shapes.
- `load_ip_adapter`: the `.bin` (`{"image_proj", "ip_adapter"}`) checked against a UNet's attn2
  layers, in `unet.attn_processors` order (down, up, mid; file keys 1, 3, 5, ...), as diffusers'
  own loader numbers them.
- `IPAdapter.tokens`: one task's image -> per-layer keys and values, computed once.
- `IPAttention`: our processor on every attn2 layer; plain attention (the layer's previous
  processor, bit for bit) except inside `active(...)`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import torch
import torch.nn.functional as F
from torch import Tensor, nn

IP_HEAD_DIM: Final = 64  # the Resampler's attention heads are 64 wide (heads = to_q rows / 64)
CHANNEL_PENALTY_WIDTH: Final = 1280  # Fooocus: w = weight * C / 1280
NEGATIVE_KEY: Final = "data"
_ATTENTION_ATTR: Final = "_fooocus_ip_attention"  # the installed IPAttention, kept on its UNet


# -- the Resampler ---------------------------------------------------------------------------------
class PerceiverAttention(nn.Module):
    """Latent queries attending to [image features; latents] (keys: norm1, norm2, to_q, to_kv, to_out)."""

    def __init__(self, dim: int, heads: int, dim_head: int = IP_HEAD_DIM) -> None:
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, inner * 2, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def forward(self, features: Tensor, latents: Tensor) -> Tensor:
        features = self.norm1(features)
        latents = self.norm2(latents)
        q = self.to_q(latents)
        k, v = self.to_kv(torch.cat([features, latents], dim=-2)).chunk(2, dim=-1)
        b = latents.shape[0]
        q, k, v = (t.view(b, -1, self.heads, t.shape[-1] // self.heads).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v)
        return self.to_out(out.transpose(1, 2).reshape(b, -1, q.shape[1] * q.shape[-1]))


def feed_forward(dim: int, inner: int) -> nn.Sequential:
    """LayerNorm, Linear, GELU, Linear (keys 0, 1, 3), no biases on the Linears."""
    return nn.Sequential(
        nn.LayerNorm(dim), nn.Linear(dim, inner, bias=False), nn.GELU(), nn.Linear(inner, dim, bias=False)
    )


@dataclass(frozen=True)
class ResamplerDims:
    embed: int  # input: the CLIP hidden width
    dim: int
    output: int  # the UNet's cross-attention width
    depth: int
    heads: int
    queries: int
    ff_inner: int

    @classmethod
    def of(cls, state: dict[str, Tensor]) -> ResamplerDims:
        """Read from an `image_proj` state dict; ValueError naming a missing key."""
        needed = ("latents", "proj_in.weight", "proj_out.weight", "layers.0.0.to_q.weight", "layers.0.1.1.weight")
        missing = [key for key in needed if key not in state]
        if missing:
            raise ValueError(f"not an IP-Adapter plus image_proj: missing {missing}")
        _, queries, dim = state["latents"].shape
        return cls(
            embed=state["proj_in.weight"].shape[1],
            dim=dim,
            output=state["proj_out.weight"].shape[0],
            depth=1 + max(int(key.split(".")[1]) for key in state if key.startswith("layers.")),
            heads=state["layers.0.0.to_q.weight"].shape[0] // IP_HEAD_DIM,
            queries=queries,
            ff_inner=state["layers.0.1.1.weight"].shape[0],
        )


class Resampler(nn.Module):
    """IP-Adapter plus's perceiver: [B, N, embed] CLIP hidden states -> [B, queries, output] tokens."""

    def __init__(self, dims: ResamplerDims) -> None:
        super().__init__()
        self.dims = dims
        self.latents = nn.Parameter(torch.randn(1, dims.queries, dims.dim) / dims.dim**0.5)
        self.proj_in = nn.Linear(dims.embed, dims.dim)
        self.proj_out = nn.Linear(dims.dim, dims.output)
        self.norm_out = nn.LayerNorm(dims.output)
        self.layers = nn.ModuleList(
            nn.ModuleList([PerceiverAttention(dims.dim, dims.heads), feed_forward(dims.dim, dims.ff_inner)])
            for _ in range(dims.depth)
        )

    def forward(self, features: Tensor) -> Tensor:
        latents = self.latents.expand(features.shape[0], -1, -1)
        features = self.proj_in(features)
        for attention, ff in self.layers:  # type: ignore[misc]
            latents = attention(features, latents) + latents
            latents = ff(latents) + latents
        return self.norm_out(self.proj_out(latents))

    @classmethod
    def from_state_dict(cls, state: dict[str, Tensor]) -> Resampler:
        with torch.device("meta"):
            model = cls(ResamplerDims.of(state))
        missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
        if missing or unexpected:
            raise ValueError(f"IP-Adapter image_proj does not match its Resampler: missing {missing[:6]}, "
                             f"unexpected {unexpected[:6]}")  # fmt: skip
        return model


# -- the adapter -----------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class LayerKV:
    """One attn2 layer's image keys and values [1, tokens, C], before the weight formula."""

    cond_k: Tensor
    cond_v: Tensor
    uncond_k: Tensor
    uncond_v: Tensor


@dataclass(frozen=True, eq=False)
class IPTokens:
    """One image prompt of one task: its weight, its stop and its per-layer keys and values (attn2 order)."""

    weight: float
    stop: float
    layers: tuple[LayerKV, ...]


def cross_attention_layers(unet: Any) -> list[tuple[str, Any]]:
    """(name, Attention) of every attn2 layer in `unet.attn_processors` order: diffusers' IP key order."""
    names = [name.removesuffix(".processor") for name in unet.attn_processors if name.endswith("attn2.processor")]
    return [(name, unet.get_submodule(name)) for name in names]


class IPAdapter:
    """A loaded IP-Adapter plus, checked against one UNet's attn2 layers."""

    def __init__(
        self,
        resampler: Resampler,
        to_k: Sequence[Tensor],
        to_v: Sequence[Tensor],
        negative: Tensor,
    ) -> None:
        self.resampler = resampler.eval()
        self.to_k = tuple(to_k)
        self.to_v = tuple(to_v)
        with torch.no_grad():  # the uncond rows' keys and values are the same for every task
            self.uncond = tuple((F.linear(negative, k), F.linear(negative, v)) for k, v in zip(to_k, to_v, strict=True))

    @property
    def layer_count(self) -> int:
        return len(self.to_k)

    def tokens(self, hidden: Tensor, weight: float, stop: float) -> IPTokens:
        """Resampler plus every layer's k/v projection of one image's CLIP hidden states [1, N, embed]."""
        if hidden.ndim != 3 or hidden.shape[0] != 1:
            raise ValueError(f"expected one image's hidden states [1, N, C], got {tuple(hidden.shape)}")
        param = self.resampler.latents
        with torch.no_grad():
            image = self.resampler(hidden.to(device=param.device, dtype=param.dtype))
            layers = tuple(
                LayerKV(F.linear(image, k), F.linear(image, v), uk, uv)
                for k, v, (uk, uv) in zip(self.to_k, self.to_v, self.uncond, strict=True)
            )
        return IPTokens(weight=float(weight), stop=float(stop), layers=layers)


def load_ip_adapter(path: Path, negative_path: Path, unet: Any, device: str, dtype: torch.dtype) -> IPAdapter:
    """The IP-Adapter plus in `path` with Fooocus's negative tokens, for `unet` (ValueError if it does not fit)."""
    image_proj, ip_layers = _read_adapter(Path(path))
    resampler = Resampler.from_state_dict(image_proj).to(device=device, dtype=dtype)
    layers = cross_attention_layers(unet)
    cross = unet.config.cross_attention_dim
    if resampler.dims.output != cross:
        raise ValueError(f"IP-Adapter tokens are {resampler.dims.output} wide, the UNet's cross-attention {cross}")
    count = sum(1 for key in ip_layers if key.endswith(".to_k_ip.weight"))
    if count != len(layers):
        raise ValueError(f"IP-Adapter has {count} attention layers, the UNet {len(layers)}")
    to_k, to_v = [], []
    for index, (name, attn) in enumerate(layers):
        key_id = 2 * index + 1
        pair = []
        for kind in ("to_k_ip", "to_v_ip"):
            key = f"{key_id}.{kind}.weight"
            if key not in ip_layers:
                raise ValueError(f"IP-Adapter is missing {key} (for {name})")
            weight = ip_layers[key]
            if tuple(weight.shape) != (attn.inner_kv_dim, attn.cross_attention_dim):
                raise ValueError(f"IP-Adapter {key} is {tuple(weight.shape)}, {name} needs "
                                 f"{(attn.inner_kv_dim, attn.cross_attention_dim)}")  # fmt: skip
            pair.append(weight.to(device=device, dtype=dtype))
        to_k.append(pair[0])
        to_v.append(pair[1])
    negative = _read_negative(Path(negative_path), cross, resampler.dims.queries)
    return IPAdapter(resampler, to_k, to_v, negative.to(device=device, dtype=dtype))


def _read_adapter(path: Path) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """(image_proj, ip_adapter) state dicts of a `.bin` pickle, or of a `.safetensors` with those prefixes."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        flat = load_file(str(path))
        parts: dict[str, dict[str, Tensor]] = {"image_proj": {}, "ip_adapter": {}}
        for key, value in flat.items():
            head, _, rest = key.partition(".")
            if head in parts:
                parts[head][rest] = value
        data: Any = parts
    else:
        data = torch.load(str(path), map_location="cpu", weights_only=True)
    if not isinstance(data, dict) or not data.get("image_proj") or not data.get("ip_adapter"):
        found = list(data)[:6] if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"not an IP-Adapter file: needs 'image_proj' and 'ip_adapter', found {found}")
    return data["image_proj"], data["ip_adapter"]


def _read_negative(path: Path, cross: int, queries: int) -> Tensor:
    """Fooocus's uncond image tokens [1, queries, cross] (key `data`)."""
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    if NEGATIVE_KEY not in tensors:
        raise ValueError(f"IP negative file lacks the key {NEGATIVE_KEY!r} (has {list(tensors)[:4]})")
    data = tensors[NEGATIVE_KEY]
    if data.shape[-1] != cross or data.numel() != queries * cross:
        raise ValueError(f"IP negative tokens are {tuple(data.shape)}, the adapter needs {queries} x {cross}")
    return data.reshape(1, queries, cross)


# -- attention -------------------------------------------------------------------------------------
def weighted_kv(k: Tensor, v: Tensor, weight: float) -> tuple[Tensor, Tensor]:
    """Fooocus's channel-penalised image keys and values: w = weight * C / 1280."""
    w = weight * k.shape[-1] / CHANNEL_PENALTY_WIDTH
    mean = v.mean(dim=1, keepdim=True)
    return k * w, (v - mean) + mean * w


def _rows(cond: Tensor, uncond: Tensor, batch: int, split: bool) -> Tensor:
    """The batch's rows of one token set: [uncond x B; cond x B] when split, else cond x batch."""
    if not split:
        return cond.expand(batch, -1, -1)
    half = batch // 2
    return torch.cat([uncond.expand(half, -1, -1), cond.expand(half, -1, -1)])


@dataclass(frozen=True)
class _Active:
    tokens: tuple[IPTokens, ...]
    split: bool


class FooocusIPAttnProcessor:
    """attn2 processor: the layer's previous processor when no image prompt is active, else Fooocus's formula."""

    def __init__(self, base: Any, owner: IPAttention, layer: int) -> None:
        self.base = base
        self.owner = owner
        self.layer = layer

    def __call__(
        self,
        attn: Any,
        hidden_states: Tensor,
        encoder_hidden_states: Tensor | None = None,
        attention_mask: Tensor | None = None,
        temb: Tensor | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> Tensor:
        active = self.owner.current
        if active is None or encoder_hidden_states is None:
            return self.base(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
        return self._joined(attn, hidden_states, encoder_hidden_states, attention_mask, temb, active)

    def _joined(
        self,
        attn: Any,
        hidden_states: Tensor,
        encoder_hidden_states: Tensor,
        attention_mask: Tensor | None,
        temb: Tensor | None,
        active: _Active,
    ) -> Tensor:
        """AttnProcessor2_0's steps with the image keys/values appended to the text ones."""
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch_size, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)
        batch_size, sequence_length, _ = encoder_hidden_states.shape
        if active.split and batch_size % 2:
            raise ValueError(f"split rows [uncond; cond] need an even batch, got {batch_size}")
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
            attention_mask = attention_mask.view(batch_size, attn.heads, -1, attention_mask.shape[-1])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        query = attn.to_q(hidden_states)
        if attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        keys, values = [attn.to_k(encoder_hidden_states)], [attn.to_v(encoder_hidden_states)]
        for tokens in active.tokens:
            kv = tokens.layers[self.layer]
            cond_k, cond_v = weighted_kv(kv.cond_k, kv.cond_v, tokens.weight)
            uncond_k, uncond_v = weighted_kv(kv.uncond_k, kv.uncond_v, tokens.weight)
            keys.append(_rows(cond_k, uncond_k, batch_size, active.split).to(keys[0]))
            values.append(_rows(cond_v, uncond_v, batch_size, active.split).to(values[0]))
        key, value = torch.cat(keys, dim=1), torch.cat(values, dim=1)
        if attention_mask is not None:  # the image tokens are visible to every query
            extra = key.shape[1] - attention_mask.shape[-1]
            attention_mask = F.pad(
                attention_mask, (0, extra), value=True if attention_mask.dtype == torch.bool else 0.0
            )

        inner_dim = key.shape[-1]
        head_dim = inner_dim // attn.heads
        query = query.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        hidden_states = F.scaled_dot_product_attention(
            query, key, value, attn_mask=attention_mask, dropout_p=0.0, is_causal=False
        )
        hidden_states = hidden_states.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim)
        hidden_states = hidden_states.to(query.dtype)
        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch_size, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


class IPAttention:
    """Our processors on one UNet's attn2 layers, and the switch that makes image tokens count."""

    def __init__(self, layer_count: int) -> None:
        self.layer_count = layer_count
        self.current: _Active | None = None  # read by the processors on every attn2 call

    @classmethod
    def install(cls, unet: Any) -> IPAttention:
        """Install (once per UNet; the same object after) the processors; other layers are left as they are.

        The object lives on the UNet itself, so a reloaded checkpoint gets its own. A processor
        replaced since (someone set new processors) is wrapped again.
        """
        layers = cross_attention_layers(unet)
        attention = unet.__dict__.get(_ATTENTION_ATTR)
        if attention is None:
            attention = cls(len(layers))
            unet.__dict__[_ATTENTION_ATTR] = attention  # a plain attribute: not a submodule, not in state_dict
        for index, (_, attn) in enumerate(layers):
            processor = attn.processor
            if not (isinstance(processor, FooocusIPAttnProcessor) and processor.owner is attention):
                attn.set_processor(FooocusIPAttnProcessor(processor, attention, index))
        return attention

    @contextlib.contextmanager
    def active(self, tokens: Sequence[IPTokens], split: bool) -> Iterator[None]:
        """Within: attn2 joins these tokens. `split`: rows are [uncond x B; cond x B]; else all cond (CFG 1)."""
        for item in tokens:
            if len(item.layers) != self.layer_count:
                raise ValueError(f"IP tokens for {len(item.layers)} layers on a UNet with {self.layer_count}")
        previous = self.current
        self.current = _Active(tuple(tokens), split) if tokens else None
        try:
            yield
        finally:
            self.current = previous
