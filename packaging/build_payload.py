"""Writes the installer's payload for the system it runs on (`make package` runs it).

    python packaging/build_payload.py OUT_DIR

OUT_DIR/payload/ then holds what the frozen launcher needs on first start:

* `pylock.toml`: every dependency of the app at its exact version, with each wheel's
  address, size and sha256 (`uv pip compile --format pylock.toml` for this platform),
  without torch and the packages that only a torch build brings (NVIDIA's CUDA libraries,
  triton);
* `pylock.torch-BUILD.toml` for each torch build this system can use (cpu, cu126, cu128,
  cu130 from the PyTorch index; mps, PyPI's macOS arm64 build), resolved with the app's
  versions as constraints so both locks agree. A build whose index cannot be reached is
  left out, and the script says so;
* `wheels/`: the app's own wheel, and a wheel of every dependency PyPI has only as source
  (built here, so first start never compiles anything);
* `uv/`: the uv binary (from the uv package on PyPI);
* `python/`: the Python runtime the environment is made from. uv's managed CPython
  (python-build-standalone: relocatable, built for old glibc) where uv can install it;
  otherwise, said loudly, a copy of this machine's own Python, relocatable by its
  RUNPATH but tied to this system's libraries: good for trying the installer here only.

DUETTO_TORCH_WHEELS=DIR adds a folder of torch wheels to resolve from (a mirror, or the
CPU wheel on a machine that cannot reach the PyTorch index). When no build can be locked
and that is not set, the CPU build is looked for in pip's PIP_FIND_LINKS folder.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TORCH_VERSION = "2.13.0"
# Packages a torch build brings with it; they belong in that build's lock, not the app's.
TORCH_ONLY = re.compile(r"^(torch|triton|nvidia-.*|cuda-.*)$")


def say(text: str) -> None:
    print(f"[payload] {text}", flush=True)


def target() -> tuple[str, list[str]]:
    """uv's name for this platform, and the torch builds it has."""
    system, machine = platform.system(), platform.machine().lower()
    if system == "Linux" and machine in ("x86_64", "amd64"):
        return "x86_64-manylinux_2_28", ["cpu", "cu126", "cu128", "cu130"]
    if system == "Windows":
        return "x86_64-pc-windows-msvc", ["cpu", "cu126", "cu128", "cu130"]
    if system == "Darwin" and machine == "arm64":
        return "aarch64-apple-darwin", ["mps"]
    raise SystemExit(f"no installer for {system} {machine}: torch {TORCH_VERSION} has no "
                     "wheels for it")


def uv() -> str:
    found = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    if not found:
        raise SystemExit("uv is needed to build the payload: pip install uv")
    return found


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), check=check, capture_output=True, text=True)


def runtime(out: Path) -> str:
    """Copies the Python runtime into out/python; its version."""
    wanted = f"{sys.version_info.major}.{sys.version_info.minor}"
    found = run(uv(), "python", "find", "--managed-python", wanted, check=False)
    if found.returncode != 0:
        installed = run(uv(), "python", "install", wanted, check=False)
        if installed.returncode == 0:
            found = run(uv(), "python", "find", "--managed-python", wanted, check=False)
    if found.returncode == 0:
        python = Path(found.stdout.strip())
        prefix = python.parent if sys.platform == "win32" else python.parent.parent
        say(f"runtime: uv's managed CPython at {prefix}")
        shutil.copytree(prefix, out, symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__", "test", "tests"))
    else:
        say("WARNING: uv could not install its managed CPython (no access to its download "
            "host); the installer carries this machine's own Python instead, which runs only "
            "on systems with the same libraries. Release builds use uv's CPython.")
        _copy_local_python(out)
    version = run(str(_python_in(out)), "-c",
                  "import platform; print(platform.python_version())").stdout.strip()
    if not version:
        raise SystemExit(f"the runtime copied to {out} does not run")
    return version


def _python_in(folder: Path) -> Path:
    return folder / ("python.exe" if sys.platform == "win32" else "bin/python3")


def _copy_local_python(out: Path) -> None:
    prefix = Path(sys.base_prefix)
    stdlib = Path(sysconfig.get_paths()["stdlib"]).resolve()
    # config-3.*: the static library and Makefile for building CPython itself (44 MB).
    skip = shutil.ignore_patterns("__pycache__", "site-packages", "test", "tests", "config-3*",
                                  "idlelib", "tkinter", "turtledemo", "ensurepip")
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    (out / "bin").mkdir(parents=True)
    real = Path(sys._base_executable).resolve() if hasattr(sys, "_base_executable") else None
    binary = real if real and real.is_file() else prefix / "bin" / version
    shutil.copy2(binary, out / "bin" / version)
    (out / "bin" / "python3").symlink_to(version)
    shutil.copytree(stdlib, out / "lib" / version, symlinks=True, ignore=skip)
    # Only the name the interpreter is linked against (its SONAME), once.
    for library in (prefix / "lib").glob("libpython3.*.so.1.0"):
        shutil.copy2(library, out / "lib" / library.name)
    # pyenv links the interpreter to its own lib/ by absolute path; point it next to itself.
    if shutil.which("patchelf"):
        run("patchelf", "--set-rpath", "$ORIGIN/../lib", str(out / "bin" / version))
    else:
        say("WARNING: patchelf is missing (apt-get install patchelf): the copied Python may "
            "still load its library from where it was built")


def lock_app(out: Path, platform_name: str, python: str) -> list[str]:
    """pylock.toml for the app without torch; the source-only packages it names."""
    full = out.parent / "full-requirements.txt"
    common = ["--python-platform", platform_name, "--python-version", python, "--quiet"]
    run(uv(), "pip", "compile", str(ROOT / "pyproject.toml"), "-o", str(full), *common)
    run(uv(), "pip", "compile", str(ROOT / "pyproject.toml"), "--format", "pylock.toml",
        "-o", str(out / "pylock.toml"), *common)
    text = (out / "pylock.toml").read_text(encoding="utf-8")
    blocks = text.split("\n[[packages]]\n")
    kept = [blocks[0]] + [b for b in blocks[1:] if not TORCH_ONLY.match(_name(b))]
    (out / "pylock.toml").write_text("\n[[packages]]\n".join(kept), encoding="utf-8")
    constraints = [line for line in full.read_text(encoding="utf-8").splitlines()
                   if line and not line.startswith((" ", "#"))
                   and not TORCH_ONLY.match(re.split(r"[=<>!~ ;\[]", line)[0])]
    (out.parent / "constraints.txt").write_text("\n".join(constraints) + "\n")
    data = tomllib.loads((out / "pylock.toml").read_text(encoding="utf-8"))
    return [f"{p['name']}=={p['version']}" for p in data["packages"] if not p.get("wheels")]


def _name(block: str) -> str:
    match = re.search(r'^name = "([^"]+)"', block, re.M)
    return match.group(1) if match else ""


def lock_torch(out: Path, platform_name: str, python: str, builds: list[str],
               extra: str | None) -> dict:
    spec = out.parent / "torch.in"
    locks = {}
    for build in builds:
        name = f"pylock.torch-{build}.toml"
        # A local folder of wheels carries the CPU build under its own name (+cpu).
        local_cpu = bool(extra) and build == "cpu"
        spec.write_text(f"torch=={TORCH_VERSION}{'+cpu' if local_cpu else ''}\n")
        argv = [uv(), "pip", "compile", str(spec), "--format", "pylock.toml",
                "-o", str(out / name), "-c", str(out.parent / "constraints.txt"),
                "--python-platform", platform_name, "--python-version", python, "--quiet"]
        if extra:
            argv += ["--find-links", extra]
        if build != "mps" and not local_cpu:
            # uv sends torch and its CUDA libraries to the PyTorch index of this build.
            argv += ["--torch-backend", build]
        done = run(*argv, check=False)
        if done.returncode != 0:
            reason = (done.stderr.strip().splitlines() or ["?"])[0]
            say(f"torch {build}: left out ({reason})")
            continue
        locks[build] = name
        say(f"torch {build}: locked")
    return locks


def lock_torch_somewhere(out: Path, platform_name: str, python: str, builds: list[str]) -> dict:
    extra = os.environ.get("DUETTO_TORCH_WHEELS")
    locks = lock_torch(out, platform_name, python, builds, extra)
    pip_links = os.environ.get("PIP_FIND_LINKS", "").split()
    if not locks and not extra and pip_links and "cpu" in builds:
        # No PyTorch index: the CPU wheel from the folder pip is told to find wheels in.
        say(f"WARNING: no torch build could be locked from its index; trying the CPU build "
            f"from PIP_FIND_LINKS ({pip_links[0]}): this installer will offer the CPU only")
        locks = lock_torch(out, platform_name, python, ["cpu"], pip_links[0])
    if not locks:
        raise SystemExit("no torch build could be locked: the installer would be useless")
    return locks


def wheels(out: Path, source_only: list[str]) -> list[str]:
    folder = out / "wheels"
    folder.mkdir()
    run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
        "-w", str(folder), str(ROOT))
    for spec in source_only:
        say(f"building a wheel of {spec} (PyPI has only its source)")
        run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-binary",
            ":all:", "-w", str(folder), spec)
    return sorted(f"wheels/{p.name}" for p in folder.glob("*.whl"))


def app_version() -> str:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return data["project"]["version"]


def main() -> int:
    out = Path(sys.argv[1]).resolve() / "payload"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    platform_name, builds = target()
    python = runtime(out / "python")
    say(f"runtime: Python {python}")
    short = ".".join(python.split(".")[:2])
    source_only = lock_app(out, platform_name, short)
    say(f"app lock: {(out / 'pylock.toml').read_text().count('[[packages]]')} packages")
    torch_locks = lock_torch_somewhere(out, platform_name, short, builds)
    carried = wheels(out, source_only)
    (out / "uv").mkdir()
    uv_name = "uv.exe" if sys.platform == "win32" else "uv"
    shutil.copy2(uv(), out / "uv" / uv_name)
    (out / "payload.json").write_text(json.dumps({
        "app_version": app_version(), "python": python, "lock": "pylock.toml",
        "torch_locks": torch_locks, "wheels": carried, "uv": f"uv/{uv_name}",
        "runtime": "python",
    }, indent=2))
    say(f"payload written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
