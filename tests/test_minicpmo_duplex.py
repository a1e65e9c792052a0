"""MiniCPM-o's unit protocol: token layouts, the decode, the per-unit loop, the window.

Run on a tiny Qwen3ForCausalLM with MiniCPM-o's real special ids and the stand-in
encoders of tests/minicpmo_standins.py (the encoders' own parity lives in
test_minicpmo_conformance.py).
"""

from __future__ import annotations

import json
import threading

import pytest
import torch
from minicpmo_standins import standin_tokenizer, tiny_llm

from app.model.contract import BackendError
from app.model.minicpm_o import protocol
from app.model.minicpm_o.duplex import DuplexDecoder, Sampling
from app.model.minicpm_o.protocol import SpecialIds, Tokens, Window

H = 32


@pytest.fixture(scope="module")
def tok():
    return standin_tokenizer()


@pytest.fixture(scope="module")
def ids(tok):
    return SpecialIds.from_tokenizer(tok)


@pytest.fixture(scope="module")
def llm():
    return tiny_llm()


def _unit(ids, frames=1, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return protocol.unit_prefill(ids, [torch.randn(64, H, generator=gen) for _ in range(frames)],
                                 torch.randn(10, H, generator=gen))


# --- layouts ---------------------------------------------------------------------------

def test_ids_are_read_from_the_tokenizer(ids, tok):
    assert ids.listen == 151705 and ids.unit == 151683 and ids.chunk_eos == 151718
    assert ids.listen != tok.eos_token_id  # not the official StreamDecoder's listen_id quirk
    assert ids.chunk_terminators == {151705, 151718, 151721}


def test_a_tokenizer_without_the_protocol_tokens_is_refused():
    from transformers import Qwen2Tokenizer

    from app.model.qwen_omni.tiny import _byte_alphabet

    plain = Qwen2Tokenizer(vocab={c: i for i, c in enumerate(_byte_alphabet())}, merges=[],
                           unk_token=None)
    with pytest.raises(BackendError, match=r"<\|listen\|>"):
        SpecialIds.from_tokenizer(plain)


def test_the_system_prefix_holds_role_text_and_voice_between_audio_marks(ids, tok):
    voice = torch.zeros(23, H)
    pieces = protocol.system_prefix(ids, tok, "You are Ada.", voice)
    flat = protocol.layout(pieces)
    text = tok.encode("system\nStreaming Omni Conversation. You are Ada.\n",
                      add_special_tokens=False)
    assert flat == [ids.im_start, *text, ids.audio_start, ("voice", 23), ids.audio_end,
                    ids.im_end]
    assert protocol.length(pieces) == len(flat) - 1 + 23
    # No voice: the marks stay, with nothing between them (as the official prefix).
    bare = protocol.layout(protocol.system_prefix(ids, tok, ""))
    assert bare[-3:] == [ids.audio_start, ids.audio_end, ids.im_end]
    assert tok.decode(bare[1:-3]) == "system\nStreaming Omni Conversation.\n"


def test_a_unit_is_unit_mark_frames_in_image_marks_then_audio(ids):
    assert protocol.layout(_unit(ids, frames=2)) == [
        ids.unit, ids.image, ("image", 64), ids.image_end,
        ids.image, ("image", 64), ids.image_end, ("audio", 10)]
    assert protocol.layout(_unit(ids, frames=0)) == [ids.unit, ("audio", 10)]
    assert protocol.length(_unit(ids, frames=1)) == 1 + 66 + 10


def test_the_window_drops_whole_old_units_and_keeps_the_prefix():
    w = Window(high=100, low=70)
    w.reset(30)
    assert [w.add_unit(20) for _ in range(3)] == [0, 0, 0]  # 90 <= 100
    assert w.add_unit(20) == 40  # 110 > 100: drop the two oldest, down to 70
    assert w.prefix == 30 and list(w.units) == [20, 20] and w.size == 70
    with pytest.raises(ValueError):
        Window(high=10, low=20)


# --- the decode -------------------------------------------------------------------------

def _decoder(llm, ids, **kw):
    steer = kw.pop("steer", None)
    window = kw.pop("window", None)
    forbidden = kw.pop("forbidden", ())
    return DuplexDecoder(llm, ids, sampling=Sampling(**kw), steer=steer, window=window,
                         forbidden=forbidden)


def _row(ids, **values):
    row = torch.full((protocol_vocab(),), -100.0)
    for name, v in values.items():
        row[getattr(ids, name) if hasattr(ids, name) else int(name[1:])] = v
    return row


def protocol_vocab():
    return 151748


def test_decode_first_draw_may_end_the_unit_then_chunk_eos_and_tts_pad_are_forbidden(llm, ids):
    d = _decoder(llm, ids, greedy=True)
    assert d.choose(_row(ids, chunk_eos=5.0, speak=4.0)) == ids.chunk_eos
    assert d.state.history == []  # the model's own chunk end is not in the history
    # Second best after forbidding: tts_pad is never chosen, even when it is the top.
    assert d.choose(_row(ids, tts_pad=9.0, speak=4.0, chunk_eos=3.0)) == ids.speak
    assert d.state.history == [ids.speak]


def test_decode_penalises_repeats_and_damps_turn_end(llm, ids):
    d = _decoder(llm, ids, greedy=True)
    d.state.history[:] = [65]
    # 65 at 2.05 / 1.05 < 2.0: the repeat loses to 66.
    assert d.choose(_row(ids, t65=2.05, t66=2.0)) == 66
    # <|turn_eos|> at 2.1 / 1.1 < 2.0 (length penalty 1.1).
    assert d.choose(_row(ids, turn_eos=2.1, t67=2.0)) == 67
    # Negative logits are divided too (the official penalty is sign-insensitive).
    d.state.history[:] = [68]
    assert d.choose(_row(ids, t68=-6.0, t69=-5.99)) == 68  # -6/1.05 > -5.99


def test_bad_token_ids_from_the_tokenizer_config_are_never_drawn(llm, ids):
    d = _decoder(llm, ids, forbidden=[70])
    torch.manual_seed(0)
    assert all(d.choose(_row(ids, t70=50.0, t71=1.0)) != 70 for _ in range(20))


def test_sampling_keeps_to_top_k_and_top_p(llm, ids):
    d = _decoder(llm, ids, top_k=2, top_p=0.99, seed=3)
    row = _row(ids, t80=3.0, t81=3.0, t82=2.9)
    drawn = set()
    for _ in range(60):
        d.state.history.clear()  # no repetition penalty between these draws
        drawn.add(d.choose(row))
    assert drawn == {80, 81}


# --- one unit --------------------------------------------------------------------------

def test_a_unit_is_prefilled_decided_and_closed_in_the_cache(llm, ids, tok):
    d = _decoder(llm, ids, greedy=True, force_listen_count=0, max_unit_tokens=6)
    d.start(protocol.system_prefix(ids, tok, "Hi."))
    prefix = d.cache_length
    r = d.step(_unit(ids))
    assert r.index == 0 and r.prefill_positions == 77
    assert r.tokens[-1] == ids.unit_end and r.tokens[-2] in ids.chunk_terminators
    assert len(r.tokens) <= 6 + 1  # at most max_unit_tokens chosen, then </unit>
    assert d.cache_length == prefix + 77 + len(r.tokens)
    # Greedy is deterministic: the same conversation again gives the same tokens.
    d.start(protocol.system_prefix(ids, tok, "Hi."))
    assert d.step(_unit(ids)).tokens == r.tokens


def test_the_first_units_listen_and_the_last_step_is_a_chunk_end(llm, ids, tok):
    always_speak = lambda unit, j, open_: {ids.speak: 100.0, ids.listen: -100.0,  # noqa: E731
                                           ids.chunk_eos: -100.0, ids.turn_eos: -100.0,
                                           ids.chunk_tts_eos: -100.0}
    d = _decoder(llm, ids, greedy=True, force_listen_count=2, max_unit_tokens=5,
                 steer=always_speak)
    d.start(protocol.system_prefix(ids, tok, ""))
    first, second, third = (d.step(_unit(ids, seed=i)) for i in range(3))
    for r in (first, second):
        assert r.tokens == (ids.listen, ids.unit_end) and r.forced and not r.speaking
    assert third.tokens[:4] == (ids.speak,) * 4  # 4 steps chosen, step 5 is the chunk end
    assert third.tokens[4:] == (ids.chunk_eos, ids.unit_end)
    assert third.speaking and not third.turn_ended and d.state.turn_open


def test_listen_while_the_turn_is_open_becomes_tts_bos(llm, ids, tok):
    script = {0: ids.speak, 1: ids.listen, 2: ids.turn_eos, 3: ids.listen}
    steer = lambda unit, j, open_: {script[j]: 100.0}  # noqa: E731
    d = _decoder(llm, ids, greedy=True, force_listen_count=0, steer=steer)
    d.start(protocol.system_prefix(ids, tok, ""))
    r = d.step(_unit(ids))
    # The mid-turn listen is the model's official behaviour: it keeps its turn (tts_bos);
    # after <|turn_eos|> a listen ends the unit.
    assert r.tokens == (ids.speak, ids.tts_bos, ids.turn_eos, ids.listen, ids.unit_end)
    assert r.turn_ended and r.speaking and not d.state.turn_open
    assert r.text_ids == (ids.tts_bos, ids.turn_eos)  # the steps after the first


def test_a_forced_listen_closes_the_open_turn_first(llm, ids, tok):
    steer = lambda unit, j, open_: {ids.speak: 100.0, ids.listen: -100.0,  # noqa: E731
                                    ids.chunk_eos: -100.0, ids.turn_eos: -100.0}
    d = _decoder(llm, ids, greedy=True, force_listen_count=0, max_unit_tokens=4, steer=steer)
    d.start(protocol.system_prefix(ids, tok, ""))
    assert d.step(_unit(ids)).speaking and d.state.turn_open
    r = d.step(_unit(ids, seed=1), force_listen=True)
    assert r.tokens == (ids.turn_eos, ids.listen, ids.unit_end)
    assert r.forced and r.closed_turn and not r.speaking and not d.state.turn_open
    # Forced again, with the turn closed: just a listen.
    assert d.step(_unit(ids, seed=2), force_listen=True).tokens == (ids.listen, ids.unit_end)


def test_a_stop_mid_unit_ends_it_within_one_step(llm, ids, tok):
    stop = threading.Event()
    calls = []

    def steer(unit, j, open_):
        calls.append(j)
        if j == 2:
            stop.set()  # the flow's interrupt(), from another thread, mid-generation
        return {ids.speak: 100.0, ids.listen: -100.0, ids.chunk_eos: -100.0,
                ids.turn_eos: -100.0}

    d = _decoder(llm, ids, greedy=True, force_listen_count=0, steer=steer)
    d.start(protocol.system_prefix(ids, tok, ""))
    r = d.step(_unit(ids), stop=stop)
    assert calls == [0, 1, 2] and r.stopped and r.closed_turn and not stop.is_set()
    assert r.tokens == (ids.speak,) * 3 + (ids.turn_eos, ids.listen, ids.unit_end)


# --- the window on the cache --------------------------------------------------------------

def test_dropping_units_from_the_cache_equals_never_having_seen_them(ids, tok):
    """After the window drops the oldest unit, the next logits are those of a fresh cache
    holding the prefix and the kept units at their new positions (RoPE turned back).

    With one layer this is exact: a kept position's keys and values depend on its input
    alone. (Deeper, they also carry what it attended to before the drop, in the official
    window as in ours.)"""
    llm = tiny_llm(layers=1)
    prefix = protocol.system_prefix(ids, tok, "Hi.")
    p, unit = protocol.length(prefix), 77 + 2  # a listened unit: prefill, listen, </unit>
    # Over the high mark after the third unit; dropping the first is enough for the low.
    window = Window(high=p + 3 * unit - 1, low=p + 2 * unit)
    d = _decoder(llm, ids, greedy=True, force_listen_count=99, window=window)
    d.start(prefix)
    units = [_unit(ids, seed=i) for i in range(3)]
    results = [d.step(u) for u in units]
    assert [r.dropped for r in results] == [0, 0, unit]
    probe = Tokens((ids.unit, 65, 66))
    with torch.no_grad():
        windowed = d._feed(d._embed([probe]))
        fresh = _decoder(llm, ids, greedy=True, force_listen_count=99)
        fresh.start(prefix)
        kept = [p for u, r in zip(units[1:], results[1:], strict=True)
                for p in [*u, Tokens(r.tokens)]]
        fresh._feed(fresh._embed(kept), logits=False)
        expected = fresh._feed(fresh._embed([probe]))
    assert d.cache_length == fresh.cache_length
    torch.testing.assert_close(windowed, expected, atol=1e-4, rtol=1e-4)


def test_sampling_ends_the_unit_as_often_as_the_model_gives_chunk_eos(llm, ids):
    """The first draw, unscaled: p(<|chunk_eos|>) = 1/2 here, so about half the draws end
    the unit; the other half never pick it (it is forbidden after that draw)."""
    d = _decoder(llm, ids, seed=5)
    row = _row(ids, chunk_eos=0.0, t90=0.0)
    drawn = []
    for _ in range(400):
        d.state.history.clear()
        drawn.append(d.choose(row))
    ends = drawn.count(ids.chunk_eos)
    assert 160 < ends < 240, ends
    assert set(drawn) == {ids.chunk_eos, 90}


def test_bad_token_ids_are_read_from_the_tokenizer_config(tok, tmp_path):
    tok.save_pretrained(tmp_path)
    config = tmp_path / "tokenizer_config.json"
    data = json.loads(config.read_text())
    data["bad_token_ids"] = [7, 8, 94]
    config.write_text(json.dumps(data))
    from transformers import Qwen2Tokenizer

    assert protocol.bad_token_ids(Qwen2Tokenizer.from_pretrained(tmp_path)) == [7, 8, 94]
    assert protocol.bad_token_ids(tok) == []
