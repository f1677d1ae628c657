"""The live processes of this machine, read from /proc (standard library only): what the sandbox needs
to kill a whole process group, and a stage to kill everything it started."""

from __future__ import annotations

import os
import signal
from typing import NamedTuple

DEAD = (b"Z", b"X")  # zombies only await reaping; X is a process being torn down


class Proc(NamedTuple):
    pid: int
    ppid: int
    pgid: int


def live_processes() -> list[Proc]:
    """Every process that has not exited (empty where there is no /proc)."""
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    out = []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2:].split()  # after "pid (comm)": state, ppid, pgrp, ...
        if len(fields) > 2 and fields[0] not in DEAD:
            out.append(Proc(int(entry), int(fields[1]), int(fields[2])))
    return out


def descendants(root: int) -> list[int]:
    """Every live process below `root`: its children, theirs, and so on."""
    children: dict[int, list[int]] = {}
    for proc in live_processes():
        children.setdefault(proc.ppid, []).append(proc.pid)
    out, frontier = [], [root]
    while frontier:
        frontier = [c for p in frontier for c in children.get(p, [])]
        out += frontier
    return out


def group_members(pgid: int) -> list[int]:
    """The live members of process group `pgid`."""
    return [proc.pid for proc in live_processes() if proc.pgid == pgid]


def pid_namespace(pid: int) -> str | None:
    """The pid namespace `pid` lives in ("pid:[inode]"), or None when it is gone."""
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def namespace_members(namespace: str) -> list[int]:
    """The live processes of a pid namespace (a sandbox's), seen from outside it."""
    return [proc.pid for proc in live_processes() if pid_namespace(proc.pid) == namespace]


def kill_all(pids) -> None:
    """SIGKILL each of `pids`; those already gone, or not ours to signal, are passed over."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
