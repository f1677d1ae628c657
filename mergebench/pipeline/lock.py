"""One orchestrator per workspace: two runs writing the same stages would corrupt each other."""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path

from mergebench.errors import MergeBenchError


class WorkspaceLock:
    def __init__(self, root: Path):
        self.path = Path(root) / ".lock"
        self._fh = None

    def __enter__(self) -> WorkspaceLock:
        self._fh = open(self.path, "a+")
        try:
            fcntl.flock(self._fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._fh.seek(0)
            try:
                holder = json.loads(self._fh.read() or "{}")
            except json.JSONDecodeError:
                holder = {}
            self._fh.close()
            raise MergeBenchError(
                f"workspace {self.path.parent} is in use by another run (pid {holder.get('pid', '?')}, "
                f"started {holder.get('started', '?')}); wait for it or use another --workspace"
            ) from None
        self._fh.seek(0)
        self._fh.truncate()
        self._fh.write(json.dumps({"pid": os.getpid(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}))
        self._fh.flush()
        return self

    def __exit__(self, *exc) -> None:
        if self._fh:
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()


class StageLock:
    """Held by the process that runs one stage, for as long as it runs: two processes never write the
    same `.partial` folder. A second one (a restarted runner's, while a stage of the killed run is
    still winding down, or a container the engine kept) waits, saying which process holds the stage,
    and then finds the stage complete or starts it afresh. The kernel drops the lock when its holder
    dies, however it dies."""

    def __init__(self, path: Path, name: str, say=print):
        self.path, self.name, self.say = Path(path), name, say
        self._fh = None

    def __enter__(self) -> StageLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a+")
        try:
            fcntl.flock(self._fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._fh.seek(0)
            holder = self._fh.read().strip() or "an unknown process"
            self.say(f"[{self.name}] waiting: {holder} still runs this stage")
            fcntl.flock(self._fh, fcntl.LOCK_EX)
        self._fh.seek(0)
        self._fh.truncate()
        self._fh.write(f"pid {os.getpid()} on {os.uname().nodename}, since {time.strftime('%Y-%m-%d %H:%M:%S')}")
        self._fh.flush()
        return self

    def __exit__(self, *exc) -> None:
        if self._fh:
            self._fh.truncate(0)
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
