"""The shard writer's background writes: bytes land at their offsets, waiting bytes stay bounded, and an
error in the worker reaches the caller."""

import os

import pytest

from mergebench.merging.io.writer import BackgroundWrites


def test_writes_land_at_their_offsets_with_few_bytes_waiting(tmp_path, monkeypatch):
    monkeypatch.setattr(BackgroundWrites, "LIMIT", 10)
    path = tmp_path / "f"
    path.write_bytes(b"." * 40)
    writes = BackgroundWrites()
    with open(path, "r+b") as fh:
        for i in range(8):
            writes.submit(fh.fileno(), i * 5, memoryview(bytes([65 + i]) * 5))
            assert writes.waiting_bytes <= 10  # never more than LIMIT (or one write) waiting
        writes.drain()
    assert path.read_bytes() == b"AAAAABBBBBCCCCCDDDDDEEEEEFFFFFGGGGGHHHHH"


def test_an_error_in_the_worker_is_raised_by_drain(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"x")
    fd = os.open(path, os.O_RDONLY)
    try:
        writes = BackgroundWrites()
        writes.submit(fd, 0, memoryview(b"abc"))
        with pytest.raises(OSError):
            writes.drain()
        writes.submit(fd, 0, memoryview(b"abc"))
        writes.drain(raise_errors=False)  # abort's way: waited for, not raised
    finally:
        os.close(fd)
    assert path.read_bytes() == b"x"
