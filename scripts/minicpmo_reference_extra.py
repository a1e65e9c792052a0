"""More reference data from OpenBMB's own MiniCPM-o 4.5 code, for what the 5-unit goldens
(scripts/minicpmo_reference.py goldens) do not reach.

* `long-audio`: the streaming audio path's late events. The Whisper KV cache is dropped
  before it would overrun the 1500 encoder positions (at the 30th unit), and the
  streaming mel buffer slides by 10 s once it holds 30 s. The official duplex loop's
  audio path (MiniCPMODuplex.streaming_prefill with audio only) runs over 32 s of
  generated audio (tests/minicpmo_inputs.py); each unit's audio embeddings, some units'
  mel and the official Whisper cache length after each unit go to
  tests/data/minicpmo_goldens/long_audio.{json,safetensors}.
* `frames`: frames whose patch grid has a side where the official position ids differ
  from transformers' helper (25, 49, 50, 55, 58 patches): the official duplex frame path's
  vision tower output and resampler embeddings, to frames.{json,safetensors}.

It runs in the reference environment that scripts/minicpmo_reference.py describes, from
the repository root, on the tiny checkpoint the goldens are made on:

    /work/mcpo-ref-env/bin/python scripts/minicpmo_reference_extra.py long-audio \
        --official SRC/MiniCPMO45 --checkpoint /tmp/mcpo-tiny
    /work/mcpo-ref-env/bin/python scripts/minicpmo_reference_extra.py frames \
        --official SRC/MiniCPMO45 --checkpoint /tmp/mcpo-tiny
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "data" / "minicpmo_goldens"
SECONDS = 32  # units: two past the cache reset and the mel window's first slide
# Units whose mel is kept (every unit's embeddings are): the first two, the switch to the
# dynamic floor (the buffer passes 5 s in unit 4), and around the slide and the reset.
MEL_UNITS = (0, 1, 3, 4, 5, 28, 29, 30, 31)


# Frames (width, height) whose unsliced 448-scale grid has such a side: 1640x1000 ->
# 25x41 patches, 1200x500 -> 21x50, 1000x1000 is 32x32 (a control).
FRAMES = ((1640, 1000), (1200, 500), (1000, 1000))


def _reference():
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "scripts"))
    import minicpmo_reference as ref

    from tests import minicpmo_inputs as inputs

    return ref, inputs


def _official_duplex(ref, src: Path, checkpoint: Path):
    """MiniCPMODuplex with its model swapped for a strict float32 load of the files (as
    scripts/minicpmo_reference.py goldens runs it); also the files' tensors."""
    modeling, configuration = ref.import_official(src)
    folder = ref.reference_folder(checkpoint, src)
    files = ref.read_shards(checkpoint)
    duplex = modeling.MiniCPMODuplex(name_or_path=str(folder), generate_audio=False,
                                     device="cpu", attn_implementation="sdpa")
    model = ref.strict_model(modeling, configuration, folder, files)
    for name in ("CHUNK_MS", "FIRST_CHUNK_MS", "CNN_REDUNDANCY_MS", "SAMPLE_RATE"):
        setattr(model, name, getattr(duplex.model, name))
    model.processor = duplex.processor
    duplex.model = model
    duplex.decoder.m = model.llm
    return duplex, model, files


def _header(ref, src: Path, checkpoint: Path, files: dict) -> dict:
    meta = checkpoint / "duetto.json"
    return {
        "made_by": "scripts/minicpmo_reference_extra.py",
        "official_code": {"repository": "OpenBMB/MiniCPM-o-Demo", "folder": "MiniCPMO45/",
                          "commit": ref._official_commit(src)},
        "versions": ref._versions(),
        "checkpoint": {"builder_meta": json.loads(meta.read_text()) if meta.exists() else None},
        "weights": ref.tensor_sums(files),
    }


def frames(src: Path, checkpoint: Path, out: Path) -> None:
    import torch
    from safetensors.torch import save_file

    ref, inputs = _reference()
    duplex, model, files = _official_duplex(ref, src, checkpoint)
    tensors, records = {}, {}
    with torch.no_grad():
        for width, height in FRAMES:
            key = f"{width}x{height}"
            frame = inputs.frame(0, width, height)
            got = ref.vision_golden(model, duplex.processor, frame)
            tensors[f"{key}.embeds"] = got.pop("embeds")
            tensors[f"{key}.vpm_hidden"] = got.pop("vpm_hidden")
            records[key] = {"input": f"minicpmo_inputs.frame(0, {width}, {height})",
                            "sha256": inputs.sha256(frame), **got}
            print(key, got["tgt_size"])
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.float().contiguous() for k, v in tensors.items()},
              str(out / "frames.safetensors"), metadata={"format": "pt"})
    (out / "frames.json").write_text(json.dumps({
        **_header(ref, src, checkpoint, files),
        "what": "the official duplex frame path: processor.process_image([frame], "
                "max_slice_nums=1), MiniCPMO.get_vision_embedding (vpm_hidden: the "
                "resampler's input)",
        "tensors_file": "frames.safetensors (float32): KEY.embeds, KEY.vpm_hidden",
        "frames": records,
    }, indent=1) + "\n")
    print(f"wrote {out / 'frames.json'}")


def long_audio(src: Path, checkpoint: Path, out: Path) -> None:
    import torch
    from safetensors.torch import save_file

    ref, inputs = _reference()
    duplex, model, files = _official_duplex(ref, src, checkpoint)
    mel = ref.Recorder(duplex.processor, "process_audio_streaming")
    embeds = ref.Recorder(model, "get_audio_embedding_streaming")
    with torch.no_grad():
        duplex.prepare()
    audio = inputs.audio(SECONDS)
    tensors, units = {}, []
    for k in range(SECONDS):
        pcm = audio[k * inputs.UNIT_SAMPLES:(k + 1) * inputs.UNIT_SAMPLES]
        with torch.no_grad():
            result = duplex.streaming_prefill(audio_waveform=pcm)
        if not result["success"]:
            raise SystemExit(f"unit {k}: streaming_prefill failed: {result['reason']}")
        features = mel.calls[-1]
        if k in MEL_UNITS:
            tensors[f"unit{k}.mel"] = features.audio_features[0].detach().clone()
        tensors[f"unit{k}.audio_embeds"] = torch.cat(
            [t for group in embeds.calls[-1] for t in group]).detach().clone()
        info = features["streaming_info"]
        units.append({
            "unit": k, "audio_sha256": inputs.sha256(pcm),
            "mel_frames": int(features.audio_features.shape[-1]),
            "mel_info": {key: info[key] for key in ("core_start", "core_end", "base_T",
                                                     "buffer_len_samples")},
            "whisper_cache_after": int(model.audio_past_key_values[0][0].shape[2]),
        })
        print(f"unit {k}: mel {units[-1]['mel_frames']}, cache {units[-1]['whisper_cache_after']}"
              f", base_T {info['base_T']}")
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.float().contiguous() for k, v in tensors.items()},
              str(out / "long_audio.safetensors"), metadata={"format": "pt"})
    (out / "long_audio.json").write_text(json.dumps({
        **_header(ref, src, checkpoint, files),
        "what": f"MiniCPMODuplex(generate_audio=False).prepare(), then streaming_prefill("
                f"audio_waveform=1 s) for {SECONDS} units (audio only; nothing generated), "
                "the model swapped for a strict float32 load of the same files as in "
                "goldens.json",
        "input": f"minicpmo_inputs.audio({SECONDS})",
        "tensors_file": "long_audio.safetensors (float32): unitK.audio_embeds for every "
                        f"unit, unitK.mel for units {list(MEL_UNITS)}",
        "units": units,
    }, indent=1) + "\n")
    print(f"wrote {out / 'long_audio.json'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=("long-audio", "frames"))
    parser.add_argument("--official", type=Path, required=True, help="the MiniCPMO45/ folder")
    parser.add_argument("--checkpoint", type=Path, required=True,
                        help="the tiny checkpoint folder (duetto models tiny minicpm-o DIR)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    run = long_audio if args.what == "long-audio" else frames
    run(args.official, args.checkpoint.resolve(), args.out)


if __name__ == "__main__":
    main()
