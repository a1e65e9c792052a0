#!/usr/bin/env bash
# The Linux installer as a new user meets it (`make smoke`; minutes: it downloads torch
# and the rest from PyPI, so it is not part of `make test` or CI):
#   a fresh HOME, only the system's PATH, no virtual environment, outside the checkout;
#   install.sh; the first start builds the environment (timed) and makes a tiny model;
#   the self-check from files (tiny model, a recorded voice as the mic, no speaker),
#   offscreen, ends by itself with exit 0 and leaves a recording; doctor finds every
#   file the app ships in the installed wheel; a second start (timed);
#   a package deleted from the environment is found (--check) and repaired (--repair);
#   uninstall.sh leaves no environment (the recording stays); and an offline first start
#   says one sentence and leaves nothing.
# Usage: packaging/smoke.sh [dist/duetto-VERSION-linux-x86_64.tar.gz]
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
artifact="${1:-$(ls -t "$repo"/dist/duetto-*-linux-*.tar.gz 2>/dev/null | head -1)}"
[ -f "$artifact" ] || { echo "no Linux artifact: run make package first" >&2; exit 2; }
work="$(mktemp -d /tmp/duetto-smoke.XXXXXX)"
home="$work/home"
mkdir -p "$home/Downloads"
cp "$repo/app/assets/self-check/speech.flac" "$home/Downloads/talk.flac"
cd "$home"

as_user() {  # a new user's shell: nothing of this session's environment comes along
    env -i HOME="$home" PATH=/usr/local/bin:/usr/bin:/bin LANG=C.UTF-8 USER=smoke \
        QT_QPA_PLATFORM=offscreen "$@"
}
now() { date +%s.%N; }
took() { python3 -c "print(f'{$2 - $1:.1f}')"; }
step() { echo; echo "== $*"; }
fail() { echo "SMOKE FAILED: $* (what it left: $work)" >&2; exit 1; }

step "artifact $(basename "$artifact"): $(du -h "$artifact" | cut -f1)"
tar -xzf "$artifact" -C "$home/Downloads"
as_user "$home"/Downloads/duetto-*/install.sh
duetto="$home/.local/bin/duetto"
envdir="$home/.local/share/duetto/environment"

step "first start: builds the environment, then makes the tiny self-check model"
t0=$(now)
as_user "$duetto" models tiny qwen2.5-omni "$home/tiny" || fail "first start"
t1=$(now)
first=$(took "$t0" "$t1")
[ -f "$envdir/env/duetto-env.json" ] || fail "no environment marker after the first start"
du -sh "$envdir" | sed 's/^/environment size: /'

step "self-check from files, offscreen, recording on, ends by itself"
mkdir -p "$home/.config/duetto"
echo '{"conversation": {"record": true}}' > "$home/.config/duetto/settings.json"
as_user "$duetto" --model "$home/tiny" --mic "$home/Downloads/talk.flac" --speaker null \
    --device cpu --start --quit-after 45 || fail "self-check exit status $?"
wav=$(find "$home/.local/share/duetto/recordings" -name '*.wav' -size +1k | head -1)
[ -n "$wav" ] || fail "no recording"
# What was recorded, read with the environment's own Python: its length, each channel's
# level (left the user, right the assistant) and what the event log says happened.
as_user "$envdir/env/bin/python" - "$wav" <<'PY' || fail "the recording is not what a self-check leaves"
import collections, json, pathlib, sys
import numpy as np, soundfile as sf
wav = pathlib.Path(sys.argv[1])
audio, rate = sf.read(wav, always_2d=True)
rms = np.sqrt(np.mean(np.square(audio), axis=0)) if len(audio) else np.zeros(2)
kinds = collections.Counter(json.loads(line)["event"] for line in
                            (wav.parent / "events.jsonl").read_text().splitlines() if line)
print(f"recording: {wav.name}, {len(audio) / rate:.1f} s at {rate} Hz; level user "
      f"{rms[0]:.4f}, assistant {rms[1]:.4f}; events {dict(sorted(kinds.items()))}")
sys.exit(0 if len(audio) / rate >= 5 and rms[0] > 0 else 1)
PY

step "duetto doctor from the installed wheel: every file the app ships is there"
as_user "$duetto" doctor > "$work/doctor.txt" || fail "doctor"
sed -n '/^Files Duetto ships/,/^[A-Z]/p' "$work/doctor.txt" | sed '$d'
if sed -n '/^Files Duetto ships/,/^[A-Z]/p' "$work/doctor.txt" | grep -q "✗"; then
    fail "doctor finds shipped files missing"
fi

step "second start (launcher check + the app's command line)"
t0=$(now)
as_user "$duetto" --help >/dev/null || fail "second start"
t1=$(now)
second=$(took "$t0" "$t1")

step "a package deleted from the environment is found and repaired"
site=$(ls -d "$envdir"/env/lib/python3*/site-packages)
rm -rf "$site"/numpy "$site"/numpy-*.dist-info
if as_user "$duetto" --check; then fail "--check did not notice numpy was deleted"; fi
t0=$(now)
as_user "$duetto" --repair --help >/dev/null || fail "repair"
t1=$(now)
repair=$(took "$t0" "$t1")
as_user "$duetto" --check || fail "still damaged after --repair"

step "uninstall"
as_user "$home/.local/opt/duetto/uninstall.sh"
[ ! -e "$envdir" ] || fail "the environment is still there after uninstall"
[ ! -e "$home/.local/opt/duetto" ] || fail "the program is still there after uninstall"
[ -f "$wav" ] || fail "uninstall removed the user's recording"

step "offline first start (a fresh user, no network)"
home2="$work/home2"
mkdir -p "$home2"
tar -xzf "$artifact" -C "$home2"
set +e
offline=$(unshare -n env -i HOME="$home2" PATH=/usr/bin:/bin QT_QPA_PLATFORM=offscreen \
    "$home2"/duetto-*/duetto --help 2>&1)
code=$?
set -e
echo "exit $code: $offline"
[ "$code" -eq 3 ] || fail "offline first start: exit $code, expected 3"
[ ! -e "$home2/.local/share/duetto/environment" ] || fail "offline start left files behind"

step "figures"
echo "artifact: $(stat -c %s "$artifact" | awk '{printf "%.1f MiB", $1/1048576}')"
echo "first start (environment built + tiny model made): ${first} s"
echo "second start: ${second} s"
echo "repair of a deleted package: ${repair} s"
rm -rf "$work"
echo "SMOKE PASSED"
