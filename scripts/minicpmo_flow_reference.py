"""Reference data for MiniCPM-o's token2wav flow, from minicpmo-utils 1.0.6's own code.

MiniCPM-o 4.5's speech is made by `stepaudio2.Token2wav` of the `minicpmo-utils`
package (version 1.0.6: 1.0.7 swapped the vocoder for one that needs files the
published checkpoint does not ship). The package pins transformers < 4.53 and torch
<= 2.8 and hard-codes CUDA, so it is no dependency of Duetto and nothing of it is in the
repository; this script runs in a throwaway environment that has it and writes small
files the test suite checks Duetto's port (app/model/minicpm_o/token2wav/) against:

* `keylist`: every tensor name and shape of the published `assets/token2wav/flow.pt`:
  the reference flow tree (`CausalMaskedDiffWithXvec` with its
  `UpsampleConformerEncoderV2`, `CausalConditionalCFM` and `DiT`) built by the
  package's own loader (hyperpyyaml, as `Token2wav.__init__` reads flow.yaml) from a
  flow.yaml with the published values, on the meta device. The published values are
  the ones other ports of the checkpoint hard-code or validate the file against
  (vllm-omni's Lychee token2wav `_FLOW_CONTRACT`, sglang-omni's MiniCPM-o token2wav):
  encoder 512 wide, 6 + 4 conformer layers of 8 heads, 2048 feed-forward, look-ahead 3,
  upsampling 2; DiT in 320 / out 80, 16 blocks of 8 heads of 64, hidden 512, MLP ratio
  4; vocabulary 6561; guidance 0.7. `Token2wav.__init__` loads flow.pt into that tree
  with strict=True, so its state dict's names and shapes are the file's.
* `goldens`: the reference's streaming flow on Duetto's tiny flow
  (`write_tiny_flow(DIR, seed=0)`, `--checkpoint DIR`), read by the package's own
  loader: `Token2wav.set_stream_cache` (the voice prompt's codes plus three silence
  codes through `setup_cache`), then `Token2wav.stream` over the windows the official
  duplex loop makes (the buffer starts as three silence codes; each time it holds 28,
  those 28 run and 25 are dropped; the rest is flushed as the last chunk), which runs
  `flow.inference_chunk` and then cuts both attention caches to the prompt's frames +
  100. Recorded: each chunk's mel as `inference_chunk` returned it, the cache lengths
  after each, and sums of the caches after `setup_cache`, for a 20-code prompt with 10
  solver steps and with 5, and a 100-code prompt with 10.

What is replaced to run it on a CPU, and why (all inside this script; goldens.json
lists it too):
  - `.cuda()` of tensors and modules is a no-op, and the 'cuda' device of the tensors
    `Token2wav.stream`/`set_stream_cache` make is the CPU.
  - The solver's noise: the reference draws `rand_noise` (1 x 80 x 30,000) from torch's
    global random state when it builds the solver, so it differs from process to
    process unless the caller seeds torch first. Here it is set to the noise Duetto's
    port uses (a generator seeded with 0, drawn once: `flow_noise` in flow.py), so both
    start from the same noise.
  - The solver's and the DiT's scratch buffers for the caches are sized for the
    published widths (16 blocks, 8 heads of 64, hidden 512); for the tiny flow they are
    made again with the same rule at the tiny widths (they hold no weights).
  - The prompt: `_prepare_prompt` (which reads a wav through the speech tokenizer, CAM++
    and a mel) returns given codes, speaker embedding and mel instead; those encoders
    are other goldens' business.
  - The vocoder: `Token2wav.stream` calls HiFT after the flow; a stand-in returns
    silence of the right length, so that `stream`'s own flow-cache handling runs while
    the vocoder (checked by its own goldens) does not matter here.

Run from the repository root:

    .venv/bin/python -c "from pathlib import Path; \
        from app.model.minicpm_o.token2wav.tiny_flow import write_tiny_flow; \
        write_tiny_flow(Path('/tmp/tiny-flow'), seed=0)"
    /work/mcpo-ref-env/bin/python scripts/minicpmo_flow_reference.py keylist
    /work/mcpo-ref-env/bin/python scripts/minicpmo_flow_reference.py goldens \
        --checkpoint /tmp/tiny-flow
"""

from __future__ import annotations

import argparse
import gzip
import importlib.metadata
import json
import sys
import types
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
KEYLISTS = ROOT / "tests" / "data" / "keylists"
GOLDENS = ROOT / "tests" / "data" / "minicpmo_goldens"
PACKAGE_VERSION = "1.0.6"

PUBLISHED_FLOW_YAML = """\
flow: !new:cosyvoice2.flow.flow.CausalMaskedDiffWithXvec
    input_size: 512
    output_size: 80
    spk_embed_dim: 192
    output_type: 'mel'
    vocab_size: 6561
    encoder: !new:cosyvoice2.transformer.upsample_encoder_v2.UpsampleConformerEncoderV2
        input_size: 512
        output_size: 512
        input_layer: 'linear'
        pre_lookahead_len: 3
        num_blocks: 6
        num_up_blocks: 4
        up_stride: 2
        up_scale_factor: 2
        attention_heads: 8
        pos_enc_layer_type: 'rel_pos_espnet'
        selfattention_layer_type: 'rel_selfattn'
        key_bias: True
        linear_units: 2048
        dropout_rate: 0.1
        positional_dropout_rate: 0.1
        attention_dropout_rate: 0.1
        normalize_before: True
    decoder: !new:cosyvoice2.flow.flow_matching.CausalConditionalCFM
        inference_cfg_rate: 0.7
        estimator: !new:cosyvoice2.flow.decoder_dit.DiT
            in_channels: 320
            out_channels: 80
            mlp_ratio: 4.0
            depth: 16
            num_heads: 8
            head_dim: 64
            hidden_size: 512
"""

# The golden stream: prompt and turn lengths, and the solver steps recorded.
# Prompt lengths in codes. Both pass prompt + 100 frames at the third window; the short
# prompt's frames are fewer than the conformer's code-rate frames then, the long one's
# more, and 1.0.6's cut of the doubled conformer cache keeps different frames in each.
PROMPTS = {"short": 20, "long": 100}
RUNS = (("short", 10), ("short", 5), ("long", 10))  # (prompt, solver steps)
TURN_CODES = 147  # with the 3 silence codes: 5 windows of 28 (stride 25) + 25 flushed
NOISE_SEED = 0
NOISE_FRAMES = 50 * 600
SILENCE = 4218
WINDOW, STRIDE = 28, 25


def _versions() -> dict[str, str]:
    names = ("minicpmo-utils", "torch", "hyperpyyaml", "numpy", "safetensors")
    return {n: importlib.metadata.version(n) for n in names}


def _setup_aliases() -> None:
    from stepaudio2.token2wav import _setup_cosyvoice2_alias

    _setup_cosyvoice2_alias()


def _load_flow(yaml_text: str):
    """The package's own way: Token2wav's cosyvoice2 aliases, then hyperpyyaml."""
    from hyperpyyaml import load_hyperpyyaml

    _setup_aliases()
    return load_hyperpyyaml(yaml_text)["flow"]


def keylist(_: argparse.Namespace) -> None:
    _setup_aliases()  # import the package before the meta device (torch's lazy imports)
    with torch.device("meta"):
        flow = _load_flow(PUBLISHED_FLOW_YAML)
    tensors = {k: list(v.shape) for k, v in flow.state_dict().items()}
    total = sum(int(np.prod(s)) for s in tensors.values())
    groups: dict[str, int] = {}
    for k in tensors:
        top = k.split(".")[0] if not k.startswith("decoder.") else "decoder.estimator"
        groups[top] = groups.get(top, 0) + 1
    record = {
        "checkpoint": "openbmb/MiniCPM-o-4_5 assets/token2wav/flow.pt",
        "layout": "minicpmo-token2wav-flow",
        "sources": [
            f"minicpmo-utils {PACKAGE_VERSION} (PyPI): stepaudio2/token2wav.py "
            "Token2wav.__init__ reads flow.yaml with hyperpyyaml after "
            "_setup_cosyvoice2_alias() and loads flow.pt into configs['flow'] with "
            "strict=True; the tree here is built the same way on the meta device",
            "the published flow.yaml's values as vllm-omni validates the file against them "
            "(vllm_omni lychee token2wav _FLOW_CONTRACT: every key and value, the four "
            "!new: tags) and sglang-omni's MiniCPM-o token2wav loads it (the same four tags)",
        ],
        "how": (f"{len(tensors)} tensors ({total:,} parameters): "
                + ", ".join(f"{k} {v}" for k, v in sorted(groups.items()))
                + f"; {total * 4 / 2**20:.0f} MiB as float32, the size the published "
                "flow.pt is listed with (595 MB). Built from `flow_yaml` (the published "
                "values, see sources)."),
        "flow_yaml": PUBLISHED_FLOW_YAML,
        "made_by": "scripts/minicpmo_flow_reference.py keylist",
        "versions": _versions(),
        "files": {"flow.pt": {"tensors": tensors}},
    }
    out = KEYLISTS / "minicpm-o-4.5-flow.json.gz"
    out.write_bytes(gzip.compress(json.dumps(record, indent=0).encode(), mtime=0))
    print(f"{out}: {len(tensors)} tensors, {total:,} parameters")


def _cpu_only() -> None:
    """The package hard-codes CUDA; on this CPU-only run every 'cuda' is the CPU."""
    torch.Tensor.cuda = lambda self, *a, **k: self
    torch.nn.Module.cuda = lambda self, *a, **k: self

    def on_cpu(make):
        def wrapped(*args, **kwargs):
            if str(kwargs.get("device", "")).startswith("cuda"):
                kwargs["device"] = "cpu"
            return make(*args, **kwargs)
        return wrapped

    for name in ("tensor", "zeros", "ones"):
        setattr(torch, name, on_cpu(getattr(torch, name)))


def _resize_scratch(flow) -> None:
    """The solver's and the DiT's cache buffers, sized as the reference sizes them for
    the published widths (steps 16, blocks, batch 2, heads, 1000 frames, 2 * head_dim;
    conv caches 2 * hidden by 2), at this flow's widths."""
    dit = flow.decoder.estimator
    depth, attn = len(dit.blocks), dit.blocks[0].attn
    heads, head_dim = attn.num_heads, attn.head_dim
    hidden = dit.in_proj.out_features
    flow.decoder.cnn_cache_buffer = torch.zeros(16, depth, 2, 2 * hidden, 2)
    flow.decoder.att_cache_buffer = torch.zeros(16, depth, 2, heads, 1000, 2 * head_dim)
    dit.cnn_cache_buffer = torch.zeros(depth, 2, 2 * hidden, 2)
    dit.att_cache_buffer = torch.zeros(depth, 2, heads, 1000, 2 * head_dim)


class _SilentVocoder:
    """Stands in for HiFT inside Token2wav.stream: silence, 480 samples per mel frame."""

    def __call__(self, mel, cache_source=None):
        n = mel.shape[2] * 480
        return torch.zeros(1, n), torch.zeros(1, 1, n)


def _inputs() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1234)
    out = {}
    for name, n_codes in PROMPTS.items():
        out[f"{name}.prompt_tokens"] = torch.randint(0, 6561, (1, n_codes), generator=g,
                                                     dtype=torch.int32)
        out[f"{name}.prompt_speaker"] = torch.randn(1, 192, generator=g)
        # log-mel-like values: around -5 with a spread of 2
        out[f"{name}.prompt_mel"] = torch.randn(1, 2 * n_codes, 80, generator=g) * 2 - 5
    out["turn_codes"] = torch.randint(0, 6561, (1, TURN_CODES), generator=g, dtype=torch.int32)
    return out


def _windows(codes: list[int]) -> list[tuple[list[int], bool]]:
    """The official duplex loop's windows: buffer = 3 silences + codes; 28 run, 25 go."""
    buffer, chunks = [SILENCE] * 3, []
    for code in codes:
        buffer.append(code)
        if len(buffer) >= WINDOW:
            chunks.append((buffer[:WINDOW], False))
            buffer = buffer[STRIDE:]
    chunks.append((buffer, True))
    return chunks


def goldens(args: argparse.Namespace) -> None:
    from safetensors.torch import save_file

    _cpu_only()
    import stepaudio2.token2wav as t2w

    folder = Path(args.checkpoint)
    flow = _load_flow((folder / "flow.yaml").read_text())
    state = torch.load(folder / "flow.pt", map_location="cpu", weights_only=True)
    flow.load_state_dict(state, strict=True)
    flow.eval()
    _resize_scratch(flow)
    noise = torch.randn((1, flow.output_size, NOISE_FRAMES),
                        generator=torch.Generator().manual_seed(NOISE_SEED))
    flow.decoder.rand_noise = noise

    inputs = _inputs()
    tensors = {k: v.contiguous() for k, v in inputs.items()}
    windows = _windows(inputs["turn_codes"][0].tolist())
    runs = {}
    for name, steps in RUNS:
        n_codes = PROMPTS[name]
        token2wav = object.__new__(t2w.Token2wav)
        token2wav.float16, token2wav.n_timesteps, token2wav.flow = False, steps, flow
        token2wav.hift = _SilentVocoder()
        token2wav.mel_cache_len, token2wav.source_cache_len = 8, 8 * 480
        token2wav.speech_window = torch.from_numpy(np.hamming(2 * 8 * 480))
        prompt = (inputs[f"{name}.prompt_tokens"], torch.tensor([n_codes], dtype=torch.int32),
                  inputs[f"{name}.prompt_speaker"], inputs[f"{name}.prompt_mel"],
                  torch.tensor([2 * n_codes], dtype=torch.int32))
        token2wav._prepare_prompt = types.MethodType(lambda self, wav, _p=prompt: _p, token2wav)
        stream_cache, hift_cache = token2wav.set_stream_cache("<given prompt>")
        # The solver's caches are views of its 16-step scratch buffers: only the first
        # `steps` rows are this run's (the rest are zeros or an earlier run's).
        used = {k: v[:steps] if k.startswith("estimator") else v
                for k, v in stream_cache.items()}
        setup_sums = {k: float(v.double().sum()) for k, v in used.items()}
        setup_shapes = {k: list(v.shape) for k, v in used.items()}
        token2wav.stream_cache, token2wav.hift_cache_dict = stream_cache, hift_cache

        mels = []
        real_chunk = flow.inference_chunk

        def recording_chunk(*a, _real=real_chunk, _mels=mels, **k):
            mel, cache = _real(*a, **k)
            _mels.append(mel.clone())
            return mel, cache

        flow.inference_chunk = recording_chunk
        chunks = []
        for i, (codes, last) in enumerate(windows):
            token2wav.stream(codes, "<given prompt>", last_chunk=last, return_waveform=True)
            tensors[f"{name}.steps{steps}.mel{i}"] = mels[-1][0].contiguous()
            cache = token2wav.stream_cache
            chunks.append({"codes": len(codes), "last": last, "frames": mels[-1].shape[2],
                           "estimator_att_frames": cache["estimator_att_cache"].shape[4],
                           "conformer_att_frames": cache["conformer_att_cache"].shape[3]})
        del flow.inference_chunk
        runs[f"{name}/{steps}"] = {"prompt": name, "steps": steps,
                                   "setup_cache_sums": setup_sums,
                                   "setup_cache_shapes": setup_shapes,
                            "chunks": chunks}
        print(f"{name} prompt, {steps} steps: " + ", ".join(
            f"{c['codes']}{'L' if c['last'] else ''}->{c['frames']}"
            f"(cache {c['estimator_att_frames']})" for c in chunks))

    record = {
        "made_by": "scripts/minicpmo_flow_reference.py goldens",
        "reference": f"minicpmo-utils {PACKAGE_VERSION}: stepaudio2.Token2wav.set_stream_cache "
                     "and .stream (CausalMaskedDiffWithXvec.setup_cache/inference_chunk)",
        "versions": _versions(),
        "replaced_in_the_reference": [
            ".cuda() is a no-op and 'cuda' tensors are made on the CPU",
            f"decoder.rand_noise = torch.randn((1, 80, {NOISE_FRAMES}), generator seeded "
            f"{NOISE_SEED}) (the reference draws it from the global random state at build)",
            "the solver's and DiT's cache scratch buffers remade at the tiny widths",
            "_prepare_prompt returns the given prompt (tensors *.prompt_*)",
            "HiFT: a stand-in giving silence of 480 samples per frame (the flow is checked)",
        ],
        "checkpoint": {"how": "write_tiny_flow(DIR, seed=0) "
                              "(app/model/minicpm_o/token2wav/tiny_flow.py)",
                       "flow_yaml": (folder / "flow.yaml").read_text()},
        "weights": {k: float(v.double().sum()) for k, v in state.items()},
        "noise": {"seed": NOISE_SEED, "frames": NOISE_FRAMES,
                  "sum_first_1000_frames": float(noise[:, :, :1000].double().sum())},
        "inputs": "tensors {short,long}.prompt_{tokens,speaker,mel} and turn_codes "
                  "(torch.Generator seeded 1234)",
        "prompts": PROMPTS,
        "window": {"size": WINDOW, "stride": STRIDE, "silence_prefix": [SILENCE] * 3},
        "runs": runs,
        "tensors_file": "flow.safetensors",
    }
    save_file(tensors, str(GOLDENS / "flow.safetensors"))
    (GOLDENS / "flow.json").write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {GOLDENS / 'flow.json'} and flow.safetensors ({len(tensors)} tensors)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("keylist").set_defaults(run=keylist)
    g = sub.add_parser("goldens")
    g.add_argument("--checkpoint", required=True, help="folder of write_tiny_flow's files")
    g.set_defaults(run=goldens)
    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    sys.exit(main())
