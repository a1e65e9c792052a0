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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    t = sub.add_parser("tts", help="the official speech decoder's codes on a tiny checkpoint")
    t.add_argument("--official", type=Path, required=True, help="the MiniCPMO45/ folder")
    t.add_argument("--checkpoint", type=Path, required=True,
                   help="a tiny checkpoint folder (duetto models tiny minicpm-o DIR)")
    t.add_argument("--out", type=Path, default=GOLDENS)
    args = parser.parse_args()
    if args.what == "tts":
        tts_goldens(args.official, args.checkpoint.resolve(), args.out)


if __name__ == "__main__":
    main()
