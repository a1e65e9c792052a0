"""A voice prompt computed once per recording and kept on disk beside it.

`VoiceCache(encoders).prompt_for(recording)` returns the recording's `VoicePrompt`,
from `<recording>.minicpmo-voice.safetensors` beside the recording (the persona's voice
folder) when that file was made from the same bytes by the same encoders, else computed
by voice_encoders.py and written there for the next start. A start that finds its
prompt neither reads the recording's audio nor loads the ONNX encoders (the published
speech tokenizer alone is 474 MB).

The key: the sha256 of the recording's bytes, and of each encoder file's bytes. An
encoder file's hash is recomputed only when its size or modification time differ from
the ones the cache file recorded with it (hashing 500 MB at every start would cost more
than the rest of a cached start). A cache file that is stale (another recording,
other encoders, an older layout) or unreadable is computed again and replaced, with a
log line saying why; a folder that cannot be written to falls back to `fallback_dir`
when given (else the prompt is used without being kept). Nothing here raises for a
cache problem: the voice is then only slower to get.

Files are written whole to a temporary name and renamed over the old one, so a crash
mid-write leaves the old file or none, never half of one. safetensors holds only
tensors and text: reading a cache file runs no code.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path

from app.model.contract import BackendError
from app.model.minicpm_o.token2wav.prompt import VoicePrompt
from app.model.minicpm_o.token2wav.voice_encoders import VoiceEncoders, file_sha256

log = logging.getLogger(__name__)

SUFFIX = ".minicpmo-voice.safetensors"
LAYOUT = 1  # bump when what the prompt holds or how it is computed changes
META_KEY = "duetto.minicpmo_voice"


def _stat(path: Path) -> dict:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


class VoiceCache:
    """Voice prompts of recordings for one set of encoders (module docstring)."""

    def __init__(self, encoders: VoiceEncoders, *, fallback_dir: Path | None = None) -> None:
        self.encoders = encoders
        self.fallback_dir = Path(fallback_dir) if fallback_dir is not None else None
        self._hashes: dict[str, str] = {}  # encoder file name -> sha256, once per instance
        self.last_source = ""  # "cache" or "computed": what the last prompt_for did

    # --- where ---------------------------------------------------------------------------

    @staticmethod
    def beside(recording: Path) -> Path:
        return recording.with_name(recording.name + SUFFIX)

    def _fallback(self, recording_sha: str) -> Path | None:
        if self.fallback_dir is None:
            return None
        return self.fallback_dir / f"{recording_sha[:32]}{SUFFIX}"

    # --- the key ---------------------------------------------------------------------------

    def _encoder_files(self) -> list[Path]:
        return [self.encoders.tokenizer_path, self.encoders.speaker_path]

    def _encoder_hash(self, path: Path, recorded: dict | None) -> str:
        """The file's sha256: the recorded one if its size and time are unchanged."""
        if path.name in self._hashes:
            return self._hashes[path.name]
        if recorded and {k: recorded.get(k) for k in ("size", "mtime_ns")} == _stat(path):
            digest = str(recorded.get("sha256", ""))
        else:
            digest = file_sha256(path)
        self._hashes[path.name] = digest
        return digest

    def _key(self, recording_sha: str, recorded: dict | None) -> dict:
        files = (recorded or {}).get("encoders", {})
        return {
            "layout": LAYOUT,
            "recording_sha256": recording_sha,
            "encoders": {p.name: {"sha256": self._encoder_hash(p, files.get(p.name)), **_stat(p)}
                         for p in self._encoder_files()},
        }

    @staticmethod
    def _same(a: dict, b: dict) -> bool:
        """Equal keys, ignoring the files' times (a copied checkpoint keeps its hashes)."""
        def strip(key: dict) -> dict:
            files = key.get("encoders", {})
            return {**key, "encoders": {n: e.get("sha256") for n, e in files.items()}}

        return strip(a) == strip(b)

    # --- reading and writing -----------------------------------------------------------------

    def _read(self, path: Path) -> tuple[VoicePrompt, dict] | None:
        """The cached prompt and its key, or None (absent, unreadable: logged)."""
        if not path.is_file():
            return None
        try:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                meta = json.loads((f.metadata() or {})[META_KEY])
                prompt = VoicePrompt(tokens=f.get_tensor("tokens"), speaker=f.get_tensor("speaker"),
                                     mel=f.get_tensor("mel"))
            if not isinstance(meta, dict):
                raise ValueError("its key is not an object")
            return prompt, meta
        except Exception as exc:  # a damaged file: any of safetensors' or our checks
            log.warning("the voice cache %s cannot be read (%s: %s); computing the voice again",
                        path, type(exc).__name__, exc)
            return None

    def _write(self, path: Path, prompt: VoicePrompt, key: dict) -> bool:
        from safetensors.torch import save_file

        tmp = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
            os.close(fd)
            save_file({"tokens": prompt.tokens.contiguous(), "speaker": prompt.speaker.contiguous(),
                       "mel": prompt.mel.contiguous()}, tmp,
                      metadata={META_KEY: json.dumps(key, sort_keys=True), "format": "pt"})
            os.replace(tmp, path)
            return True
        except OSError as exc:
            log.warning("the voice cache %s cannot be written (%s); the voice is used without "
                        "being kept", path, exc)
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
            return False

    # --- the one call -------------------------------------------------------------------------

    def prompt_for(self, recording: Path) -> VoicePrompt:
        """The recording's VoicePrompt, from the cache when it is current (module
        docstring). Errors reading the recording or running the encoders are raised
        (BackendError with what to do); cache problems never are."""
        recording = Path(recording).expanduser()
        try:
            recording_sha = hashlib.sha256(recording.read_bytes()).hexdigest()
        except OSError as exc:
            raise BackendError(f"the voice recording {recording} cannot be read ({exc})",
                               hint="record the persona's voice again or pick the file again"
                               ) from exc
        candidates = [self.beside(recording)]
        fallback = self._fallback(recording_sha)
        if fallback is not None:
            candidates.append(fallback)
        for path in candidates:
            found = self._read(path)
            if found is None:
                continue
            prompt, recorded = found
            if self._same(recorded, self._key(recording_sha, recorded)):
                self.last_source = "cache"
                return prompt
            log.info("the voice cache %s is stale (another recording or other voice encoders); "
                     "computing the voice again", path)
        prompt = self.encoders.encode_file(recording)
        key = self._key(recording_sha, None)
        if not self._write(candidates[0], prompt, key) and fallback is not None:
            self._write(fallback, prompt, key)
        self.last_source = "computed"
        return prompt
