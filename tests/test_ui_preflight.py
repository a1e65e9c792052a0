"""Before the model loads: missing files are said at once, a machine without a
microphone is told so, and the self-check gets stand-ins for missing devices."""

from __future__ import annotations

import cv2
import soundfile as sf
import test_ui_fakes as fakes

from app.capture import devices
from app.flow.conversation import NULL_SPEAKER, ConversationOptions
from app.model.contract import ModelSource, Persona
from app.ui import preflight, self_check
from app.ui.main_window import MainWindow
from app.ui.options import LaunchOverrides

NONE_HERE = devices.AudioDevices((), (), "PortAudio found no audio devices (test)")
NO_CAMERA = devices.CameraList((), "no camera (test)")


def _options(model_dir, **kw) -> ConversationOptions:
    return ConversationOptions(model=ModelSource(local_dir=model_dir),
                               persona=Persona(name="t", role_prompt="hi"), **kw)


def _tiny_folder(tmp_path):
    folder = tmp_path / "tiny"
    folder.mkdir()
    (folder / "duetto.json").write_text('{"tiny": true}')
    return folder


def test_the_self_check_uses_stand_ins_where_devices_are_missing(tmp_path):
    video = tmp_path / "cam.avi"
    options = _options(_tiny_folder(tmp_path), camera=0, standby_camera=0)
    prepared = preflight.prepare(options, list_audio=lambda: NONE_HERE, stand_ins=lambda o:
                                 self_check.stand_in_for_missing_devices(
                                     o, list_audio=lambda: NONE_HERE,
                                     list_cameras=lambda: NO_CAMERA,
                                     video=lambda: self_check.write_video(video)))
    got = prepared.options
    assert got.mic == self_check.speech_clip() and got.speaker == NULL_SPEAKER
    assert got.camera == got.standby_camera == video and got.loop_files
    clip = sf.info(str(got.mic))
    assert clip.samplerate == 16000 and clip.duration > 5  # a real recorded voice
    assert cv2.VideoCapture(str(video)).read()[0]
    (note,) = prepared.notes
    assert "no microphone or speaker or camera" not in note.text()
    assert note.text().startswith("This machine has no microphone, camera or speaker, so the "
                                  "self-check uses stand-ins")


def test_the_self_check_keeps_what_exists_and_what_the_user_chose(tmp_path):
    mic = devices.AudioDeviceInfo(3, "USB mic", 1, 48000.0)
    only_a_mic = devices.AudioDevices((mic,), (), "no audio output device")
    chosen = tmp_path / "me.wav"
    sf.write(str(chosen), [0.0] * 1600, 16000)
    options = _options(_tiny_folder(tmp_path), mic=None, camera=None, standby_camera=None)
    found = self_check.stand_in_for_missing_devices(options, list_audio=lambda: only_a_mic,
                                                    list_cameras=lambda: NO_CAMERA)
    assert found.options.mic is None and found.options.speaker == NULL_SPEAKER
    assert found.replaced == ("speaker",)
    (tmp_path / "b").mkdir()
    files = _options(_tiny_folder(tmp_path / "b"), mic=str(chosen), speaker="out.wav")
    untouched = self_check.stand_in_for_missing_devices(files, list_audio=lambda: NONE_HERE,
                                                        list_cameras=lambda: NO_CAMERA)
    assert untouched.options == files and untouched.replaced == ()


def test_a_bad_camera_file_leaves_the_talk_without_video(tmp_path):
    junk = tmp_path / "clip.mp4"
    junk.write_text("not a video")
    options = _options(tmp_path, mic=None, camera=str(junk), standby_camera=str(junk))
    prepared = preflight.prepare(options, list_audio=lambda: fakes.Harness().audio)
    assert prepared.options.camera is None and prepared.options.standby_camera is None
    (note,) = prepared.notes
    assert "clip.mp4" in note.text() and "goes on without video" in note.text()


def test_a_real_model_without_a_microphone_is_refused_before_loading(tmp_path):
    options = _options(tmp_path)  # not a self-check folder
    try:
        preflight.prepare(options, list_audio=lambda: NONE_HERE)
    except preflight.NotReady as exc:
        text = exc.message.text()
    else:
        raise AssertionError("started without a microphone")
    assert "there is no microphone here" in text and "self-check" in text


def test_a_missing_mic_file_stops_the_start_before_the_model_loads(qtbot, tmp_path):
    harness = fakes.Harness()
    window = MainWindow(LaunchOverrides(model_dir=tmp_path, mic=str(tmp_path / "talk.wav"),
                                        speaker="null"),
                        controller=harness.controller, detect_hardware=None)
    qtbot.addWidget(window)
    window.start_conversation()
    qtbot.waitUntil(lambda: bool(window.messages.texts()), timeout=5000)
    assert harness.loads == 0  # said before any loading
    text = window.messages.texts()[-1]
    assert text.startswith("The conversation could not start: the microphone input cannot "
                           f"be used: file not found: {tmp_path / 'talk.wav'}.")
    assert window.controller.phase == "idle"
    window.close()
