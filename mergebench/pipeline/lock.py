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
