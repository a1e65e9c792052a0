"""Reference data for MiniCPM-o's token2wav vocoder and stream, from minicpmo-utils 1.0.6.

`stepaudio2.Token2wav` (PyPI minicpmo-utils 1.0.6, the version MiniCPM-o 4.5's official
duplex code drives; 1.0.7 swapped in another vocoder the published checkpoint has no
files for) pins transformers < 4.53 and onnxruntime <= 1.21 and hard-codes CUDA, so it is
no dependency of Duetto and nothing of it is in the repository. This script runs it in a
throwaway environment on the CPU and writes small files the tests check our port against:

* `keylist`: every tensor name and shape of the published hift.pt (after its
  `generator.` prefix), as the package's own `HiFTGenerator()` builds them with the
  defaults Token2wav uses, on the meta device.
* `vocoder`: the package's own `Token2wav.stream` run over given mel chunks, with the
  tiny vocoder file Duetto writes (`write_tiny_hift`) and a stand-in flow that hands
  back those chunks: the vocoder's streaming alone (caches, Hamming cross-fade, held
  tail, first-chunk silence), over three turns, each from the turn-start cache as the
  official MiniCPMODuplex restores it.
* `stream`: token2wav end to end: the package's Token2wav built by its own __init__ on
  the tiny flow and vocoder, driven by the official MiniCPMODuplex's own token2wav
  methods (`_init_token2wav_cache`, `_reset_token2wav_for_new_turn`,
  `_generate_waveform_from_tokens`) over a scripted session (SESSION); every window's
  waveform is recorded.

What is replaced to run on a CPU, and only here: `.cuda()` on tensors and modules does
nothing, and the `device='cuda'` the package passes to torch.tensor/zeros/ones becomes
the CPU. The vocoder's source draws random numbers from torch's global generator; the
script seeds it once before the first chunk (SEED) and our port draws from a generator
seeded alike.

Make the environment (outside the repository) and run from the repository root:

    python3 -m venv /work/mcpo-ref-env
    /work/mcpo-ref-env/bin/pip install torch==2.8.0 torchaudio==2.8.0 "numpy<2.3" scipy \
        safetensors "minicpmo-utils[tts]==1.0.6"
    /work/mcpo-ref-env/bin/python scripts/minicpmo_hift_reference.py keylist
    # Duetto's environment writes the tiny vocoder:
    .venv/bin/python -c "from pathlib import Path; \
        from app.model.minicpm_o.token2wav.tiny_hift import write_tiny_hift; \
        write_tiny_hift(Path('/tmp/t2w-tiny'), 0)"
    /work/mcpo-ref-env/bin/python scripts/minicpmo_hift_reference.py vocoder --tiny /tmp/t2w-tiny
    # The end-to-end stream also needs the tiny flow (same folder) and the official code
    # (MiniCPMO45/ of OpenBMB/MiniCPM-o-Demo, as scripts/minicpmo_reference.py takes it):
    .venv/bin/python -c "from pathlib import Path; \
        from app.model.minicpm_o.token2wav.tiny_flow import write_tiny_flow; \
        write_tiny_flow(Path('/tmp/t2w-tiny'), 0)"
    /work/mcpo-ref-env/bin/python scripts/minicpmo_hift_reference.py stream --tiny /tmp/t2w-tiny \
        --official SRC/MiniCPMO45
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import importlib.metadata as md
import json
import sys
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KEYLISTS = ROOT / "tests" / "data" / "keylists"
GOLDENS = ROOT / "tests" / "data" / "minicpmo_goldens"
PACKAGE = "minicpmo-utils"
SEED = 1234  # torch's global generator, seeded once before a run's first chunk
# The vocoder-alone run: mel frames per call, turn by turn (None ends a turn's calls;
# the last call of a turn is the flushing one). 50 frames is a 28-code window's 25 codes;
# the 6-frame turn is a flush of the three silence codes alone.
VOCODER_TURNS = [[50, 50, 50, 22], [50, 12], [6]]


def _versions() -> dict:
    import torch

    out = {"torch": torch.__version__}
    for name in (PACKAGE, "numpy", "scipy", "safetensors", "torchaudio", "onnxruntime"):
        with contextlib.suppress(md.PackageNotFoundError):
            out[name] = md.version(name)
    return out


def _need_version() -> None:
    version = md.version(PACKAGE)
    if version != "1.0.6":
        raise SystemExit(f"{PACKAGE} {version} is installed; the reference is 1.0.6")


def cpu_patches() -> None:
    """Run the CUDA-only package on the CPU (this throwaway process only)."""
    import torch

    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    torch.nn.Module.cuda = lambda self, *args, **kwargs: self
    import stepaudio2.token2wav as t2w

    def on_cpu(make):
        def made(*args, **kwargs):
            if str(kwargs.get("device", "")).startswith("cuda"):
                kwargs["device"] = "cpu"
            return make(*args, **kwargs)
        return made

    # The module's own `torch` name sees a copy whose tensor/zeros/ones put 'cuda' on the
    # CPU; everything else is torch itself.
    shim = types.ModuleType("torch_on_cpu")
    shim.__dict__.update(torch.__dict__)
    for name in ("tensor", "zeros", "ones"):
        setattr(shim, name, on_cpu(getattr(torch, name)))
    t2w.torch = shim


def tensor_sums(state) -> dict[str, list[float]]:
    """Per tensor, [sum, sum of squares] in float64."""
    return {name: [float(t.double().sum()), float(t.double().pow(2).sum())]
            for name, t in sorted(state.items())}


# --- keylist -----------------------------------------------------------------------------


def keylist(out: Path) -> None:
    import torch
    from stepaudio2.flashcosyvoice.modules.hifigan import HiFTGenerator

    _need_version()
    with torch.device("meta"):
        model = HiFTGenerator()  # the defaults, as Token2wav.__init__ builds it
    tensors = {k: list(v.shape) for k, v in model.state_dict().items()}
    count = sum(v.numel() for v in model.state_dict().values())
    record = {
        "checkpoint": "openbmb/MiniCPM-o-4_5 assets/token2wav/hift.pt",
        "layout": "minicpmo-hift",
        "source": f"{PACKAGE} 1.0.6 stepaudio2/flashcosyvoice/modules/hifigan.py "
                  "HiFTGenerator() with its defaults, as stepaudio2.Token2wav builds it "
                  "before load_state_dict(strict=True) of hift.pt with the 'generator.' "
                  "prefix removed",
        "how": f"{len(tensors)} tensors ({count:,} parameters), built on the meta device; "
               "weight-normed convolutions as torch parametrizations (original0 = g, "
               "original1 = v). The published file's names are these with 'generator.' "
               "in front.",
        "made_by": "scripts/minicpmo_hift_reference.py keylist",
        "versions": _versions(),
        "files": {"hift.pt": {"prefix": "generator.", "tensors": tensors}},
    }
    out.mkdir(parents=True, exist_ok=True)
    path = out / "minicpm-o-4.5-hift.json.gz"
    path.write_bytes(gzip.compress(json.dumps(record, indent=1).encode(), mtime=0))
    print(f"wrote {path}: {len(tensors)} tensors, {count:,} parameters")


# --- the vocoder's stream alone ----------------------------------------------------------


def tiny_hift(folder: Path):
    """The package's HiFTGenerator with the tiny file's widths (its defaults otherwise),
    loaded as Token2wav loads hift.pt: prefix stripped, strict."""
    import torch
    from stepaudio2.flashcosyvoice.modules.hifigan import ConvRNNF0Predictor, HiFTGenerator

    raw = torch.load(folder / "hift.pt", map_location="cpu", weights_only=True)
    state = {k.replace("generator.", ""): v for k, v in raw.items()}
    base = state["conv_pre.parametrizations.weight.original1"].shape[0]
    f0_width = state["f0_predictor.classifier.weight"].shape[1]
    model = HiFTGenerator(base_channels=base,
                          f0_predictor=ConvRNNF0Predictor(cond_channels=f0_width))
    model.load_state_dict(state, strict=True)
    return model.eval(), raw, {"base_channels": base, "f0_cond_channels": f0_width}


class MelChunks:
    """A stand-in for the flow in Token2wav.stream: hands back the next given mel chunk
    and attention caches too short for stream's trimming to touch."""

    def __init__(self, chunks):
        import torch

        self.chunks = list(chunks)
        self.empty = {"estimator_att_cache": torch.zeros(1, 1, 1, 1, 0),
                      "conformer_att_cache": torch.zeros(1, 1, 1, 0, 1)}

    def inference_chunk(self, token, spk, cache, last_chunk, n_timesteps):
        return self.chunks.pop(0), self.empty


def bare_token2wav(hift, prompt_frames: int):
    """A Token2wav whose __init__ is skipped (it would read the ONNX encoders and the
    flow): the attributes stream() uses, set as __init__ sets them."""
    import numpy as np
    import torch
    from stepaudio2.token2wav import Token2wav

    t2w = Token2wav.__new__(Token2wav)
    t2w.float16, t2w.n_timesteps = False, 10
    t2w.hift = hift
    t2w.mel_cache_len = 8
    t2w.source_cache_len = int(t2w.mel_cache_len * 480)
    t2w.speech_window = torch.from_numpy(np.hamming(2 * t2w.source_cache_len))
    t2w.hift_cache_dict = {}
    # stream() reads the prompt only for the trimming's length and passes the speaker on.
    t2w.cache = (None, None, torch.zeros(1, 4), torch.zeros(1, prompt_frames, 80), None)
    return t2w


def vocoder(tiny: Path, out: Path) -> None:
    import numpy as np
    import torch
    from safetensors.torch import save_file

    _need_version()
    cpu_patches()
    hift, raw, widths = tiny_hift(tiny)
    rng = np.random.default_rng(7)
    total = sum(sum(turn) for turn in VOCODER_TURNS)
    # Log-mel-like frames: each bin drifts around -5 (x <- 0.9 x + N(0, 0.5)).
    steps = rng.normal(0.0, 0.5, (1, 80, total))
    walk = np.zeros_like(steps)
    for t in range(total):
        walk[:, :, t] = (0.9 * walk[:, :, t - 1] if t else 0.0) + steps[:, :, t]
    mel = torch.from_numpy((walk - 5.0).astype(np.float32))
    chunks, start = [], 0
    for turn in VOCODER_TURNS:
        for frames in turn:
            chunks.append(mel[:, :, start:start + frames].clone())
            start += frames
    t2w = bare_token2wav(hift, prompt_frames=20)
    t2w.stream_cache = {}
    t2w.flow = MelChunks(chunks)
    # The turn-start cache as Token2wav.set_stream_cache makes it, restored per turn as
    # MiniCPMODuplex._reset_token2wav_for_new_turn restores it (a clone each turn).
    base = {"mel": torch.zeros(1, 80, 0), "source": torch.zeros(1, 1, 0),
            "speech": torch.zeros(1, 0)}
    tensors = {"mel": mel}
    torch.manual_seed(SEED)
    calls = []
    for t, turn in enumerate(VOCODER_TURNS):
        t2w.hift_cache_dict = {k: v.clone() for k, v in base.items()}
        for i, frames in enumerate(turn):
            last = i == len(turn) - 1
            wave = t2w.stream([0] * 3, prompt_wav=None, last_chunk=last, return_waveform=True)
            name = f"turn{t}.chunk{i}"
            tensors[name] = torch.from_numpy(np.ascontiguousarray(wave[0]))
            calls.append({"name": name, "frames": frames, "last": last,
                          "samples": int(wave.shape[1])})
    save_file(tensors, str(out / "hift_stream.safetensors"))
    record = {
        "made_by": "scripts/minicpmo_hift_reference.py vocoder",
        "reference": f"{PACKAGE} 1.0.6 stepaudio2.Token2wav.stream(tokens, prompt_wav=None, "
                     "last_chunk=..., return_waveform=True): its vocoder half (hift_cache_dict, "
                     "the Hamming cross-fade, the held-back tail, the first chunk's silence) "
                     "as released; the flow is a stand-in returning the given mel chunks",
        "replaced": ["Token2wav.__init__ skipped: hift, mel_cache_len 8, source_cache_len "
                     "3840, speech_window np.hamming(7680) and the cache set as it sets them",
                     "HiFTGenerator built with the tiny file's widths (its defaults otherwise)",
                     ".cuda() is a no-op; device='cuda' in token2wav.py's torch.tensor/zeros/"
                     "ones is the CPU"],
        "seed": {"torch.manual_seed": SEED, "when": "once, before the first chunk"},
        "turns": VOCODER_TURNS,
        "turn_start": "each turn starts from empty vocoder caches (set_stream_cache's), "
                      "restored as MiniCPMODuplex does per turn",
        "inputs": "mel (float32 [1, 80, frames]): numpy default_rng(7); per bin "
                  "x_t = 0.9 x_(t-1) + N(0, 0.5), x_0 = N(0, 0.5), minus 5; the chunks "
                  "are consecutive slices in the order of `calls`",
        "calls": calls,
        "tiny": {"how": "write_tiny_hift(folder, seed=0) "
                        "(app/model/minicpm_o/token2wav/tiny_hift.py)", **widths},
        "weights": tensor_sums(raw),
        "versions": _versions(),
        "tensors_file": "hift_stream.safetensors (float32)",
    }
    (out / "hift_stream.json").write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {out}/hift_stream.*: {len(calls)} calls")


# --- token2wav streamed end to end, driven by the official duplex loop --------------------

# The scripted session: per unit (codes the TTS gave, end of turn, force_flush). The
# official loop sets force_flush in a turn's first unit; units give up to 26 codes
# (max_token_per_chunk = 25 + 1). "reset" is a turn abandoned mid-way (barge-in): the
# turn-start restore the official loop makes at a new turn, taken at once.
PROMPT_CODES = 20  # 40 prompt frames: the flow's caches pass prompt + 100 in turn 1
SESSION = [
    ("unit", 26, False, True), ("unit", 26, False, False), ("unit", 26, False, False),
    ("unit", 10, True, False),
    ("unit", 9, False, True), ("unit", 26, False, False), ("unit", 26, True, False),
    ("unit", 26, False, True), ("reset",),
    ("unit", 26, True, True),
]
OFFICIAL_PACKAGE = "minicpmo45_official"
NOISE_SEED, NOISE_FRAMES = 0, 50 * 600  # the flow's noise, as Duetto's flow.py draws it


def import_duplex(src: Path):
    """The official modeling module, imported as a package (it uses relative imports)."""
    import importlib
    import tempfile

    parent = Path(tempfile.mkdtemp(prefix="mcpo-official-"))
    (parent / OFFICIAL_PACKAGE).symlink_to(src.resolve(), target_is_directory=True)
    sys.path.insert(0, str(parent))
    return importlib.import_module(f"{OFFICIAL_PACKAGE}.modeling_minicpmo")


class Refuses:
    """Stands in for an encoder the session never uses (the prompt is given)."""

    def __init__(self, *args, **kwargs):
        pass

    def cuda(self):
        return self

    def eval(self):
        return self

    def __getattr__(self, name):
        raise RuntimeError(f"the stand-in encoder was used ({name})")


def resize_scratch(flow) -> None:
    """The solver's and DiT's cache scratch buffers (no weights) are allocated for the
    published widths: 16 steps x 16 blocks x batch 2 x 8 heads x 1000 frames x 128, and
    conv caches 2 x 512 by 2. Made again by that rule at the tiny flow's widths."""
    import torch

    dit = flow.decoder.estimator
    blocks, attn = len(dit.blocks), dit.blocks[0].attn
    hidden = dit.in_proj.out_features
    flow.decoder.cnn_cache_buffer = torch.zeros(16, blocks, 2, 2 * hidden, 2)
    flow.decoder.att_cache_buffer = torch.zeros(16, blocks, 2, attn.num_heads, 1000,
                                                2 * attn.head_dim)
    dit.cnn_cache_buffer = torch.zeros(blocks, 2, 2 * hidden, 2)
    dit.att_cache_buffer = torch.zeros(blocks, 2, attn.num_heads, 1000, 2 * attn.head_dim)


def reference_token2wav(tiny: Path, n_timesteps: int):
    """stepaudio2.Token2wav built by its own __init__ from the tiny folder (flow.yaml by
    hyperpyyaml, flow.pt and hift.pt strictly), the ONNX encoders standing in."""
    import onnxruntime
    import s3tokenizer
    import stepaudio2.token2wav as t2w
    import torch
    from stepaudio2.flashcosyvoice.modules.hifigan import ConvRNNF0Predictor, HiFTGenerator

    _, _, widths = tiny_hift(tiny)
    s3tokenizer.load_model = Refuses
    onnxruntime.InferenceSession = Refuses
    t2w.HiFTGenerator = lambda: HiFTGenerator(
        base_channels=widths["base_channels"],
        f0_predictor=ConvRNNF0Predictor(cond_channels=widths["f0_cond_channels"]))
    model = t2w.Token2wav(str(tiny), float16=False, n_timesteps=n_timesteps)
    resize_scratch(model.flow)
    model.flow.decoder.rand_noise = torch.randn(
        (1, model.flow.output_size, NOISE_FRAMES),
        generator=torch.Generator().manual_seed(NOISE_SEED))
    return model, widths


def session_inputs():
    import torch

    g = torch.Generator().manual_seed(99)
    units = sum(step[1] for step in SESSION if step[0] == "unit")
    return {
        "prompt_tokens": torch.randint(0, 6561, (1, PROMPT_CODES), generator=g,
                                       dtype=torch.int32),
        "prompt_speaker": torch.randn(1, 192, generator=g),
        "prompt_mel": torch.randn(1, 2 * PROMPT_CODES, 80, generator=g) * 2 - 5,
        "codes": torch.randint(0, 6561, (units,), generator=g, dtype=torch.int32),
    }


def stream(tiny: Path, official: Path, out: Path, n_timesteps: int) -> None:
    import types as pytypes

    import numpy as np
    import torch
    from safetensors.torch import save_file

    _need_version()
    cpu_patches()
    modeling = import_duplex(official)
    model, widths = reference_token2wav(tiny, n_timesteps)
    inputs = session_inputs()
    prompt = (inputs["prompt_tokens"], torch.tensor([PROMPT_CODES], dtype=torch.int32),
              inputs["prompt_speaker"], inputs["prompt_mel"],
              torch.tensor([2 * PROMPT_CODES], dtype=torch.int32))
    model._prepare_prompt = pytypes.MethodType(lambda self, wav: prompt, model)

    windows = []  # every Token2wav.stream call: its codes and its float waveform
    released = model.stream

    def recording_stream(tokens, prompt_wav, last_chunk=False, return_waveform=False):
        wave = released(tokens, prompt_wav, last_chunk=last_chunk, return_waveform=True)
        windows.append({"codes": list(tokens), "last": last_chunk, "wave": wave[0].copy()})
        if return_waveform:
            return wave
        return (np.clip(wave, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()  # as released

    model.stream = recording_stream

    # The official duplex object, bare: only its token2wav state and methods are used.
    duplex = modeling.MiniCPMODuplex.__new__(modeling.MiniCPMODuplex)
    duplex.model = pytypes.SimpleNamespace(tts=pytypes.SimpleNamespace(audio_tokenizer=model))
    duplex.chunk_terminator_token_ids = [151705, 151718, 151721]  # LLM ids, never codes
    duplex._reset_streaming_state()
    duplex._init_token2wav_cache("<given prompt>")
    duplex._reset_token2wav_for_new_turn()

    tensors = {k: v.contiguous() for k, v in inputs.items()}
    torch.manual_seed(SEED)
    codes = inputs["codes"].tolist()
    steps, used = [], 0
    for step in SESSION:
        if step[0] == "reset":
            duplex._reset_token2wav_for_new_turn()
            steps.append({"reset": True})
            continue
        _, count, end_of_turn, force_flush = step
        first_window = len(windows)
        wave = duplex._generate_waveform_from_tokens(
            torch.tensor(codes[used:used + count]), "<given prompt>", end_of_turn,
            force_flush=force_flush)
        if end_of_turn:
            duplex._reset_token2wav_for_new_turn()  # as streaming_generate does after it
        steps.append({"codes": [used, used + count], "end_of_turn": end_of_turn,
                      "force_flush": force_flush,
                      "windows": list(range(first_window, len(windows))),
                      "unit_samples": 0 if wave is None else int(wave.shape[0])})
        used += count
    for i, window in enumerate(windows):
        tensors[f"window{i}"] = torch.from_numpy(np.ascontiguousarray(window["wave"]))
    save_file(tensors, str(out / "token2wav_stream.safetensors"))
    flow_state = torch.load(tiny / "flow.pt", map_location="cpu", weights_only=True)
    record = {
        "made_by": "scripts/minicpmo_hift_reference.py stream",
        "reference": f"{PACKAGE} 1.0.6 stepaudio2.Token2wav (its own __init__ on the tiny "
                     "folder) driven by the official MiniCPMODuplex's own token2wav methods "
                     "(_init_token2wav_cache, _reset_token2wav_for_new_turn, "
                     "_generate_waveform_from_tokens), official commit "
                     f"{(official / 'COMMIT').read_text().strip()}",
        "replaced": [
            ".cuda() is a no-op; device='cuda' in token2wav.py's torch.tensor/zeros/ones is "
            "the CPU",
            "the speech tokenizer and CAM++ (s3tokenizer.load_model, onnxruntime) are "
            "stand-ins that refuse use; _prepare_prompt returns the given prompt (prompt_*)",
            "HiFTGenerator() is built with the tiny file's widths (its defaults otherwise)",
            "the flow's solver/DiT cache scratch buffers are remade at the tiny widths",
            f"flow.decoder.rand_noise = torch.randn((1, 80, {NOISE_FRAMES})) from a generator "
            f"seeded {NOISE_SEED} (the reference draws it from the global state at build)",
            "MiniCPMODuplex is built bare (__new__): model.tts.audio_tokenizer is the "
            "Token2wav above, chunk_terminator_token_ids its LLM ids; nothing else is used",
        ],
        "seed": {"torch.manual_seed": SEED, "when": "once, after _init_token2wav_cache, "
                 "before the first unit"},
        "n_timesteps": n_timesteps,
        "session": steps,
        "windows": [{"codes": len(w["codes"]), "last": w["last"],
                     "samples": int(w["wave"].shape[0])} for w in windows],
        "inputs": "prompt_tokens, prompt_speaker, prompt_mel, codes: torch.Generator "
                  "seeded 99 (see session_inputs)",
        "tiny": {"how": "write_tiny_flow(folder, seed=0) and write_tiny_hift(folder, seed=0)",
                 **widths},
        "weights": {"flow.pt": tensor_sums(flow_state),
                    "hift.pt": tensor_sums(torch.load(tiny / "hift.pt", weights_only=True))},
        "waves": "windowN: each Token2wav.stream call's float waveform (before the int16 "
                 "PCM the duplex loop makes of it); unit_samples: the length of what "
                 "_generate_waveform_from_tokens returned, its windows joined and, when "
                 "shorter than 1 s and not the turn's end, left-padded with zeros to 1 s",
        "versions": _versions(),
    }
    (out / "token2wav_stream.json").write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {out}/token2wav_stream.*: {len(windows)} windows: " + ", ".join(
        f"{len(w['codes'])}{'L' if w['last'] else ''}" for w in windows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    k = sub.add_parser("keylist", help="hift.pt's tensor names and shapes")
    k.add_argument("--out", type=Path, default=KEYLISTS)
    v = sub.add_parser("vocoder", help="the vocoder's stream alone on the tiny vocoder")
    v.add_argument("--tiny", type=Path, required=True, help="a folder with the tiny hift.pt")
    v.add_argument("--out", type=Path, default=GOLDENS)
    s = sub.add_parser("stream", help="token2wav end to end as the official duplex drives it")
    s.add_argument("--tiny", type=Path, required=True,
                   help="a folder with the tiny flow.yaml, flow.pt and hift.pt")
    s.add_argument("--official", type=Path, required=True,
                   help="the official MiniCPMO45/ folder, with its COMMIT file")
    s.add_argument("--steps", type=int, default=10, help="the flow's solver steps")
    s.add_argument("--out", type=Path, default=GOLDENS)
    args = parser.parse_args()
    if args.what == "keylist":
        keylist(args.out)
    elif args.what == "vocoder":
        vocoder(args.tiny, args.out)
    else:
        stream(args.tiny, args.official, args.out, args.steps)


if __name__ == "__main__":
    sys.exit(main())
