"""Every fault the user hears about, worded in one place: what happened, what still
works, and what to do.

The window, the conversation controller and the command line's checks all take their
words from here. Exceptions are described by what they mean, never by their class
(no "PortAudioError", "OSError" or "CaptureError" reaches a banner): the class name and
the traceback go to the log, for whoever debugs it. No Qt here, so the wording is tested
directly.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from pathlib import Path

from app.capture.base import CaptureError
from app.capture.portaudio import AudioUnavailable
from app.model.contract import BackendError

ERROR, WARNING, INFO = "error", "warning", "info"

SELF_CHECK_TIP = ("the self-check runs without any device: Settings → Model → "
                  "Build self-check model")
DEVICES_PAGE = "Settings → Devices"


def _sentence(text: str) -> str:
    text = text.strip()
    if not text:
        return ""
    text = text[:1].upper() + text[1:]
    return text if text[-1] in ".!?…" else text + "."


@dataclass(frozen=True)
class UserMessage:
    """One banner: `happened` always; `still_works` and `to_do` where there is one."""

    level: str
    happened: str
    still_works: str = ""
    to_do: str = ""

    def text(self) -> str:
        return " ".join(s for s in map(_sentence, (self.happened, self.still_works,
                                                     self.to_do)) if s)


@dataclass(frozen=True)
class Fault:
    """An exception in the user's words (no class names)."""

    happened: str
    to_do: str
    still_works: str = ""


def _is_portaudio_error(exc: BaseException) -> bool:
    # sounddevice.PortAudioError, matched by name: importing sounddevice here would
    # need PortAudio, whose absence is itself one of the faults described.
    return any(cls.__name__ == "PortAudioError" for cls in type(exc).__mro__)


def _portaudio(exc: BaseException) -> Fault:
    detail = str(exc.args[0]) if exc.args else ""
    if "-1" in detail or "querying device" in detail.lower():
        what = "there is no sound device here (no sound card, or no access to it)"
    else:
        what = f"the sound system could not use an audio device ({detail or 'no reason given'})"
    return Fault(what, f"connect a microphone and speakers or headphones and choose them in "
                       f"{DEVICES_PAGE}", SELF_CHECK_TIP)


def _os_error(exc: OSError) -> Fault:
    where = f" {Path(exc.filename)}" if exc.filename else ""
    code = exc.errno
    if code == errno.ENOSPC:
        return Fault(f"the disk is full (writing{where})", "free some space on that disk")
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return Fault(f"Duetto may not write to{where or ' a folder it needs'}",
                     "choose another folder in Settings → Conversation, or make that one "
                     "writable")
    if code == errno.ENOENT:
        return Fault(f"{where.strip() or 'a file'} does not exist",
                     "check the path, or choose another file or folder")
    reason = exc.strerror or str(exc) or "no reason given"
    return Fault(f"a file could not be read or written ({reason}{':' + where if where else ''})",
                 "check the disk and the folder's permissions")


def describe(exc: BaseException) -> Fault:
    """What went wrong and what to do about it, for any exception."""
    text = str(exc)
    if isinstance(exc, BackendError):
        return Fault(str(exc.args[0]) if exc.args else "the model could not be used",
                     exc.hint or "check the model in Settings → Model")
    if "OutOfMemory" in type(exc).__name__ or "out of memory" in text.lower():
        return Fault("the model did not fit: out of GPU memory",
                     "choose 4-bit weights (nf4) or a smaller model in Settings → Model, or "
                     "close other programs that use the GPU")
    if isinstance(exc, MemoryError):
        return Fault("the computer ran out of memory",
                     "choose a smaller model or 4-bit weights in Settings → Model, or close "
                     "other programs")
    if isinstance(exc, AudioUnavailable):
        return Fault(f"audio devices cannot be used: {text}", "install or repair PortAudio "
                     "as it says", SELF_CHECK_TIP)
    if _is_portaudio_error(exc):
        return _portaudio(exc)
    if isinstance(exc, CaptureError):
        return Fault(text, f"check the device or file in {DEVICES_PAGE}")
    if isinstance(exc, OSError):
        return _os_error(exc)
    return Fault(text or "something unexpected went wrong",
                 "try again; the details are in the log if it happens again")


def start_failed(exc: BaseException) -> UserMessage:
    fault = describe(exc)
    return UserMessage(ERROR, f"The conversation could not start: {fault.happened}",
                       fault.still_works or "nothing was lost and the window stays usable",
                       fault.to_do)


def not_started(reason: str, to_do: str, still_works: str = "") -> UserMessage:
    """A start refused before anything loaded (no model chosen, a missing file…)."""
    return UserMessage(ERROR, f"The conversation could not start: {reason}",
                       still_works or "nothing was loaded or lost", to_do)


def _role(source: str) -> str:
    name = source.lower()
    if name.startswith("camera") or Path(name).suffix in (".avi", ".mp4", ".mkv", ".mov",
                                                          ".webm", ".m4v"):
        return "camera"
    if name.startswith(("microphone", "mic")) or Path(name).suffix in (
            ".wav", ".flac", ".ogg", ".aiff", ".aif", ".mp3"):
        return "microphone"
    return source or "a device"


def device_lost(source: str, detail: str) -> UserMessage:
    """A camera or microphone failed while the conversation runs."""
    role = _role(source)
    what = f"The {role} stopped working" + (f": {detail}" if detail and detail != "lost"
                                             else "")
    # A lost device is taken back by itself once it is there again (device_keeper.py).
    if role == "camera":
        return UserMessage(ERROR, what, "the conversation goes on without it (the assistant "
                           "hears you but no longer sees you) and takes it back as soon as "
                           "it is there again",
                           f"plug it back in, switch it on again to retry now, or check it "
                           f"in {DEVICES_PAGE}")
    if role == "microphone":
        return UserMessage(ERROR, what, "the conversation goes on and is still recorded, but "
                           "the assistant cannot hear you until the microphone is back; it "
                           "is taken back as soon as it is there again",
                           f"plug it back in, or check it in {DEVICES_PAGE}")
    return UserMessage(ERROR, what, "the conversation goes on without it",
                       f"check it in {DEVICES_PAGE}")


def persona_missing(chosen: str, instead: str) -> UserMessage:
    """The persona the settings choose has no file any more (removed, renamed)."""
    return UserMessage(WARNING, f"The persona '{chosen}' you chose has no file any more "
                       "(it was removed or renamed)",
                       f"'{instead}' speaks instead; your choice is kept in case the file "
                       "comes back",
                       "pick a persona in Settings → Persona")


def device_back(source: str, detail: str) -> UserMessage:
    """A device lost mid-conversation is back and in use again."""
    return UserMessage(INFO, detail or f"The {_role(source)} is back",
                       "the conversation has it again")


def model_notice(what: str, seconds: float) -> UserMessage | None:
    """The model stopped making sound mid-answer, or started again (app/flow/stall.py)."""
    if what == "stalled":
        return UserMessage(WARNING, f"The model has made no sound for {seconds:.0f} s while "
                           "answering: the computer or its GPU is busy",
                           "it goes on by itself when it can",
                           "press Stop talking if you would rather speak")
    if what == "resumed":
        return UserMessage(INFO, "The model is speaking again")
    return None


def camera_not_opened(detail: str) -> UserMessage:
    return UserMessage(ERROR, f"The camera could not start: {detail}",
                       "the conversation goes on without it",
                       f"check it in {DEVICES_PAGE}, then switch it on again")


def device_note(source: str, detail: str) -> UserMessage:
    """A source ended by itself with something to say (a file that ended…)."""
    return UserMessage(INFO, f"{source}: {detail}")


def audio_lost(description: str) -> UserMessage:
    return UserMessage(WARNING, f"Some audio was lost: {description}",
                       "the conversation goes on",
                       "if it happens often, close other busy programs or use a smaller model")


def recording_stopped(detail: str) -> UserMessage:
    """Recording could not start or stopped (the recorder words it in full: what
    happened, that the conversation goes on, where to choose another folder)."""
    if detail:
        return UserMessage(WARNING, detail)
    return UserMessage(WARNING, "Recording stopped", "the conversation goes on",
                       "choose another recordings folder in Settings → Conversation")


def model_failed(detail: str) -> UserMessage:
    """The running model failed on one piece of the conversation (reported by the session)."""
    return UserMessage(ERROR, detail, "the conversation goes on with the next thing you say",
                       "if it keeps happening, end the conversation and start again")


def settings_not_saved(exc: BaseException) -> UserMessage:
    fault = describe(exc)
    return UserMessage(ERROR, f"Your settings could not be saved: {fault.happened}",
                       "they apply until Duetto closes", fault.to_do)


def no_gpu(note: str) -> UserMessage:
    return UserMessage(INFO, note, "the self-check and small models run on the CPU, slowly",
                       "choose the CPU or the self-check in Settings → Model")


def too_slow(real_time_factor: float) -> UserMessage:
    """This machine computes speech slower than it is played (real-time factor over 1)."""
    return UserMessage(
        WARNING,
        f"This machine cannot keep up with this model: it computes 1 s of the assistant's "
        f"speech in {_seconds(real_time_factor)} s, so answers come late and in pieces",
        "the conversation goes on, and nothing is lost",
        "use a GPU, a smaller model or 4-bit weights (Settings → Model); switching the "
        "camera off saves some work",
    )


def answers_late(seconds: float) -> UserMessage:
    """The answers start too long after the user stops talking for a conversation."""
    return UserMessage(
        WARNING,
        f"This machine cannot keep up with this model: its answers start {seconds:.1f} s "
        "after you stop talking (a conversation needs under 2 s), because it takes that "
        "long to take in your words and compute the first second of speech",
        "the conversation goes on, and nothing is lost",
        "use a GPU or a smaller model (Settings → Model), or switch the camera off: each "
        "camera frame is more for the model to take in",
    )


def falling_behind(ratio: float) -> UserMessage:
    """The model takes longer to take in what the user says than it lasts."""
    return UserMessage(
        WARNING,
        f"This machine cannot keep up with this model: it takes {_seconds(ratio)} s to take "
        "in each second of what you say, so it falls behind and answers late",
        "the conversation goes on, and nothing you say is lost",
        "use a GPU or a smaller model (Settings → Model), or switch the camera off: each "
        "camera frame is more for the model to take in",
    )


def _seconds(value: float) -> str:
    return f"{value:.0f}" if value >= 10 else f"{value:.1f}"


def unusable_input(role: str, problem: str, *, at_launch: bool = False) -> UserMessage:
    """A file given as the microphone or camera that cannot be used, checked before the
    model loads (`problem`: capture.sources.check_inputs' sentence naming the file);
    `at_launch`: on the command line, before the window opens."""
    flag = "--mic" if role == "microphone" else "--camera"
    if at_launch:
        return UserMessage(ERROR, problem, "Duetto did not start, so nothing was loaded or lost",
                           f"check the path given to {flag}")
    if role == "camera":
        return UserMessage(WARNING, problem, "the conversation goes on without video",
                           f"choose another video file or a camera in {DEVICES_PAGE}")
    return not_started(problem[:1].lower() + problem[1:],
                       f"choose another file or a microphone in {DEVICES_PAGE}")


def input_note(warning: str) -> UserMessage:
    """Something about an input file that will be repaired as it plays."""
    return UserMessage(INFO, warning, "the conversation goes on")


def missing_model_folder(path: Path) -> UserMessage:
    return UserMessage(ERROR, f"The model folder {path} does not exist",
                       "Duetto did not start, so nothing was loaded or lost",
                       "check the path given to --model, or build a self-check model with "
                       "`duetto models tiny qwen2.5-omni DIR`")


def no_microphone(reason: str) -> UserMessage:
    return not_started(f"there is no microphone here ({reason})",
                       f"connect one and choose it in {DEVICES_PAGE}, or replay an audio "
                       "file as the microphone (duetto --mic FILE)",
                       "nothing was loaded; " + SELF_CHECK_TIP)


def no_speaker(reason: str) -> UserMessage:
    return UserMessage(WARNING, f"There is no speaker or headphones here ({reason})",
                       "the conversation runs, and the answers show as subtitles only",
                       f"connect one and choose it in {DEVICES_PAGE}")


_STAND_IN_WORDS = {
    "microphone": "a recorded voice asks the questions",
    "camera": "a generated video plays the camera",
    "speaker": "the answers are played to nowhere and shown as subtitles",
}


def self_check_stand_ins(replaced: tuple[str, ...]) -> UserMessage:
    """The self-check on a machine without some devices (self_check.py)."""
    missing = " or ".join(replaced) if len(replaced) < 3 else "microphone, camera or speaker"
    how = "; ".join(_STAND_IN_WORDS[r] for r in replaced if r in _STAND_IN_WORDS)
    return UserMessage(INFO, f"This machine has no {missing}, so the self-check uses "
                             f"stand-ins: {how}",
                       "everything else runs as in a real conversation",
                       f"connect devices and choose them in {DEVICES_PAGE} to use them")
