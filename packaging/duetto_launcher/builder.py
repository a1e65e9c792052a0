"""Builds, repairs and updates the app's environment so that it matches the plan exactly.

* First start: wheels are downloaded (resumable), the runtime is copied out of the
  installer, and the environment is built in `env.new`, which becomes `env` only when
  complete, so a cancelled, failed or offline first start leaves no environment behind.
* Update (a newer installer: another plan) and repair (damage found): in place. Only the
  packages that differ are downloaded and reinstalled, those no longer in the plan are
  removed; the marker is taken away first and written last, so an update cut short is
  found as damaged at the next start and finished then.
* A runtime of another Python version: the environment is built anew.

The work is told to a `Listener` (the Qt window or the console). `uv` does the installing,
from the downloaded wheels only (offline, no index): what goes in is exactly the plan.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from duetto_launcher import environment
from duetto_launcher.download import Downloader, DownloadError, Progress
from duetto_launcher.environment import Damage, Layout, Marker
from duetto_launcher.payload import Payload
from duetto_launcher.plan import Wheel, fingerprint
from duetto_launcher.torch_choice import TorchChoice

# Runs a command: (argv) -> (exit code, what it printed). Tests use the real uv.
CommandRunner = Callable[[Sequence[str]], "tuple[int, str]"]


def run_command(argv: Sequence[str]) -> tuple[int, str]:
    done = subprocess.run(list(argv), capture_output=True, text=True)
    return done.returncode, (done.stdout + done.stderr).strip()


class Listener(Protocol):
    def say(self, text: str) -> None: ...
    def progress(self, step: Progress) -> None: ...


OFFLINE = ("Duetto could not reach the internet to download its libraries: connect and "
           "start Duetto again; nothing was installed.")


class BuildError(RuntimeError):
    """The environment could not be built; the message is for the user."""


@dataclass(frozen=True)
class State:
    kind: str  # ready | missing | update | damaged | rebuild
    detail: str = ""
    damage: tuple[Damage, ...] = ()
    extra: tuple[str, ...] = ()


def state(layout: Layout, payload: Payload, plan: list[Wheel], full: bool = True) -> State:
    """Whether the environment is ready for this plan; what to do if not."""
    python = layout.python()
    if not python.exists():
        return State("missing", "Duetto's libraries are not installed yet.")
    marker = environment.read_marker(layout.env)
    if marker is not None and marker.python != payload.python:
        return State("rebuild", f"Python {marker.python} is replaced by {payload.python}.")
    damage, extra = environment.inspect(layout.env, plan) if full else ([], [])
    if marker is not None and marker.fingerprint != fingerprint(plan):
        return State("update", f"Updating Duetto's libraries from {marker.app_version} to "
                               f"{payload.app_version}.", tuple(damage), tuple(extra))
    if marker is None:
        return State("damaged", "An earlier install or update did not finish.",
                     tuple(damage), tuple(extra))
    if damage:
        names = ", ".join(f"{d.name} ({d.why})" for d in damage[:3])
        more = f" and {len(damage) - 3} more" if len(damage) > 3 else ""
        return State("damaged", f"Duetto's libraries are damaged: {names}{more}.",
                     tuple(damage), tuple(extra))
    return State("ready")


class Builder:
    def __init__(self, layout: Layout, payload: Payload, listener: Listener,
                 downloader: Downloader | None = None,
                 run: CommandRunner = run_command) -> None:
        self.layout = layout
        self.payload = payload
        self.listener = listener
        self.downloader = downloader or Downloader(layout.downloads)
        self.run = run

    # -- the three jobs -------------------------------------------------------------

    def ensure(self, choice: TorchChoice, plan: list[Wheel], now: State) -> None:
        """Bring the environment to `plan` from the state it is in."""
        if now.kind == "ready":
            return
        if not self.downloader.reachable(plan if now.kind in ("missing", "rebuild") else
                                         [w for w in plan if w.name in
                                          {d.name for d in now.damage}]):
            raise BuildError(OFFLINE)
        self.listener.say(f"torch: the {choice.label} build. {choice.reason}")
        if now.kind in ("missing", "rebuild"):
            self.build_new(choice, plan)
        else:
            self.listener.say(now.detail)
            self.sync_in_place(choice, plan, now)

    def build_new(self, choice: TorchChoice, plan: list[Wheel]) -> None:
        created_root = not self.layout.root.exists()
        try:
            files = self._download(plan)
            self.listener.say("Installing Duetto's libraries…")
            self._copy_runtime()
            building = self.layout.building
            shutil.rmtree(building, ignore_errors=True)
            self._uv("venv", "--quiet", "--python", str(self.layout.runtime_python()),
                     str(building))
            self._install(building, files, reinstall=False)
            self._mark(building, choice, plan)
            old = self.layout.root / "env.old"
            if self.layout.env.exists():
                self.layout.env.replace(old)
            building.replace(self.layout.env)
            shutil.rmtree(old, ignore_errors=True)
            shutil.rmtree(self.layout.downloads, ignore_errors=True)
        except BaseException:
            self._clean_after_failed_build(created_root)
            raise

    def sync_in_place(self, choice: TorchChoice, plan: list[Wheel], now: State) -> None:
        wanted = {d.name for d in now.damage}
        files = self._download([w for w in plan if w.name in wanted])
        marker = self.layout.env / environment.MARKER
        marker.unlink(missing_ok=True)
        if now.extra:
            self._uv("pip", "uninstall", "--quiet", "--python", str(self.layout.python()),
                     *now.extra)
        if files:
            self.listener.say(f"Installing {len(files)} packages…")
            self._install(self.layout.env, files, reinstall=True)
        damage, extra = environment.inspect(self.layout.env, plan)
        if damage or extra:
            raise BuildError("the environment still differs from the lock after repairing: "
                             + ", ".join(d.name for d in damage) + " ".join(extra))
        self._mark(self.layout.env, choice, plan)
        shutil.rmtree(self.layout.downloads, ignore_errors=True)

    # -- steps ----------------------------------------------------------------------

    def _download(self, wheels: list[Wheel]) -> list[Path]:
        missing = self.downloader.missing_bytes(wheels)
        if missing:
            self.listener.say(f"Downloading {len(wheels)} packages "
                              f"({missing / 1e9:.2f} GB to fetch)…")
        try:
            return self.downloader.fetch_all(wheels, self.listener.progress)
        except DownloadError as exc:
            kept = self.layout.downloads.is_dir() and any(self.layout.downloads.iterdir())
            if exc.offline and not kept:
                raise BuildError(OFFLINE) from exc
            raise BuildError(f"A download failed ({exc}). What was downloaded is kept: "
                             "start Duetto again to go on from there.") from exc

    def _copy_runtime(self) -> None:
        source = self.payload.runtime_path
        target = self.layout.runtime
        version_file = target / "duetto-runtime-version"
        if target.exists():
            try:
                if version_file.read_text(encoding="utf-8").strip() == self.payload.python:
                    return
            except OSError:
                pass
            shutil.rmtree(target)
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(source, partial, symlinks=True)
        (partial / "duetto-runtime-version").write_text(self.payload.python, encoding="utf-8")
        partial.replace(target)

    def _install(self, env: Path, files: list[Path], reinstall: bool) -> None:
        python = self.layout.python(env)
        extra = ["--reinstall"] if reinstall else []
        self._uv("pip", "install", "--quiet", "--python", str(python), "--no-deps",
                 "--no-index", "--offline", "--no-cache", "--link-mode", "copy", *extra,
                 *[str(f) for f in files])

    def _mark(self, env: Path, choice: TorchChoice, plan: list[Wheel]) -> None:
        Marker(fingerprint(plan), self.payload.app_version, choice.build, choice.reason,
               self.payload.python).write(env)

    def _uv(self, *args: str) -> None:
        code, output = self.run([str(self.payload.uv_path), *args])
        if code != 0:
            tail = "\n".join(output.splitlines()[-8:])
            raise BuildError(f"uv {args[0]} {args[1] if len(args) > 1 else ''} failed "
                             f"(exit {code}):\n{tail}")

    def _clean_after_failed_build(self, created_root: bool) -> None:
        """Nothing half-installed stays: the unfinished environment and runtime copy go.
        Downloads that finished or broke off stay (the next start resumes them) unless
        nothing was fetched, and a root folder this start created goes if it is empty."""
        shutil.rmtree(self.layout.building, ignore_errors=True)
        shutil.rmtree(self.layout.runtime.with_name("python.partial"), ignore_errors=True)
        downloads = self.layout.downloads
        if downloads.is_dir() and not any(downloads.iterdir()):
            downloads.rmdir()
        if created_root and self.layout.root.is_dir() and not any(self.layout.root.iterdir()):
            self.layout.root.rmdir()
