"""Submit launch requests to Slurm: one sbatch job per request, chained with afterok.

`SlurmRuntime.submit(requests, root)` takes the requests of every stage that is not complete (the
pipeline's `submit_plan` makes them, specs written, each naming the requests it waits on) and writes a
job script beside each spec (runs/<stage>/job.sh), submitted with `--dependency=afterok:<the jobs of the
requests it waits on>` and `--kill-on-invalid-dep=yes`, so a failed stage's dependants are cancelled by Slurm instead of waiting
forever. The job runs the one entry point, `mergebench stage run SPEC`, either natively with the
orchestrator's Python (container: local) or in the stage's SIF (container: apptainer, the default).
Submissions are recorded in runs/slurm_jobs.json (stage -> job id, key, output, log): `mergebench
status` reads it, and a second submit reuses jobs that are still pending or running instead of
submitting them again; complete stages are never requested. The orchestrator does not need to stay up.
Evaluation stages that wait on the same jobs go out as one job array (config `array_kinds`), each
task with its own spec and log, and each dependant waiting on its own task (afterok:<array>_<task>).

The Runtime interface (start/poll/stop) is implemented too, one job per request with no Slurm
dependencies, so the ordinary runner can drive Slurm as well; `submit` is the HPC way.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from mergebench.errors import MergeBenchError
from mergebench.files import write_text_atomic
from mergebench.runtimes.base import Handle, Runtime
from mergebench.runtimes.hpc_config import HpcConfig, load_config
from mergebench.runtimes.request import TOKENS, LaunchRequest

JOBS_FILE = "slurm_jobs.json"
ACTIVE = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "REQUEUE_HOLD",
          "REQUEUE_FED", "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED", "RESV_DEL_HOLD"}
NEVER = "DependencyNeverSatisfied"
WHAT_TO_DO = ("submit from a cluster login node, start a single-node test cluster with scripts/ci-slurm.sh, "
              "or run without Slurm (--runtime local)")


@dataclass
class JobState:
    state: str  # Slurm's state name (PENDING, RUNNING, COMPLETED, FAILED, CANCELLED, ...) or UNKNOWN
    reason: str = ""
    name: str = ""  # the job's name, when squeue knows it

    @property
    def active(self) -> bool:
        return self.state in ACTIVE and self.reason != NEVER


@dataclass
class Submission:
    submitted: dict[str, str] = field(default_factory=dict)  # stage -> new job id
    queued: dict[str, str] = field(default_factory=dict)  # stage -> job id already pending/running
    complete: list[str] = field(default_factory=list)  # stages whose output exists


# --- the submissions file ------------------------------------------------------------------------------

def jobs_path(root: str | os.PathLike) -> Path:
    """The submissions file of the workspace at `root`."""
    return Path(root) / "runs" / JOBS_FILE


def read_jobs(root: str | os.PathLike) -> dict[str, dict]:
    path = jobs_path(root)
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise MergeBenchError(f"{path}: unreadable submissions file ({e}); move it away to start over "
                              "(jobs it lists keep running)") from None


def write_jobs(root: str | os.PathLike, jobs: dict[str, dict]) -> None:
    write_text_atomic(jobs_path(root), json.dumps(jobs, indent=2, sort_keys=True) + "\n")


# --- talking to Slurm ----------------------------------------------------------------------------------

def _first_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[0] if lines else "no output"


def ensure_slurm(timeout: float = 30) -> None:
    """A one-line error when Slurm's commands are missing or its controller does not answer."""
    for tool in ("sbatch", "squeue", "sinfo"):
        if shutil.which(tool) is None:
            raise MergeBenchError(f"Slurm is not available here ({tool} is not on PATH); {WHAT_TO_DO}")
    try:
        r = subprocess.run(["sinfo", "--noheader", "--format", "%P"], capture_output=True, text=True,
                           timeout=timeout)
    except subprocess.TimeoutExpired:
        raise MergeBenchError(f"the Slurm controller did not answer within {timeout:.0f} s (sinfo); check "
                              f"`scontrol ping`, or {WHAT_TO_DO}") from None
    if r.returncode != 0:
        raise MergeBenchError(f"the Slurm controller is not reachable (sinfo: {_first_line(r.stderr)}); check "
                              f"`scontrol ping`, or {WHAT_TO_DO}")


def job_states(job_ids: list[str], timeout: float = 30) -> dict[str, JobState]:
    """State of each job (`123` or array task `123_4`): squeue, which also lists recently finished
    jobs, then sacct (when the cluster keeps accounting) for the rest."""
    ids = sorted({str(j) for j in job_ids}, key=lambda j: (len(j), j))
    if not ids:
        return {}
    out: dict[str, JobState] = {}
    try:
        r = subprocess.run(["squeue", "--noheader", "--array", "--states=all", "--jobs", ",".join(ids),
                            "--format", "%i|%T|%r|%j"], capture_output=True, text=True, timeout=timeout)
        for line in r.stdout.splitlines():
            parts = line.strip().split("|", 3)
            if len(parts) == 4 and parts[0] in ids:
                out[parts[0]] = JobState(parts[1], "" if parts[2] == "None" else parts[2], parts[3])
    except (OSError, subprocess.TimeoutExpired):
        pass
    rest = [j for j in ids if j not in out]
    if rest and shutil.which("sacct"):
        try:
            r = subprocess.run(["sacct", "--noheader", "--allocations", "--parsable2", "--jobs", ",".join(rest),
                                "--format", "JobID,State"], capture_output=True, text=True, timeout=timeout)
            if r.returncode == 0:
                for line in r.stdout.splitlines():
                    parts = line.strip().split("|")
                    if len(parts) == 2 and parts[0] in rest:
                        out[parts[0]] = JobState(parts[1].split()[0] if parts[1] else "UNKNOWN")
        except (OSError, subprocess.TimeoutExpired):
            pass
    return out


def cancel(job_ids: list[str]) -> None:
    if job_ids and shutil.which("scancel"):
        subprocess.run(["scancel", *map(str, job_ids)], capture_output=True, timeout=60)


# --- the runtime ---------------------------------------------------------------------------------------

class SlurmHandle(Handle):
    """One submitted job, for the ordinary runner."""

    def __init__(self, job_id: str, done: Path, poll_every: float = 2.0, vanish_after: float = 120.0):
        self.job_id, self.done = job_id, done
        self.poll_every, self.vanish_after = poll_every, vanish_after
        self._last = 0.0
        self._unseen_since: float | None = None
        self._code: int | None = None

    def poll(self) -> int | None:
        if self._code is not None or time.time() - self._last < self.poll_every:
            return self._code
        self._last = time.time()
        state = job_states([self.job_id]).get(self.job_id)
        if state is None:  # not visible yet, or purged from squeue on a cluster without accounting
            self._unseen_since = self._unseen_since or time.time()
            if time.time() - self._unseen_since < self.vanish_after:
                return None
            self._code = 0 if self.done.is_file() else 1
            return self._code
        self._unseen_since = None
        if state.active:
            return None
        self._code = 0 if state.state == "COMPLETED" else 1
        return self._code

    def stop(self) -> None:
        cancel([self.job_id])
        if self._code is None:
            self._code = 143


class SlurmRuntime(Runtime):
    name = "slurm"

    def __init__(self, config: HpcConfig | str | os.PathLike | None = None):
        self.config = config if isinstance(config, HpcConfig) else load_config(config)
        self.apptainer = None
        if self.config.container == "apptainer":
            from mergebench.runtimes.apptainer import ApptainerRuntime

            self.apptainer = ApptainerRuntime(self.config.sif_dir, self.config.binds)

    def image_id(self, image: str) -> str:
        """The SIF's digest with apptainer; `local` natively (the same keys as the local runtime)."""
        return self.apptainer.image_id(image) if self.apptainer else "local"

    def check(self, images, gpus: bool = False) -> None:
        """Slurm answers, and every SIF exists (apptainer itself is needed on the compute nodes, where
        a missing one shows in the stage's log)."""
        ensure_slurm()
        if self.apptainer:
            for image in sorted(set(images)):
                path = self.apptainer.sif(image)
                if not path.is_file():
                    from mergebench.runtimes.apptainer import build_command

                    raise MergeBenchError(f"Apptainer image {path} is missing; build it with `make sif SIF_DIR="
                                          f"{self.apptainer.sif_dir}` (runs `{build_command(image, self.apptainer.sif_dir, self.apptainer.track)}`)"
                                          f" or set sif_dir in {self.config.source}")

    # -- what gets submitted --

    def sbatch_argv(self, request: LaunchRequest, script: Path, log: Path, after: list[str]) -> list[str]:
        cfg = self.config
        argv = ["sbatch", "--parsable", "--job-name", f"mb-{request.slug}", "--output", str(log),
                "--open-mode=append", "--kill-on-invalid-dep=yes"]
        if after:
            argv.append("--dependency=afterok:" + ":".join(after))
        if cfg.partition:
            argv += ["--partition", cfg.partition]
        if cfg.account:
            argv += ["--account", cfg.account]
        time_limit = cfg.for_kind("time", request.kind)
        if time_limit:
            argv += ["--time", time_limit]
        cpus = cfg.for_kind("cpus", request.kind)
        if cpus:
            argv += ["--cpus-per-task", str(cpus)]
        mem = cfg.for_kind("mem", request.kind)
        if mem:
            argv += ["--mem", mem]
        gpus = cfg.stage_gpus(request.gpus)
        if gpus:
            argv.append(f"--gres=gpu:{gpus}" if cfg.gpu_flag == "gres" else f"--gpus={gpus}")
        argv += [*cfg.extra_sbatch_args, str(script)]
        return argv

    def stage_command(self, request: LaunchRequest) -> list[str]:
        if self.apptainer:
            return self.apptainer.command(request, self.config.stage_gpus(request.gpus))
        return [self.config.python, "-m", "mergebench.cli.main", *request.entry()]

    def _body(self, request: LaunchRequest) -> list[str]:
        """The lines that run one request: its environment, then the entry point, reporting a failure."""
        ws = str(request.workspace)
        q = shlex.quote
        lines = [f"cd {q(ws)}"]
        lines += [f"export {k}={q(v)}" for k, v in {**request.env, "PYTHONUNBUFFERED": "1"}.items()]
        if not request.hub:
            lines.append("unset " + " ".join(TOKENS))  # only the fetch stage may see a hub token
        command = shlex.join(self.stage_command(request))
        if self.apptainer:
            lines.append(f"mkdir -p {q(ws + '/runs/.home')}")
            if request.hub:  # the token through the environment, never on a command line
                lines.append('if [ -n "${HF_TOKEN:-}" ]; then export APPTAINERENV_HF_TOKEN="$HF_TOKEN"; fi')
            # the devices Slurm gave this job, expanded when the job runs (placed before the SIF argument)
            sif = q(str(self.apptainer.sif(request.image)))
            head, _, tail = command.rpartition(f" {sif} ")
            command = f'{head} --env "CUDA_VISIBLE_DEVICES=${{CUDA_VISIBLE_DEVICES:-}}" {sif} {tail}'
        lines.append(f'echo "[slurm] job ${{SLURM_JOB_ID:-?}} on $(hostname) at $(date -u +%FT%TZ): '
                     f'stage {request.name}"')
        lines.append(f"if {command}; then exit 0; else code=$?; fi")
        lines.append(f'echo "[slurm] stage {request.name} failed: exit code $code"')
        lines.append("exit $code")
        return lines

    def job_script(self, request: LaunchRequest) -> str:
        lines = ["#!/bin/bash",
                 f"# mergebench stage {request.name} (key {request.key[:12]}), written by the slurm runtime",
                 "set -uo pipefail", *self._body(request)]
        return "\n".join(lines) + "\n"

    def array_script(self, members: list[LaunchRequest]) -> str:
        """One job array for several requests: task i runs member i, its output appended to that stage's log."""
        lines = ["#!/bin/bash",
                 f"# mergebench job array of {len(members)} stages, written by the slurm runtime",
                 "set -uo pipefail", 'case "${SLURM_ARRAY_TASK_ID:-}" in']
        for i, request in enumerate(members):
            lines.append(f"{i})  # {request.name} (key {request.key[:12]})")
            lines.append(f"    exec >> {shlex.quote(str(request.log))} 2>&1")
            lines.append(f'    echo "[slurm] array task ${{SLURM_ARRAY_JOB_ID:-?}}_{i}: stage {request.name}"')
            lines += ["    " + line for line in self._body(request)]
            lines.append("    ;;")
        lines += ['*) echo "[slurm] no stage for array task ${SLURM_ARRAY_TASK_ID:-?}"; exit 2 ;;', "esac"]
        return "\n".join(lines) + "\n"

    def _run_sbatch(self, argv: list[str], what: str) -> str:
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        except FileNotFoundError:
            raise MergeBenchError(f"Slurm is not available here (sbatch is not on PATH); {WHAT_TO_DO}") from None
        except subprocess.TimeoutExpired:
            raise MergeBenchError(f"sbatch did not answer within 120 s for {what}; check `scontrol ping`; stages "
                                  "submitted so far are in runs/slurm_jobs.json") from None
        job_id = r.stdout.strip().split(";")[0]
        if r.returncode != 0 or not job_id.isdigit():
            raise MergeBenchError(f"sbatch refused {what} ({_first_line(r.stderr or r.stdout)}); check "
                                  f"partition, account, time, cpus, mem and gpus in {self.config.source}")
        return job_id

    def _sbatch(self, request: LaunchRequest, after: list[str]) -> str:
        script = request.specs[0].parent / "job.sh"
        script.write_text(self.job_script(request))
        script.chmod(0o755)
        request.log.parent.mkdir(parents=True, exist_ok=True)
        return self._run_sbatch(self.sbatch_argv(request, script, request.log, after), f"stage {request.name}")

    def array_argv(self, first: LaunchRequest, count: int, script: Path, after: list[str]) -> list[str]:
        """sbatch for a job array: the first member's resources (all members share kind and GPUs)."""
        argv = self.sbatch_argv(first, script, script.with_suffix(".%a.out"), after)
        argv[argv.index("--job-name") + 1] = f"mb-{first.kind}-array"
        return [*argv[:-1], f"--array=0-{count - 1}", argv[-1]]

    def _record(self, jobs: dict, request: LaunchRequest, job_id: str, after: list[str],
                job_name: str | None = None) -> None:
        jobs[request.name] = {"job_id": job_id, "job_name": job_name or f"mb-{request.slug}", "key": request.key,
                              "kind": request.kind, "output": str(request.done.parent), "done": str(request.done),
                              "log": str(request.log), "after": after, "container": self.config.container,
                              "submitted": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        write_jobs(request.workspace, jobs)

    def array_groups(self, requests: list[LaunchRequest]) -> list[list[LaunchRequest]]:
        """Requests of `array_kinds` that wait on the same requests (so on the same jobs), of one kind and
        asking for the same GPUs: each group of two or more goes out as one job array. A group's
        waits all come before its first member, so it can be submitted there, whole."""
        groups: dict[tuple, list[LaunchRequest]] = {}
        for request in requests:
            if request.kind in self.config.array_kinds:
                waits = tuple(sorted(set(request.after)))
                groups.setdefault((waits, request.kind, self.config.stage_gpus(request.gpus)), []).append(request)
        return [members for members in groups.values() if len(members) > 1]

    # -- the HPC way: every request at once --

    def submit(self, requests: list[LaunchRequest], root: str | os.PathLike) -> Submission:
        """Submit each request (in order: a request's waits come before it), reusing jobs still pending
        or running for the same stage key; the caller holds the workspace's lock.

        Requests of the config's `array_kinds` (evaluations by default) that wait on the same requests
        and need the same GPUs go out as one job array; each still has its own spec, log and record, and
        its dependants wait on its own array task (afterok:<array>_<task>)."""
        jobs = read_jobs(root)
        states = job_states([r["job_id"] for r in jobs.values()])
        result = Submission()
        job_of: dict[str, str] = {}  # request -> its job this time (new or reused)
        to_submit: list[LaunchRequest] = []
        for request in requests:
            old = jobs.get(request.name)
            old_state = states.get(old["job_id"]) if old else None
            ours = old_state is not None and (not old_state.name or old_state.name == old.get("job_name",
                                                                                           old_state.name))
            if ours and old_state.active and old["key"] == request.key:
                job_of[request.name] = result.queued[request.name] = old["job_id"]
                continue
            if ours and old_state.state in ACTIVE:
                cancel([old["job_id"]])  # another configuration's job, or one that can never start
            to_submit.append(request)

        group_of = {r.name: members for members in self.array_groups(to_submit) for r in members}
        for request in to_submit:
            if request.name in job_of:
                continue  # went out with its array
            after = list(dict.fromkeys(job_of[n] for n in request.after if n in job_of))
            members = group_of.get(request.name)
            if members is None:
                job_id = self._sbatch(request, after)
                self._record(jobs, request, job_id, after)
                job_of[request.name] = result.submitted[request.name] = job_id
                continue
            tag = hashlib.sha256("".join(r.key for r in members).encode()).hexdigest()[:12]
            script = Path(root) / "runs" / "slurm-arrays" / f"{request.kind}-{tag}.sh"
            script.parent.mkdir(parents=True, exist_ok=True)
            script.write_text(self.array_script(members))
            script.chmod(0o755)
            array = self._run_sbatch(self.array_argv(request, len(members), script, after),
                                     f"the job array of {', '.join(r.name for r in members)}")
            for i, member in enumerate(members):
                self._record(jobs, member, f"{array}_{i}", after, f"mb-{member.kind}-array")
                job_of[member.name] = result.submitted[member.name] = f"{array}_{i}"
        return result

    # -- the Runtime interface: one job per request, ordered by the runner --

    def start(self, request: LaunchRequest, gpus: list[int]) -> Handle:
        job_id = self._sbatch(request, [])
        self._record(read_jobs(request.workspace), request, job_id, [])
        return SlurmHandle(job_id, request.done)


# --- status ---------------------------------------------------------------------------------------------

@dataclass
class StatusRow:
    stage: str
    job_id: str
    state: str
    reason: str
    complete: bool
    log: str


def job_table(root: str | os.PathLike) -> tuple[list[StatusRow], str | None]:
    """Each recorded stage with its job's state; the second value says why Slurm could not be asked."""
    jobs = read_jobs(root)
    warning = None
    try:
        ensure_slurm(timeout=15)
        states = job_states([r["job_id"] for r in jobs.values()])
    except MergeBenchError as e:
        states, warning = {}, str(e)
    rows = []
    for name, rec in jobs.items():
        complete = Path(rec.get("done") or Path(rec["output"], "manifest.json")).is_file()  # older files: no "done"
        st = states.get(rec["job_id"])
        if st is None:  # gone from squeue and no accounting: the workspace still knows the outcome
            st = JobState("COMPLETED" if complete else "UNKNOWN", "" if complete else "no longer known to Slurm")
        rows.append(StatusRow(name, rec["job_id"], st.state, st.reason, complete, rec["log"]))
    return rows, warning
