#!/usr/bin/env python3
"""Hashed requirement locks for the container images, one per image and track.

Each ``docker/<image>/requirements.<track>.in`` is resolved with ``uv pip compile --generate-hashes``
for Linux x86_64 / CPython 3.11 into ``docker/<image>/requirements.<track>.lock``. The lock's header
records the sha256 of its input, so a stale lock (an .in edited without relocking) is caught by
``--check`` (and by tests/test_images_locks.py) without resolving anything.

    scripts/lock.py                      # relock every image and track
    scripts/lock.py train cpu            # one image, one track (either may be omitted)
    scripts/lock.py --check              # every lock matches its input and is fully hashed

The ``cpu`` track pins torch 2.13.0+cpu, the wheel CI machines carry in /opt/wheels (``--find-links``,
``MB_WHEELS`` overrides); scripts/build-images.sh stages that wheel into docker/wheels/ at build time.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
PYTHON_VERSION = "3.11"
PLATFORM = "x86_64-manylinux_2_28"
INDEX_URL = os.environ.get("MB_INDEX_URL", "https://pypi.org/simple")
LOCAL_WHEELS = os.environ.get("MB_WHEELS", "/opt/wheels")
HEADER_RE = re.compile(r"^# input: (?P<path>\S+) sha256=(?P<sha>[0-9a-f]{64})$", re.M)
REQ_RE = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==(?P<version>\S+)")


@dataclass(frozen=True)
class LockPair:
    image: str
    track: str

    @property
    def source(self) -> Path:
        return DOCKER / self.image / f"requirements.{self.track}.in"

    @property
    def lock(self) -> Path:
        return DOCKER / self.image / f"requirements.{self.track}.lock"


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def find_pairs(image: str | None = None, track: str | None = None) -> list[LockPair]:
    """Every (image, track) with an input file, optionally filtered."""
    pairs = []
    for src in sorted(DOCKER.glob("*/requirements.*.in")):
        pair = LockPair(src.parent.name, src.name[len("requirements.") : -len(".in")])
        if image in (None, pair.image) and track in (None, pair.track):
            pairs.append(pair)
    return pairs


def header(pair: LockPair, uv_version: str) -> str:
    rel = pair.source.relative_to(ROOT)
    return (
        f"# mergebench lock for the {pair.image} image, {pair.track} track. Do not edit by hand:\n"
        f"#   scripts/lock.py {pair.image} {pair.track}\n"
        f"# input: {rel} sha256={sha256_file(pair.source)}\n"
        f"# resolver: {uv_version}, python {PYTHON_VERSION}, platform {PLATFORM}\n"
    )


def uv_command() -> list[str]:
    exe = shutil.which("uv") or str(Path(sys.executable).with_name("uv"))
    if not Path(exe).exists():
        sys.exit("uv not found: pip install uv")
    return [exe]


def compile_lock(pair: LockPair) -> None:
    uv = uv_command()
    version = subprocess.run([*uv, "--version"], capture_output=True, text=True, check=True).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "lock.txt"
        cmd = [
            *uv, "pip", "compile", str(pair.source), "--output-file", str(out),
            "--generate-hashes", "--no-header", "--no-annotate", "--quiet",
            "--python-version", PYTHON_VERSION, "--python-platform", PLATFORM,
            "--index-url", INDEX_URL, "--no-config",
        ]  # fmt: skip
        if pair.track == "cpu":
            cmd += ["--find-links", LOCAL_WHEELS]
        env = dict(os.environ)
        env.setdefault("SSL_CERT_FILE", "/etc/ssl/certs/ca-certificates.crt")
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
        if proc.returncode != 0:
            raise RuntimeError(f"{pair.image}/{pair.track}: resolution failed:\n{proc.stderr.strip()}")
        pair.lock.write_text(header(pair, version) + out.read_text())


def check_lock(pair: LockPair) -> list[str]:
    """Problems with one lock: missing, stale (input changed), or a requirement without a pin or hash."""
    if not pair.lock.exists():
        return [f"{pair.lock.relative_to(ROOT)}: missing (run scripts/lock.py {pair.image} {pair.track})"]
    text = pair.lock.read_text()
    problems = []
    m = HEADER_RE.search(text)
    if m is None:
        problems.append(f"{pair.lock.relative_to(ROOT)}: no '# input: ... sha256=' header")
    elif m["path"] != str(pair.source.relative_to(ROOT)) or m["sha"] != sha256_file(pair.source):
        problems.append(
            f"{pair.lock.relative_to(ROOT)}: stale, {pair.source.name} changed since it was locked "
            f"(run scripts/lock.py {pair.image} {pair.track})"
        )
    # A requirement is its first line plus its continuation lines ("\" ... "--hash=sha256:...").
    entries = re.split(r"\n(?=[^\s#])", "\n".join(ln for ln in text.splitlines() if not ln.startswith("#")))
    pinned = 0
    for entry in filter(str.strip, entries):
        first = entry.splitlines()[0]
        if REQ_RE.match(first) is None:
            problems.append(f"{pair.lock.relative_to(ROOT)}: not an exact pin: {first!r}")
        elif "--hash=sha256:" not in entry:
            problems.append(f"{pair.lock.relative_to(ROOT)}: no hash for {first!r}")
        pinned += 1
    if pinned == 0:
        problems.append(f"{pair.lock.relative_to(ROOT)}: no requirements")
    return problems


def locked_versions(path: Path) -> dict[str, str]:
    """{normalized name: version} of a lock file."""
    out = {}
    for line in path.read_text().splitlines():
        m = REQ_RE.match(line)
        if m:
            out[re.sub(r"[-_.]+", "-", m["name"]).lower()] = m["version"]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("image", nargs="?")
    ap.add_argument("track", nargs="?")
    ap.add_argument("--check", action="store_true", help="verify locks against their inputs, resolve nothing")
    ap.add_argument("--keep-going", action="store_true", help="relock the rest when one input fails")
    args = ap.parse_args(argv)
    pairs = find_pairs(args.image, args.track)
    if not pairs:
        print(f"no docker/*/requirements.*.in matches {args.image or '*'} {args.track or '*'}", file=sys.stderr)
        return 2
    if args.check:
        problems = [p for pair in pairs for p in check_lock(pair)]
        for p in problems:
            print(p, file=sys.stderr)
        print(f"{len(pairs)} locks checked, {len(problems)} problems")
        return 1 if problems else 0
    failed = 0
    for pair in pairs:
        try:
            compile_lock(pair)
            print(f"locked {pair.lock.relative_to(ROOT)} ({len(locked_versions(pair.lock))} packages)")
        except RuntimeError as exc:
            failed += 1
            print(exc, file=sys.stderr)
            if not args.keep_going:
                return 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
