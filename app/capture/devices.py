"""What cameras, microphones and speakers this machine has.

The API (`duetto doctor` and the settings dialog use it):

* `list_audio_devices() -> AudioDevices(inputs, outputs, reason)`: a named tuple, so
  `inputs, outputs, reason = list_audio_devices()` works too. Each device is an
  `AudioDeviceInfo` (index, name, channels, native default rate, host API).
* `list_cameras() -> CameraList(cameras, reason)`: each camera a `CameraInfo` (index,
  default width, height and fps, opencv backend).
* `resolve_input_device(spec)`: a microphone by index, by name (a unique,
  case-insensitive part of it) or None for the system default; raises `CaptureError`
  naming the candidates when the name matches nothing or several devices.

Listing never raises: on a machine without a sound card, without PortAudio or without a
camera the lists are empty and `reason` says why in a sentence. `reason` is "" when
nothing is amiss.
"""

from __future__ import annotations

import contextlib
import re
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

from app.capture import portaudio
from app.capture.base import CaptureError


@dataclass(frozen=True)
class AudioDeviceInfo:
    """One PortAudio device as seen from one direction (input or output).

    `channels` is the most channels it offers in that direction, `rate` its native
    default sample rate in Hz (what it runs at without resampling).
    """

    index: int
    name: str
    channels: int
    rate: float
    hostapi: str = ""
    is_default: bool = False

    def describe(self) -> str:
        api = f" [{self.hostapi}]" if self.hostapi else ""
        return f"#{self.index} {self.name}{api}"


class AudioDevices(NamedTuple):
    inputs: tuple[AudioDeviceInfo, ...]
    outputs: tuple[AudioDeviceInfo, ...]
    reason: str


@dataclass(frozen=True)
class CameraInfo:
    """A camera that opened at `index`, with the size and rate it starts in."""

    index: int
    width: int
    height: int
    fps: float
    backend: str = ""


class CameraList(NamedTuple):
    cameras: tuple[CameraInfo, ...]
    reason: str


# ---------------------------------------------------------------------------- audio


def _hostapi_names(sd: ModuleType) -> list[str]:
    try:
        return [str(api["name"]) for api in sd.query_hostapis()]
    except Exception:  # host API names are decoration; a listing without them is fine
        return []


def _defaults(sd: ModuleType) -> tuple[int, int]:
    try:
        dev_in, dev_out = sd.default.device
        return int(dev_in if dev_in is not None else -1), int(
            dev_out if dev_out is not None else -1
        )
    except Exception:
        return -1, -1


def _audio_devices(sd: ModuleType) -> tuple[list[AudioDeviceInfo], list[AudioDeviceInfo]]:
    apis = _hostapi_names(sd)
    default_in, default_out = _defaults(sd)
    inputs: list[AudioDeviceInfo] = []
    outputs: list[AudioDeviceInfo] = []
    for position, dev in enumerate(sd.query_devices()):
        index = int(dev.get("index", position))
        api_index = int(dev.get("hostapi", -1))
        api = apis[api_index] if 0 <= api_index < len(apis) else ""
        rate = float(dev.get("default_samplerate", 0.0))
        name = str(dev.get("name", f"device {index}"))
        if int(dev.get("max_input_channels", 0)) > 0:
            channels = int(dev["max_input_channels"])
            inputs.append(AudioDeviceInfo(index, name, channels, rate, api, index == default_in))
        if int(dev.get("max_output_channels", 0)) > 0:
            channels = int(dev["max_output_channels"])
            outputs.append(
                AudioDeviceInfo(index, name, channels, rate, api, index == default_out)
            )
    return inputs, outputs


def list_audio_devices() -> AudioDevices:
    """Audio inputs and outputs; empty lists and a reason when there are none."""
    try:
        sd = portaudio.load_sounddevice()
        inputs, outputs = _audio_devices(sd)
    except portaudio.AudioUnavailable as exc:
        return AudioDevices((), (), str(exc))
    except Exception as exc:  # PortAudio failing to initialise is a finding, not a crash
        return AudioDevices((), (), f"PortAudio could not list devices: {exc}")
    if not inputs and not outputs:
        reason = "PortAudio found no audio devices (no sound card, or no access to it)"
        return AudioDevices((), (), reason)
    reasons = []
    if not inputs:
        reasons.append("no audio input device (no sound card, or no access to it)")
    if not outputs:
        reasons.append("no audio output device (no sound card, or no access to it)")
    return AudioDevices(tuple(inputs), tuple(outputs), "; ".join(reasons))


def _pick_by_name(spec: str, inputs: Sequence[AudioDeviceInfo]) -> AudioDeviceInfo:
    wanted = spec.strip().casefold()
    exact = [d for d in inputs if d.name.casefold() == wanted]
    if len(exact) == 1:
        return exact[0]
    partial = exact or [d for d in inputs if wanted in d.name.casefold()]
    if len(partial) == 1:
        return partial[0]
    if not partial:
        known = ", ".join(d.describe() for d in inputs) or "none"
        raise CaptureError(f"no microphone matches '{spec}' (inputs here: {known})")
    names = ", ".join(d.describe() for d in partial)
    raise CaptureError(
        f"microphone name '{spec}' matches {len(partial)} devices: {names}; "
        "give a longer part of the name or the device number"
    )


def resolve_input_device(
    spec: int | str | None, sd: ModuleType | None = None
) -> AudioDeviceInfo:
    """The input device `spec` names: an index, a digit string, a name, or None (default).

    Raises CaptureError (PortAudio missing, no inputs, no match, several matches, an
    index that is not an input) with the device named.
    """
    try:
        sd = sd or portaudio.load_sounddevice()
        inputs, _ = _audio_devices(sd)
    except portaudio.AudioUnavailable as exc:
        raise CaptureError(f"cannot open a microphone: {exc}") from exc
    except Exception as exc:
        raise CaptureError(f"cannot list microphones: {exc}") from exc
    if not inputs:
        raise CaptureError("no microphone found (no audio input device on this machine)")
    if isinstance(spec, str) and spec.strip().isdigit():
        spec = int(spec.strip())
    if spec is None:
        default_in, _ = _defaults(sd)
        for dev in inputs:
            if dev.index == default_in:
                return dev
        raise CaptureError(
            "there is no default microphone; choose one of: "
            + ", ".join(d.describe() for d in inputs)
        )
    if isinstance(spec, bool) or not isinstance(spec, int | str):
        raise CaptureError(f"a microphone is an index or a name, not {spec!r}")
    if isinstance(spec, int):
        for dev in inputs:
            if dev.index == spec:
                return dev
        known = ", ".join(d.describe() for d in inputs)
        raise CaptureError(f"audio device #{spec} is not a microphone (inputs here: {known})")
    return _pick_by_name(spec, inputs)


# --------------------------------------------------------------------------- cameras


# Opens a camera index and returns something shaped like cv2.VideoCapture.
OpenCapture = Callable[[int], Any]


@contextlib.contextmanager
def quiet_opencv() -> Iterator[None]:
    """Silence opencv's own warnings (it prints one per index it cannot open).

    The level is process-wide, so it is restored afterwards; a probe that outlives its
    timeout may still print once the level is back.
    """
    try:
        import cv2

        logging_api = cv2.utils.logging
        previous = logging_api.getLogLevel()
        logging_api.setLogLevel(logging_api.LOG_LEVEL_SILENT)
    except Exception:  # an opencv without the logging API: nothing to silence
        yield
        return
    try:
        yield
    finally:
        logging_api.setLogLevel(previous)


def _open_with_opencv(index: int) -> Any:
    import cv2

    return cv2.VideoCapture(index)


def _linux_video_indices(dev: Path = Path("/dev")) -> list[int]:
    indices = []
    for node in dev.glob("video*"):
        match = re.fullmatch(r"video(\d+)", node.name)
        if match:
            indices.append(int(match.group(1)))
    return sorted(indices)


def _probe(index: int, open_capture: OpenCapture) -> CameraInfo | None:
    cap = open_capture(index)
    try:
        if not cap.isOpened():
            return None
        try:
            backend = str(cap.getBackendName())
        except Exception:
            backend = ""
        # 3, 4, 5: CAP_PROP_FRAME_WIDTH, _HEIGHT, _FPS (numbers, so fakes need no cv2)
        return CameraInfo(index, int(cap.get(3)), int(cap.get(4)), float(cap.get(5)), backend)
    finally:
        cap.release()


def _probe_with_timeout(
    index: int, open_capture: OpenCapture, timeout_s: float
) -> tuple[bool, CameraInfo | None]:
    """(answered in time, camera or None). A driver that hangs costs one daemon thread."""
    result: list[CameraInfo | None] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            result.append(_probe(index, open_capture))
        except Exception as exc:  # a driver that throws is a camera that did not open
            errors.append(exc)

    thread = threading.Thread(target=work, name=f"camera-probe-{index}", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        return False, None
    return True, (result[0] if result else None)


def list_cameras(
    max_index: int = 8,
    timeout_s: float = 3.0,
    indices: Iterable[int] | None = None,
    open_capture: OpenCapture | None = None,
) -> CameraList:
    """Cameras that open, probing indices quickly and quietly; never raises.

    On Linux only the indices of existing /dev/videoN nodes below `max_index` are tried
    (no nodes: no opencv call at all). Elsewhere 0.. are tried until two in a row fail.
    Each probe gets `timeout_s`; a probe that hangs ends the search with a reason.
    """
    open_capture = open_capture or _open_with_opencv
    linux = sys.platform.startswith("linux")
    from_nodes = indices is None and linux
    contiguous = indices is None and not linux
    if indices is None:
        if linux:
            nodes = _linux_video_indices()
            if not nodes:
                return CameraList((), "no camera device nodes (/dev/video*) on this machine")
            indices = [n for n in nodes if n < max_index]
        else:
            indices = range(max_index)
    found: list[CameraInfo] = []
    tried: list[int] = []
    notes: list[str] = []
    misses = 0
    try:
        with quiet_opencv():
            for index in indices:
                tried.append(index)
                answered, info = _probe_with_timeout(index, open_capture, timeout_s)
                if not answered:
                    notes.append(f"camera #{index} did not answer within {timeout_s:g} s")
                    break
                if info is None:
                    misses += 1
                    if contiguous and misses >= 2:
                        break
                    continue
                misses = 0
                found.append(info)
    except Exception as exc:  # opencv missing or broken: say so, do not crash
        return CameraList(tuple(found), f"cameras could not be probed: {exc}")
    if not found:
        where = ", ".join(f"#{i}" for i in tried) or "none"
        why = "no camera opened (tried " + where + ")"
        if from_nodes and tried:
            why += "; check that your user may use /dev/video* (the 'video' group)"
        notes.insert(0, why)
    return CameraList(tuple(found), "; ".join(notes))
