"""The duplex controller: who has the floor, decided from voice activity and the model.

A pure state machine: it is told what happened (a voice-activity onset or offset, the
model's first speech, the end of playback, the clock moving on) and answers with the
actions the session must take. It owns no threads and touches no device, so every
timing rule is tested by feeding it events.

Barge-in without cutting off backchannels: the moment the user starts talking over the
assistant, playback *pauses* (so the channel is silent within the VAD's onset latency,
about 64 ms); if the user stops again before `barge_in_min_speech` ("mm-hm", a cough),
playback resumes where it paused and nothing is lost; if they keep talking, it is a
barge-in: the queued audio is flushed, the model is stopped and told what was heard.

Turn-based backends (runtime duplex) get their end of turn from here: the user's speech
ended and `end_of_turn_silence` passed without new speech. With an end-of-turn model
(`judge_after` set, see turn_end.py) the controller asks for its verdict about a pause
`judge_after` long (Action.JUDGE_TURN), as soon as voice activity has confirmed the pause
(`judge_early`); a "complete" verdict (`on_turn_judged`) ends the turn once the pause is
that old, and otherwise `end_of_turn_silence` is the cap. Native-duplex backends decide
for themselves when to speak; a confirmed barge-in still forces them to listen, because
such models may never yield by themselves. A barge-in is the user starting to talk over
the assistant: when a native model starts talking while the user already is (a
backchannel of its own, or an overlap it chose), that is the model's call, and only the
user's next onset is judged.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from app.flow.vad import VadEvent, VadKind

# Times are sums of float seconds: compare with a tolerance far below one audio sample.
_EPSILON = 1e-6


class DuplexState(enum.StrEnum):
    LISTENING = "listening"
    RESPONDING = "responding"  # the user's turn ended; the model is preparing its answer
    SPEAKING = "speaking"
    INTERRUPTED = "interrupted"  # the user took the floor back; waiting for them to finish


class Action(enum.StrEnum):
    END_TURN = "end_turn"  # tell a turn-based backend the user's turn is over
    PAUSE_PLAYBACK = "pause_playback"
    RESUME_PLAYBACK = "resume_playback"
    BARGE_IN = "barge_in"  # flush playback, stop the model, tell it what was heard
    CANCEL_RESPONSE = "cancel_response"  # the user went on before any audio played
    PREPARE_TURN = "prepare_turn"  # likely end of turn: start the answer, hold its audio
    RETRACT_TURN = "retract_turn"  # the user went on: drop the prepared answer
    JUDGE_TURN = "judge_turn"  # ask the end-of-turn model; answer with on_turn_judged
    # A short utterance over the assistant ended: ask the word classifier whether it was a
    # backchannel or a bid for the floor; answer with on_burst_judged (burst_kind.py).
    JUDGE_BURST = "judge_burst"


@dataclass(frozen=True)
class DuplexConfig:
    end_of_turn_silence: float = 0.6
    # Voice activity stretches speech by its hangover (~0.1 s), so a 300 ms "mm-hm"
    # reads as ~0.4 s; stopping playback does not wait for this (see pause_on_onset).
    barge_in_min_speech: float = 0.5
    # With the word classifier (`judge_bursts`): speech over the assistant is a barge-in
    # by its length alone only from this long on; a shorter utterance is judged by its
    # words when it ends ("mm-hm" and "okay" carry on, "stop" and "wait" stop). Playback
    # is paused from the first syllable either way, so nothing is heard meanwhile.
    burst_judge_max: float = 1.0
    pause_on_onset: bool = True
    # After a short utterance, wait this long for more before resuming playback. Speech
    # pieces closer than this form one burst: "Wait... stop... I have a question" adds up
    # to a barge-in although each piece alone is as short as an "mm-hm".
    resume_delay: float = 0.35
    # Turn-based backends start answering after this much silence, before the end of
    # turn is certain; the answer's audio is held until `end_of_turn_silence` passes and
    # dropped if the user goes on. It hides the answer's first-chunk time in the silence
    # the user has to wait anyway, so it starts as soon as voice activity has confirmed
    # the pause (its offset needs about 0.1 s of silence): on a 2-core CPU the tiny
    # model's first chunk took 0.3 s, as long as the end-of-turn model's verdict, and each
    # 50 ms waited here was a 50 ms later answer. None turns it off.
    speculate_after: float | None = 0.0
    # Earlier still: once voice activity has heard this much silence after the user's
    # last speech, before it confirms the pause. One 32 ms window: in the 30 bench
    # conversations' user tracks (101 s of speech) silero dipped for a single window
    # inside speech 28 times, against 72 real pauses; such an early answer is retracted
    # as soon as the speech goes on (`speech_until` moves past it), having cost only
    # idle CPU while the user talked. Each window waited is a 32 ms later answer. None:
    # only after the confirmed offset (`speculate_after`).
    speculate_on_silence: float | None = 0.032
    # With an end-of-turn model: the silence after which it judges the turn so far; a
    # "complete" verdict ends the turn at once, and `end_of_turn_silence` becomes the cap
    # for when it says "not yet". None: no model, the silence alone decides.
    judge_after: float | None = None
    # Ask the model as soon as voice activity confirms the pause (about 0.1 s), about the
    # pause as it will be at `judge_after`: the rest of the silence is taken to sound
    # like the silence already heard (turn_end.py), and a "complete" verdict takes effect
    # no earlier than `judge_after`. The model's compute (0.1-0.2 s on a 2-core CPU) is
    # then spent while that silence passes instead of after it. If the user speaks again
    # meanwhile, the verdict is for a pause that is over and is ignored. False: ask once
    # the pause is `judge_after` old, with the silence really heard.
    judge_early: bool = True

    def __post_init__(self) -> None:
        if not 0.05 <= self.end_of_turn_silence <= 5.0:
            raise ValueError("end-of-turn silence must be between 0.05 s and 5 s")
        if not 0.0 <= self.barge_in_min_speech <= 3.0:
            raise ValueError("barge-in minimum speech must be between 0 s and 3 s")
        if not 0.0 <= self.burst_judge_max <= 5.0:
            raise ValueError("the longest utterance judged by its words must be 0-5 s")
        if not 0.0 <= self.resume_delay <= 2.0:
            raise ValueError("resume delay must be between 0 s and 2 s")
        if self.speculate_after is not None and not 0.0 <= self.speculate_after <= 5.0:
            raise ValueError("speculation delay must be between 0 s and 5 s, or None")
        if (self.speculate_on_silence is not None
                and not 0.0 < self.speculate_on_silence <= 1.0):
            raise ValueError("early speculation must follow 0-1 s of silence, or be None")
        if self.judge_after is not None and not 0.0 <= self.judge_after <= 5.0:
            raise ValueError("end-of-turn model delay must be between 0 s and 5 s, or None")


@dataclass(frozen=True)
class Transition:
    """Why the state changed, for the event log and the UI."""

    t: float
    state: DuplexState
    reason: str


class DuplexController:
    def __init__(self, config: DuplexConfig | None = None, *, native_duplex: bool = False,
                 judge_bursts: bool = False):
        self.config = config or DuplexConfig()
        self.native_duplex = native_duplex
        # A word classifier answers JUDGE_BURST (see `burst_judge_max`).
        self.judge_bursts = judge_bursts
        self._burst_offset: float | None = None  # where a judged utterance ended
        self.state = DuplexState.LISTENING
        self.user_speaking = False
        self._speech_start = 0.0  # onset time of the current user speech
        self._turn_due: float | None = None  # when the end of turn fires, if nothing changes
        self._judge_due: float | None = None  # when to ask the end-of-turn model
        self._paused = False
        self._resume_due: float | None = None  # resume playback then, if no more speech
        self._turn_offset = 0.0  # where the user's last speech ended
        self._speculating = False  # an answer is being prepared before the turn surely ended
        # Prepared before the pause was confirmed: where the speech then seemed to end.
        self._speculated_from: float | None = None
        self._burst_start: float | None = None
        self._burst_speech = 0.0  # finished speech within the current burst (s)
        # The user's current speech began before a native model started talking over it:
        # not a barge-in (see the module docstring).
        self._overlap_by_model = False
        self.history: list[Transition] = []
        self.barge_ins = 0
        self.backchannels = 0

    # ------------------------------------------------------------------ inputs
    def on_vad(self, event: VadEvent) -> list[Action]:
        if event.kind is VadKind.ONSET:
            return self._on_onset(event)
        return self._on_offset(event)

    def on_clock(self, now: float, speech_until: float | None = None) -> list[Action]:
        """Advance timers to session time `now` (the audio processed so far).

        `speech_until`, when given, is where voice activity last heard speech: the user's
        current speech is measured to there, not to `now`, so the wait for its offset to
        be confirmed does not turn an "uh-huh" into a barge-in.
        """
        actions: list[Action] = []
        overlapping = self.state in (DuplexState.SPEAKING, DuplexState.RESPONDING)
        if overlapping and self.user_speaking and self._overlap_by_model:
            pass  # the model chose to talk over the user: its call, not a barge-in
        elif overlapping and self.user_speaking:
            heard_to = now if speech_until is None else min(now, speech_until)
            burst = self._burst_speech + (heard_to - self._speech_start)
            if burst >= self._barge_in_speech - _EPSILON:
                actions += self._take_floor_back(now)
        elif overlapping and self._resume_due is not None and now >= self._resume_due - _EPSILON:
            # The user said something short and stopped: a backchannel. Carry on.
            self._resume_due = None
            self.backchannels += 1
            self._new_burst()  # whatever the user says next is judged afresh
            if self._paused:
                self._paused = False
                actions.append(Action.RESUME_PLAYBACK)
        actions += self._speculate_on_silence(now, speech_until)
        if (
            self._turn_due is not None
            and self.state is DuplexState.LISTENING
            and not self.native_duplex
            and not self._speculating
            and self.config.speculate_after is not None
            and self._turn_offset + self.config.speculate_after < self._turn_due
            and now >= self._turn_offset + self.config.speculate_after - _EPSILON
        ):
            self._speculating = True
            actions.append(Action.PREPARE_TURN)
        if (
            self._judge_due is not None
            and now >= self._judge_due - _EPSILON
            and self.state is DuplexState.LISTENING
            and self._turn_due is not None
            and now < self._turn_due - _EPSILON
        ):
            self._judge_due = None
            actions.append(Action.JUDGE_TURN)
        if (
            self._turn_due is not None
            and now >= self._turn_due - _EPSILON
            and self.state is DuplexState.LISTENING
        ):
            self._judge_due = None
            self._turn_due = None
            self._speculating = False
            self._speculated_from = None
            if not self.native_duplex:
                self._enter(DuplexState.RESPONDING, now, "end of user turn")
                self._new_burst()  # what the user said in their turn is not an overlap
                actions.append(Action.END_TURN)
        return actions

    def _speculate_on_silence(self, now: float, speech_until: float | None) -> list[Action]:
        """Prepare the answer once a little silence follows the user's speech, before
        voice activity confirms the pause; retract it if the speech goes on."""
        if speech_until is None or not self.user_speaking:
            return []
        if self._speculating and self._speculated_from is not None:
            if speech_until > self._speculated_from + _EPSILON:
                self._speculating = False
                self._speculated_from = None
                return [Action.RETRACT_TURN]
            return []
        wait = self.config.speculate_on_silence
        if (
            wait is not None
            and not self._speculating
            and not self.native_duplex
            and self.state is DuplexState.LISTENING
            and now >= speech_until + wait - _EPSILON
        ):
            self._speculating = True
            self._speculated_from = speech_until
            return [Action.PREPARE_TURN]
        return []

    def decline_speculation(self) -> None:
        """The session could not start the early answer just asked for (PREPARE_TURN
        before the pause was confirmed): forget it, so that a later tick may ask again."""
        if self._speculating and self._speculated_from is not None:
            self._speculating = False
            self._speculated_from = None

    def on_turn_judged(self, complete: bool, now: float, pause: float | None = None,
                       decided: float | None = None) -> list[Action]:
        """The end-of-turn model's verdict on the pause it was asked about (JUDGE_TURN).

        `pause` is the `pause_start` of that pause: a verdict that arrives for a pause the
        user has since ended by speaking is ignored. "Complete" ends the turn now (or at
        `decided`, the session time at which the verdict existed, when the listener has
        yet to catch up with it), and not before the pause is `judge_after` old when the
        model was asked early; "not yet" leaves the silence cap to decide.
        """
        if (
            complete
            and self._turn_due is not None
            and not self.user_speaking
            and self.state is DuplexState.LISTENING
            and (pause is None or abs(pause - self._turn_offset) < _EPSILON)
        ):
            judged = self._turn_offset + (self.config.judge_after or 0.0)
            self._turn_due = min(self._turn_due, max(now, decided or now, judged))
        return self.on_clock(now)

    def on_burst_judged(self, wants_floor: bool, now: float) -> list[Action]:
        """The word classifier's verdict on the utterance that just ended (JUDGE_BURST).

        A bid for the floor ("stop", "wait") is a barge-in now, and the user's turn is
        then timed from the end of what they said, as after any pause; a backchannel
        leaves the resume timer to carry on. Ignored once more speech has come, the
        assistant has carried on, or the floor changed hands meanwhile.
        """
        offset, self._burst_offset = self._burst_offset, None
        if (
            not wants_floor
            or offset is None
            or self.user_speaking
            or self._resume_due is None
            or self.state not in (DuplexState.SPEAKING, DuplexState.RESPONDING)
        ):
            return self.on_clock(now)
        actions = self._take_floor_back(now, reason="user asked for the floor")
        self._start_pause(offset)
        return actions + self.on_clock(now)

    @property
    def _barge_in_speech(self) -> float:
        """How long speech over the assistant must last to be a barge-in by length."""
        if self.judge_bursts:
            return max(self.config.barge_in_min_speech, self.config.burst_judge_max)
        return self.config.barge_in_min_speech

    def on_model_speech(self, t: float) -> list[Action]:
        """The first audio of a response went to the player (or a native model said SPEAK)."""
        if self.state in (DuplexState.RESPONDING, DuplexState.LISTENING):
            self._enter(DuplexState.SPEAKING, t, "assistant speaks")
            self._turn_due = None
            self._judge_due = None
            if not self.user_speaking:
                self._new_burst()
            elif self.native_duplex:
                self._overlap_by_model = True
                self._new_burst()
        return []

    def on_model_listen(self, t: float) -> list[Action]:
        """A native-duplex model chose to listen, or a turn-based answer ended unspoken."""
        if self.state in (DuplexState.RESPONDING, DuplexState.SPEAKING):
            self._enter(DuplexState.LISTENING, t, "assistant yields")
        return []

    def on_playback_done(self, t: float) -> list[Action]:
        """The model finished and the player drained: the floor is the user's again."""
        actions: list[Action] = []
        if self._paused:  # the user was mid-"mm-hm" as the answer ended
            self._paused = False
            actions.append(Action.RESUME_PLAYBACK)
        if self.state is DuplexState.SPEAKING:
            self._enter(DuplexState.LISTENING, t, "assistant finished")
        return actions

    def force_listen(self, t: float) -> list[Action]:
        """The user pressed "stop talking": same as a barge-in, without the speech."""
        if self.state in (DuplexState.SPEAKING, DuplexState.RESPONDING):
            return self._take_floor_back(t, reason="stopped by the user")
        if self._speculating:
            self._speculating = False
            self._speculated_from = None
            self._turn_due = None
            return [Action.RETRACT_TURN]
        return []

    # ------------------------------------------------------------------ rules
    def _on_onset(self, event: VadEvent) -> list[Action]:
        self.user_speaking = True
        self._overlap_by_model = False
        self._speech_start = event.t
        self._turn_due = None
        self._judge_due = None
        self._resume_due = None
        retract: list[Action] = []
        if self._speculating:  # the user was only pausing: drop the prepared answer
            self._speculating = False
            self._speculated_from = None
            retract.append(Action.RETRACT_TURN)
        if self._burst_start is None:
            self._burst_start = event.t
            self._burst_speech = 0.0
        actions: list[Action] = []
        if (
            self.state is DuplexState.SPEAKING
            and self.config.pause_on_onset
            and not self._paused
        ):
            self._paused = True
            actions.append(Action.PAUSE_PLAYBACK)
        # A long enough onset may already be a barge-in by the time it is detected.
        return retract + actions + self.on_clock(event.detected_at)

    def _on_offset(self, event: VadEvent) -> list[Action]:
        self.user_speaking = False
        self._speculated_from = None  # an early answer now belongs to this pause
        overlapped, self._overlap_by_model = self._overlap_by_model, False
        if overlapped and self.state in (DuplexState.SPEAKING, DuplexState.RESPONDING):
            # The user finished what they were saying when the model talked over it:
            # neither a barge-in nor a backchannel.
            return self.on_clock(event.detected_at)
        self._burst_speech += max(0.0, event.t - self._speech_start)
        actions: list[Action] = []
        if self.state in (DuplexState.SPEAKING, DuplexState.RESPONDING):
            # Too short to be a barge-in so far; resume unless more speech follows, or
            # the words say it was a bid for the floor.
            self._resume_due = event.t + self.config.resume_delay
            if self.judge_bursts:
                self._burst_offset = event.t
                return [Action.JUDGE_BURST, *self.on_clock(event.detected_at)]
            return self.on_clock(event.detected_at)
        self._start_pause(event.t)
        if self.state is DuplexState.INTERRUPTED:
            self._enter(DuplexState.LISTENING, event.detected_at, "user finished")
        return actions + self.on_clock(event.detected_at)

    def _start_pause(self, offset: float) -> None:
        """The user's speech ended at `offset`: time the end of their turn from there."""
        self._turn_offset = offset
        self._turn_due = offset + self.config.end_of_turn_silence
        if self.config.judge_after is not None:
            self._judge_due = offset + (0.0 if self.config.judge_early
                                        else self.config.judge_after)

    def _new_burst(self) -> None:
        self._burst_start = None
        self._burst_speech = 0.0

    @property
    def user_turn_open(self) -> bool:
        """The user is talking, or paused for less than the end-of-turn silence."""
        return self.user_speaking or self._turn_due is not None

    @property
    def pause_start(self) -> float:
        """Where the user's last speech ended: the pause the end-of-turn model judges."""
        return self._turn_offset

    @property
    def burst_start(self) -> float | None:
        """Where the user's current (or last) stretch of speech began."""
        return self._burst_start

    def _take_floor_back(self, t: float, reason: str = "user barged in") -> list[Action]:
        self._paused = False
        self._resume_due = None
        self._overlap_by_model = False
        was_speaking = self.state is DuplexState.SPEAKING
        self._enter(
            DuplexState.INTERRUPTED if self.user_speaking else DuplexState.LISTENING, t, reason
        )
        if was_speaking:
            self.barge_ins += 1
            return [Action.BARGE_IN]
        return [Action.CANCEL_RESPONSE]

    def _enter(self, state: DuplexState, t: float, reason: str) -> None:
        if state is not self.state:
            self.state = state
            self.history.append(Transition(t, state, reason))
