"""Fault rows on the model: folders that cannot be loaded, and a load that runs out of
memory. Each must end in a clear message with the window idle and usable; the
out-of-memory row then starts again without the fault and must get an answer (nothing
of the failed load may stand in the way).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from app.bench.fault_inputs import model_copy, truncate_weights, unknown_family
from app.bench.fault_report import Outcome
from app.bench.fault_talk import ANSWER_TIMEOUT_S, files, judge_common, talk
from app.bench.fault_window import WindowRun
from app.ui.options import LaunchOverrides


def _with_model(ctx: Any, folder: Path) -> LaunchOverrides:
    base = files(ctx)
    return LaunchOverrides(mic=base.mic, speaker=base.speaker, model_dir=folder,
                           quant=base.quant, device=base.device)


def _refused(ctx: Any, folder: Path, what: str, words: tuple[str, ...]) -> Outcome:
    out = Outcome()
    done = talk(ctx, _with_model(ctx, folder), wait_answer=False)
    judge_common(out, done)
    out.expect_said(*words, what=what)
    if done.phase == "running":
        out.problem("broken", f"a conversation started on {what}")
    elif done.phase != "idle":
        out.problem("hang", f"the window was left in phase {done.phase!r}")
    out.kept = "refused; the window stayed usable"
    return out


def model_empty(ctx: Any) -> Outcome:
    folder = ctx.home / "empty-model"
    folder.mkdir()
    return _refused(ctx, folder, "the empty model folder", (folder.name, "config.json"))


def model_truncated(ctx: Any) -> Outcome:
    folder = truncate_weights(model_copy(ctx.model, ctx.home / "cut-model"))
    return _refused(ctx, folder, "the cut-short weights",
                    ("damaged", "incomplete", "truncated", "cut short", "download"))


def model_unknown_family(ctx: Any) -> Outcome:
    folder = unknown_family(ctx.home / "llama-model")
    return _refused(ctx, folder, "a checkpoint of another family",
                    ("llama", "family", "families", "qwen2.5-omni", "not a"))


# ----------------------------------------------------------------------- out of memory
OOM_TEXT = ("CUDA out of memory. Tried to allocate 1.95 GiB. GPU 0 has a total capacity of "
            "7.63 GiB of which 912.00 MiB is free. Including non-PyTorch memory, this "
            "process has 6.71 GiB memory in use.")


@contextlib.contextmanager
def out_of_memory_once() -> Any:
    """The next model load really loads the weights, then fails as a GPU that is full
    does (torch.OutOfMemoryError from inside from_pretrained)."""
    import torch
    from transformers import Qwen2_5OmniForConditionalGeneration as Model

    own = Model.__dict__.get("from_pretrained")  # usually inherited, not its own
    real = Model.from_pretrained.__func__  # type: ignore[attr-defined]
    fired: list[bool] = []

    def failing(cls: Any, *args: Any, **kwargs: Any) -> Any:
        model = real(cls, *args, **kwargs)
        if not fired:
            fired.append(True)
            del model
            raise torch.OutOfMemoryError(OOM_TEXT)
        return model

    Model.from_pretrained = classmethod(failing)  # type: ignore[method-assign]
    try:
        yield fired
    finally:
        if own is None:
            del Model.from_pretrained
        else:
            Model.from_pretrained = own  # type: ignore[method-assign]


def model_out_of_memory(ctx: Any) -> Outcome:
    from app.bench.fault_inputs import base_settings, write_settings

    out = Outcome()
    write_settings(ctx.config, base_settings(ctx.model))
    with WindowRun(ctx.home, files(ctx)) as run, out_of_memory_once() as fired:
        first = run.start()
        failed_said = list(run.said)
        second = run.start()  # the user presses Start again, the GPU has room now
        answered = second == "running" and run.wait_state("speaking", ANSWER_TIMEOUT_S)
        ended = run.stop() if second == "running" else True
    out.said = run.texts()
    out.check_words()
    if not fired:
        out.problem("broken", "the simulated out-of-memory never fired (no model load)")
    if first != "idle":
        out.problem("broken", f"after running out of memory the window is {first!r}")
    said = " ".join(s.text.lower() for s in failed_said)
    if "memory" not in said:
        out.problem("silent", "nothing said the GPU ran out of memory")
    if not answered:
        out.problem("broken", "starting again after the failed load got no answer")
    if not ended:
        out.problem("hang", "the second conversation did not end when asked")
    if run.threads_left:
        out.problem("hang", f"threads left after the window closed: {run.threads_left}")
    out.kept = ("second start answered" if answered else "second start failed")
    return out
