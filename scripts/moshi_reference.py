"""Reference data from Kyutai's `moshi` package, made in an environment of its own.

The package (PyPI moshi 0.2.13) pins torch < 2.10, numpy < 2.3, safetensors < 0.8,
huggingface-hub < 1.0 and bitsandbytes < 0.50, so it cannot be installed beside Duetto's
pins and is not a test dependency. This script runs in a throwaway environment with the
package installed without its pins (it works on torch 2.13 as it is) and writes small
data files that the test suite checks against:

* `keylists`: every tensor name and shape of the published moshi-layout checkpoints, as
  the package's own model trees hold them (its loaders load them with strict=True, so
  the tree is the file): kyutai/moshiko-pytorch-bf16 (Kyutai's moshi package) and
  nvidia/personaplex-7b-v1 (NVIDIA's fork of the package, `--personaplex-src`).
* `goldens`: greedy LMGen tokens frame by frame and Mimi encode/decode on the tiny
  moshi-format checkpoint (app/model/moshi/tiny.py, seed 3), with per-tensor sums of
  the weights they were made from, so a change of the tiny builder is told apart from a
  change of Duetto's stepper.

Make the environment (outside the repository) and run from the repository root:

    python3 -m venv /work/moshi-ref
    /work/moshi-ref/bin/pip install torch==2.13.0 numpy safetensors einops sentencepiece \
        "sphn<0.3" transformers==5.24.0 accelerate soundfile protobuf
    /work/moshi-ref/bin/pip install --no-deps moshi==0.2.13
    /work/moshi-ref/bin/python scripts/moshi_reference.py keylists
    /work/moshi-ref/bin/python scripts/moshi_reference.py keylists \
        --personaplex-src PERSONAPLEX_CHECKOUT/moshi
    /work/moshi-ref/bin/python scripts/moshi_reference.py goldens
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KEYLISTS = ROOT / "tests" / "data" / "keylists"
GOLDENS = ROOT / "tests" / "data" / "moshi_goldens"
MIMI_FILE = "tokenizer-e351c8d8-checkpoint125.safetensors"  # the published Mimi's name


def _versions() -> dict:
    import importlib.metadata as md

    import torch

    out = {"torch": torch.__version__}
    for name in ("moshi", "transformers"):
        with contextlib.suppress(md.PackageNotFoundError):
            out[name] = md.version(name)
    return out


def _shapes(module) -> dict[str, list[int]]:
    return {name: list(t.shape) for name, t in module.state_dict().items()}


def _dtype(module) -> str:
    dtypes = {str(t.dtype).removeprefix("torch.") for t in module.state_dict().values()
              if t.is_floating_point()}
    return ",".join(sorted(dtypes))


def write_list(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.dumps(record, indent=0, sort_keys=False).encode()
    # mtime=0: the same list gives the same bytes, so regenerating shows no false diff.
    path.write_bytes(gzip.compress(data, mtime=0))
    print(f"wrote {path.relative_to(ROOT)} "
          f"({sum(len(f['tensors']) for f in record['files'].values())} tensors)")


def keylists(personaplex_src: str | None) -> None:
    if personaplex_src:
        sys.path.insert(0, str(Path(personaplex_src).resolve()))
    import torch
    from moshi.models import loaders
    from moshi.models.lm import LMModel

    origin = Path(loaders.__file__).resolve()
    if personaplex_src and not origin.is_relative_to(Path(personaplex_src).resolve()):
        raise SystemExit(f"imported {origin}, not the PersonaPlex fork")
    lm_kwargs = dict(loaders._lm_kwargs)
    if personaplex_src:
        # PersonaPlex's get_moshi_lm builds its LM with these kwargs and dep_q = 16
        # (its depth transformer also predicts the user's 8 codebooks).
        lm_kwargs["dep_q"] = 16
        checkpoint, name = "nvidia/personaplex-7b-v1", "personaplex-7b.moshi.json.gz"
        package = "NVIDIA/personaplex's fork of the moshi package (moshi/moshi in its repository)"
    else:
        checkpoint, name = "kyutai/moshiko-pytorch-bf16", "moshiko.moshi.json.gz"
        package = "Kyutai's moshi package from PyPI"
    lm_kwargs.pop("depformer_causal", None)  # deprecated, as get_moshi_lm drops it
    lm = LMModel(device="meta", dtype=torch.bfloat16, **lm_kwargs)
    with torch.device("meta"):
        if personaplex_src:
            # The fork's get_mimi always loads a file (safetensors' strict load_model):
            # build its very tree and skip only the loading.
            loaders._is_safetensors = lambda _name: True
            loaders.load_model = lambda _model, _name: None
            mimi = loaders.get_mimi(MIMI_FILE, device="meta")
        else:
            mimi = loaders.get_mimi(None, device="meta")
    record = {
        "checkpoint": checkpoint,
        "layout": "moshi",
        "source": (
            f"{package}: LMModel(**loaders._lm_kwargs"
            + (", dep_q=16" if personaplex_src else "")
            + ") and loaders.get_mimi's tree (its file load skipped), both built on the meta "
            "device; the package's loaders load the published files into these trees ("
            + ("strict for Mimi; the fork's LM loader also accepts a file whose depth "
               "transformer holds 8 steps and copies steps 0..7 to 8..15"
               if personaplex_src else "strict load_state_dict")
            + ")"
        ),
        "made_by": "scripts/moshi_reference.py keylists"
        + (" --personaplex-src ..." if personaplex_src else ""),
        "versions": _versions(),
        "lm_kwargs": {k: v for k, v in lm_kwargs.items() if isinstance(v, (int, float, str, list))},
        "files": {
            "model.safetensors": {"dtype": _dtype(lm), "tensors": _shapes(lm)},
            MIMI_FILE: {"dtype": _dtype(mimi), "tensors": _shapes(mimi)},
        },
    }
    write_list(KEYLISTS / name, record)


# --- goldens on the tiny checkpoint -----------------------------------------------------


def goldens() -> None:
    import torch
    from moshi.models import lm as lm_module
    from safetensors.torch import load_file, save_file

    sys.path.insert(0, str(ROOT))
    from app.model.moshi import tiny
    from tests.moshi_reference_models import kyutai_lm, kyutai_mimi

    seed, frames = 3, 16
    folder = tiny.build_tiny_moshi_format(Path(tempfile.mkdtemp()) / "m", seed=seed, dep_q=8)
    lm_state = load_file(str(folder / "model.safetensors"))
    mimi_state = load_file(str(folder / tiny.MIMI_FILE))
    generator = lm_module.LMGen(kyutai_lm(lm_module, folder, lm_state), use_sampling=False)
    gen = torch.Generator().manual_seed(0)
    user = torch.randint(0, tiny.TINY_CARD, (frames, 8), generator=gen)
    tokens: list[list[int] | None] = []
    with torch.no_grad(), generator.streaming(1):
        for f in range(frames):
            out = generator.step(user[f].view(1, 8, 1))
            tokens.append(None if out is None else out[0, :, 0].tolist())

    mimi = kyutai_mimi(mimi_state)
    audio = 0.1 * torch.randn(1, 1, 1920 * 5, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        codes = mimi.encode(audio)
        decoded = mimi.decode(codes)

    GOLDENS.mkdir(parents=True, exist_ok=True)
    record = {
        "made_by": "scripts/moshi_reference.py goldens",
        "versions": _versions(),
        "checkpoint": f"app.model.moshi.tiny.build_tiny_moshi_format(seed={seed}, dep_q=8)",
        "weights": {"lm": tiny.tensor_sums(lm_state), "mimi": tiny.tensor_sums(mimi_state)},
        "lmgen": {
            "what": "moshi.models.lm.LMGen(use_sampling=False).step(user codes) per frame: "
                    "[text, 8 model codebooks] or null while the delays fill",
            "user_codes": user.tolist(),
            "tokens": tokens,
        },
        "mimi": {
            "what": "moshi.models.compression.MimiModel encode then decode of "
                    "mimi.safetensors' `audio` (1920*5 samples, N(0, 0.1^2), seed 1)",
            "file": "mimi.safetensors",
        },
    }
    (GOLDENS / "goldens.json").write_text(json.dumps(record, indent=1) + "\n")
    save_file({"audio": audio.contiguous(), "codes": codes.contiguous(),
               "decoded": decoded.contiguous()}, str(GOLDENS / "mimi.safetensors"))
    print(f"wrote {GOLDENS.relative_to(ROOT)}: {frames} frames, codes {list(codes.shape)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    k = sub.add_parser("keylists", help="moshi-layout tensor lists from the package's trees")
    k.add_argument("--personaplex-src", help="PersonaPlex checkout's moshi/ folder")
    sub.add_parser("goldens", help="LMGen and Mimi outputs on the tiny checkpoint")
    args = parser.parse_args()
    if args.what == "keylists":
        keylists(args.personaplex_src)
    else:
        goldens()


if __name__ == "__main__":
    main()
