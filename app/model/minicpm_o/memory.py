"""MiniCPM-o's lines of the memory plan beyond its weights: the caches a duplex
conversation keeps, the speech vocoder's files, and the working memory of one unit.

memory_plan.Planner counts the module tree's weights by the placement rule (as for every
family) and adds these. The context is the LLM's sliding window in tokens: the official
"basic" window drops whole units from the oldest on once the cache passes its high mark
(4,000 tokens by default) and the unit that passed it is already in, so the cache holds
at most the window plus one unit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from app.model.contract import Quant
from app.model.place import DEVICE, HOST

if TYPE_CHECKING:
    from app.model.memory_plan import Part
    from app.model.minicpm_o.config import MiniCPMOConfig
    from app.model.placement import Placement

DEFAULT_WINDOW = 4000  # the official basic window's high mark (tokens)
MIN_WINDOW = 1000  # the system prefix and about ten units
MAX_UNIT_TOKENS = 20  # generated per unit at most (the official max_new_speak_tokens_per_chunk)
FRAMES_PER_UNIT = 1  # the camera's newest frame each second
AUDIO_TOKENS_PER_UNIT = 10  # 1 s of audio: 100 mel frames -> 50 -> pooled by 5
LARGEST_PASS = 512  # tokens of the largest prefill: the system prefix (role text + voice)
# Allowance for the vocoder's per-chunk activations and its prompt caches until part 2
# measures them (`duetto bench gpu`).
TOKEN2WAV_WORKING = 128 * 2**20
# The longest voice prompt the speech path takes (s): the flow's stream cache grows with
# it (token2wav/flow.py cache_bytes), so the plan counts this much.
VOICE_PROMPT_SECONDS = 10
CUBLAS_WORKSPACE = 32 * 1024**2


def unit_tokens(config: MiniCPMOConfig) -> int:
    """Cache positions one unit adds at most: <unit>, each frame's <image> + embeddings +
    </image>, the audio embeddings, the generated tokens, a forced <|turn_eos|>, </unit>."""
    frame = config.query_num + 2
    return 1 + FRAMES_PER_UNIT * frame + AUDIO_TOKENS_PER_UNIT + MAX_UNIT_TOKENS + 1 + 1


def cache_tokens(config: MiniCPMOConfig, window: int) -> int:
    return window + unit_tokens(config)


def _head_dim(cfg) -> int:
    return int(getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads)


def _kv(layers: int, kv_heads: int, head_dim: int, positions: int, itemsize: int, rnd) -> int:
    """Keys and values of `layers` layers for `positions` positions."""
    return layers * 2 * rnd(kv_heads * positions * head_dim * itemsize)


def context_parts(config: MiniCPMOConfig, window: int, itemsize: int, rnd) -> list[Part]:
    from app.model.memory_plan import Part

    text, audio, tts = config.text, config.audio, config.tts
    tokens = cache_tokens(config, window)
    frames = int(audio.max_source_positions)
    return [
        Part("llm context", "context", DEVICE,
             _kv(text.num_hidden_layers, text.num_key_value_heads, _head_dim(text), tokens,
                 itemsize, rnd),
             note=f"{window}-token window + one unit ({tokens - window}) × "
                  f"{text.num_hidden_layers} layers"),
        Part("audio encoder context", "context", DEVICE,
             _kv(audio.encoder_layers, 1, int(audio.d_model), frames, itemsize, rnd),
             note=f"{frames} encoder frames (30 s, then reset) × {audio.encoder_layers} layers"),
        Part("speech decoder context", "context", DEVICE,
             _kv(tts.num_hidden_layers, tts.num_key_value_heads,
                 tts.hidden_size // tts.num_attention_heads, tts.max_position_embeddings,
                 itemsize, rnd),
             note=f"{tts.max_position_embeddings} positions (its maximum) × "
                  f"{tts.num_hidden_layers} layers: part 2 must keep a turn within it"),
    ]


def vocoder_parts(files: dict[str, tuple[int, bool]] | None, *, gpu: bool) -> list[Part]:
    """The token2wav files as they load: float32 as stored, the per-chunk models on the
    device, the voice encoders (ONNX, once per conversation) in system RAM beside a GPU
    (on a CPU run everything is on the one device)."""
    from app.model.memory_plan import Part

    if not files:
        return []
    device = {n: b for n, (b, on_device) in files.items() if on_device or not gpu}
    host = {n: b for n, (b, _) in files.items() if n not in device}
    parts = []
    if device:
        parts.append(Part("speech vocoder", "weights", DEVICE, sum(device.values()),
                          dict(device), note="token2wav (part 2), float32 as its files"))
    if host:
        parts.append(Part("voice encoders", "weights", HOST, sum(host.values()), dict(host),
                          note="token2wav's ONNX voice encoders, on the CPU"))
    if "flow.pt" in device:
        parts.append(vocoder_cache_part())
    return parts


def vocoder_cache_part():  # -> Part
    """The flow's stream caches, held through the conversation: the turn-start state
    (the voice prompt through the flow, kept to restore at each turn) and the live one,
    which grows by 100 frames past the prompt before it is cut."""
    from app.model.memory_plan import Part
    from app.model.minicpm_o.token2wav.flow import DEFAULT_TIMESTEPS, cache_bytes
    from app.model.minicpm_o.token2wav.flow_yaml import published_flow_config

    config = published_flow_config()
    prompt_frames = 50 * VOICE_PROMPT_SECONDS  # 50 mel frames a second
    terms = {
        # cache_bytes counts the prompt plus the 100 frames a turn keeps past it
        "turn-start cache": cache_bytes(config, prompt_frames - 100, DEFAULT_TIMESTEPS),
        "live cache": cache_bytes(config, prompt_frames, DEFAULT_TIMESTEPS),
    }
    return Part("speech vocoder cache", "context", DEVICE, sum(terms.values()), terms,
                note=f"float32, a {VOICE_PROMPT_SECONDS} s voice prompt, "
                     f"{DEFAULT_TIMESTEPS} flow steps")


def working_part(config: MiniCPMOConfig, window: int, itemsize: int, placement: Placement,
                 model: torch.nn.Module, *, vocoder: bool) -> Part:
    """The largest pass's activations (an estimate from the shapes).

    A unit runs its passes one after another: the vision tower over one frame, the audio
    encoder over 1 s, the LLM's prefill, then its tokens one at a time, the speech
    decoder and the vocoder; the largest LLM pass is the system prefix (LARGEST_PASS
    tokens). That pass: the residual stream and attention in/out (6·C·hidden), the gated
    MLP (3·C·intermediate), keys and values expanded to every query head over the whole
    cache, the mask, the largest LLM weight dequantized for it under nf4 (int32 products
    under int8), one row of float32 logits (only the last position's are computed). The
    vision pass (SigLIP's eager attention over a 448 px frame's patches, scores in
    float32) is counted instead when larger. Beside either: the cache's growth (one
    layer's keys and values copied while the old are alive), the vocoder's allowance,
    and cuBLAS' workspace on a GPU.
    """
    from app.model.memory_plan import Part
    from app.model.placement import Store

    text, vision = config.text, config.vision
    c, ctx = LARGEST_PASS, cache_tokens(config, window)
    heads = int(text.num_attention_heads)
    llm = {
        "activations": itemsize * (6 * c * text.hidden_size + 3 * c * text.intermediate_size),
        "attention keys/values": 2 * itemsize * heads * ctx * _head_dim(text),
        "attention mask": 3 * c * ctx,
        "logits": 4 * text.vocab_size,
    }
    linears = [(m.out_features, m.in_features, d.store) for _, m, d in placement.decisions(model)
               if isinstance(m, torch.nn.Linear) and d.part == "llm"]
    if placement.quant is Quant.NF4:
        llm["dequantized weight"] = itemsize * max(
            (o * i for o, i, s in linears if s is Store.NF4), default=0)
    elif placement.quant is Quant.INT8:
        llm["int8 product"] = 4 * c * max((o for o, _, s in linears if s is Store.INT8),
                                          default=0)
    patches = (config.image_size // int(vision.patch_size)) ** 2
    vision_pass = {
        "vision attention scores": (4 + itemsize) * int(vision.num_attention_heads) * patches ** 2,
        "vision activations": itemsize * patches * (6 * int(vision.hidden_size)
                                                   + int(vision.intermediate_size)),
    }
    terms = llm if sum(llm.values()) >= sum(vision_pass.values()) else vision_pass
    terms = dict(terms)
    terms["cache growth"] = _kv(1, text.num_key_value_heads, _head_dim(text), ctx, itemsize,
                                lambda n: n)
    if vocoder:
        terms["speech vocoder pass"] = TOKEN2WAV_WORKING
    if placement.gpu:
        terms["cuBLAS workspace"] = CUBLAS_WORKSPACE
    return Part("working memory", "working", DEVICE, sum(terms.values()), terms,
                note=f"estimate: a {c}-token pass over {ctx} tokens (minicpm_o/memory.py)")
