"""Streaming speech, barge-in and `heard` on the tiny Qwen2.5-Omni."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import tiny_models
import torch
from tiny_models import make_unit, started_backend

from app.model.contract import Control, Decision
from app.model.qwen_omni.cache import one_shot_logits
from app.model.qwen_omni.prompt import Kind
from app.model.qwen_omni.voice import VoiceStream

qwen_tiny_factory = tiny_models.qwen_tiny_factory

LONG = 40  # tokens: long enough that speech must start before the thinker is done


@pytest.fixture(scope="module")
def backend(qwen_tiny_factory):
    b = started_backend(qwen_tiny_factory(min_answer_tokens=LONG), max_answer_tokens=LONG + 8)
    # These tests compare the warm cache with one prefill of the whole conversation,
    # which needs every past turn's audio and frames.
    b.ctx.settle_after_turns = None
    yield b
    b.close()


def _listen(b, n=2, seed=0):
    for i in range(n):
        outs = list(b.step(make_unit(i, image=(i == 0), seed=seed), Control()))
        assert [o.decision for o in outs] == [Decision.LISTEN]


def test_voice_stream_is_seamless(backend):
    model = backend._loaded.model
    stream = VoiceStream(model.token2wav, model.speaker_map["Chelsie"])
    codes = torch.randint(0, 60, (90,), generator=torch.Generator().manual_seed(1)).tolist()
    pieces = []
    for c in codes:
        stream.push(c)
        if (w := stream.pull()) is not None:
            pieces.append(w)
    assert len(pieces) >= 2  # it really streamed
    pieces.append(stream.finish())
    wave = np.concatenate(pieces)
    assert wave.size == len(codes) * 2 * 240
    # The vocoder windows add no seam: identical to vocoding the whole mel at once.
    assert np.abs(wave - stream.vocode_all()).max() < 1e-4
    # The DiT windows agree with one pass over all codes from the same noise.
    full = stream.decode_mel(torch.tensor([codes]), stream.noise[:, : len(codes) * 2])
    assert (full - stream.mel).abs().max().item() < 1e-3
    assert float(np.sqrt(np.mean(wave**2))) > 0.01  # audible


def test_a_shorter_vocoder_context_leaves_seams(backend):
    """The check above can fail: the tiny vocoder keeps the real one's rates, upsampling
    kernels and widest AMP block (kernel 11, dilations 1, 3, 5), so its receptive field is
    the real one's and needs the stream's 18 frames of context; with 8 the
    streamed wave differs from one pass at the chunk seams. Also: the CPU vocoder runs
    our polyphase activations (antialias.py), installed by the loader."""
    model = backend._loaded.model
    vocoder = model.token2wav.code2wav_bigvgan_model
    if next(vocoder.parameters()).device.type == "cpu":
        assert all(hasattr(m, "_polyphase") for m in vocoder.modules()
                   if type(m).__name__ == "Qwen2_5OmniAntiAliasedActivation1d")
    stream = VoiceStream(model.token2wav, model.speaker_map["Chelsie"], vocoder_context=8,
                         num_steps=2)  # the DiT is not what this is about: keep it cheap
    codes = torch.randint(0, 60, (90,), generator=torch.Generator().manual_seed(1)).tolist()
    pieces = []
    for c in codes:
        stream.push(c)
        if (w := stream.pull()) is not None:
            pieces.append(w)
    pieces.append(stream.finish())
    assert np.abs(np.concatenate(pieces) - stream.vocode_all()).max() > 1e-3


def test_cpu_vocoder_windows_have_fixed_shapes(backend):
    """On a CPU each new convolution input length costs oneDNN memory for good (voice.py):
    the convolutions that run with oneDNN see as many lengths as there are fixed window
    shapes, whatever the answer's length, and the speech is still sample-for-sample one
    pass over the whole mel. The vocoder cuts each layer to the kept frames there
    (vocoder_span.py), so the lengths are watched at every convolution."""
    model = backend._loaded.model
    vocoder = model.token2wav.code2wav_bigvgan_model
    convs = [m for m in vocoder.modules()
             if isinstance(m, torch.nn.Conv1d | torch.nn.ConvTranspose1d)]
    seen: list[tuple[int, int, bool]] = []  # (conv, input length, oneDNN on) while streaming
    streaming = [True]
    gen = torch.Generator().manual_seed(2)

    def watch(i, args):
        if streaming[0]:
            seen.append((i, args[0].shape[-1], torch.backends.mkldnn.enabled))

    hooks = [conv.register_forward_pre_hook(lambda _m, args, i=i: watch(i, args))
             for i, conv in enumerate(convs)]
    try:
        for n_codes in (9, 40, 75):
            # Two flow steps, as the tiny model speaks: the DiT is not what is checked here.
            stream = VoiceStream(model.token2wav, model.speaker_map["Chelsie"], num_steps=2)
            assert stream.fixed_shapes and stream.by_span
            pieces = []
            streaming[0] = True
            for c in torch.randint(0, 60, (n_codes,), generator=gen).tolist():
                stream.push(c)
                if (w := stream.pull()) is not None:
                    pieces.append(w)
            pieces.append(stream.finish())
            streaming[0] = False  # the reference pass below is not the stream's
            wave = np.concatenate(pieces)
            assert wave.size == n_codes * 2 * 240
            assert np.abs(wave - stream.vocode_all()).max() < 1e-4, n_codes
    finally:
        for hook in hooks:
            hook.remove()
    for i in range(len(convs)):
        with_onednn = {length for conv, length, onednn in seen if conv == i and onednn}
        assert len(with_onednn) <= len(stream.fixed_windows), (i, sorted(with_onednn))
    assert any(not onednn for _, _, onednn in seen)  # other shapes came, without oneDNN
    assert torch.backends.mkldnn.enabled  # and the flag is back


def test_first_speech_before_the_thinker_finishes(backend):
    _listen(backend)
    it = backend.step(make_unit(2, image=False), Control(turn_ended=True))
    first = next(it)
    assert first.decision is Decision.SPEAK
    answer = backend.last_answer
    tokens_at_first_chunk = None
    outs = []
    for out in it:
        outs.append(out)
        if out.speech is not None and tokens_at_first_chunk is None:
            tokens_at_first_chunk = len(answer.state.token_ids)
            assert answer.state.thinker_done_at is None  # the thinker is still going
    assert outs[-1].decision is Decision.END_OF_TURN
    chunks = [o.speech for o in outs if o.speech is not None]
    assert len(chunks) >= 2 and tokens_at_first_chunk < len(answer.state.token_ids)
    assert answer.state.first_chunk_at < answer.state.thinker_done_at
    assert [c.seq for c in chunks] == list(range(len(chunks)))
    assert all(c.sample_rate == 24000 and c.audio.dtype == np.float32 for c in chunks)
    assert "".join(o.text for o in outs) == answer.state.text
    assert "".join(c.text_span for c in chunks) == answer.state.text
    # The answer is now part of the context, closed, and the caches agree with it.
    last = backend.ctx.entries[-1].segment
    assert last.kind is Kind.ASSISTANT and last.text == answer.state.text
    got = backend.ctx.append(backend._layout.user_open(backend._turn + 1))
    want = one_shot_logits(backend._loaded.model.thinker, backend.ctx.segments)
    assert (got - want).abs().max().item() < 1e-4
    backend.ctx.rollback_to(len(backend.ctx.entries) - 1)


def test_barge_in_stops_within_one_step_and_heard_keeps_played_text(backend):
    _listen(backend, seed=3)
    it = backend.step(make_unit(2, image=False, seed=3), Control(turn_ended=True))
    answer = backend.last_answer
    played = ""
    for out in it:
        if out.speech is not None:
            played = out.speech.text_span or answer.state.text[:3]
            # The session loop calls interrupt() from another thread.
            t = threading.Thread(target=backend.interrupt)
            t.start()
            t.join()
            tokens, codes = len(answer.state.token_ids), answer.state.codes
            break
    rest = list(it)
    assert all(o.speech is None for o in rest)  # nothing more was synthesized
    assert all(o.decision is not Decision.END_OF_TURN for o in rest)
    assert len(answer.state.token_ids) == tokens and answer.state.codes == codes
    assert answer.state.interrupted and tokens < LONG

    backend.heard(played)
    ctx = backend.ctx
    last = ctx.entries[-1].segment
    assert last.kind is Kind.ASSISTANT and last.text == played
    layout = backend._layout
    assert layout.tok.decode(last.ids[0].tolist()) == played + "<|im_end|>\n"
    assert ctx.entries[-2].segment.kind is Kind.USER_CLOSE
    assert ctx.cache.get_seq_length() == ctx.talker_cache.get_seq_length() == ctx.length
    # The warm cache is exactly the conversation that ends at the played text.
    probe = layout.user_open(backend._turn + 1)
    got = ctx.append(probe)
    want = one_shot_logits(backend._loaded.model.thinker, ctx.segments)
    assert (got - want).abs().max().item() < 1e-4
    ctx.rollback_to(len(ctx.entries) - 1)
    # The conversation goes on from there.
    outs = list(backend.step(make_unit(0, image=False, seed=4), Control(turn_ended=True)))
    assert outs[-1].decision is Decision.END_OF_TURN


def test_barge_in_control_settles_an_unreported_answer(backend):
    _listen(backend, n=1, seed=5)
    it = backend.step(make_unit(1, image=False, seed=5), Control(turn_ended=True))
    spoken = ""
    for out in it:
        if out.speech is not None:
            spoken += out.speech.text_span
            break
    outs = list(backend.step(make_unit(2, image=False, seed=5), Control(barge_in=True)))
    assert [o.decision for o in outs] == [Decision.LISTEN]
    kinds = [e.segment.kind for e in backend.ctx.entries]
    i = len(kinds) - 1 - kinds[::-1].index(Kind.ASSISTANT)
    assert backend.ctx.entries[i].segment.text == spoken
    assert kinds[-2:] == [Kind.USER_OPEN, Kind.UNIT]  # the barge-in opened a new turn
    list(backend.step(make_unit(3, image=False, seed=5), Control(turn_ended=True)))


def test_units_heard_during_an_answer_wait_for_the_next_turn(backend):
    _listen(backend, n=1, seed=6)
    it = backend.step(make_unit(1, image=False, seed=6), Control(turn_ended=True))
    next(it)  # SPEAK
    next(it)  # the answer is under way
    before = backend.ctx.length
    outs = list(backend.step(make_unit(2, image=True, seed=6), Control()))
    assert [o.decision for o in outs] == [Decision.LISTEN]
    assert backend.ctx.length == before  # held, not prefilled into the answer's tail
    rest = list(it)
    assert rest[-1].decision is Decision.END_OF_TURN
    list(backend.step(make_unit(3, image=False, seed=6), Control()))
    kinds = [e.segment.kind for e in backend.ctx.entries]
    assert kinds[-4:] == [Kind.ASSISTANT, Kind.USER_OPEN, Kind.UNIT, Kind.UNIT]
    assert backend.ctx.entries[-2].segment.image is not None  # the held unit, in order


def test_heard_after_the_barge_in_step_keeps_the_new_turn(backend):
    _listen(backend, n=1, seed=7)
    it = backend.step(make_unit(1, image=False, seed=7), Control(turn_ended=True))
    for out in it:
        if out.speech is not None:
            break
    answer = backend.last_answer
    list(backend.step(make_unit(2, image=False, seed=7), Control(barge_in=True)))
    played = answer.state.text[:5]
    backend.heard(played)
    ctx = backend.ctx
    kinds = [e.segment.kind for e in ctx.entries]
    assert kinds[-3:] == [Kind.ASSISTANT, Kind.USER_OPEN, Kind.UNIT]
    assert ctx.entries[-3].segment.text == played
    got = ctx.append(backend._layout.user_close(ctx.entries[-1].segment.turn))
    want = one_shot_logits(backend._loaded.model.thinker, ctx.segments)
    assert (got - want).abs().max().item() < 1e-4
    ctx.rollback_to(len(ctx.entries) - 1)


def test_the_thinker_stops_when_the_voice_ends(qwen_tiny_factory):
    """The tiny model's talker ends after a few codes while its thinker would write on to
    max_answer_tokens: those words were never spoken, yet they were computed (seconds on
    a CPU) and shown as subtitles. The answer now ends with its voice."""
    b = started_backend(qwen_tiny_factory(), max_answer_tokens=200)
    try:
        for i in range(2):
            list(b.step(make_unit(i, image=False), Control()))
        outs = list(b.step(make_unit(2, image=False), Control(turn_ended=True)))
        answer = b.last_answer
        assert outs[-1].decision is Decision.END_OF_TURN
        assert answer.state.codes < 100  # the talker ended early (random weights)
        # The talker reads one token per code: nothing is written past what it read.
        assert len(answer.state.token_ids) <= answer.state.codes + 2
        chunks = [o.speech for o in outs if o.speech is not None]
        assert "".join(c.text_span for c in chunks) == answer.state.text
    finally:
        b.close()
