"""Fetching a registry checkpoint from the Hugging Face Hub into the models folder.

huggingface_hub does the work (resuming partial files itself); this module adds what a
desktop user needs around it: an answer within a second when there is no network, a
progress callback, cancellation, a disk-space check, and the pinned revision recorded
in the manifest afterwards.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from app.model import registry
from app.model.contract import BackendError, Progress
from app.model.registry import RegistryEntry

log = logging.getLogger(__name__)

# The reachability check must answer fast: the Hub answers in well under a second when
# it is reachable, and a user without network should not wait.
REACH_TIMEOUT_S = 5.0
ETAG_TIMEOUT_S = 10.0

# Exception class names (anywhere in the MRO) that mean "no connection": httpx's
# transport errors, whatever package huggingface_hub takes them from.
_NETWORK_ERRORS = frozenset(
    {"TransportError", "ConnectError", "TimeoutException", "NetworkError", "ProxyError"}
)


class DownloadCancelled(BackendError):
    """The user stopped the download; finished and partial files stay for a resume."""


def _offline_error(entry: RegistryEntry, why: str) -> BackendError:
    return BackendError(
        f"cannot download {entry.id} ({entry.hub_id}): {why}",
        hint=(
            "use a model folder you already have with `duetto --model DIR`; or, on a "
            f"machine with network, run `hf download {entry.hub_id} --local-dir "
            f"{entry.id}`, copy that folder to this machine and pass it with --model DIR"
        ),
    )


def _is_network_error(exc: BaseException) -> bool:
    names = {cls.__name__ for cls in type(exc).__mro__}
    return bool(names & _NETWORK_ERRORS) or isinstance(exc, ConnectionError | TimeoutError)


def _endpoint() -> str | None:
    # Read at call time: huggingface_hub reads HF_ENDPOINT once at import.
    return os.environ.get("HF_ENDPOINT") or None


def _offline_mode() -> bool:
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _explain_hub_error(exc: BaseException, entry: RegistryEntry, revision: str | None) -> Exception:
    from huggingface_hub import errors

    if isinstance(exc, errors.OfflineModeIsEnabled):
        return _offline_error(entry, "offline mode is on (HF_HUB_OFFLINE)")
    if isinstance(exc, errors.GatedRepoError):
        return BackendError(
            f"{entry.hub_id} is gated: the Hub refused the download",
            hint="accept the terms on its model page, then log in with `hf auth login`",
        )
    if isinstance(exc, errors.RevisionNotFoundError):
        return BackendError(
            f"{entry.hub_id} has no revision {revision!r}",
            hint="check the commit, branch or tag given with --revision",
        )
    if isinstance(exc, errors.RepositoryNotFoundError):
        return BackendError(
            f"the Hub has no repository {entry.hub_id} (or it is private)",
            hint="the registry entry may be out of date; log in with `hf auth login` if it "
            "is private",
        )
    if _is_network_error(exc):
        return _offline_error(entry, f"the Hub is not reachable ({type(exc).__name__}: {exc})")
    if isinstance(exc, errors.HfHubHTTPError):
        return BackendError(
            f"the Hub answered with an error for {entry.hub_id}: {exc}",
            hint="try again later; partial files are kept and resumed",
        )
    return exc if isinstance(exc, Exception) else RuntimeError(str(exc))


def _remote_info(entry: RegistryEntry, revision: str | None) -> tuple[str, int]:
    """(commit sha, total bytes) of the snapshot, asked with a short timeout."""
    from huggingface_hub import HfApi

    api = HfApi(endpoint=_endpoint())
    try:
        info = api.model_info(
            entry.hub_id, revision=revision, timeout=REACH_TIMEOUT_S, files_metadata=True
        )
    except Exception as exc:
        raise _explain_hub_error(exc, entry, revision) from exc
    if not info.sha:
        raise BackendError(f"the Hub gave no commit for {entry.hub_id}",
                           hint="try again later")
    total = sum(int(s.size or 0) for s in (info.siblings or []))
    return info.sha, total


def _present_bytes(folder: Path) -> int:
    if not folder.exists():
        return 0
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _check_disk(folder: Path, needed: int) -> None:
    probe = folder
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if needed > free:
        raise BackendError(
            f"the download needs {needed / 1e9:.1f} GB more but {probe} has {free / 1e9:.1f} GB "
            "free",
            hint="free some disk space, or move the models folder with DUETTO_MODELS_DIR",
        )


def progress_bar_class(
    progress: Progress, cancel: threading.Event | None, total_bytes: int, show: bool
) -> type[tqdm]:
    """A tqdm class for snapshot_download's `tqdm_class` hook.

    huggingface_hub makes several bars from it: a file counter, a bytes-received bar and
    a bytes-written bar that every file's download feeds from its worker thread. All of
    them check `cancel` on each update, so a cancel stops every worker at its next chunk;
    the bytes-written bar also feeds `progress` (and is the one printed when `show`).
    """

    class _Bar(tqdm):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.pop("name", None)  # huggingface_hub's own tqdm takes it; plain tqdm not
            desc = str(kwargs.get("desc") or "")
            self._reports = kwargs.get("unit") == "B" and not desc.startswith("Downloading")
            self._done = 0
            kwargs["disable"] = not (show and self._reports)
            if self._reports and show:
                # huggingface_hub grows this bar's total as each file starts; keep its
                # total, but use tqdm's plain format (its own names fields we don't set).
                kwargs["desc"] = "downloading"
                kwargs.pop("bar_format", None)
            super().__init__(*args, **kwargs)

        def update(self, n: float | None = 1) -> bool | None:
            if cancel is not None and cancel.is_set():
                raise DownloadCancelled(
                    "download stopped",
                    hint="run the same `duetto models get` again to resume",
                )
            result = super().update(n)
            if self._reports:
                self._done += int(n or 0)
                denominator = total_bytes or (self.total or 0)
                if denominator:
                    progress("downloading", min(1.0, self._done / denominator))
            return result

    return _Bar


def download(
    entry: RegistryEntry,
    progress: Progress,
    cancel: threading.Event | None = None,
    *,
    revision: str | None = None,
    show_bar: bool = False,
) -> Path:
    """Fetch `entry` (at `revision`, default its main branch) into the models folder.

    Returns the folder. Fails at once, naming the local-folder way out, when the Hub
    cannot be reached or HF_HUB_OFFLINE is set. A cancelled or interrupted download
    leaves its files for huggingface_hub to resume on the next call.
    """
    if _offline_mode():
        raise _offline_error(entry, "offline mode is on (HF_HUB_OFFLINE)")
    progress("asking the Hub", 0.0)
    sha, total = _remote_info(entry, revision)
    target = registry.local_dir_for(entry)
    _check_disk(target, max(0, total - _present_bytes(target)))
    log.info("downloading %s at %s (%d bytes) into %s", entry.hub_id, sha, total, target)

    from huggingface_hub import snapshot_download

    bar = progress_bar_class(progress, cancel, total, show_bar)
    try:
        snapshot_download(
            entry.hub_id,
            revision=sha,
            local_dir=target,
            endpoint=_endpoint(),
            etag_timeout=ETAG_TIMEOUT_S,
            tqdm_class=bar,
        )
    except DownloadCancelled:
        raise
    except KeyboardInterrupt:
        raise DownloadCancelled(
            "download stopped", hint="run the same `duetto models get` again to resume"
        ) from None
    except Exception as exc:
        explained = _explain_hub_error(exc, entry, sha)
        if explained is exc:
            raise BackendError(
                f"the download of {entry.id} failed ({type(exc).__name__}: {exc})",
                hint="run the same command again: finished and partial files are kept",
            ) from exc
        raise explained from exc
    registry.record_download(entry, target, sha)
    progress("downloaded", 1.0)
    return target
