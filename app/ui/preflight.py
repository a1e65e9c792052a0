"""What the window checks before the model loads (15 s for the self-check, minutes for a
real model): the files given as microphone or camera (inputs.py), and whether a
microphone and a speaker exist at all; the self-check gets stand-ins for what is missing.
`prepare` runs on the controller's worker. No Qt here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from app.capture import devices
from app.capture.sources import check_inputs, names_a_file
from app.flow.conversation import NULL_SPEAKER, ConversationOptions
from app.ui import messages, self_check
from app.ui.inputs import InputChecker, judge_inputs
from app.ui.messages import UserMessage
from app.ui.options import is_self_check


class NotReady(Exception):
    """The conversation cannot start; `message` says why and what to do."""

    def __init__(self, message: UserMessage) -> None:
        super().__init__(message.text())
        self.message = message


@dataclasses.dataclass(frozen=True)
class Prepared:
    options: ConversationOptions
    notes: tuple[UserMessage, ...] = ()


def prepare(
    options: ConversationOptions,
    *,
    check: InputChecker = check_inputs,
    list_audio: Callable[[], devices.AudioDevices] | None = None,
    stand_ins: Callable[[ConversationOptions], self_check.StandIns] | None = None,
) -> Prepared:
    """The options to start with, or NotReady. Call off the UI thread (it may list
    devices and, for the self-check, write its stand-in video)."""
    list_audio = list_audio or devices.list_audio_devices
    stand_ins = stand_ins or self_check.stand_in_for_missing_devices
    inputs = judge_inputs(options.mic, options.camera, check=check)
    if inputs.mic is not None:
        raise NotReady(inputs.mic)
    notes: list[UserMessage] = list(inputs.notes)
    if inputs.camera is not None:  # a bad video file: the talk goes on without video
        options = dataclasses.replace(options, camera=None, standby_camera=None)
        notes.append(inputs.camera)
    prepared = _devices(options, list_audio, stand_ins)
    return Prepared(prepared.options, (*notes, *prepared.notes))


def _devices(options: ConversationOptions,
             list_audio: Callable[[], devices.AudioDevices],
             stand_ins: Callable[[ConversationOptions], self_check.StandIns]) -> Prepared:
    """Stand-ins for the self-check; a real model needs a microphone, and plays to
    nowhere (subtitles only) without a speaker."""
    if is_self_check(options.model.local_dir):
        found = stand_ins(options)
        notes = (messages.self_check_stand_ins(found.replaced),) if found.replaced else ()
        return Prepared(found.options, notes)
    mic_device = not names_a_file(options.mic)
    speaker_device = not names_a_file(options.speaker) and str(options.speaker) != NULL_SPEAKER
    if not (mic_device or speaker_device):
        return Prepared(options)
    audio = list_audio()
    if mic_device and not audio.inputs:
        raise NotReady(messages.no_microphone(audio.reason or "no audio input device"))
    if speaker_device and not audio.outputs:
        return Prepared(dataclasses.replace(options, speaker=NULL_SPEAKER),
                        (messages.no_speaker(audio.reason or "no audio output device"),))
    return Prepared(options)
