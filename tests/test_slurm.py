"""The Slurm runtime and the HPC config.

The first part checks the exact sbatch argv, job scripts, config errors and "Slurm unreachable"
messages anywhere. The second part submits real merge stages to a REAL Slurm (a single-node cluster
started by scripts/ci-slurm.sh) and is skipped, saying why, where no controller answers.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from launchreq import request_for

from mergebench.catalog import DOMAIN_NAMES
from mergebench.errors import MergeBenchError
from mergebench.pipeline.launch import submit_plan
from mergebench.pipeline.plan import Plan
from mergebench.pipeline.runner import Runner, stage_env
from mergebench.pipeline.stage import Stage
from mergebench.pipeline.workspace import Workspace
from mergebench.runtimes.hpc_config import HpcConfig, load_config, parse_config
from mergebench.runtimes.slurm import SlurmRuntime, ensure_slurm, job_states, read_jobs

sys.path.insert(0, str(Path(__file__).parent))

EXAMPLE = """
partition: gpu
account: proj123
time: {default: "02:00:00", eval: "1-00:00:00"}
gpus: 2
cpus: {default: 4, merge: 16}
mem: 64G
extra_sbatch_args: ["--qos=normal"]
container: apptainer
sif_dir: /shared/sif
binds: [/scratch]
"""


def stage(kind="merge", gpus=0, name="merge/ties", image="train") -> Stage:
    return Stage(name, kind, {"method": "ties"}, {"family": "fetch"}, image, gpus, "ab" * 32)


def req(s: Stage, spec="/ws/runs/m/spec.json", env=None, log=None, complete=None):
    """The stage's launch request; it waits on its inputs that are not in `complete` (when given)."""
    after = () if complete is None else tuple(n for n in s.inputs.values() if n not in complete)
    return request_for(s, spec, env or {"MERGEBENCH_WORKSPACE": "/ws"}, log, after)


# --- the config -----------------------------------------------------------------------------------------

def test_example_config_parses(tmp_path):
    path = tmp_path / "hpc.yaml"
    path.write_text(EXAMPLE)
    cfg = load_config(path)
    assert (cfg.partition, cfg.account, cfg.gpus, cfg.container, cfg.sif_dir) == \
        ("gpu", "proj123", 2, "apptainer", Path("/shared/sif"))
    assert cfg.for_kind("time", "eval") == "1-00:00:00" and cfg.for_kind("time", "merge") == "02:00:00"
    assert cfg.for_kind("cpus", "merge") == 16 and cfg.for_kind("cpus", "eval") == 4
    assert cfg.for_kind("mem", "stats") == "64G" and cfg.stage_gpus(0) == 0 and cfg.stage_gpus(1) == 2


def test_defaults_without_a_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MERGEBENCH_HPC_CONFIG", raising=False)
    cfg = load_config()
    assert cfg.container == "apptainer" and cfg.partition is None and cfg.stage_gpus(1) == 1


@pytest.mark.parametrize("text, field, words", [
    ("partiton: gpu", "partiton", "not a known field"),
    ("time: {merge: two hours}", "time.merge", "Slurm time"),
    ("cpus: 0", "cpus", "whole number"),
    ("mem: lots", "mem", "memory size"),
    ("container: docker", "container", "one of apptainer, local"),
    ("gpu_flag: cuda", "gpu_flag", "one of gres, gpus"),
    ("extra_sbatch_args: --qos=x", "extra_sbatch_args", "list of strings"),
    ("gpus: true", "gpus", "whole number"),
])
def test_malformed_field_names_file_and_field(tmp_path, text, field, words):
    path = tmp_path / "site.yaml"
    path.write_text(text + "\n")
    with pytest.raises(MergeBenchError) as e:
        load_config(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}: field '{field}'") and words in msg and "docs/hpc.md" in msg and "\n" not in msg


def test_unreadable_and_invalid_yaml(tmp_path):
    with pytest.raises(MergeBenchError, match=r"missing.yaml: cannot read the HPC config .*--hpc-config FILE"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("partition: [gpu\n")
    with pytest.raises(MergeBenchError, match=r"bad.yaml: not valid YAML at line 2"):
        load_config(bad)
    with pytest.raises(MergeBenchError, match=r"expected a mapping of fields"):
        parse_config(["gpu"], "list.yaml")


# --- what gets submitted --------------------------------------------------------------------------------

def test_sbatch_argv_is_exact(tmp_path):
    rt = SlurmRuntime(parse_config({"partition": "gpu", "account": "p1", "time": {"merge": "01:00:00"},
                                    "cpus": 8, "mem": "32G", "gpus": 2, "extra_sbatch_args": ["--qos=hi"],
                                    "container": "local"}))
    argv = rt.sbatch_argv(req(stage(gpus=1)), Path("/ws/runs/m/job.sh"), Path("/ws/runs/m/log.txt"), ["11", "12"])
    assert argv == ["sbatch", "--parsable", "--job-name", "mb-merge-ties", "--output", "/ws/runs/m/log.txt",
                    "--open-mode=append", "--kill-on-invalid-dep=yes", "--dependency=afterok:11:12",
                    "--partition", "gpu", "--account", "p1", "--time", "01:00:00", "--cpus-per-task", "8",
                    "--mem", "32G", "--gres=gpu:2", "--qos=hi", "/ws/runs/m/job.sh"]
    plain = SlurmRuntime(HpcConfig(container="local", gpu_flag="gpus"))
    assert plain.sbatch_argv(req(stage(kind="eval")), Path("j.sh"), Path("l.txt"), []) == [
        "sbatch", "--parsable", "--job-name", "mb-merge-ties", "--output", "l.txt", "--open-mode=append",
        "--kill-on-invalid-dep=yes", "j.sh"]
    assert "--gpus=1" in plain.sbatch_argv(req(stage(gpus=1)), Path("j.sh"), Path("l.txt"), [])


def test_local_job_script_is_exact(tmp_path):
    ws = Workspace(tmp_path / "ws")
    rt = SlurmRuntime(HpcConfig(container="local", python="/venv/bin/python"))
    spec = ws.run_dir(stage()) / "spec.json"
    w = str(ws.root)
    assert rt.job_script(req(stage(), spec, stage_env(ws, "merge"))) == "\n".join([
        "#!/bin/bash",
        f"# mergebench stage merge/ties (key {'ab' * 6}), written by the slurm runtime",
        "set -uo pipefail",
        f"cd {w}",
        f"export HF_HOME={w}/hf",
        f"export MERGEBENCH_WORKSPACE={w}",
        "export HF_HUB_OFFLINE=1",
        "export HF_DATASETS_OFFLINE=1",
        "export TRANSFORMERS_OFFLINE=1",
        "export PYTHONUNBUFFERED=1",
        "unset HF_TOKEN HUGGING_FACE_HUB_TOKEN",
        'echo "[slurm] job ${SLURM_JOB_ID:-?} on $(hostname) at $(date -u +%FT%TZ): stage merge/ties"',
        f"if /venv/bin/python -m mergebench.cli.main stage run {spec}; then exit 0; else code=$?; fi",
        'echo "[slurm] stage merge/ties failed: exit code $code"',
        "exit $code",
    ]) + "\n"


def test_apptainer_job_script_runs_the_sif_with_slurms_gpus(tmp_path):
    ws = Workspace(tmp_path / "ws")
    rt = SlurmRuntime(HpcConfig(container="apptainer", sif_dir=tmp_path / "sif", gpus=2))
    spec = Path("/ws/runs/m/spec.json")
    script = rt.job_script(req(stage(gpus=1), spec, stage_env(ws, "merge"))).splitlines()
    run = next(line for line in script if line.startswith("if "))
    argv = rt.apptainer.command(req(stage(gpus=1), spec, stage_env(ws, "merge")), 2)
    assert argv[:5] == ["apptainer", "exec", "--cleanenv", "--containall", "--nv"]
    assert argv[-5:] == [f"{tmp_path}/sif/train.sif", "mergebench", "stage", "run", str(spec)]
    assert run == (f'if {shlex.join(argv[:-5])} --env "CUDA_VISIBLE_DEVICES=${{CUDA_VISIBLE_DEVICES:-}}" '
                   f"{shlex.join(argv[-5:])}; then exit 0; else code=$?; fi")
    # what bash hands apptainer when Slurm gave the job devices 2 and 3
    out = subprocess.run(["bash", "-c", run.removeprefix("if ").split("; then")[0].replace("apptainer", "printf '%s\\n'", 1)],
                         env={"CUDA_VISIBLE_DEVICES": "2,3", "PATH": "/usr/bin:/bin"}, capture_output=True, text=True)
    assert out.stdout.splitlines() == [*argv[1:-5], "--env", "CUDA_VISIBLE_DEVICES=2,3", *argv[-5:]]
    fetch = rt.job_script(req(stage(kind="fetch", name="fetch"), spec, stage_env(ws, "fetch")))
    assert 'export APPTAINERENV_HF_TOKEN="$HF_TOKEN"' in fetch and "unset HF_TOKEN" not in fetch


def test_array_script_and_argv_are_exact(tmp_path):
    ws = Workspace(tmp_path / "ws")
    rt = SlurmRuntime(HpcConfig(container="local", python="/venv/bin/python", time={"eval": "30"}))
    a, b = stage(kind="eval", name="eval/base"), stage(kind="eval", name="eval/math")
    rows = [req(s, Path(f"/ws/runs/{s.slug}/spec.json"), stage_env(ws, "eval"), Path(f"/ws/runs/{s.slug}/log.txt"))
            for s in (a, b)]
    script = rt.array_script(rows)
    assert script.startswith("#!/bin/bash\n# mergebench job array of 2 stages, written by the slurm runtime\n"
                             'set -uo pipefail\ncase "${SLURM_ARRAY_TASK_ID:-}" in\n0)  # eval/base (key ')
    body = "\n".join("    " + line for line in rt._body(rows[1]))
    assert (f"1)  # eval/math (key {'ab' * 6})\n    exec >> /ws/runs/eval-math/log.txt 2>&1\n"
            f'    echo "[slurm] array task ${{SLURM_ARRAY_JOB_ID:-?}}_1: stage eval/math"\n{body}\n    ;;\n') in script
    assert script.endswith('*) echo "[slurm] no stage for array task ${SLURM_ARRAY_TASK_ID:-?}"; exit 2 ;;\nesac\n')
    assert rt.array_argv(rows[0], 2, Path("/ws/runs/slurm-arrays/eval-x.sh"), ["7"]) == [
        "sbatch", "--parsable", "--job-name", "mb-eval-array", "--output", "/ws/runs/slurm-arrays/eval-x.%a.out",
        "--open-mode=append", "--kill-on-invalid-dep=yes", "--dependency=afterok:7", "--time", "30",
        "--array=0-1", "/ws/runs/slurm-arrays/eval-x.sh"]


def test_evaluations_waiting_on_the_same_stages_form_arrays():
    from mergebench.pipeline.plan import build_plan

    plan = build_plan("llama-3.2-3b", ["ties"])
    groups = SlurmRuntime(HpcConfig(container="local")).array_groups([req(s, complete=set()) for s in plan.stages])
    names = sorted(sorted(s.name for s in g) for g in groups)
    first_evals = sorted(f"eval/{m}/{h}" for m in ("base", *DOMAIN_NAMES)
                         for h in ("lmeval", "bigcode-generate", "safety"))
    assert names == [first_evals, sorted(f"eval/merge:ties/{h}" for h in ("lmeval", "bigcode-generate", "safety"))]
    # with the family complete, the specialist evaluations wait on nothing: still one array
    waiting = [s for s in plan.stages if s.name != "fetch"]
    assert len(SlurmRuntime(HpcConfig(container="local")).array_groups([req(s, complete={"fetch"}) for s in waiting])[0]) == 18
    assert SlurmRuntime(HpcConfig(container="local", array_kinds=[])).array_groups([req(s, complete=set()) for s in plan.stages]) == []


def test_array_kinds_must_be_stage_kinds():
    assert parse_config({"array_kinds": []}).array_kinds == [] and HpcConfig().array_kinds == ["eval"]
    with pytest.raises(MergeBenchError, match=r"field 'array_kinds' names an unknown stage kind 'evals'"):
        parse_config({"array_kinds": ["evals"]}, "hpc.yaml")


def test_image_id_local_matches_the_local_runtime():
    assert SlurmRuntime(HpcConfig(container="local")).image_id("train") == "local"


def test_a_job_gone_from_slurm_is_judged_by_its_output(tmp_path):
    from mergebench.runtimes.slurm import SlurmHandle

    done = tmp_path / "manifest.json"
    first = SlurmHandle("999999999", done, poll_every=0, vanish_after=3600)
    assert first.poll() is None  # not visible (yet): still waiting
    assert SlurmHandle("999999999", done, poll_every=0, vanish_after=0).poll() == 1
    done.write_text("{}")
    assert SlurmHandle("999999999", done, poll_every=0, vanish_after=0).poll() == 0


def test_no_sbatch_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(MergeBenchError, match=r"Slurm is not available here \(sbatch is not on PATH\); .*ci-slurm.sh"):
        ensure_slurm()


@pytest.mark.skipif(shutil.which("sinfo") is None, reason="Slurm's client commands are not installed")
def test_controller_down_is_a_one_line_error(tmp_path, monkeypatch):
    conf = tmp_path / "slurm.conf"  # a real client pointed at a port where no controller listens
    conf.write_text("ClusterName=nowhere\nSlurmctldHost=localhost(127.0.0.1)\nSlurmctldPort=6999\nMessageTimeout=2\n"
                    "AuthType=auth/munge\nNodeName=localhost CPUs=1\nPartitionName=p Nodes=localhost\n")
    monkeypatch.setenv("SLURM_CONF", str(conf))
    with pytest.raises(MergeBenchError) as e:
        ensure_slurm()
    assert str(e.value).startswith("the Slurm controller is not reachable (sinfo:") and "scontrol ping" in str(e.value)


def test_status_without_submissions(tmp_path):
    from mergebench.cli.hpc_cmd import status_command

    result = CliRunner().invoke(status_command, ["--workspace", str(tmp_path)])
    assert isinstance(result.exception, MergeBenchError) and "mergebench submit" in str(result.exception)


# --- a real Slurm ---------------------------------------------------------------------------------------

def slurm_answers() -> str | None:
    """None when a controller answers, else why the real-Slurm tests are skipped."""
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return "Slurm is not installed (run scripts/ci-slurm.sh as root to start a single-node cluster)"
    try:
        r = subprocess.run(["sinfo", "--noheader", "--format", "%t"], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return "the Slurm controller does not answer (run scripts/ci-slurm.sh)"
    if r.returncode != 0 or not r.stdout.strip():
        return f"the Slurm controller does not answer ({r.stderr.strip()[:120]}); run scripts/ci-slurm.sh"
    return None


real_slurm = pytest.mark.skipif(slurm_answers() is not None, reason=str(slurm_answers()))


def build_family(out: Path) -> None:
    """A completed family stage's output: a tiny base and five specialists, with models.json."""
    from tinymodels import build_base, build_specialist

    base = build_base("llama-tied", out / "base")
    models = {"base": str(base)}
    for i, domain in enumerate(DOMAIN_NAMES):
        models[domain] = str(build_specialist(base, out / domain, seed=10 + i))
    (out / "models.json").write_text(json.dumps(models))
    (out / "manifest.json").write_text(json.dumps({"stage": "test family", "exit_code": 0}))


def merge(name: str, method: str, after: str | None = None) -> Stage:
    inputs = {"family": "fetch/family", **({"after": after} if after else {})}
    return Stage(name, "merge", {"method": method, "settings": {}}, inputs, "train")


def make_plan(*stages: Stage) -> Plan:
    plan = Plan("slurm-test")
    plan.add(Stage("fetch/family", "fetch", {"family": "tiny test family"}, {}, "train"))
    for s in stages:
        plan.add(s)
    plan.assign_keys(lambda image: "local")
    return plan


def full_plan() -> Plan:
    return make_plan(merge("merge/soup", "soup"), merge("merge/after-soup", "task_arithmetic", "merge/soup"),
                     merge("merge/broken", "no_such_method"), merge("merge/after-broken", "soup", "merge/broken"))


def wait_for(job_ids, timeout: float = 300) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        states = job_states(list(job_ids))
        if len(states) == len(set(job_ids)) and not any(s.active for s in states.values()):
            return states
        time.sleep(1)
    raise AssertionError(f"Slurm jobs {sorted(job_ids)} did not finish in {timeout} s: {job_states(list(job_ids))}")


@pytest.fixture(scope="module")
def cluster_run(tmp_path_factory):
    if slurm_answers() is not None:
        pytest.skip(str(slurm_answers()))
    ws = Workspace(tmp_path_factory.mktemp("slurm") / "ws").ensure()
    plan = full_plan()
    build_family(ws.output(plan.by_name["fetch/family"]))
    held = SlurmRuntime(HpcConfig(container="local", extra_sbatch_args=["--hold"]))
    first = submit_plan(plan, ws, held)  # held: nothing starts before we look at the queue
    again = submit_plan(plan, ws, SlurmRuntime(HpcConfig(container="local")))
    deps = {name: _scontrol(job)["Dependency"] for name, job in first.submitted.items()}
    subprocess.run(["scontrol", "release", ",".join(first.submitted.values())], check=True, capture_output=True)
    states = wait_for(first.submitted.values())
    return ws, plan, first, again, deps, states


def _scontrol(job: str) -> dict[str, str]:
    out = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True, check=True).stdout
    return dict(tok.split("=", 1) for tok in out.split() if "=" in tok)


@real_slurm
def test_submits_incomplete_stages_chained_with_afterok(cluster_run):
    ws, plan, first, again, deps, _ = cluster_run
    assert first.complete == ["fetch/family"]
    assert sorted(first.submitted) == ["merge/after-broken", "merge/after-soup", "merge/broken", "merge/soup"]
    jobs = first.submitted
    assert deps["merge/soup"] == "(null)" and deps["merge/broken"] == "(null)"
    assert deps["merge/after-soup"].startswith(f"afterok:{jobs['merge/soup']}")
    assert deps["merge/after-broken"].startswith(f"afterok:{jobs['merge/broken']}")
    recorded = read_jobs(ws.root)
    assert {n: r["job_id"] for n, r in recorded.items()} == jobs
    assert recorded["merge/after-soup"]["after"] == [jobs["merge/soup"]]
    assert (ws.run_dir(plan.by_name["merge/soup"]) / "job.sh").is_file()


@real_slurm
def test_resubmitting_while_queued_submits_nothing(cluster_run):
    _, _, first, again, _, _ = cluster_run
    assert again.submitted == {} and again.queued == first.submitted and again.complete == ["fetch/family"]


@real_slurm
def test_jobs_complete_in_dependency_order_with_manifests_and_logs(cluster_run):
    ws, plan, first, _, _, states = cluster_run
    assert states[first.submitted["merge/soup"]].state == "COMPLETED"
    assert states[first.submitted["merge/after-soup"]].state == "COMPLETED"
    manifests = {}
    for name in ("merge/soup", "merge/after-soup"):
        s = plan.by_name[name]
        assert ws.is_complete(s) and (ws.output(s) / "model" / "config.json").is_file()
        manifests[name] = json.loads((ws.output(s) / "manifest.json").read_text())
        assert manifests[name]["environment"]["env"]["SLURM_JOB_ID"] == first.submitted[name]
        log = ws.log(s).read_text()
        assert f"[slurm] job {first.submitted[name]} on " in log and f"[{name}] merge" in log and "done in" in log
    assert manifests["merge/after-soup"]["started_unix"] >= manifests["merge/soup"]["finished_unix"]


@real_slurm
def test_failed_stage_dependants_never_run(cluster_run):
    ws, plan, first, _, _, states = cluster_run
    broken, after = first.submitted["merge/broken"], first.submitted["merge/after-broken"]
    assert states[broken].state == "FAILED"
    assert "[slurm] stage merge/broken failed: exit code 1" in ws.log(plan.by_name["merge/broken"]).read_text()
    assert "unknown method 'no_such_method'" in ws.log(plan.by_name["merge/broken"]).read_text()
    assert (states[after].state, states[after].reason) == ("CANCELLED", "DependencyNeverSatisfied")
    assert not ws.is_complete(plan.by_name["merge/after-broken"])
    log = ws.log(plan.by_name["merge/after-broken"])
    assert not log.exists() or "[merge/after-broken]" not in log.read_text()


@real_slurm
def test_status_lists_every_job(cluster_run):
    from mergebench.cli.hpc_cmd import status_command

    ws, _, first, _, _, _ = cluster_run
    result = CliRunner().invoke(status_command, ["--workspace", str(ws.root), "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["stage"]: r for r in json.loads(result.stdout)}
    assert {n: r["job_id"] for n, r in rows.items()} == first.submitted
    assert {n: r["state"] for n, r in rows.items()} == {
        "merge/soup": "COMPLETED", "merge/after-soup": "COMPLETED", "merge/broken": "FAILED",
        "merge/after-broken": "CANCELLED"}
    assert rows["merge/soup"]["complete"] and not rows["merge/broken"]["complete"]
    table = CliRunner().invoke(status_command, ["--workspace", str(ws.root)])
    assert table.exit_code == 0 and all(job in table.output for job in first.submitted.values())
    assert "DependencyNeverSatisfied" in table.output


@real_slurm
def test_rerun_submits_nothing_for_complete_stages(cluster_run):
    ws, plan, first, _, _, _ = cluster_run
    rt = SlurmRuntime(HpcConfig(container="local", extra_sbatch_args=["--hold"]))
    good = make_plan(merge("merge/soup", "soup"), merge("merge/after-soup", "task_arithmetic", "merge/soup"))
    again = submit_plan(good, ws, rt)
    assert again.submitted == {} and again.queued == {}
    assert again.complete == ["fetch/family", "merge/soup", "merge/after-soup"]
    retry = submit_plan(full_plan(), ws, rt)  # the failed stage and its dependant are submitted again, nothing else
    try:
        assert sorted(retry.submitted) == ["merge/after-broken", "merge/broken"]
        assert read_jobs(ws.root)["merge/after-broken"]["after"] == [retry.submitted["merge/broken"]]
        assert read_jobs(ws.root)["merge/soup"]["job_id"] == first.submitted["merge/soup"]
    finally:
        subprocess.run(["scancel", *retry.submitted.values()], capture_output=True)


@real_slurm
def test_the_runner_drives_slurm_jobs_too(cluster_run):
    ws, _, _, _, _, _ = cluster_run
    plan = make_plan(merge("merge/by-runner", "task_arithmetic"))
    summary = Runner(plan, ws, SlurmRuntime(HpcConfig(container="local"))).run()
    assert summary.status == {"fetch/family": "skipped", "merge/by-runner": "done"}
    job = read_jobs(ws.root)["merge/by-runner"]["job_id"]
    assert f"[slurm] job {job}" in ws.log(plan.by_name["merge/by-runner"]).read_text()


@real_slurm
def test_submit_command_submits_the_tiny_plan(tmp_path):
    from mergebench.cli.hpc_cmd import submit_command

    cfg = tmp_path / "hpc.yaml"
    cfg.write_text(f"container: local\npython: {sys.executable}\nextra_sbatch_args: [--hold]\n")
    ws = tmp_path / "ws"
    result = CliRunner().invoke(submit_command, ["--workspace", str(ws), "--hpc-config", str(cfg),
                                                 "--methods", "soup", "--eval-limit", "4"])
    jobs = read_jobs(ws)
    try:
        assert result.exit_code == 0, result.output
        assert "job(s) submitted" in result.output and "fetch/tiny" in jobs and "report" in jobs
        assert jobs["fetch/tiny"]["after"] == [] and jobs["merge/soup"]["after"] == [jobs["fetch/tiny"]["job_id"]]
        assert len(jobs["report"]["after"]) == 8
    finally:
        subprocess.run(["scancel", *[r["job_id"] for r in jobs.values()]], capture_output=True)


@pytest.fixture(scope="module")
def array_run(tmp_path_factory):
    """Merges as one job array (array_kinds: [merge]): the same path evaluation stages take."""
    if slurm_answers() is not None:
        pytest.skip(str(slurm_answers()))
    ws = Workspace(tmp_path_factory.mktemp("slurm-array") / "ws").ensure()
    plan = make_plan(merge("merge/soup", "soup"), merge("merge/broken", "no_such_method"),
                     merge("merge/ta", "task_arithmetic"),
                     merge("merge/after-soup", "task_arithmetic", "merge/soup"),
                     merge("merge/after-broken", "soup", "merge/broken"))
    build_family(ws.output(plan.by_name["fetch/family"]))
    cfg = dict(container="local", array_kinds=["merge"])
    first = submit_plan(plan, ws, SlurmRuntime(HpcConfig(**cfg, extra_sbatch_args=["--hold"])))
    again = submit_plan(plan, ws, SlurmRuntime(HpcConfig(**cfg)))
    held = sorted({job.split("_")[0] for job in first.submitted.values()})
    subprocess.run(["scontrol", "release", ",".join(held)], check=True, capture_output=True)
    return ws, plan, first, again, wait_for(first.submitted.values())


@real_slurm
def test_stages_with_the_same_inputs_go_out_as_one_array(array_run):
    ws, plan, first, again, states = array_run
    jobs = first.submitted
    array = jobs["merge/soup"].split("_")[0]
    assert [jobs[n] for n in ("merge/soup", "merge/broken", "merge/ta")] == [f"{array}_{i}" for i in range(3)]
    assert jobs["merge/after-soup"].isdigit() and jobs["merge/after-broken"].isdigit()  # different inputs: own jobs
    recorded = read_jobs(ws.root)
    assert recorded["merge/after-soup"]["after"] == [f"{array}_0"]
    assert recorded["merge/after-broken"]["after"] == [f"{array}_1"]
    assert again.submitted == {} and again.queued == jobs
    assert {n: states[j].state for n, j in jobs.items()} == {
        "merge/soup": "COMPLETED", "merge/broken": "FAILED", "merge/ta": "COMPLETED",
        "merge/after-soup": "COMPLETED", "merge/after-broken": "CANCELLED"}
    for name in ("merge/soup", "merge/ta", "merge/after-soup"):
        s = plan.by_name[name]
        assert ws.is_complete(s) and f"[{name}] merge" in ws.log(s).read_text()
    assert f"[slurm] array task {array}_0: stage merge/soup" in ws.log(plan.by_name["merge/soup"]).read_text()
    assert "unknown method" in ws.log(plan.by_name["merge/broken"]).read_text()
    assert "unknown method" not in ws.log(plan.by_name["merge/soup"]).read_text()
    ta = json.loads((ws.output(plan.by_name["merge/after-soup"]) / "manifest.json").read_text())
    soup = json.loads((ws.output(plan.by_name["merge/soup"]) / "manifest.json").read_text())
    assert ta["started_unix"] >= soup["finished_unix"]


@real_slurm
def test_the_whole_tiny_plan_runs_on_slurm(tmp_path, tiny_run):
    """Every stage kind as a Slurm job, evaluations as one job array. The family is the session's
    (`tiny_run`, same keys: the native environment), so the plan's fetch stage is found complete and
    the run fits in CI; every other stage runs as a job."""
    from mergebench.pipeline.plan import build_plan

    rt = SlurmRuntime(HpcConfig(container="local"))
    plan = build_plan("tiny", ["soup"], image_id=rt.image_id, eval_limit=4)
    ws = Workspace(tmp_path / "ws").ensure()
    fetch = plan.by_name["fetch/tiny"]
    shutil.copytree(Workspace(tiny_run[0]).output(fetch), ws.output(fetch))
    first = submit_plan(plan, ws, rt)
    assert set(first.submitted) == {s.name for s in plan.stages} - {"fetch/tiny"}
    assert len({first.submitted[f"eval/{m}"].split("_")[0] for m in ("base", *DOMAIN_NAMES, "multitask")}) == 1
    states = wait_for(first.submitted.values(), timeout=1200)
    assert {s.state for s in states.values()} == {"COMPLETED"}
    assert (ws.output(plan.by_name["report"]) / "report.md").is_file()
    again = submit_plan(plan, ws, rt)
    assert again.submitted == {} and len(again.complete) == len(plan.stages)
