"""Run each stage in its Apptainer image (`<sif_dir>/<image>.sif`, built from the Docker image).

    apptainer exec --cleanenv --containall [--nv] --pwd WS --bind WS:WS [--bind CACHE:CACHE ...]
        --env HOME=WS/runs/.home --env CUDA_VISIBLE_DEVICES=.. --env K=V ... SIF mergebench stage run SPEC

--cleanenv and --containall keep the host's environment, home and /tmp out, so a stage sees exactly
what its Docker twin sees; the workspace (and every cache path outside it) is bound at the same path
inside and out, and every cache the images point at /workspace/cache is pointed at <workspace>/cache. --nv only for stages that use GPUs. Secrets never go on the command line: the fetch
stage gets HF_TOKEN through APPTAINERENV_HF_TOKEN in the process environment.

The image id (part of every stage key) is the SHA-256 of the SIF file's bytes: a SIF is immutable and
content-addressed that way, so two sites with the same file share keys. Hashing a multi-GB SIF takes a
few seconds, so the digest is cached next to it in `<image>.sif.sha256` together with the file's size and
mtime, and recomputed only when they change (a read-only sif_dir just means hashing every time).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from mergebench import __version__
from mergebench.errors import MergeBenchError
from mergebench.files import sha256_file
from mergebench.runtimes.base import Handle, Runtime
from mergebench.runtimes.local import spawn
from mergebench.runtimes.request import LaunchRequest
from mergebench.runtimes.sandbox import SCRATCH_ENV, Mounts, apptainer_args

SIF_ENV = "MERGEBENCH_SIF_DIR"
TRACK = os.environ.get("MB_TRACK", "modern")  # the image track, as in compose.yaml
# The images set these to /workspace/cache/...; under Apptainer the workspace is bound at its host path.
CACHE_VARS = {"XDG_CACHE_HOME": "", "TORCH_HOME": "torch", "TORCH_EXTENSIONS_DIR": "torch_extensions",
              "TORCHINDUCTOR_CACHE_DIR": "torchinductor", "TRITON_CACHE_DIR": "triton", "VLLM_CACHE_ROOT": "vllm"}


def docker_ref(image: str, track: str = TRACK) -> str:
    """The Docker image a SIF is built from (docker/images.yaml's tag; the sandbox exists only as cpu)."""
    return f"mergebench/{image}:{__version__}-{'cpu' if image == 'sandbox' else track}"


def build_command(image: str, sif_dir: Path, track: str = TRACK) -> str:
    """How to make a missing SIF (what `make sif` runs for each image)."""
    return f"apptainer build {sif_dir / (image + '.sif')} docker-daemon://{docker_ref(image, track)}"


def cache_env(ws: str) -> dict[str, str]:
    return {k: f"{ws}/cache/{sub}".rstrip("/") for k, sub in CACHE_VARS.items()}


def sif_digest(path: Path) -> str:
    """SHA-256 of the SIF, cached in `<sif>.sha256` as `<size> <mtime_ns> <digest>`."""
    st = path.stat()
    stamp = f"{st.st_size} {st.st_mtime_ns}"
    cache = path.with_name(path.name + ".sha256")
    try:
        size, mtime, digest = cache.read_text().split()
        if f"{size} {mtime}" == stamp and len(digest) == 64:
            return digest
    except (OSError, ValueError):
        pass
    digest = sha256_file(path)
    try:
        cache.write_text(f"{stamp} {digest}\n")
    except OSError:  # a shared, read-only sif_dir: hash again next time
        pass
    return digest


class ApptainerRuntime(Runtime):
    name = "apptainer"

    def __init__(self, sif_dir: str | os.PathLike | None = None, binds: list[str] | tuple[str, ...] = (),
                 executable: str = "apptainer", track: str = TRACK):
        self.sif_dir = Path(sif_dir or os.environ.get(SIF_ENV, "sif")).expanduser().resolve()
        self.binds = list(binds)
        self.executable = executable
        self.track = track

    def sif(self, image: str) -> Path:
        return self.sif_dir / f"{image}.sif"

    def image_id(self, image: str) -> str:
        """sha256:<digest of the SIF>, or apptainer:<path> while it is missing (check() reports that)."""
        path = self.sif(image)
        try:
            return f"sha256:{sif_digest(path)}"
        except OSError:
            return f"apptainer:{path}"

    def check(self, images, gpus: bool = False) -> None:
        if shutil.which(self.executable) is None:
            raise MergeBenchError(f"apptainer is not installed here ({self.executable!r} is not on PATH); load it "
                                  "(e.g. `module load apptainer`) or run natively with --runtime local")
        for image in sorted(set(images)):
            path = self.sif(image)
            if not path.is_file():
                raise MergeBenchError(f"Apptainer image {path} is missing; build it with `make sif SIF_DIR="
                                      f"{self.sif_dir}` (runs `{build_command(image, self.sif_dir, self.track)}`)"
                                      " or point sif_dir at the directory that holds it")

    def binds_for(self, env: dict[str, str]) -> list[str]:
        """The workspace, every cache path outside it, and the configured extra binds (each once)."""
        ws = Path(env["MERGEBENCH_WORKSPACE"])
        paths = [str(ws)]
        for key in ("HF_HOME", "HF_DATASETS_CACHE", "TRANSFORMERS_CACHE", "TRITON_CACHE_DIR", "XDG_CACHE_HOME"):
            value = env.get(key)
            if value and not Path(value).is_relative_to(ws) and value not in paths:
                paths.append(value)
        binds = [f"{p}:{p}" for p in paths]
        for extra in self.binds:
            spec = extra if ":" in extra else f"{extra}:{extra}"
            if spec not in binds:
                binds.append(spec)
        return binds

    def command(self, request: LaunchRequest, gpus: int, cuda_visible_devices: str | None = None) -> list[str]:
        """The exact argv. `cuda_visible_devices` None leaves it out: a Slurm job script adds
        `--env "CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-}"`, the devices Slurm gave the job."""
        ws, env, sif = str(request.workspace), dict(request.env), str(self.sif(request.image))
        argv = [self.executable, "exec", "--cleanenv", "--containall"]
        if gpus:
            argv.append("--nv")
        if request.sandbox is not None:  # generated code: only its own folders, no network, scratch in /tmp
            mounts = Mounts.for_request(request.sandbox, env)
            mounts.prepare(None)
            argv += [*apptainer_args(mounts)[1:], "--pwd", "/tmp"]
            full_env = {**env, **SCRATCH_ENV, "PYTHONUNBUFFERED": "1", "MERGEBENCH_IMAGE": sif}
        else:
            argv += ["--pwd", ws]
            for bind in self.binds_for(env):
                argv += ["--bind", bind]
            full_env = {"HOME": f"{ws}/runs/.home", **cache_env(ws), **env, "PYTHONUNBUFFERED": "1",
                        "MERGEBENCH_IMAGE": sif}
        if cuda_visible_devices is not None:
            full_env["CUDA_VISIBLE_DEVICES"] = cuda_visible_devices
        for key, value in full_env.items():
            argv += ["--env", f"{key}={value}"]
        return [*argv, sif, "mergebench", *request.entry()]

    def start(self, request: LaunchRequest, gpus: list[int]) -> Handle:
        request.log.parent.mkdir(parents=True, exist_ok=True)
        Path(request.workspace, "runs", ".home").mkdir(parents=True, exist_ok=True)
        # with --nv every host GPU is visible, so the host's indices select the ones given to this stage
        argv = self.command(request, len(gpus), ",".join(map(str, gpus)))
        proc_env = {k: v for k, v in os.environ.items() if not k.startswith(("APPTAINERENV_", "SINGULARITYENV_"))}
        if request.hub and os.environ.get("HF_TOKEN"):
            proc_env["APPTAINERENV_HF_TOKEN"] = os.environ["HF_TOKEN"]  # only the fetch stage sees the token
        timeout = request.sandbox.policy.stage_timeout_s if request.sandbox is not None else None
        return spawn(argv, request.log, proc_env, env_prefix="APPTAINERENV_",  # --cleanenv passes only those
                     timeout_s=timeout)
