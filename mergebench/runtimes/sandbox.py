"""The sandbox of stages that run generated code, as one policy every runtime translates.

The policy is docker/images.yaml's `sandbox` section (the file tests/test_images_sandbox.py checks);
what a sandboxed stage may see comes with its launch request (SandboxRequest): its inputs read-only
(the generations), its `.partial` output folder and its lock file writable, its spec folder read-only,
nothing else of the workspace. The process inside never renames its output into place (it cannot reach the folder
above); the runner promotes it once the process has exited with 0.

Translations:
  * Docker: the SDK's settings (read-only root, tmpfs /tmp, no network, no host IPC, no capabilities,
    pids, memory and CPU limits, a non-root user) and volumes for exactly those paths;
  * bubblewrap (the local runtime): a new user namespace in which it is nobody without capabilities
    (the caller's uid outside, so its files stay the caller's), new network, IPC, PID and UTS
    namespaces, the root file system read-only, the workspace, the HF cache and the home folder hidden
    under empty tmpfs with only those paths bound back, rlimits for memory, file size and CPU time,
    and a pids cgroup when started by root (RLIMIT_NPROC binds everyone else);
  * Apptainer: `exec --containall --no-home --net --network none` with only those binds.
The wall clock is the launcher's: each runtime's handle stops a sandboxed stage past `stage_timeout_s`.
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from mergebench.errors import MergeBenchError
from mergebench.processes import kill_all
from mergebench.runtimes.images import images_config

NOBODY = 65534
#: Where a sandboxed process keeps its caches and home: the tmpfs, never the workspace.
SCRATCH_ENV = {"HOME": "/tmp", "XDG_CACHE_HOME": "/tmp/cache", "TORCH_HOME": "/tmp/cache/torch",
               "TORCHINDUCTOR_CACHE_DIR": "/tmp/cache/torchinductor", "TRITON_CACHE_DIR": "/tmp/cache/triton",
               "MPLCONFIGDIR": "/tmp/cache/matplotlib", "MERGEBENCH_SANDBOXED": "1",
               "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _bytes(size: str | int) -> int:
    match = re.fullmatch(r"(\d+)([kmg]?)", str(size).strip().lower())
    if not match:
        raise MergeBenchError(f"docker/images.yaml sandbox: {size!r} is not a size like 512m or 4g")
    return int(match[1]) * {"": 1, "k": 2**10, "m": 2**20, "g": 2**30}[match[2]]


@dataclass(frozen=True)
class SandboxPolicy:
    """docker/images.yaml's sandbox section, typed."""

    user: str
    read_only: bool
    tmpfs: str  # "/tmp:rw,noexec,..." as `docker run --tmpfs` takes it
    pids_limit: int  # of a sandboxed stage: the harness and its programs together
    memory_bytes: int  # likewise
    file_bytes: int  # the largest file it may write
    cpus: float
    program_timeout_s: int  # one generated program (the harness's own per-program limit stays below it)
    stage_timeout_s: int  # the whole sandboxed stage

    @classmethod
    def from_images_yaml(cls) -> SandboxPolicy:
        s = images_config()["sandbox"]
        if s.get("network") != "none" or _bytes(s["memory"]) != _bytes(s["memory_swap"]):
            raise MergeBenchError("docker/images.yaml sandbox: network must be none and memory_swap = memory")
        return cls(user=str(s["user"]), read_only=bool(s["read_only"]), tmpfs=str(s["tmpfs"]),
                   pids_limit=int(s["stage_pids_limit"]), memory_bytes=_bytes(s["stage_memory"]),
                   file_bytes=_bytes(s["stage_file_size"]), cpus=float(s["cpus"]),
                   program_timeout_s=int(s["timeout_s"]), stage_timeout_s=int(s["stage_timeout_s"]))

    @property
    def tmpfs_mount(self) -> tuple[str, str]:
        path, _, options = self.tmpfs.partition(":")
        return path, options


@dataclass(frozen=True)
class SandboxRequest:
    """A stage that runs generated code: the policy (docker/images.yaml's `sandbox`), what it may read
    (its spec folder and inputs) and the two paths it may write (its `.partial` folder, its lock file)."""

    policy: SandboxPolicy
    reads: tuple[str, ...]
    output: str
    lock: str
    workspace: str  # hidden, with the HF cache and the home folder, where a runtime hides the host


@dataclass(frozen=True)
class Mounts:
    """What the sandboxed process sees of the host beyond its image. bubblewrap covers each of `hide`
    with an empty folder, binds `python` back read-only (the interpreter, venv, kit and harness checkout
    that run the stage on this host, wherever they are: /tmp becomes a fresh tmpfs), hides again what
    that brought back, then binds `read` read-only and `write` read-write, each at its own path. Containers have their Python in the image
    and mount only `read` and `write`."""

    hide: tuple[str, ...]
    read: tuple[str, ...]
    write: tuple[str, ...]
    python: tuple[str, ...] = ()

    @classmethod
    def for_request(cls, sandbox: SandboxRequest, env: dict[str, str] | None = None) -> Mounts:
        """The stage's spec folder and inputs to read, its .partial folder and lock file to write. Hidden:
        the workspace, the HF cache and the caller's home (the token lives there)."""
        hf_home = (env or {}).get("HF_HOME") or os.environ.get("HF_HOME")
        hide = [sandbox.workspace, *([hf_home] if hf_home else []), os.path.expanduser("~")]
        python = [sys.prefix, sys.base_prefix, str(Path(__file__).resolve().parents[2]),
                  *([os.environ["MERGEBENCH_BIGCODE_DIR"]] if os.environ.get("MERGEBENCH_BIGCODE_DIR") else [])]
        return cls(hide=tuple(dict.fromkeys(hide)), read=tuple(dict.fromkeys(sandbox.reads)),
                   write=(sandbox.output, sandbox.lock), python=tuple(dict.fromkeys(python)))

    def prepare(self, owner: tuple[int, int] | None) -> None:
        """Create what is written (the bind needs it to exist) and hand it to the sandbox's user."""
        partial, lock = (Path(p) for p in self.write)
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        lock.touch()
        if owner is not None:
            for path in (partial, lock):
                os.chown(path, *owner)

    def docker_volumes(self) -> dict[str, dict[str, str]]:
        volumes = {p: {"bind": p, "mode": "ro"} for p in self.read}
        volumes.update({p: {"bind": p, "mode": "rw"} for p in self.write})
        return volumes


def docker_settings(policy: SandboxPolicy, mounts: Mounts) -> dict:
    """Docker SDK `containers.run` settings that replace a normal stage's (its volumes, IPC, user)."""
    from docker.types import Ulimit

    path, options = policy.tmpfs_mount
    return {"ulimits": [Ulimit(name="fsize", soft=policy.file_bytes, hard=policy.file_bytes)],"read_only": policy.read_only, "tmpfs": {path: options}, "pids_limit": policy.pids_limit,
            "mem_limit": policy.memory_bytes, "memswap_limit": policy.memory_bytes,
            "nano_cpus": int(policy.cpus * 1e9), "cap_drop": ["ALL"], "security_opt": ["no-new-privileges"],
            "network_mode": "none", "ipc_mode": "private", "volumes": mounts.docker_volumes(),
            "user": policy.user if os.getuid() == 0 else f"{os.getuid()}:{os.getgid()}"}


def docker_owner(policy: SandboxPolicy) -> tuple[int, int] | None:
    """Whom the written paths must belong to: the policy's user when we are root, else we run as ourselves."""
    if os.getuid() != 0:
        return None
    uid, _, gid = policy.user.partition(":")
    return int(uid), int(gid or uid)


@lru_cache(maxsize=1)
def bubblewrap() -> str | None:
    """The bwrap binary when it can make the namespaces here (unprivileged user namespaces), else None."""
    exe = shutil.which("bwrap")
    if exe is None:
        return None
    try:
        probe = subprocess.run([exe, "--ro-bind", "/", "/", "--unshare-all", "--unshare-user",
                                "true"], capture_output=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return exe if probe.returncode == 0 else None


def bwrap_argv(policy: SandboxPolicy, mounts: Mounts, argv: list[str]) -> list[str]:
    """`argv` inside bubblewrap: every namespace new (no network, no host IPC, no other processes), the
    host's root read-only, /tmp a fresh tmpfs, the hidden paths empty, and only the mounts bound back.
    The environment is the caller's to choose (sandbox_env): bwrap hands its own to the program."""
    exe = bubblewrap()
    if exe is None:
        raise MergeBenchError("this stage runs generated code and the local runtime has no sandbox here: install "
                              "bubblewrap (Debian: apt-get install bubblewrap) with unprivileged user namespaces, "
                              "or run with --runtime docker")
    tmp, _ = policy.tmpfs_mount
    box = [exe, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", tmp,
           "--unshare-all", "--unshare-user", "--uid", str(NOBODY), "--gid", str(NOBODY), "--die-with-parent",
           "--new-session", "--cap-drop", "ALL"]
    for path in mounts.hide:
        box += ["--tmpfs", path]
    for path in mounts.python:
        box += ["--ro-bind", path, path]
    for path in mounts.hide:  # hidden again where a binding above brought it back (a workspace in the checkout)
        if any(Path(path).is_relative_to(p) for p in mounts.python):
            box += ["--tmpfs", path]
    for path in mounts.read:
        box += ["--ro-bind", path, path]
    for path in mounts.write:
        box += ["--bind", path, path]
    return [*box, "--", *argv]


#: What a sandboxed local process keeps of the caller's environment (never a token).
KEPT_ENV = ("PATH", "PYTHONPATH", "LANG", "LC_ALL", "TZ", "MERGEBENCH_BIGCODE_DIR", "ATEN_CPU_CAPABILITY")


def sandbox_env(stage_env: dict[str, str]) -> dict[str, str]:
    """The whole environment of a sandboxed local process: the stage's, a few of the caller's, scratch."""
    kept = {k: os.environ[k] for k in KEPT_ENV if k in os.environ}
    return {**kept, **{k: v for k, v in stage_env.items() if k != "HF_TOKEN"}, **SCRATCH_ENV, "PYTHONUNBUFFERED": "1"}


class PidsCgroup:
    """A pids cgroup of its own for a sandbox started by root, for whom the kernel does not enforce
    RLIMIT_NPROC: `pids.max` bounds its processes, and its member list is what must be gone at the end."""

    def __init__(self, limit: int):
        root = self.root()
        if root is None:
            raise MergeBenchError("this stage runs generated code, and as root the local sandbox needs a writable "
                                  "pids cgroup (/sys/fs/cgroup/pids, or cgroup v2 with the pids controller) to bound "
                                  "its processes; run as another user, or with --runtime docker")
        self.path = root / f"mergebench-sandbox-{os.getpid()}-{time.monotonic_ns()}"
        self.path.mkdir()
        (self.path / "pids.max").write_text(str(limit))

    @staticmethod
    def root() -> Path | None:
        v1 = Path("/sys/fs/cgroup/pids")
        if (v1 / "cgroup.procs").is_file() and os.access(v1, os.W_OK):
            return v1
        v2 = Path("/sys/fs/cgroup")
        try:
            if "pids" in (v2 / "cgroup.subtree_control").read_text().split() and os.access(v2, os.W_OK):
                return v2
        except OSError:
            pass
        return None

    def join(self) -> None:
        """In the child, before exec: it and everything it starts count against pids.max."""
        (self.path / "cgroup.procs").write_text(str(os.getpid()))

    def members(self) -> list[int]:
        try:
            return [int(line) for line in (self.path / "cgroup.procs").read_text().split()]
        except OSError:
            return []

    def empty(self, patience: float = 10.0) -> None:
        """SIGKILL every member until none is left, then remove the cgroup."""
        deadline = time.monotonic() + patience
        while (members := self.members()) and time.monotonic() < deadline:
            kill_all(members)
            time.sleep(0.02)
        try:
            self.path.rmdir()
        except OSError:
            pass


def bwrap_limits(policy: SandboxPolicy, cgroup: PidsCgroup | None):
    """preexec_fn: the policy's memory (address space), processes (the cgroup's pids.max for root, else
    RLIMIT_NPROC beyond what the user runs already, as it counts per user), file size and CPU time."""
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (policy.memory_bytes, policy.memory_bytes))
        if cgroup is not None:
            cgroup.join()
        else:
            uid = os.getuid()
            running = sum(1 for p in Path("/proc").iterdir() if p.name.isdigit() and _owner(p) == uid)
            resource.setrlimit(resource.RLIMIT_NPROC, (policy.pids_limit + running,) * 2)
        cpu = int(policy.stage_timeout_s * (policy.cpus + 1))  # past the wall clock: that one speaks first
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
        resource.setrlimit(resource.RLIMIT_FSIZE, (policy.file_bytes, policy.file_bytes))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return apply


def _owner(proc: Path) -> int | None:
    try:
        return proc.stat().st_uid
    except OSError:
        return None


def apptainer_args(mounts: Mounts) -> list[str]:
    """`apptainer exec` options of a sandboxed stage: nothing of the host but the mounts, no network."""
    args = ["--containall", "--no-home", "--net", "--network", "none", "--writable-tmpfs"]
    for path in mounts.read:
        args += ["--bind", f"{path}:{path}:ro"]
    for path in mounts.write:
        args += ["--bind", f"{path}:{path}:rw"]
    return args
