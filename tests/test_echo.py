"""Echo cancellation on a synthetic room: the assistant's voice is removed from the mic."""

from __future__ import annotations

import numpy as np
import pytest

from app.flow.echo import EchoCanceller

RATE = 16000


def speechlike(seconds: float, seed: int) -> np.ndarray:
    """Noise shaped into 4 Hz 'syllables': broadband and bursty, like speech."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    t = np.arange(n) / RATE
    envelope = np.clip(np.sin(2 * np.pi * 4 * t + rng.uniform(0, 6)), 0, None) ** 2
    voiced = np.convolve(rng.standard_normal(n), np.hanning(24) / 6, mode="same")
    return (0.3 * envelope * voiced).astype(np.float32)


def room(far: np.ndarray, delay_ms: float = 40.0) -> np.ndarray:
    """A speaker-to-mic path: a delay, then a short decaying reverberant tail."""
    rng = np.random.default_rng(7)
    taps = int(0.03 * RATE)
    ir = rng.standard_normal(taps) * np.exp(-np.arange(taps) / (0.006 * RATE)) * 0.25
    ir[0] = 0.6
    echo = np.convolve(far, ir)[: len(far)]
    shift = int(delay_ms / 1000 * RATE)
    return np.concatenate([np.zeros(shift), echo[: len(far) - shift]]).astype(np.float32)


def run_duplex(canceller: EchoCanceller, far: np.ndarray, mic: np.ndarray, block: int = 320):
    """Feed both ends block by block on one clock, as the player and mic would."""
    out = []
    for start in range(0, len(mic), block):
        t = start / RATE
        canceller.push_far(far[start : start + block], play_time=t)
        out.append(canceller.process_near(mic[start : start + block], capture_time=t))
    return np.concatenate(out)


def db(x: np.ndarray) -> float:
    return 10 * np.log10(np.mean(np.square(x, dtype=np.float64)) + 1e-20)


def test_echo_is_reduced_by_at_least_20_db_after_convergence():
    far = speechlike(8.0, seed=1)
    mic = room(far)
    cleaned = run_duplex(EchoCanceller(RATE), far, mic)
    tail = slice(5 * RATE, len(cleaned))  # AEC3 needs a few seconds to converge
    reduction = db(mic[tail]) - db(cleaned[tail])
    assert reduction >= 20.0, f"echo reduced by only {reduction:.1f} dB"


def test_the_near_end_talker_survives_while_the_assistant_is_silent():
    far = speechlike(6.0, seed=1)
    far[3 * RATE :] = 0.0  # the assistant stops; then the user talks
    user = np.zeros_like(far)
    user[4 * RATE :] = speechlike(2.0, seed=2)
    cleaned = run_duplex(EchoCanceller(RATE), far, room(far) + user)
    talk = slice(int(4.5 * RATE), len(cleaned))
    assert abs(db(cleaned[talk]) - db(user[talk])) < 6.0


def test_output_length_matches_input_over_time():
    canceller = EchoCanceller(RATE)
    sizes = [7, 160, 333, 1, 999, 160]
    total_in = sum(sizes)
    total_out = sum(len(canceller.process_near(np.zeros(n), capture_time=0.0)) for n in sizes)
    assert total_in - total_out == total_in % canceller.frame


def test_disabled_passes_audio_through_untouched():
    canceller = EchoCanceller(RATE, enabled=False)
    x = speechlike(0.5, seed=3)
    canceller.push_far(x, play_time=0.0)
    np.testing.assert_array_equal(canceller.process_near(x, capture_time=0.0), x)


@pytest.mark.parametrize("rate", [22050, 44100, 24000])
def test_unsupported_rate_is_a_clear_error(rate):
    with pytest.raises(ValueError, match=f"not {rate} Hz"):
        EchoCanceller(rate)


def test_the_echo_path_monitor_tells_headphones_from_a_loud_room():
    from app.flow.echo import EchoPathMonitor

    far = speechlike(4.0, seed=5)
    far[: RATE // 2] = 0.0  # the room is heard alone first (see the test below)
    tick = 640
    headphones, room_ = EchoPathMonitor(), EchoPathMonitor()
    mic_room = room(far)
    noise = (1e-4 * np.random.default_rng(1).standard_normal(len(far))).astype(np.float32)
    for start in range(0, len(far), tick):
        part = slice(start, start + tick)
        headphones.update(far[part], noise[part])
        room_.update(far[part], mic_room[part] + noise[part])
    assert headphones.negligible and headphones.coupling_db < -50
    assert not room_.negligible and room_.coupling_db > -15


def test_the_echo_path_is_unknown_until_the_far_end_has_spoken():
    from app.flow.echo import EchoPathMonitor

    monitor = EchoPathMonitor()
    for _ in range(100):
        monitor.update(np.zeros(640, np.float32), np.zeros(640, np.float32))
    assert monitor.coupling_db is None and not monitor.negligible


def test_room_noise_is_not_mistaken_for_an_echo_path():
    """Headphones in a noisy room: the noise is there whether the assistant talks or not."""
    from app.flow.echo import EchoPathMonitor

    tick = 320
    far = speechlike(6.0, seed=6)
    far[: 2 * RATE] = 0.0  # the assistant is silent for the first two seconds
    noise = (0.01 * np.random.default_rng(2).standard_normal(len(far))).astype(np.float32)
    monitor = EchoPathMonitor(block_ticks=12)
    for start in range(0, len(far), tick):
        part = slice(start, start + tick)
        monitor.update(far[part], noise[part])
    assert monitor.negligible, monitor.coupling_db


def test_room_noise_before_the_far_end_ever_rested_leaves_the_path_unknown():
    """The assistant talks from its first block over a noisy room with no echo: until it
    rests once, the noise cannot be told from an echo, so the path is unknown (the raw
    mic is listened to), not loud; once it rests, the path shows negligible."""
    from app.flow.echo import EchoPathMonitor

    tick = 320
    far = speechlike(6.0, seed=7)
    far[: 4 * RATE] = np.where(far[: 4 * RATE] == 0.0, 0.05, far[: 4 * RATE])  # no rest
    far[4 * RATE : 5 * RATE] = 0.0  # then a second's rest
    noise = (0.01 * np.random.default_rng(3).standard_normal(len(far))).astype(np.float32)
    monitor = EchoPathMonitor(block_ticks=12)
    for start in range(0, 4 * RATE, tick):
        monitor.update(far[start : start + tick], noise[start : start + tick])
    assert monitor.coupling_db is None and not monitor.negligible
    for start in range(4 * RATE, len(far), tick):
        monitor.update(far[start : start + tick], noise[start : start + tick])
    assert monitor.negligible, monitor.coupling_db
