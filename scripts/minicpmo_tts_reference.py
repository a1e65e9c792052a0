"""Speech-decoder goldens from OpenBMB's own MiniCPM-o 4.5 code, made in an environment of its own.

Like scripts/minicpmo_reference.py (whose loaders this script uses), it runs in the
throwaway environment with the official pins (transformers 4.51, torch <= 2.8), never in
Duetto's, and writes small files the tests check Duetto's port against:

* `tts`: the official MiniCPMODuplex with speech on (generate_audio=True) over the
  scripted session of tests/minicpmo_tts_inputs.py on a tiny checkpoint folder (Duetto's
  tiny builder's): per unit, the LLM's tokens, the condition the official loop gives
  `MiniCPMTTS.generate_chunk` (`_convert_results_to_tts_input`), its arguments
  (min/max new tokens, text_start_pos) and the codes it returns; once with greedy codes
  (the official draw `torch.multinomial(scores, 1)` replaced, during generate_chunk
  only, by the argmax of the same scores: the official code has no greedy mode) and once
  sampled as published, torch's generator seeded before the first unit. The greedy run
  also raises the end code's logit at a few (unit, step)s (minicpmo_tts_inputs.
  EndCodeSteer, a forward hook on the code head) so that the end-code rules are walked.
  -> tests/data/minicpmo_goldens/tts.{json,safetensors}

Replaced to run on a CPU, as in scripts/minicpmo_reference.py: stepaudio2.Token2wav (a
stand-in that refuses any use: no voice prompt is given, so the official loop's
`_generate_waveform_from_tokens` returns before it, and the codes are what is compared),
the bfloat16 cast (a float32 strict load of the same files), attention "sdpa" for the
LLM (the official code then runs the TTS "eager").

    .venv/bin/python -m app models tiny minicpm-o /tmp/mcpo-tiny      # Duetto's environment
    /work/mcpo-ref-env/bin/python scripts/minicpmo_tts_reference.py tts \
        --official SRC/MiniCPMO45 --checkpoint /tmp/mcpo-tiny

* `voice`: minicpmo-utils 1.0.6's `Token2wav._prepare_prompt` (the voice prompt: speech
  codes, CAM++ embedding, 24 kHz prompt mel) of generated recordings
  (tests/minicpmo_tts_inputs.py) on the tiny ONNX encoders, with the features on the way.
  -> tests/data/minicpmo_goldens/voice_prompt.{json,safetensors}

    .venv/bin/python -c "from app.model.minicpm_o.token2wav.tiny_voice import \
        write_tiny_voice_encoders as w; w('/tmp/mcpo-voice', 0)"
    /work/mcpo-ref-env/bin/python scripts/minicpmo_tts_reference.py voice \
        --encoders /tmp/mcpo-voice
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import minicpmo_reference as ref  # noqa: E402  (the part-1 loaders: one way to load)

GOLDENS = ROOT / "tests" / "data" / "minicpmo_goldens"


class Steerer:
    """Adds minicpmo_tts_inputs.steer's biases to the logits the official decode is given
    at (unit, step j); the decode itself is the official one."""

    def __init__(self, duplex, tok):
        from tests import minicpmo_tts_inputs as ti

        self.duplex, self.tok, self.ti, self.step = duplex, tok, ti, 0
        self._decode = duplex.decoder.decode
        duplex.decoder.decode = self

    def __call__(self, logits, **kwargs):
        unit = self.duplex._streaming_generate_count - 1
        logits = logits.clone()
        for token, bias in self.ti.steer(unit, self.step).items():
            logits[0, self.tok.convert_tokens_to_ids(token)] += bias
        self.step += 1
        return self._decode(logits, **kwargs)


class ChunkRecorder:
    """Wraps MiniCPMTTS.generate_chunk: the same call, its arguments and codes kept; in
    greedy mode torch.multinomial is the argmax of its scores during the call only."""

    def __init__(self, modeling, tts):
        self.modeling, self.tts = modeling, tts
        self._inner = tts.generate_chunk
        tts.generate_chunk = self
        self.greedy = False
        self.calls: list[dict] = []

    def __call__(self, **kwargs):
        torch = self.modeling.torch
        original = torch.multinomial
        if self.greedy:
            torch.multinomial = lambda scores, num_samples: scores.argmax(-1, keepdim=True)
        try:
            new_tokens, kv = self._inner(**kwargs)
        finally:
            torch.multinomial = original
        self.calls.append({
            "condition": kwargs["inputs_embeds"][0].detach().clone(),
            "min_new_tokens": int(kwargs["min_new_tokens"]),
            "max_new_token": int(kwargs["max_new_token"]),
            "text_start_pos": int(kwargs["text_start_pos"]),
            "had_cache": kwargs["past_key_values"] is not None,
            "codes": new_tokens.reshape(-1).tolist(),
        })
        return new_tokens, kv


def run_session(duplex, tok, recorder, tensors: dict, name: str, *, greedy: bool,
                seed: int | None, end_steer=None) -> list[dict]:
    import torch

    from tests import minicpmo_tts_inputs as ti

    recorder.greedy = greedy
    duplex.model.reset_session()
    steerer = Steerer(duplex, tok)
    with torch.no_grad():
        duplex.prepare(prefix_system_prompt=ref_inputs().PREFIX_SYSTEM_PROMPT,
                       suffix_system_prompt=ref_inputs().SUFFIX_SYSTEM_PROMPT,
                       ref_audio=ti.ref_audio())
    if seed is not None:
        torch.manual_seed(seed)
    units = []
    for k in range(ti.UNITS):
        pcm = ti.unit_audio(k)
        ids_before, calls_before = len(duplex.total_ids), len(recorder.calls)
        with torch.no_grad():
            result = duplex.streaming_prefill(audio_waveform=pcm, frame_list=None,
                                              max_slice_nums=1)
            if not result["success"]:
                raise SystemExit(f"unit {k}: streaming_prefill failed: {result['reason']}")
            steerer.step = 0
            if end_steer is not None:
                end_steer.begin(k)
            step = duplex.streaming_generate(
                decode_mode="greedy",
                max_new_speak_tokens_per_chunk=ti.MAX_NEW_SPEAK_TOKENS_PER_CHUNK)
        calls = recorder.calls[calls_before:]
        if len(calls) > 1:
            raise SystemExit(f"unit {k}: {len(calls)} generate_chunk calls, want at most 1")
        record = {"unit": k, "audio_sha256": ref_inputs().sha256(pcm),
                  "generated_ids": duplex.total_ids[ids_before:],
                  "is_listen": bool(step["is_listen"]), "end_of_turn": bool(step["end_of_turn"]),
                  "tts": None}
        if calls:
            call = dict(calls[0])
            key = f"{name}.unit{k}.condition"
            tensors[key] = call.pop("condition")
            record["tts"] = {"condition": key, **call}
        units.append(record)
        codes = record["tts"]["codes"] if record["tts"] else None
        print(f"{name} unit {k}: listen={step['is_listen']} end_of_turn={step['end_of_turn']} "
              f"{len(record['generated_ids'])} tokens, codes "
              f"{None if codes is None else (len(codes), codes[:5])}")
    return units


def ref_inputs():
    from tests import minicpmo_inputs

    return minicpmo_inputs


def tts_goldens(src: Path, checkpoint: Path, out: Path) -> None:
    import torch
    from safetensors.torch import save_file

    from tests import minicpmo_tts_inputs as ti

    modeling, configuration = ref.import_official(src)
    folder = ref.reference_folder(checkpoint, src)
    files = ref.read_shards(checkpoint)
    duplex = modeling.MiniCPMODuplex(
        name_or_path=str(folder), generate_audio=True, device="cpu",
        attn_implementation="sdpa", force_listen_count=ti.FORCE_LISTEN_COUNT)
    model = ref.strict_model(modeling, configuration, folder, files)
    for name in ("CHUNK_MS", "FIRST_CHUNK_MS", "CNN_REDUNDANCY_MS", "SAMPLE_RATE"):
        setattr(model, name, getattr(duplex.model, name))
    model.processor = duplex.processor
    duplex.model = model
    duplex.decoder.m = model.llm
    tok = duplex.tokenizer
    recorder = ChunkRecorder(modeling, model.tts)
    tts_attn = model.tts.model.config._attn_implementation

    tensors: dict[str, torch.Tensor] = {}
    end_steer = ti.EndCodeSteer(model.tts.head_code[0], model.tts.config.num_audio_tokens - 1)
    greedy = run_session(duplex, tok, recorder, tensors, "greedy", greedy=True, seed=None,
                         end_steer=end_steer)
    end_steer.handle.remove()
    sampled = run_session(duplex, tok, recorder, tensors, "sampled", greedy=False,
                          seed=ti.SAMPLED_SEED)

    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.float().contiguous() for k, v in tensors.items()},
              str(out / "tts.safetensors"), metadata={"format": "pt"})
    meta_path = checkpoint / "duetto.json"
    record = {
        "made_by": "scripts/minicpmo_tts_reference.py tts",
        "official_code": {"repository": "OpenBMB/MiniCPM-o-Demo", "folder": "MiniCPMO45/",
                          "commit": ref._official_commit(src)},
        "versions": ref._versions(),
        "replaced_in_the_official_code": [
            "stepaudio2.Token2wav: a stand-in that refuses any use; no prompt wav is given, "
            "so the official _generate_waveform_from_tokens returns before using it",
            "MiniCPMODuplex.__init__'s bfloat16 cast: a float32 strict load of the same "
            "files in duplex.model and duplex.decoder.m",
            f"attention: the LLM 'sdpa' (official default flash_attention_2); the TTS "
            f"then runs {tts_attn!r} (the official init_tts_module's choice)",
            "greedy run only: torch.multinomial(scores, 1) inside MiniCPMTTS.generate_chunk "
            "replaced by scores.argmax(-1, keepdim=True) for the duration of the call",
        ],
        "checkpoint": {
            "how": "duetto models tiny minicpm-o DIR (app/model/minicpm_o/tiny.py)",
            "builder_meta": json.loads(meta_path.read_text()) if meta_path.exists() else None,
            "config": json.loads((checkpoint / "config.json").read_text()),
        },
        "weights": ref.tensor_sums(files),
        "tensors_file": "tts.safetensors (float32): each speaking unit's condition "
                        "[positions, tts hidden]",
        "session": {
            "what": "MiniCPMODuplex(generate_audio=True, force_listen_count="
                    f"{ti.FORCE_LISTEN_COUNT}).prepare(prefix, suffix, ref_audio) (no "
                    "prompt_wav_path), then per unit streaming_prefill(audio 1 s, no frame) "
                    "and streaming_generate(decode_mode='greedy', "
                    f"max_new_speak_tokens_per_chunk={ti.MAX_NEW_SPEAK_TOKENS_PER_CHUNK}) "
                    "with minicpmo_tts_inputs.steer's biases added to the logits "
                    "StreamDecoder.decode is given; the TTS with its defaults "
                    "(tts_temperature 0.8, tts_repetition_penalty 1.05)",
            "inputs": "tests/minicpmo_tts_inputs.py (UNITS, unit_audio, ref_audio, STEER)",
            "steer": {f"{u},{j}": t for (u, j), t in ti.STEER.items()},
            "bias": ti.STEER_BIAS,
        },
        "greedy": {"what": "TTS codes by argmax of the official scores, with "
                           "minicpmo_tts_inputs.EndCodeSteer (TTS_STEER's biases on the end "
                           "code's logit, a forward hook on head_code[0])",
                   "tts_steer": {f"{u},{j}": b for (u, j), b in ti.TTS_STEER.items()},
                   "units": greedy},
        "sampled": {"what": f"TTS codes drawn as published; torch.manual_seed"
                            f"({ti.SAMPLED_SEED}) after prepare()", "seed": ti.SAMPLED_SEED,
                    "units": sampled},
    }
    (out / "tts.json").write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {out}/tts.json and tts.safetensors ({len(tensors)} tensors)")


# --- the voice prompt ----------------------------------------------------------------------


class OrtTokenizer:
    """Stands in for s3tokenizer's torch port (which cannot read a tiny graph: it maps the
    published graph's node names onto its own modules): `quantize` runs the same ONNX
    file with onnxruntime, on the features _prepare_prompt gives it."""

    def __init__(self, path: Path):
        import onnxruntime

        self.session = onnxruntime.InferenceSession(str(path),
                                                    providers=["CPUExecutionProvider"])

    def quantize(self, mels, mels_lens):
        import numpy as np
        import torch

        feats, length = (i.name for i in self.session.get_inputs()[:2])
        out = self.session.run(None, {feats: mels.numpy().astype(np.float32),
                                      length: mels_lens.numpy().astype(np.int32)})[0]
        codes = torch.from_numpy(np.asarray(out).reshape(1, -1).astype(np.int32))
        return codes, torch.tensor([codes.shape[1]], dtype=torch.int32)


def _cpu_only() -> None:
    """1.0.6 moves tensors with .cuda(): on this CPU-only run they stay where they are."""
    import torch

    torch.Tensor.cuda = lambda self, *a, **k: self
    torch.nn.Module.cuda = lambda self, *a, **k: self
    make = torch.tensor

    def on_cpu(*args, device=None, **kwargs):  # torch.tensor(..., device='cuda')
        return make(*args, **kwargs)

    torch.tensor = on_cpu


def voice_goldens(encoders: Path, out: Path) -> None:
    import types

    import onnxruntime
    import s3tokenizer
    import torch
    import torchaudio.compliance.kaldi as kaldi
    from safetensors.torch import save_file
    from stepaudio2.token2wav import Token2wav

    from tests import minicpmo_tts_inputs as ti

    _cpu_only()
    tokenizer_path = encoders / "speech_tokenizer_v2_25hz.onnx"
    speaker_path = encoders / "campplus.onnx"
    try:
        s3tokenizer.load_model(str(tokenizer_path))
        torch_port = "s3tokenizer.load_model read the tiny file"
    except Exception as exc:  # what the torch port says about a graph that is not the published one
        import traceback

        where = traceback.extract_tb(exc.__traceback__)[-1]
        torch_port = (f"s3tokenizer.load_model refuses the tiny file: {type(exc).__name__} at "
                      f"{Path(where.filename).name}:{where.lineno} `{where.line}` (onnx2torch "
                      "renames the published graph's weights by its node names, then loads "
                      "them strictly into its 6-block, 1280-wide encoder)")
    print(torch_port)

    option = onnxruntime.SessionOptions()
    option.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    option.intra_op_num_threads = 1
    # What _prepare_prompt reads from self: the tokenizer, CAM++ as Token2wav.__init__
    # makes it (onnxruntime), the flow's up_rate (2 in the published flow.yaml).
    host = types.SimpleNamespace(
        audio_tokenizer=OrtTokenizer(tokenizer_path),
        spk_model=onnxruntime.InferenceSession(str(speaker_path), sess_options=option,
                                               providers=["CPUExecutionProvider"]),
        flow=types.SimpleNamespace(up_rate=2))
    tmp = Path(tempfile_dir())
    tensors, records = {}, []
    for path in ti.write_voice_recordings(tmp):
        tokens, _, spk, mels, _ = Token2wav._prepare_prompt(host, str(path))
        # The features on the way, by the same library calls _prepare_prompt makes.
        audio = s3tokenizer.load_audio(str(path), sr=16000)
        log_mel = s3tokenizer.log_mel_spectrogram(audio)
        fbank = kaldi.fbank(audio.unsqueeze(0), num_mel_bins=80, dither=0, sample_frequency=16000)
        fbank = fbank - fbank.mean(dim=0, keepdim=True)
        key = path.stem
        tensors.update({f"{key}.tokens": tokens.to(torch.int32), f"{key}.speaker": spk.float(),
                        f"{key}.mel": mels.float(), f"{key}.tokenizer_log_mel": log_mel,
                        f"{key}.speaker_fbank": fbank})
        if ti.VOICE_RECORDINGS[len(records)][1] != 16000:  # the resampler's output
            tensors[f"{key}.audio16k"] = audio
        records.append({"file": path.name, "tokens": int(tokens.shape[1]),
                        "mel_frames": int(mels.shape[1])})
        print(f"{path.name}: {tokens.shape[1]} codes, mel {tuple(mels.shape)}")
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()},
              str(out / "voice_prompt.safetensors"), metadata={"format": "pt"})
    import importlib.metadata as md

    record = {
        "made_by": "scripts/minicpmo_tts_reference.py voice",
        "reference": "stepaudio2.Token2wav._prepare_prompt (minicpmo-utils "
                     f"{md.version('minicpmo-utils')}), called on a stand-in self",
        "versions": {**ref._versions(), "torchaudio": md.version("torchaudio"),
                     "onnxruntime": md.version("onnxruntime"),
                     "s3tokenizer (inside minicpmo-utils)": "1.0.6's copy"},
        "encoders": {
            "how": "app/model/minicpm_o/token2wav/tiny_voice.py write_tiny_voice_encoders"
                   "(folder, seed=0)",
            "sha256": {p.name: ref_sha256(p) for p in (tokenizer_path, speaker_path)},
        },
        "replaced_in_the_reference": [
            "self.audio_tokenizer: s3tokenizer's torch port of the published ONNX graph cannot "
            f"read a tiny graph ({torch_port}); the same ONNX file runs on onnxruntime instead, "
            "given _prepare_prompt's own features",
            "Tensor.cuda and Module.cuda: no-ops, torch.tensor's device argument dropped "
            "(CPU only)",
        ],
        "inputs": "tests/minicpmo_tts_inputs.py write_voice_recordings (PCM_16 WAV files)",
        "recordings": records,
        "tensors": "voice_prompt.safetensors: per recording <stem>.tokens [1, N] int32, "
                   ".speaker [1, 192], .mel [1, 2N, 80] (_prepare_prompt's outputs), and the "
                   "features on the way: .audio16k (files not at 16 kHz), "
                   ".tokenizer_log_mel [128, frames], "
                   ".speaker_fbank [frames, 80]",
    }
    (out / "voice_prompt.json").write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {out}/voice_prompt.json and voice_prompt.safetensors")


def tempfile_dir() -> str:
    import tempfile

    return tempfile.mkdtemp(prefix="mcpo-voice-")


def ref_sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    t = sub.add_parser("tts", help="the official speech decoder's codes on a tiny checkpoint")
    t.add_argument("--official", type=Path, required=True, help="the MiniCPMO45/ folder")
    t.add_argument("--checkpoint", type=Path, required=True,
                   help="a tiny checkpoint folder (duetto models tiny minicpm-o DIR)")
    t.add_argument("--out", type=Path, default=GOLDENS)
    v = sub.add_parser("voice", help="1.0.6's voice prompt of generated recordings")
    v.add_argument("--encoders", type=Path, required=True,
                   help="a folder with the two ONNX encoders (write_tiny_voice_encoders)")
    v.add_argument("--out", type=Path, default=GOLDENS)
    args = parser.parse_args()
    if args.what == "tts":
        tts_goldens(args.official, args.checkpoint.resolve(), args.out)
    elif args.what == "voice":
        voice_goldens(args.encoders.resolve(), args.out)


if __name__ == "__main__":
    main()
