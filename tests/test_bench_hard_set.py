"""The harder duplex scenario set (app/bench/scenarios/hard): it loads, it spans the cases
the issue names, and the format's voice and photo fields are checked. Nothing runs in
real time here."""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

import numpy as np
import pytest
from speech import needs_espeak

from app.bench import duplex, speech_cache
from app.bench.duplex_media import HandheldPhoto
from app.bench.duplex_scenario import ScenarioError, builtin_dir, load, load_dir, photo_names


@pytest.fixture(scope="module")
def hard():
    return load_dir(builtin_dir("hard"))


def test_the_hard_set_loads_apart_from_the_default_set(hard):
    default = load_dir(builtin_dir())
    assert 10 <= len(hard) <= 14
    assert not {s.name for s in hard} & {s.name for s in default}
    assert all(s.source.parent.name == "hard" for s in hard)
    assert all(s.source.parent.name == "scenarios" for s in default)  # kept separate


def test_the_hard_set_spans_the_issues_cases(hard):
    lines = [(s, ln) for s in hard for ln in s.lines]
    assert len({ln.voice.name for _, ln in lines}) >= 5  # other voices
    assert min(ln.voice.wpm for _, ln in lines) <= 120  # slower
    assert max(ln.voice.wpm for _, ln in lines) >= 240  # and faster
    assert any(s.noise and s.noise.kind == "hum" and ln.gain_db <= -12 for s, ln in lines)
    assert any(s.noise and s.noise.kind == "babble" and s.noise.level_db > -38 for s in hard)
    assert any(s.noise and s.noise.level_db >= -30 for s in hard)  # louder noise
    assert max(s.echo.gain for s in hard if s.echo) > 0.5  # stronger echo
    assert any(sum(ln.expect == "continue" for ln in s.lines) >= 3 for s in hard)
    barge_ins = [ln.value for _, ln in lines if ln.expect == "interrupt"
                 and ln.trigger == "on_speech"]
    assert min(barge_ins) <= 0.05 and max(barge_ins) >= 2.0  # earlier and later
    photos = [s.video.photo for s in hard if s.video and s.video.photo]
    assert len(photos) >= 2 and all(p.is_file() for p in photos)
    categories = {s.category for s in hard}
    assert {"smooth_turn_taking", "pause_handling", "backchannel", "user_interruption",
            "background_noise", "echo", "video"} <= categories


@needs_espeak
def test_espeak_has_every_voice_the_hard_set_asks_for(hard):
    speech_cache.check_voices({ln.voice.name: [s.name] for s in hard for ln in s.lines})


@needs_espeak
def test_a_voice_espeak_lacks_is_named_before_anything_runs():
    # espeak-ng itself ignores an unknown variant and speaks its default voice.
    with pytest.raises(speech_cache.UnknownVoice, match=r"'en-us\+nosuch' \(in s1\)"):
        speech_cache.check_voices({"en-us": ["s0"], "en-us+nosuch": ["s1"]})


def test_the_shipped_photographs_make_camera_frames():
    assert {"coffee", "astronaut"} <= set(photo_names())
    camera = HandheldPhoto(builtin_dir().parent / "photos" / "coffee.jpg")
    a, b = camera(0.0), camera(2.0)
    assert a.shape == b.shape == (240, 320, 3) and a.dtype == np.uint8
    assert not np.array_equal(a, b)  # a hand-held camera: the view drifts


def _toml(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "s.toml"
    path.write_text(textwrap.dedent(body))
    return path


def test_a_scenario_voice_table_sets_every_lines_voice(tmp_path):
    s = load(_toml(tmp_path, """
        category = "x"
        [voice]
        name = "en-gb-scotland"
        wpm = 110
        [[line]]
        text = "Hello"
        at = 0.5
        [[line]]
        text = "Again"
        gap = 0.5
        voice = "en-us+f3"
        pitch = 80
    """))
    first, second = (ln.voice for ln in s.lines)
    assert (first.name, first.wpm, first.pitch) == ("en-gb-scotland", 110, 50)
    assert (second.name, second.wpm, second.pitch) == ("en-us+f3", 110, 80)


def test_a_photo_can_be_an_image_beside_the_scenario(tmp_path):
    (tmp_path / "desk.png").write_bytes(b"")  # existence is checked at load, decoding later
    s = load(_toml(tmp_path, """
        category = "x"
        [video]
        photo = "desk.png"
        [[line]]
        text = "Hello"
        at = 0.5
    """))
    assert s.video.photo == tmp_path / "desk.png"


_LINE = '[[line]]\ntext = "a"\nat = 1\n'


@pytest.mark.parametrize(("body", "message"), [
    ('category = "x"\n[voice]\nname = "English please"\n' + _LINE, "espeak-ng voice"),
    ('category = "x"\n[voice]\nspeed = 3\n' + _LINE, "unknown field"),
    ('category = "x"\nvoice = "en-us"\n' + _LINE, "voice must be a table"),
    ('category = "x"\n' + _LINE + 'voice = "en us"\n', "espeak-ng voice"),
    ('category = "x"\n' + _LINE + "wpm = 900\n", "outside"),
    ('category = "x"\n[video]\nphoto = "sunset"\n' + _LINE, "no shipped photo 'sunset'"),
    ('category = "x"\n[video]\nphoto = "gone.jpg"\n' + _LINE, "does not exist"),
    ('category = "x"\n[video]\nphoto = "coffee"\nscene = "desk"\n' + _LINE, "exactly one of"),
])
def test_bad_voice_and_photo_fields_say_what_is_wrong(tmp_path, body, message):
    with pytest.raises(ScenarioError, match=message):
        load(_toml(tmp_path, body))


def test_set_hard_lists_the_hard_set_and_an_unknown_set_is_refused(capsys):
    parser = argparse.ArgumentParser()
    duplex.add_arguments(parser)
    assert duplex.run(parser.parse_args(["--set", "hard", "--list"])) == 0
    listed = capsys.readouterr().out
    assert "hard_babble_loud_interrupt" in listed and "noise_babble_turn" not in listed
    with pytest.raises(ScenarioError, match="no built-in scenario set"):
        builtin_dir("impossible")
    with pytest.raises(SystemExit):
        parser.parse_args(["--set", "impossible"])


def test_a_photo_opencv_cannot_read_stops_the_run_before_the_model_loads(tmp_path, capsys):
    folder = tmp_path / "set"
    folder.mkdir()
    (folder / "broken.jpg").write_bytes(b"not a picture")
    (folder / "s.toml").write_text('category = "x"\n[video]\nphoto = "broken.jpg"\n' + _LINE)
    parser = argparse.ArgumentParser()
    duplex.add_arguments(parser)
    args = parser.parse_args(["--scenarios", str(folder), "--out", str(tmp_path / "out")])
    if not speech_cache.shutil.which("espeak-ng") or not speech_cache.shutil.which("sox"):
        pytest.skip("espeak-ng and sox are not installed")
    assert duplex.run(args) == 2
    assert "broken.jpg is not an image opencv can read" in capsys.readouterr().err
