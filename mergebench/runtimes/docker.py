"""Run each stage in its image with the Docker SDK.

The workspace is bind-mounted at the same path inside and out, processes run as the caller's
uid:gid (files stay the user's), GPUs are passed by device request with CUDA_VISIBLE_DEVICES set to
match, `ipc=host` for vLLM/NCCL, no network except for fetch stages, labels on every container, logs
streamed live to the stage's log file, and containers are removed when they end or are stopped.
A stage that runs generated code gets runtimes/sandbox.py's container instead: only its own folders
mounted, no host IPC, docker/images.yaml's limits, stopped at its wall-clock limit.

Containers belong to the engine, not to the runner: when the runner is killed they go on. A restarted
runner finds them by their labels (workspace, stage names, stage key): a running one is adopted (its
log followed from then on, its exit code taken as the stage's), an exited one removed, so no stage
ever runs twice at once (the stage lock in the workspace would make a second one wait in any case).
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from mergebench.errors import MergeBenchError
from mergebench.runtimes.base import Handle, Runtime
from mergebench.runtimes.images import cache_env, image_tag
from mergebench.runtimes.request import HUB_ENV, LaunchRequest
from mergebench.runtimes.sandbox import SCRATCH_ENV, Mounts, docker_owner, docker_settings

LABEL = "org.mergebench"


def fetch_network() -> str:
    """The Docker network of the stages that reach the hub: the default bridge, or what
    MERGEBENCH_FETCH_NETWORK names ("host" when the hub is a server on this host's loopback, as in
    `make rehearse`; a dockerd started with --bridge=none has no bridge)."""
    return os.environ.get("MERGEBENCH_FETCH_NETWORK") or "bridge"


class DockerHandle(Handle):
    def __init__(self, container, log: Path, since: float | None = None, timeout_s: float | None = None):
        self.container, self.log = container, log
        self.deadline = time.time() + timeout_s if timeout_s else None
        self._log_thread = threading.Thread(target=self._follow, args=(log, since), daemon=True)
        self._log_thread.start()
        self._code: int | None = None

    def _follow(self, log: Path, since: float | None) -> None:
        with open(log, "ab") as fh:
            try:
                for chunk in self.container.logs(stream=True, follow=True, **({"since": since} if since else {})):
                    fh.write(chunk)
                    fh.flush()
            except Exception:  # noqa: BLE001 - the container may vanish while we follow it
                pass

    def poll(self) -> int | None:
        if self._code is not None:
            return self._code
        self.container.reload()
        if self.container.status not in ("exited", "dead"):
            if self.deadline is not None and time.time() > self.deadline:
                self.stop()
                with open(self.log, "a") as fh:
                    fh.write("\n[runner] stopped: the sandbox's wall-clock limit (stage_timeout_s) was reached\n")
                self._code = 124
                return self._code
            return None
        self._code = int(self.container.attrs["State"]["ExitCode"])
        self._log_thread.join(timeout=10)
        self._remove()
        return self._code

    def stop(self) -> None:
        try:
            self.container.stop(timeout=10)
        except Exception:  # noqa: BLE001
            pass
        self._remove()
        self._code = self._code if self._code is not None else 143

    def _remove(self) -> None:
        try:
            self.container.remove(force=True)
        except Exception:  # noqa: BLE001 - already gone
            pass


class DockerRuntime(Runtime):
    name = "docker"
    batches = True  # ready CPU stages of one kind (so one image) share a container, as in the local runtime

    def __init__(self, track: str | None = None, prefix: str | None = None, client=None, user: str | None = None):
        self.track, self.prefix = track, prefix
        self._client = client
        self.user = user or f"{os.getuid()}:{os.getgid()}"  # files in the workspace stay the caller's

    def tag(self, image: str) -> str:
        return image_tag(image, self.track, self.prefix)

    @property
    def client(self):
        if self._client is None:
            import docker

            try:
                self._client = docker.from_env()
                self._client.ping()
            except Exception as e:  # noqa: BLE001 - DockerException, connection errors
                self._client = None
                raise MergeBenchError(
                    f"Docker is not reachable ({type(e).__name__}); start the engine (e.g. `sudo systemctl start "
                    "docker`) or run natively with --runtime local (make reproduce RUNTIME=local)"
                ) from None
        return self._client

    def image_id(self, image: str) -> str:
        """The image's content id when the engine knows it; its name otherwise (plans print offline)."""
        try:
            return self.client.images.get(self.tag(image)).id
        except Exception:  # noqa: BLE001 - engine down or image missing: check() reports it
            return self.tag(image)

    def provenance(self, image: str) -> dict[str, str]:
        """The image's content id and, once pushed or pulled, its registry digest: the stage's manifest
        records both (a tag can move; these cannot)."""
        try:
            found = self.client.images.get(self.tag(image))
        except Exception:  # noqa: BLE001 - check() has already refused a missing image
            return {}
        digests = found.attrs.get("RepoDigests") or []
        return {"MERGEBENCH_IMAGE_ID": found.id, **({"MERGEBENCH_IMAGE_DIGEST": digests[0]} if digests else {})}

    def check(self, images, gpus: bool = False) -> None:
        import docker.errors

        for image in sorted(set(images)):
            name = self.tag(image)
            try:
                self.client.images.get(name)
            except docker.errors.ImageNotFound:
                raise MergeBenchError(f"image {name} is missing; build it with `make images` (CPU variants: "
                                      "`make images-ci`, then MERGEBENCH_IMAGE_TRACK=cpu)") from None
        if gpus:
            runtimes = self.client.info().get("Runtimes", {})
            if "nvidia" not in runtimes:
                raise MergeBenchError("the Docker engine has no NVIDIA runtime but GPU stages are planned; install "
                                      "the NVIDIA Container Toolkit, or run the tiny profile (MODEL=tiny)")

    def container_kwargs(self, request: LaunchRequest, gpus: list[int]) -> dict:
        """Settings of the container that runs the request (several specs: a batch whose stages log to
        their own files)."""
        from docker.types import DeviceRequest

        ws = str(request.workspace)
        env = dict(request.env)
        if request.hub:  # only the hub stages see the token and where the hub is
            env.update({k: os.environ[k] for k in ("HF_TOKEN", *HUB_ENV) if os.environ.get(k)})
        kwargs = {
            "image": self.tag(request.image),
            "command": ["mergebench", *request.entry()],
            "detach": True,
            "volumes": {ws: {"bind": ws, "mode": "rw"}},
            "user": self.user,
            "environment": {**cache_env(ws), **env,
                            "CUDA_VISIBLE_DEVICES": ",".join(str(i) for i in range(len(gpus))),
                            "MERGEBENCH_IMAGE": self.tag(request.image), **self.provenance(request.image)},
            "ipc_mode": "host",
            "init": True,  # PID 1 that forwards SIGTERM: `docker stop` then really stops the stage
            "network_mode": fetch_network() if request.hub else "none",
            "labels": {f"{LABEL}.stage": request.name, f"{LABEL}.key": request.key, f"{LABEL}.workspace": ws},
            "working_dir": ws,
        }
        if gpus:
            kwargs["device_requests"] = [DeviceRequest(device_ids=[str(g) for g in gpus], capabilities=[["gpu"]])]
        if request.sandbox is not None:  # generated code: only its own folders, and docker/images.yaml's limits
            kwargs.update(docker_settings(request.sandbox.policy, Mounts.for_request(request.sandbox, env)))
            kwargs["environment"] = {**kwargs["environment"], **SCRATCH_ENV}
            kwargs["init"] = True
        return kwargs

    def start(self, request: LaunchRequest, gpus: list[int]) -> Handle:
        request.log.parent.mkdir(parents=True, exist_ok=True)
        kwargs = self.container_kwargs(request, gpus)
        adopted = self._adopt(kwargs["labels"], request.log)
        if adopted is not None:
            return adopted
        timeout = None
        if request.sandbox is not None:  # its folders made and handed to the sandbox's user (never an adopted one's)
            policy = request.sandbox.policy
            Mounts.for_request(request.sandbox, dict(request.env)).prepare(docker_owner(policy))
            timeout = policy.stage_timeout_s
        return DockerHandle(self.client.containers.run(**kwargs), request.log, timeout_s=timeout)

    def _adopt(self, labels: dict[str, str], log: Path) -> DockerHandle | None:
        """A container of an earlier (killed) runner for exactly this work: adopt it while it runs,
        remove it once it has exited (the runner then starts afresh, or finds the stage complete)."""
        found = self.client.containers.list(all=True, filters={"label": [f"{k}={v}" for k, v in labels.items()]})
        for container in found:
            if container.status == "running":
                # the killed runner's follower wrote the log up to its last change: go on from there
                since = log.stat().st_mtime if log.exists() else None
                with open(log, "a") as fh:
                    fh.write(f"\n[runner] adopted container {container.short_id}, still running "
                             f"{labels[f'{LABEL}.stage']} from an earlier run\n")
                return DockerHandle(container, log, since=since)
            try:
                container.remove(force=True)
            except Exception:  # noqa: BLE001 - already gone
                pass
        return None
