"""Tensor names and shapes of the `moshi` package's checkpoints, mapped to transformers'.

Kyutai's own checkpoints (moshiko/moshika-pytorch-*) and NVIDIA's PersonaPlex ship the
LM as one `model.safetensors` and Mimi as `tokenizer-*.safetensors`, both in the
`moshi` package's module layout. This module renames and reshapes those tensors, in
memory at load time, into the layout of transformers' MoshiForConditionalGeneration
(the LM under `decoder.`/`depth_decoder.`/`embed_tokens.`, Mimi under `audio_encoder.`),
and back (`to_moshi_*`, used to write the tiny test checkpoint in the moshi layout).

What differs, besides names (checked on moshi 0.2.13's modules):
* attention: one fused in-projection, either `in_proj_weight` (older files) or
  `in_projs.{i}.weight`; queries and keys use interleaved rotary pairs, transformers'
  layers rotate halves, so their rows are permuted (heads × pairs → halves).
* the depth transformer has weights per codebook step: an old fused `in_proj_weight` is
  step-major ([q;k;v] of step 0, then step 1, ...); per-step gating, input projections
  and heads are stacked into transformers' (steps, out, in) tensors.
* RMSNorm gains are stored as `alpha` of shape (1, 1, dim).
* PersonaPlex's depth transformer predicts 16 codebooks (its own 8 and the user's 8);
  only the first 8 (its own voice) are used when talking, and the depth transformer is
  causal over steps, so steps 8.. are dropped without changing steps 0..7.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from app.model.contract import BackendError

Tensors = dict[str, torch.Tensor]


# --- rotary permutation ------------------------------------------------------------------


def _interleaved_to_halves(w: torch.Tensor, heads: int) -> torch.Tensor:
    rows, cols = w.shape
    return w.reshape(heads, rows // heads // 2, 2, cols).transpose(1, 2).reshape(rows, cols)


def _halves_to_interleaved(w: torch.Tensor, heads: int) -> torch.Tensor:
    rows, cols = w.shape
    return w.reshape(heads, 2, rows // heads // 2, cols).transpose(1, 2).reshape(rows, cols)


def _owned(t: torch.Tensor) -> torch.Tensor:
    """`t` in storage of its own. A slice of a fused tensor (v of a fused qkv) keeps the
    whole fused tensor alive: for the 7B that is q and k of every layer twice, ~2 GiB."""
    return t if t.untyped_storage().nbytes() == t.nbytes else t.clone()


def _split_qkv(w: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    kv = (w.shape[0] - dim) // 2
    return w[:dim], w[dim : dim + kv], w[dim + kv :]


def _fused_in_proj(sd: Mapping[str, torch.Tensor], prefix: str, steps: int) -> list[torch.Tensor]:
    """The first `steps` per-step fused qkv weights of one attention layer, whichever
    way they are stored. A fused step-major tensor may hold more steps than needed
    (PersonaPlex's 16) or, in the depth transformer, fewer than its other per-step
    tensors (PersonaPlex's loader accepts 8 and copies them): its own height says."""
    if f"{prefix}in_projs.0.weight" in sd:
        return [sd[f"{prefix}in_projs.{i}.weight"] for i in range(steps)]
    fused = sd[f"{prefix}in_proj_weight"]
    if steps == 1:
        return [fused]
    stored = fused.shape[0] // (3 * fused.shape[1])  # q, k, v of dim rows each per step
    per = fused.reshape(stored, -1, fused.shape[1])
    return [per[i] for i in range(steps)]


def _release(sd: Mapping[str, torch.Tensor], prefix: str) -> None:
    """Drop a layer's source tensors once mapped, so fused tensors are freed as the
    mapping goes rather than all at its end."""
    for name in [n for n in sd if n.startswith(prefix)]:
        del sd[name]  # type: ignore[attr-defined]


def _out_proj(sd: Mapping[str, torch.Tensor], prefix: str, steps: int) -> list[torch.Tensor]:
    if f"{prefix}out_projs.0.weight" in sd:
        return [sd[f"{prefix}out_projs.{i}.weight"] for i in range(steps)]
    fused = sd[f"{prefix}out_proj.weight"]
    dim = fused.shape[1]
    per = fused.reshape(-1, dim, dim)
    return [per[i] for i in range(steps)]


def _count(sd: Mapping[str, torch.Tensor], pattern: str) -> int:
    rx = re.compile(pattern)
    found = {int(m.group(1)) for name in sd if (m := rx.match(name))}
    return max(found) + 1 if found else 0


# --- the LM ------------------------------------------------------------------------------


def lm_shapes(sd: Mapping[str, torch.Tensor]) -> dict[str, int]:
    """Architecture figures read from the tensors themselves (no config needed)."""
    try:
        text_emb = sd["text_emb.weight"]
        dep_in = sd["depformer_in.0.weight"]
        return {
            "hidden_size": int(text_emb.shape[1]),
            "vocab_size": int(sd["text_linear.weight"].shape[0]),
            "num_hidden_layers": _count(sd, r"transformer\.layers\.(\d+)\."),
            "ffn_dim": int(sd["transformer.layers.0.gating.linear_in.weight"].shape[0]),
            "audio_vocab_size": int(sd["linears.0.weight"].shape[0]),
            "n_q": _count(sd, r"emb\.(\d+)\.weight"),
            "dep_q": _count(sd, r"linears\.(\d+)\.weight"),
            "depth_hidden_size": int(dep_in.shape[0]),
            "depth_layers": _count(sd, r"depformer\.layers\.(\d+)\."),
            "depth_ffn_dim": int(sd["depformer.layers.0.gating.0.linear_in.weight"].shape[0]),
        }
    except KeyError as exc:
        raise BackendError(
            f"the LM weights lack {exc}: this is not a Moshi checkpoint in the moshi layout",
            hint="point to a Moshi/PersonaPlex folder (model.safetensors + tokenizer files)",
        ) from None


def lm_from_moshi(sd: Mapping[str, torch.Tensor], *, heads: int, kv_heads: int,
                  codebooks: int = 8, release: bool = False) -> Tensors:
    """transformers' names for the LM tensors of a moshi-layout state dict.

    Every tensor returned owns its storage (no view into a fused tensor). `release=True`
    deletes each attention layer's source tensors from `sd` (a dict) once mapped."""
    shapes = lm_shapes(sd)
    dim = shapes["hidden_size"]
    head_dim = dim // heads
    out: Tensors = {}
    out["decoder.model.embed_tokens.weight"] = sd["text_emb.weight"]
    out["decoder.lm_head.weight"] = sd["text_linear.weight"]
    out["decoder.model.norm.weight"] = sd["out_norm.alpha"].reshape(-1)
    n_q = shapes["n_q"]
    if n_q != 2 * codebooks:
        raise BackendError(
            f"the LM has {n_q} audio input streams; Duetto drives {2 * codebooks} "
            f"({codebooks} for the model's voice, {codebooks} for the user's)",
            hint="this checkpoint's layout is not supported",
        )
    for k in range(n_q):
        out[f"embed_tokens.{k}.weight"] = sd[f"emb.{k}.weight"]
    for i in range(shapes["num_hidden_layers"]):
        src, dst = f"transformer.layers.{i}.", f"decoder.model.layers.{i}."
        q, k, v = _split_qkv(_fused_in_proj(sd, src + "self_attn.", 1)[0], dim)
        out[dst + "self_attn.q_proj.linear.weight"] = _interleaved_to_halves(q, heads)
        out[dst + "self_attn.k_proj.linear.weight"] = _interleaved_to_halves(
            k, k.shape[0] // head_dim)
        out[dst + "self_attn.v_proj.linear.weight"] = _owned(v)  # free the fused tensor
        out[dst + "self_attn.o_proj.linear.weight"] = _out_proj(sd, src + "self_attn.", 1)[0]
        out[dst + "input_layernorm.weight"] = sd[src + "norm1.alpha"].reshape(-1)
        out[dst + "post_attention_layernorm.weight"] = sd[src + "norm2.alpha"].reshape(-1)
        out[dst + "mlp.fc1.weight"] = sd[src + "gating.linear_in.weight"]
        out[dst + "mlp.fc2.weight"] = sd[src + "gating.linear_out.weight"]
        if release:
            _release(sd, src + "self_attn.")
    if shapes["dep_q"] < codebooks:
        raise BackendError(
            f"the depth transformer predicts {shapes['dep_q']} codebooks, fewer than {codebooks}",
            hint="this checkpoint's layout is not supported",
        )
    steps = codebooks  # PersonaPlex's steps 8..15 (the user's codebooks) are not needed
    out["depth_decoder.text_embed_tokens.weight"] = sd["depformer_text_emb.weight"]
    for k in range(steps - 1):
        out[f"depth_decoder.embed_tokens.{k}.weight"] = sd[f"depformer_emb.{k}.weight"]
    out["depth_decoder.input_projections.weight"] = torch.stack(
        [sd[f"depformer_in.{k}.weight"] for k in range(steps)])
    out["depth_decoder.lm_heads.weight"] = torch.stack(
        [sd[f"linears.{k}.weight"] for k in range(steps)])
    for i in range(shapes["depth_layers"]):
        src, dst = f"depformer.layers.{i}.", f"depth_decoder.layers.{i}."
        fused = _fused_in_proj(sd, src + "self_attn.", steps)
        depth_dim = fused[0].shape[1]
        parts = [_split_qkv(w, depth_dim) for w in fused]
        for j, name in enumerate(("q", "k", "v")):
            out[dst + f"self_attn.{name}_proj.linear.weight"] = torch.stack([p[j] for p in parts])
        out[dst + "self_attn.o_proj.linear.weight"] = torch.stack(
            _out_proj(sd, src + "self_attn.", steps))
        out[dst + "input_layernorm.weight"] = sd[src + "norm1.alpha"].reshape(-1)
        out[dst + "post_attention_layernorm.weight"] = sd[src + "norm2.alpha"].reshape(-1)
        out[dst + "mlp.fc1.weight"] = torch.stack(
            [sd[f"{src}gating.{k}.linear_in.weight"] for k in range(steps)])
        out[dst + "mlp.fc2.weight"] = torch.stack(
            [sd[f"{src}gating.{k}.linear_out.weight"] for k in range(steps)])
        if release:
            _release(sd, src)
    return {name: _owned(t) for name, t in out.items()}


def lm_to_moshi(sd: Mapping[str, torch.Tensor], *, heads: int, codebooks: int = 8,
                dep_q: int | None = None) -> Tensors:
    """The moshi-package layout of transformers' LM tensors (old fused `in_proj_weight`).

    `dep_q` > `codebooks` writes extra depth steps as PersonaPlex's checkpoint has them
    (for the user's codebooks); here they are the negated weights of steps 0.., so they
    differ from the steps that matter and a loader that kept the wrong ones would fail.
    """
    dep_q = dep_q or codebooks
    dim = sd["decoder.model.embed_tokens.weight"].shape[1]
    head_dim = dim // heads
    out: Tensors = {
        "text_emb.weight": sd["decoder.model.embed_tokens.weight"],
        "text_linear.weight": sd["decoder.lm_head.weight"],
        "out_norm.alpha": sd["decoder.model.norm.weight"].reshape(1, 1, -1),
        "depformer_text_emb.weight": sd["depth_decoder.text_embed_tokens.weight"],
    }
    for k in range(2 * codebooks):
        out[f"emb.{k}.weight"] = sd[f"embed_tokens.{k}.weight"]
    layers = _count(sd, r"decoder\.model\.layers\.(\d+)\.")
    for i in range(layers):
        src, dst = f"decoder.model.layers.{i}.", f"transformer.layers.{i}."
        q = _halves_to_interleaved(sd[src + "self_attn.q_proj.linear.weight"], heads)
        k = sd[src + "self_attn.k_proj.linear.weight"]
        k = _halves_to_interleaved(k, k.shape[0] // head_dim)
        out[dst + "self_attn.in_proj_weight"] = torch.cat(
            [q, k, sd[src + "self_attn.v_proj.linear.weight"]])
        out[dst + "self_attn.out_proj.weight"] = sd[src + "self_attn.o_proj.linear.weight"]
        out[dst + "norm1.alpha"] = sd[src + "input_layernorm.weight"].reshape(1, 1, -1)
        out[dst + "norm2.alpha"] = sd[src + "post_attention_layernorm.weight"].reshape(1, 1, -1)
        out[dst + "gating.linear_in.weight"] = sd[src + "mlp.fc1.weight"]
        out[dst + "gating.linear_out.weight"] = sd[src + "mlp.fc2.weight"]

    def at(t: torch.Tensor, k: int) -> torch.Tensor:
        """Step k of a stacked tensor; steps past `codebooks` are negated stand-ins."""
        return t[k % codebooks] * (1.0 if k < codebooks else -1.0)

    for k in range(dep_q - 1):
        emb = sd[f"depth_decoder.embed_tokens.{k % (codebooks - 1)}.weight"]
        out[f"depformer_emb.{k}.weight"] = emb * (1.0 if k < codebooks - 1 else -1.0)
    for k in range(dep_q):
        out[f"depformer_in.{k}.weight"] = at(sd["depth_decoder.input_projections.weight"], k)
        out[f"linears.{k}.weight"] = at(sd["depth_decoder.lm_heads.weight"], k)
    depth_layers = _count(sd, r"depth_decoder\.layers\.(\d+)\.")
    for i in range(depth_layers):
        src, dst = f"depth_decoder.layers.{i}.", f"depformer.layers.{i}."
        qkv = [sd[src + f"self_attn.{n}_proj.linear.weight"] for n in ("q", "k", "v")]
        out[dst + "self_attn.in_proj_weight"] = torch.cat(
            [torch.cat([at(qkv[0], s), at(qkv[1], s), at(qkv[2], s)]) for s in range(dep_q)])
        o = sd[src + "self_attn.o_proj.linear.weight"]
        out[dst + "self_attn.out_proj.weight"] = torch.cat([at(o, s) for s in range(dep_q)])
        out[dst + "norm1.alpha"] = sd[src + "input_layernorm.weight"].reshape(1, 1, -1)
        out[dst + "norm2.alpha"] = sd[src + "post_attention_layernorm.weight"].reshape(1, 1, -1)
        for s in range(dep_q):
            out[f"{dst}gating.{s}.linear_in.weight"] = at(sd[src + "mlp.fc1.weight"], s)
            out[f"{dst}gating.{s}.linear_out.weight"] = at(sd[src + "mlp.fc2.weight"], s)
    return {name: t.contiguous() for name, t in out.items()}


# --- Mimi --------------------------------------------------------------------------------

_MIMI_RENAMES: tuple[tuple[str, str], ...] = (
    # (moshi prefix, transformers prefix), most specific first
    ("encoder_transformer.transformer.", "encoder.encoder_transformer."),
    ("decoder_transformer.transformer.", "decoder.decoder_transformer."),
    ("encoder.model.", "encoder.encoder_seanet.layers."),
    ("decoder.model.", "decoder.decoder_seanet.layers."),
    ("quantizer.rvq_first.vq.", "quantizer.semantic_residual_vector_quantizer."),
    ("quantizer.rvq_first.", "quantizer.semantic_residual_vector_quantizer."),
    ("quantizer.rvq_rest.vq.", "quantizer.acoustic_residual_vector_quantizer."),
    ("quantizer.rvq_rest.", "quantizer.acoustic_residual_vector_quantizer."),
    ("downsample.conv.conv.conv.", "encoder.downsample.conv."),
    ("upsample.convtr.convtr.convtr.", "decoder.upsample.conv."),
)
_MIMI_PARTS: tuple[tuple[str, str], ...] = (
    (".conv.conv.", ".conv."),
    (".convtr.convtr.", ".conv."),
    ("._codebook.", ".codebook."),
    (".codebook._initialized", ".codebook.initialized"),
    (".codebook.embedding_sum", ".codebook.embed_sum"),
    (".linear1.", ".mlp.fc1."),
    (".linear2.", ".mlp.fc2."),
    (".norm1.", ".input_layernorm."),
    (".norm2.", ".post_attention_layernorm."),
    (".layer_scale_1.", ".self_attn_layer_scale."),
    (".layer_scale_2.", ".mlp_layer_scale."),
    (".self_attn.out_projs.0.", ".self_attn.o_proj."),
    (".self_attn.out_proj.", ".self_attn.o_proj."),
)


def mimi_from_moshi(sd: Mapping[str, torch.Tensor], *, heads: int) -> Tensors:
    """transformers' MimiModel names (without a prefix) for a moshi-layout Mimi."""
    out: Tensors = {}
    for name, tensor in sd.items():
        new = name
        for old, repl in _MIMI_RENAMES:
            if new.startswith(old):
                new = repl + new[len(old):]
                break
        for old, repl in _MIMI_PARTS:
            new = new.replace(old, repl)
        if new.endswith(("self_attn.in_proj_weight", "self_attn.in_projs.0.weight")):
            base = new.rsplit("self_attn.", 1)[0] + "self_attn."
            dim = tensor.shape[1]
            q, k, v = _split_qkv(tensor, dim)
            out[base + "q_proj.weight"] = _interleaved_to_halves(q, heads)
            out[base + "k_proj.weight"] = _interleaved_to_halves(k, k.shape[0] // (dim // heads))
            out[base + "v_proj.weight"] = v
            continue
        out[new] = tensor
    return {name: _owned(t) for name, t in out.items()}


def mimi_to_moshi(sd: Mapping[str, torch.Tensor], *, heads: int,
                  convtr_layers: frozenset[int]) -> Tensors:
    """The moshi-package layout of transformers' MimiModel tensors (no prefix).

    `convtr_layers`: indices of the decoder seanet's transposed convolutions (the moshi
    layout names them `convtr.convtr`, the others `conv.conv`).
    """
    out: Tensors = {}
    qkv: dict[str, dict[str, torch.Tensor]] = {}
    for name, tensor in sd.items():
        m = re.match(r"(.*self_attn\.)([qkv])_proj\.weight$", name)
        if m:
            qkv.setdefault(m.group(1), {})[m.group(2)] = tensor
            continue
        out[_mimi_name_to_moshi(name, convtr_layers)] = tensor
    for base, parts in qkv.items():
        dim = parts["q"].shape[1]
        q = _halves_to_interleaved(parts["q"], heads)
        k = _halves_to_interleaved(parts["k"], parts["k"].shape[0] // (dim // heads))
        fused = torch.cat([q, k, parts["v"]])
        out[_mimi_name_to_moshi(base + "in_proj_weight", convtr_layers)] = fused
    return {name: t.contiguous() for name, t in out.items()}


def _mimi_name_to_moshi(name: str, convtr_layers: frozenset[int]) -> str:
    new = name
    for moshi_prefix, hf_prefix in _MIMI_RENAMES:
        if new.startswith(hf_prefix) and not (
            # The quantizer's two spellings share a prefix; the vq form owns the layers.
            hf_prefix.startswith("quantizer.") and moshi_prefix.endswith(".vq.")
            and ".layers." not in new
        ):
            new = moshi_prefix + new[len(hf_prefix):]
            break
    m = re.match(r"decoder\.model\.(\d+)\.conv\.", new)
    convtr = m is not None and int(m.group(1)) in convtr_layers
    for old, repl in (
        (".self_attn.o_proj.", ".self_attn.out_proj."),
        (".mlp_layer_scale.", ".layer_scale_2."),
        (".self_attn_layer_scale.", ".layer_scale_1."),
        (".post_attention_layernorm.", ".norm2."),
        (".input_layernorm.", ".norm1."),
        (".mlp.fc2.", ".linear2."),
        (".mlp.fc1.", ".linear1."),
        (".codebook.embed_sum", "._codebook.embedding_sum"),
        (".codebook.initialized", "._codebook._initialized"),
        (".codebook.cluster_usage", "._codebook.cluster_usage"),
    ):
        new = new.replace(old, repl)
    if new.startswith(("encoder.model.", "decoder.model.")) and ".conv." in new:
        new = new.replace(".conv.", ".convtr.convtr." if convtr else ".conv.conv.", 1)
    return new
