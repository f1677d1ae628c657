"""Hostile generated programs in the sandbox of a code-executing stage, on the local runtime
(bubblewrap) and the docker runtime (the CPU train image), launched the way each runtime launches a
sandboxed stage (its launch request's mounts, docker/images.yaml's policy with tighter limits) with the
program in place of the stage's entry point. Each one is stopped, nothing of the workspace outside its output folder changes,
no process outlives it, and a correct program next to them still writes its result."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from mergebench.pipeline.launch import launch_request
from mergebench.pipeline.plan import Plan
from mergebench.pipeline.stage import Stage
from mergebench.pipeline.workspace import Workspace
from mergebench.runtimes.sandbox import SandboxPolicy, bubblewrap

SECRET = b"weights of another model"
TOKEN = "hf_not_for_generated_code"


def _docker_problem() -> str | None:
    try:
        import docker
        from mergebench.runtimes.images import image_tag

        client = docker.from_env()
        client.ping()
        client.images.get(image_tag("train", "cpu"))
    except Exception as e:  # noqa: BLE001
        return f"no Docker engine with the CPU train image ({type(e).__name__}); run scripts/ci-docker.sh"
    return None


def _local_problem() -> str | None:
    return None if bubblewrap() else "bubblewrap cannot make namespaces here (apt-get install bubblewrap)"


class Box:
    """A workspace with another model's weights, an HF cache with a token, generations to read, and one
    sandboxed stage whose output folder is the only place a program may write."""

    def __init__(self, root: Path, runtime: str, monkeypatch):
        self.ws = Workspace(root / "ws").ensure()
        os.chmod(root, 0o755)
        (self.ws.root / "models" / "other").mkdir(parents=True)
        (self.ws.root / "models" / "other" / "model.safetensors").write_bytes(SECRET)
        (self.ws.hf_home / "token").write_text(TOKEN)
        monkeypatch.setenv("HF_TOKEN", TOKEN)
        gen = Stage("eval/m/bigcode-generate", "eval", {"phase": "generate"}, {}, "train", key="g" * 64)
        gen_out = self.ws.output(gen)
        gen_out.mkdir(parents=True)
        (gen_out / "generations.json").write_text('[["def f(x):\\n    return x + 1"]]')
        (gen_out / "manifest.json").write_text("{}")
        self.stage = Stage("eval/m/bigcode", "eval", {"phase": "execute", "sandbox": True},
                           {"generations": gen.name}, "train", key="e" * 64)
        plan = Plan("hostile")
        plan.add(gen)
        plan.add(self.stage)
        self.generations = gen_out / "generations.json"
        self.out = self.ws.partial(self.stage)
        self.policy = dataclasses.replace(SandboxPolicy.from_images_yaml(), stage_timeout_s=8,
                                          memory_bytes=1 << 30, pids_limit=64, file_bytes=8 << 20)
        self.runtime_name = runtime
        self.env = {"HF_HOME": str(self.ws.hf_home), "MERGEBENCH_WORKSPACE": str(self.ws.root),
                    "HF_HUB_OFFLINE": "1"}
        self.request = launch_request(self.ws, [self.stage], plan.by_name, self.env, policy=self.policy)

    def snapshot(self) -> dict[str, str]:
        """Every file of the workspace outside the output folder and the stage's log, with its digest."""
        seen = {}
        for path in sorted(self.ws.root.rglob("*")):
            if path.is_relative_to(self.out) or path in (self.ws.log(self.stage), self.ws.lock(self.stage)) \
                    or not path.is_file():
                continue
            seen[str(path.relative_to(self.ws.root))] = hashlib.sha256(path.read_bytes()).hexdigest()
        return seen

    def run(self, program: str) -> tuple[int, str]:
        """The program as the sandboxed stage's process: its exit code and what it printed."""
        log = self.ws.log(self.stage)
        log.unlink(missing_ok=True)
        if self.runtime_name == "local":
            from mergebench.runtimes.local import LocalRuntime

            handle = LocalRuntime().sandboxed(self.request, argv=[sys.executable, "-c", program])
        else:
            from mergebench.runtimes.docker import DockerHandle, DockerRuntime
            from mergebench.runtimes.sandbox import Mounts, docker_owner

            runtime = DockerRuntime(track="cpu")
            kwargs = runtime.container_kwargs(self.request, [])
            Mounts.for_request(self.request.sandbox, self.env).prepare(docker_owner(self.policy))  # as start() does
            kwargs["command"] = ["python", "-c", program]
            handle = DockerHandle(runtime.client.containers.run(**kwargs), log, timeout_s=self.policy.stage_timeout_s)
        deadline = time.time() + 120
        while (code := handle.poll()) is None:
            assert time.time() < deadline, "the sandboxed process was never stopped"
            time.sleep(0.1)
        time.sleep(0.3)  # the docker log follower's last lines
        return code, log.read_text(errors="replace") if log.exists() else ""


RUNTIMES = [pytest.param("local", id="local-bubblewrap"), pytest.param("docker", id="docker")]


@pytest.fixture(params=RUNTIMES)
def box(request, tmp_path, monkeypatch):
    problem = _local_problem() if request.param == "local" else _docker_problem()
    if problem:
        pytest.skip(problem)
    return Box(tmp_path, request.param, monkeypatch)


def _check(box: Box, program: str) -> tuple[int, str]:
    before = box.snapshot()
    code, log = box.run(program)
    assert box.snapshot() == before, log
    return code, log


def test_a_correct_program_reads_its_generations_and_writes_its_output(box):
    program = (f"import json; g = json.load(open({str(box.generations)!r})); ns = {{}}; exec(g[0][0], ns); "
               f"open({str(box.out / 'result.txt')!r}, 'w').write(str(ns['f'](1))); print('passed')")
    code, log = _check(box, program)
    assert code == 0 and "passed" in log, log
    assert (box.out / "result.txt").read_text() == "2"


def test_a_socket_reaches_nothing(box):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.5)
    port = server.getsockname()[1]
    try:
        code, log = _check(box, f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=3)")
        with pytest.raises(TimeoutError):
            server.accept()  # nobody ever connected
    finally:
        server.close()
    assert code != 0 and ("refused" in log or "unreachable" in log), log


def test_writes_and_deletes_outside_the_output_folder_fail(box):
    other = box.ws.root / "models" / "other"
    code, log = _check(box, "import os, sys\n"
                            f"for act in (lambda: open({str(other / 'planted.txt')!r}, 'w'),\n"
                            f"            lambda: os.remove({str(other / 'model.safetensors')!r}),\n"
                            f"            lambda: os.remove({str(box.generations)!r}),\n"
                            f"            lambda: open({str(box.generations)!r}, 'a')):\n"
                            "    try:\n        act(); print('ESCAPED')\n"
                            "    except OSError as e:\n        print('refused', type(e).__name__)\n")
    assert code == 0 and "ESCAPED" not in log and log.count("refused") == 4, log


def test_another_models_weights_are_not_there(box):
    weights = box.ws.root / "models" / "other" / "model.safetensors"
    code, log = _check(box, f"print(open({str(weights)!r}, 'rb').read())")
    assert code != 0 and "FileNotFoundError" in log and SECRET.decode() not in log, log


def test_the_token_and_the_hf_cache_are_out_of_reach(box):
    code, log = _check(box, "import os, pathlib\n"
                            "print('env', [k for k in os.environ if 'TOKEN' in k])\n"
                            f"for p in ({str(box.ws.hf_home / 'token')!r}, os.path.expanduser('~/.cache/huggingface/token')):\n"
                            "    try:\n        print(pathlib.Path(p).read_text())\n"
                            "    except OSError as e:\n        print('refused', type(e).__name__)\n")
    assert code == 0 and TOKEN not in log and "env []" in log and log.count("refused") == 2, log


def test_a_fork_bomb_is_stopped_and_leaves_no_process(box):
    marker = f"bomb-{uuid.uuid4().hex}"
    code, log = _check(box, f"# {marker}\nimport os, time\nwhile True:\n    try:\n        os.fork()\n"
                            "    except OSError:\n        time.sleep(0.01)\n")
    assert code != 0, log
    time.sleep(1)
    listing = subprocess.run(["ps", "-eo", "stat=,args="], capture_output=True, text=True).stdout
    assert [line for line in listing.splitlines() if marker in line and not line.startswith("Z")] == []


def test_a_memory_bomb_is_stopped(box):
    code, log = _check(box, "chunks = []\nwhile True:\n    chunks.append(bytearray(64 * 2**20))\n")
    assert code != 0, log


def test_an_endless_loop_meets_the_wall_clock(box):
    start = time.time()
    code, log = _check(box, "while True: pass")
    assert code == 124 and "wall-clock limit" in log, log
    assert time.time() - start < 60


def test_other_processes_cannot_be_signalled(box):
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        code, log = _check(box, f"import os, signal\ntry:\n    os.kill({victim.pid}, signal.SIGKILL); print('KILLED')\n"
                                "except OSError as e:\n    print('refused', type(e).__name__)\n"
                                "try:\n    os.kill(-1, signal.SIGKILL)\nexcept OSError:\n    pass\n")
        assert victim.poll() is None, log  # alive
        assert "KILLED" not in log, log
    finally:
        victim.kill()
        victim.wait()


def test_host_ipc_is_not_shared(box):
    name = f"mb-hostile-{uuid.uuid4().hex[:8]}"
    shm = Path("/dev/shm") / name
    shm.write_bytes(b"host secret")
    try:
        code, log = _check(box, f"from multiprocessing import shared_memory\ntry:\n"
                                f"    print(bytes(shared_memory.SharedMemory({name!r}).buf[:11]))\n"
                                "except OSError as e:\n    print('refused', type(e).__name__)\n")
    finally:
        shm.unlink()
    assert "host secret" not in log and "refused FileNotFoundError" in log, log


def test_filling_the_disk_stops_at_the_file_size_limit(box):
    code, log = _check(box, f"f = open({str(box.out / 'fill')!r}, 'wb')\nwhile True:\n    f.write(b'x' * 2**20)\n")
    assert code != 0, log
    assert (box.out / "fill").stat().st_size <= box.policy.file_bytes
    code, log = _check(box, "f = open('/tmp/fill', 'wb')\nwhile True:\n    f.write(b'x' * 2**20)\n")
    assert code != 0 and ("No space left" in log or "File too large" in log or code < 0 or code > 128), log


def test_apptainer_gets_the_same_mounts(tmp_path, monkeypatch):
    """Apptainer cannot run here: its argv for a sandboxed stage binds only the spec's folders."""
    from mergebench.runtimes.apptainer import ApptainerRuntime

    box = Box(tmp_path, "apptainer", monkeypatch)
    argv = ApptainerRuntime(sif_dir=tmp_path / "sif").command(box.request, 0)
    for flag in ("--containall", "--no-home", "--net"):
        assert flag in argv
    assert argv[argv.index("--network") + 1] == "none"
    binds = [argv[i + 1] for i, a in enumerate(argv) if a == "--bind"]
    assert f"{box.out}:{box.out}:rw" in binds and f"{box.generations.parent}:{box.generations.parent}:ro" in binds
    assert not any(b.split(":")[0] in (str(box.ws.root), str(box.ws.hf_home)) for b in binds), binds
    assert not [a for a in argv if TOKEN in a]
