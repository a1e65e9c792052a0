"""The launcher: make sure the app's environment matches the installer's lock, then start
the app in it.

    duetto [APP ARGS…]        build, update or repair the environment if needed, then run
    duetto --repair           check every file of every package, fix what is wrong, run
    duetto --check            say what state the environment is in (exit 0 when ready)
    duetto --remove-environment   delete the environment (the uninstaller runs this)

With a display the first start shows a progress window; without one (or --no-window, or
QT_QPA_PLATFORM=offscreen) it reports on the terminal. Later starts check the marker and
the installed packages against the lock and go straight to the app.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import threading
from collections.abc import Sequence

from duetto_launcher import builder, payload, torch_choice
from duetto_launcher.builder import Builder, BuildError, State
from duetto_launcher.download import Cancelled, Downloader, Progress
from duetto_launcher.environment import Layout, default_root, read_marker
from duetto_launcher.launch import start_app
from duetto_launcher.plan import PlanError, Wheel
from duetto_launcher.rate import Rate, size_text, time_text

EXIT_FAILED = 3
EXIT_CANCELLED = 4


class ConsoleListener:
    """Progress on the terminal: a line per stage, a progress line every 5 %."""

    def __init__(self) -> None:
        self.rate = Rate()
        self.shown = -1

    def say(self, text: str) -> None:
        print(text, flush=True)

    def progress(self, step: Progress) -> None:
        self.rate.add(step.done_bytes)
        share = step.done_bytes / step.total_bytes if step.total_bytes else 1.0
        tick = int(share * 20)
        if tick == self.shown:
            return
        self.shown = tick
        left = self.rate.seconds_left(step.total_bytes - step.done_bytes)
        print(f"  {share:4.0%}  {size_text(step.done_bytes)} of {size_text(step.total_bytes)}"
              f"  {step.package}  {time_text(left)}", flush=True)


def parse(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(prog="duetto", add_help=False)
    parser.add_argument("--repair", action="store_true")
    parser.add_argument("--check", action="store_true")
    parser.add_argument("--remove-environment", action="store_true")
    parser.add_argument("--no-window", action="store_true")
    return parser.parse_known_args(list(argv))


def wants_window(args: argparse.Namespace) -> bool:
    if args.no_window or os.environ.get("QT_QPA_PLATFORM") == "offscreen":
        return False
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


def _choice(layout: Layout, found: payload.Payload, fresh: bool) -> torch_choice.TorchChoice:
    """The build chosen before (kept across starts and updates) unless asked to look again."""
    marker = read_marker(layout.env)
    if marker and not fresh and marker.torch_build in found.torch_builds:
        return torch_choice.TorchChoice(marker.torch_build, marker.torch_reason)
    return torch_choice.choose(found.torch_builds)


def run_job(job: Builder, choice: torch_choice.TorchChoice, plan: list[Wheel], now: State,
            window: bool) -> int:
    if window:
        from duetto_launcher.window import run_in_window

        return run_in_window(job, choice, plan, now)
    try:
        job.ensure(choice, plan, now)
    except Cancelled:
        print("Cancelled. What was downloaded is kept: the next start goes on from there.")
        return EXIT_CANCELLED
    except BuildError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_FAILED
    except Exception as exc:  # a fault of the launcher itself: said, and nothing half-built
        print(f"Setting up Duetto failed: {type(exc).__name__}: {exc}. Start Duetto again; "
              "what was downloaded is kept.", file=sys.stderr)
        return EXIT_FAILED
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args, app_args = parse(sys.argv[1:] if argv is None else argv)
    layout = Layout(default_root())
    if args.remove_environment:
        shutil.rmtree(layout.root, ignore_errors=True)
        print(f"Removed Duetto's environment ({layout.root}); your settings, personas, "
              "recordings and models are kept.")
        return 0
    try:
        found = payload.read(payload.locate())
        choice = _choice(layout, found, fresh=args.repair)
        plan = found.plan(choice.build)
    except (PlanError, ValueError) as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_FAILED
    now = builder.state(layout, found, plan)
    if args.check:
        print(f"{now.kind}: {now.detail}".rstrip(": ") if now.detail else now.kind)
        return 0 if now.kind == "ready" else 1
    if now.kind != "ready":
        window = wants_window(args)
        job = Builder(layout, found, ConsoleListener(),
                      Downloader(layout.downloads, cancel=threading.Event()))
        code = run_job(job, choice, plan, now, window)
        if code:
            return code
    if args.repair:
        print("Duetto's environment matches its lock.")
    return start_app(layout.python(), app_args)


if __name__ == "__main__":
    sys.exit(main())
