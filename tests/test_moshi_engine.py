"""The per-frame stepper on the tiny model: delays, initial tokens, forcing, alignment."""

from __future__ import annotations

import pytest
import torch

from app.model.moshi import tiny
from app.model.moshi.engine import NUM_CODEBOOKS, STREAMS, Forced, Stepper

ACOUSTIC_2 = (0, 0, 2, 2, 2, 2, 2, 2, 2, 0, 2, 2, 2, 2, 2, 2, 2)


@pytest.fixture(scope="module")
def model():
    return tiny._tiny_model(0)


def _user(t: int) -> torch.Tensor:
    return torch.tensor([(t * 8 + q) % tiny.TINY_CARD for q in range(NUM_CODEBOOKS)])


def _model_frame(t: int) -> Forced:
    return Forced(text=10 + t % 50, audio=tuple((t * 3 + 5 * q + 1) % tiny.TINY_CARD
                                                 for q in range(NUM_CODEBOOKS)))


def _expected_input(t: int, k: int, delays: tuple[int, ...], model) -> int:
    """What stream k must read at step t: frame t - delay of its stream, or the initial
    token while t <= delay (Kyutai's rule)."""
    d = delays[k]
    if t <= d:
        return model.config.vocab_size if k == 0 else model.config.audio_vocab_size
    frame = t - d
    if k == 0:
        return _model_frame(frame).text
    if k <= NUM_CODEBOOKS:
        return _model_frame(frame).audio[k - 1]
    return int(_user(frame)[k - 1 - NUM_CODEBOOKS])


@pytest.mark.parametrize("delays", [tiny.STANDARD_DELAYS, ACOUSTIC_2],
                         ids=["acoustic-delay-1", "acoustic-delay-2"])
def test_streams_are_read_with_their_delays(model, delays: tuple[int, ...]) -> None:
    stepper = Stepper(model, delays)
    stepper.record_inputs = True
    steps = 8
    for t in range(steps):
        stepper.step(_user(t), _model_frame(t))
    assert len(stepper.inputs) == steps
    for t, tokens in enumerate(stepper.inputs):
        assert len(tokens) == STREAMS
        for k in range(STREAMS):
            assert tokens[k] == _expected_input(t, k, delays, model), (t, k)


@pytest.mark.parametrize("delays", [tiny.STANDARD_DELAYS, ACOUSTIC_2],
                         ids=["acoustic-delay-1", "acoustic-delay-2"])
def test_output_frames_are_realigned(model, delays: tuple[int, ...]) -> None:
    """A forced frame comes back whole (text and 8 codes of the same frame), max(delays)
    steps after it went in, and never the initial frame 0."""
    stepper = Stepper(model, delays)
    outs = [stepper.step(_user(t), _model_frame(t)) for t in range(10)]
    lag = max(delays)
    assert all(o is None for o in outs[:lag])
    for t, out in enumerate(outs[lag:], start=lag):
        frame = t + 1 - lag
        assert out.frame == frame
        assert out.text == _model_frame(frame).text
        assert tuple(out.codes.tolist()) == _model_frame(frame).audio


def test_sampled_frames_follow_the_delayed_layout(model) -> None:
    """Without forcing: what the model sampled at step t (its next position) is what it
    reads at step t + 1; acoustic codes join their semantic code one step later."""
    stepper = Stepper(model, tiny.STANDARD_DELAYS)
    stepper.record_inputs = True
    outs = [stepper.step(_user(t)) for t in range(6)]
    for t in range(1, 5):
        out, nxt = outs[t], stepper.inputs[t + 1]
        # frame t: text and semantic sit at position t (read at step t), acoustic at t + 1
        assert stepper.inputs[t][0] == out.text
        assert stepper.inputs[t][1] == int(out.codes[0])
        assert nxt[2:1 + NUM_CODEBOOKS] == [int(c) for c in out.codes[1:]]


def test_same_seed_same_conversation(model) -> None:
    a, b = Stepper(model, tiny.STANDARD_DELAYS), Stepper(model, tiny.STANDARD_DELAYS)
    for t in range(5):
        oa, ob = a.step(_user(t)), b.step(_user(t))
        assert (oa is None) == (ob is None)
        if oa is not None:
            assert oa.text == ob.text and torch.equal(oa.codes, ob.codes)


def test_snapshot_restores_the_conversation(model) -> None:
    stepper = Stepper(model, tiny.STANDARD_DELAYS)
    for t in range(4):
        stepper.step(_user(t))
    snap = stepper.snapshot()
    first = [stepper.step(_user(t)) for t in range(4, 8)]
    stepper.restore(snap)
    second = [stepper.step(_user(t)) for t in range(4, 8)]
    for x, y in zip(first, second, strict=True):
        assert x.text == y.text and torch.equal(x.codes, y.codes)


def test_bad_delays_and_codes(model) -> None:
    with pytest.raises(ValueError, match="17"):
        Stepper(model, (0, 1))
    with pytest.raises(ValueError, match="8 user codes"):
        Stepper(model, tiny.STANDARD_DELAYS).step(torch.tensor([1, 2, 3]))
