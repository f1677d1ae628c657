"""The local sandbox for generated code: correct programs pass; network, writes outside its folder,
fork bombs, runaway memory and huge files are stopped."""

from __future__ import annotations

import socket
import subprocess
import time
import uuid

import pytest

from mergebench.evaluation.sandbox import Limits, drop_privileges, network_isolation, run_untrusted


def test_correct_program_passes():
    out = run_untrusted("print(sum(range(5)))")
    assert out.returncode == 0 and out.stdout == "10\n"


@pytest.mark.skipif(not network_isolation(), reason="this kernel allows no network namespace (unshare --net)")
def test_network_is_unreachable():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    try:
        out = run_untrusted(f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=2)")
    finally:
        server.close()
    assert out.returncode != 0 and ("unreachable" in out.stderr or "refused" in out.stderr)


@pytest.mark.skipif(not drop_privileges(), reason="needs root to switch to the unprivileged user")
def test_writes_outside_its_folder_are_refused(tmp_path):
    target = tmp_path / "pwned.txt"
    out = run_untrusted(f"open({str(target)!r}, 'w').write('x')")
    assert out.returncode != 0 and "Permission denied" in out.stderr and not target.exists()
    assert run_untrusted("open('own.txt', 'w').write('x'); print(open('own.txt').read())").stdout == "x\n"


def test_fork_bomb_is_contained_and_leaves_nothing():
    marker = f"fork-bomb-{uuid.uuid4().hex}"  # only this test's processes carry it in their command line
    start = time.time()
    out = run_untrusted(f"# {marker}\nimport os\nwhile True:\n    os.fork()", Limits(wall_seconds=5))
    assert time.time() - start < 30
    assert out.returncode != 0
    listing = subprocess.run(["ps", "-eo", "pid=,stat=,args="], capture_output=True, text=True).stdout
    alive = [line for line in listing.splitlines() if marker in line and not line.split()[1].startswith("Z")]
    assert alive == []


def test_runaway_memory_and_file_size_are_stopped():
    assert "MemoryError" in run_untrusted("x = bytearray(4 * 1024**3)").stderr
    assert "File too large" in run_untrusted("open('big', 'w').write('x' * 5_000_000)").stderr


def test_endless_loop_hits_the_wall_time_limit():
    out = run_untrusted("while True: pass", Limits(wall_seconds=1, cpu_seconds=30))
    assert out.returncode is None and "wall-time" in out.stderr
