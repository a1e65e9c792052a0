"""The word classifier for short utterances over the assistant (app/flow/burst_kind.py):
its file, its features, and what the shipped weights make of words in a voice it was
not trained on (espeak-ng; skipped without it)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from app.bench.speech_cache import SpeechCache, Voice
from app.flow.burst_kind import (
    WEIGHTS,
    BurstKind,
    BurstKindUnavailable,
    Classifier,
    EncoderTap,
    load_burst_kind,
    pooled,
    shipped_classifier,
)
from app.flow.turn_end import SmartTurn
from tests.speech import needs_espeak

RATE = 16000


def test_pooling_takes_mean_and_max_of_the_frames_holding_the_utterance():
    hidden = np.zeros((1, 400, 3))
    hidden[0, -10:] = np.arange(10)[:, None]  # the last 0.2 s: frames 0..9
    out = pooled(hidden, 0.2)
    assert out.shape == (6,)
    assert np.allclose(out[:3], 4.5) and np.allclose(out[3:], 9.0)


def test_the_classifier_file_round_trips_and_nonsense_is_refused():
    clf = Classifier(np.zeros(4), np.ones(4), np.array([1.0, 0, 0, 0]), -0.5)
    again = Classifier.from_json(json.loads(json.dumps(clf.to_json())))
    x = np.array([2.0, 0, 0, 0])
    assert again.floor_probability(x) == pytest.approx(clf.floor_probability(x))
    assert clf.floor_probability(x) == pytest.approx(1 / (1 + np.exp(-1.5)))
    with pytest.raises(ValueError):
        Classifier.from_json({**clf.to_json(), "weights": [1.0, 2.0]})
    with pytest.raises(ValueError):
        Classifier.from_json({**clf.to_json(), "scale": [0.0, 1, 1, 1]})


def test_a_broken_weights_file_leaves_the_length_rule(tmp_path, caplog, monkeypatch):
    broken = tmp_path / "burst_kind.json"
    broken.write_text("{ not json")
    with pytest.raises(BurstKindUnavailable, match="could not be read"):
        shipped_classifier(broken)
    import app.flow.burst_kind as bk

    monkeypatch.setattr(bk, "shipped_classifier", lambda: shipped_classifier(broken))
    assert load_burst_kind() is None
    assert "judged by their length alone" in caplog.text


def test_the_shipped_file_says_how_it_was_made_and_how_well_it_did():
    data = json.loads(WEIGHTS.read_text())
    assert data["made_by"] == "scripts/train_burst_kind.py"
    held_out = data["held_out_accuracy"]
    assert len(held_out) >= 10 and set(held_out) == set(data["voices"])
    assert min(held_out.values()) >= 0.75 and np.mean(list(held_out.values())) >= 0.9
    shipped_classifier()  # loads


def test_the_tap_leaves_the_end_of_turn_models_answer_unchanged():
    """Smart Turn's session also gives out its encoder's last layer; the probability is
    the one the file's own graph gives, untouched."""
    import onnxruntime as ort

    from app.flow.turn_end import bundled_model_path
    from app.flow.turn_features import log_mel_features

    turn = SmartTurn()
    plain = ort.InferenceSession(str(bundled_model_path()), providers=["CPUExecutionProvider"])
    audio = np.random.default_rng(1).standard_normal(2 * RATE).astype(np.float32) * 0.1
    (p,) = plain.run(None, {plain.get_inputs()[0].name: log_mel_features(audio)[None]})
    probability, hidden = turn.run(audio)
    assert probability == pytest.approx(float(np.asarray(p).reshape(-1)[0]), abs=1e-6)
    assert hidden.shape == (1, 400, 384)
    # The word classifier listens through that same session.
    assert EncoderTap(turn).model is turn


@needs_espeak
@pytest.mark.parametrize("voice", [Voice("en-us+f3", wpm=160, pitch=50),
                                   Voice("en-gb+m3", wpm=150, pitch=40)],
                         ids=["en-us female variant", "en-gb male variant"])
def test_words_in_a_voice_it_never_heard_are_told_apart(voice):
    # espeak-ng's speaker variants (+f3, +m3) change the voice itself, and no variant was
    # among the training voices (scripts/train_burst_kind.py).
    kind = BurstKind(EncoderTap(), shipped_classifier())
    cache = SpeechCache()

    def wants_floor(text: str) -> bool:
        speech = cache.speak(text, voice)
        audio = np.concatenate([np.zeros(int(0.2 * RATE)), speech, np.zeros(int(0.1 * RATE))])
        return kind.judge(audio.astype(np.float32)).wants_floor

    backchannels = ["mm-hm", "yeah", "okay", "right", "uh-huh", "I see"]
    bids = ["stop", "wait", "hold on", "no no", "excuse me", "stop please"]
    right = sum(not wants_floor(w) for w in backchannels) + sum(wants_floor(w) for w in bids)
    assert right >= 10, f"only {right} of 12 told apart"
