"""A model server's token, kept in the system keyring, never in settings.json.

The keyring (Windows Credential Manager, macOS Keychain, the Secret Service on Linux)
is reached through the `keyring` package, under the service name "duetto" and the
server's address. Where no keyring works (no package, or no backend, as on a headless
Linux machine), the token is kept in memory for this run only, and `save` says so.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

SERVICE = "duetto"
_this_run: dict[str, str] = {}  # the fallback: tokens until the app closes


@dataclass(frozen=True)
class Kept:
    lasting: bool  # in the system keyring (True) or for this run only
    note: str


def _keyring():
    """The keyring module when it has a working backend, else (None, why)."""
    try:
        import keyring
        from keyring.backends import fail
    except ImportError:
        return None, "the keyring package is not installed"
    if isinstance(keyring.get_keyring(), fail.Keyring):
        return None, "no system keyring was found"
    return keyring, ""


def save(address: str, token: str) -> Kept:
    """Keep `token` for `address` ("" forgets it); says where it was kept."""
    _this_run.pop(address, None)
    ring, why = _keyring()
    if ring is not None:
        try:
            if token:
                ring.set_password(SERVICE, address, token)
            else:
                with contextlib.suppress(Exception):  # nothing kept: nothing to forget
                    ring.delete_password(SERVICE, address)
            return Kept(True, "the token is kept in the system keyring")
        except Exception as exc:  # a locked or broken keyring: fall back, and say so
            why = f"the system keyring refused it ({exc})"
    if token:
        _this_run[address] = token
    return Kept(False, f"{why}: the token is kept only until Duetto closes")


def load(address: str) -> str:
    """The token kept for `address`, or ""."""
    if address in _this_run:
        return _this_run[address]
    ring, _ = _keyring()
    if ring is None:
        return ""
    try:
        return ring.get_password(SERVICE, address) or ""
    except Exception:  # a locked keyring: as if none were kept
        return ""
