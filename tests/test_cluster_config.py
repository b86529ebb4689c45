"""ray_cluster.yaml and .rayignore, checked offline: no cloud, no credentials, no Ray started.

The cluster config is validated the way `ray up` does before it talks to AWS: Ray's own
JSON schema (shipped in the installed Ray) and Ray's own default-filling and validation
(`prepare_config`, `validate_config`). On top of that, what this project needs of it: a GPU
worker type that scales from zero, the dependency pins of pyproject.toml, token auth, and
the MLflow tracking URI on every node. The .rayignore is checked with the matcher Ray uses
when it packs a `--working-dir` for upload.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path

import jsonschema
import pytest
import ray.autoscaler
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from ray._private.runtime_env.packaging import _dir_travel, get_excludes_from_ignore_files
from ray.autoscaler._private.util import prepare_config, validate_config

REPO = Path(__file__).resolve().parents[1]
CLUSTER_YAML = REPO / "ray_cluster.yaml"
RAYIGNORE = REPO / ".rayignore"
RAY_SCHEMA = Path(ray.autoscaler.__file__).parent / "ray-schema.json"


@pytest.fixture(scope="module")
def config() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


@pytest.fixture(scope="module")
def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _gpu_worker_types(config: dict) -> dict[str, dict]:
    return {
        name: node
        for name, node in config["available_node_types"].items()
        if name != config["head_node_type"] and node["resources"].get("GPU", 0) >= 1
    }


def _pip_requirements(commands: list[str]) -> dict[str, Requirement]:
    """Every requirement that a `pip install` among `commands` names, by canonical name."""
    found: dict[str, Requirement] = {}
    for command in commands:
        words = shlex.split(command)
        for i in range(len(words) - 1):
            if words[i] == "pip" and words[i + 1] == "install":
                for word in words[i + 2 :]:
                    if word in {"&&", ";", "||"}:
                        break
                    if not word.startswith("-"):
                        req = Requirement(word)
                        found[canonicalize_name(req.name)] = req
    return found


# --- what `ray up` checks before it launches anything -----------------------------------


def test_matches_rays_own_schema(config: dict) -> None:
    schema = json.loads(RAY_SCHEMA.read_text())
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(
        f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors
    )


def test_ray_prepares_and_validates_it_offline(config: dict) -> None:
    """`ray up` runs these two before it bootstraps the provider (which needs AWS)."""
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    head = prepared["available_node_types"][prepared["head_node_type"]]
    assert head["max_workers"] == 0
    # the common setup (dependencies, MLflow, token auth) reaches head and workers alike
    for key in ("head_setup_commands", "worker_setup_commands"):
        assert prepared[key][: len(config["setup_commands"])] == config["setup_commands"]


def test_every_shell_command_parses(config: dict) -> None:
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("bash not installed")
    keys = [k for k in config if k.endswith("_commands")]
    assert {"setup_commands", "head_start_ray_commands", "worker_start_ray_commands"} <= set(keys)
    for key in keys:
        for command in config[key]:
            run = subprocess.run([bash, "-n", "-c", command], capture_output=True, text=True)
            assert run.returncode == 0, f"{key}: {command!r}: {run.stderr}"


# --- what this project needs of it -------------------------------------------------------


def test_names_a_head_and_an_autoscaling_gpu_worker(config: dict) -> None:
    assert config["cluster_name"]
    assert config["provider"]["type"] == "aws"
    assert config["provider"]["region"]
    types = config["available_node_types"]
    assert config["head_node_type"] in types
    assert types[config["head_node_type"]]["resources"].get("GPU", 0) == 0
    gpu_workers = _gpu_worker_types(config)
    assert gpu_workers, "no worker type with GPU >= 1"
    for name, node in gpu_workers.items():
        assert node["resources"].get("CPU", 0) >= 1, name
        assert node.get("min_workers", 0) == 0, f"{name}: GPUs should scale from zero"
        assert node["max_workers"] > 0, name
        assert node["max_workers"] <= config["max_workers"], name
        assert node["node_config"]["InstanceType"], name
    assert config["idle_timeout_minutes"] > 0


def test_installs_the_pins_of_pyproject(config: dict, pyproject: dict) -> None:
    """Nodes get exactly pyproject's dependencies: bump one, and this fails until both agree."""
    wanted = {
        canonicalize_name(r.name): r for r in map(Requirement, pyproject["project"]["dependencies"])
    }
    installed = _pip_requirements(config["setup_commands"])
    assert set(installed) == set(wanted), (
        f"missing on nodes: {sorted(set(wanted) - set(installed))}, "
        f"not in pyproject: {sorted(set(installed) - set(wanted))}"
    )
    for name, req in wanted.items():
        got = installed[name]
        assert (got.specifier, got.extras) == (req.specifier, req.extras), f"{got} != {req}"
    for name in ("torch", "torchvision", "ray", "mlflow"):
        assert str(installed[name].specifier).startswith("=="), f"{name} is not pinned"


def test_images_match_pythons_and_rays_versions(config: dict, pyproject: dict) -> None:
    ray_pin = _pip_requirements(config["setup_commands"])["ray"].specifier
    (ray_version,) = (s.version for s in ray_pin)
    py = re.search(r">=\s*3\.(\d+)", pyproject["project"]["requires-python"]).group(1)
    docker = config["docker"]
    images = [docker[k] for k in ("image", "head_image", "worker_image") if k in docker]
    assert images
    for image in images:
        assert f":{ray_version}-py3{py}" in image, image
    assert "gpu" in docker.get("worker_image", docker.get("image", ""))


def test_token_auth_is_on_for_every_node(config: dict) -> None:
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        starts = [c for c in config[key] if "ray start" in c]
        assert starts, key
        for command in starts:
            assert "RAY_AUTH_MODE=token" in command, command
    # the token itself: the local ~/.ray (where `ray get-auth-token --generate` writes
    # auth_token) is mounted at the same place on every node
    mounts = config["file_mounts"]
    assert any(
        remote in ("~/.ray", "~/.ray/auth_token") and local == remote
        for remote, local in mounts.items()
    ), mounts
    # never a token written into the config itself
    assert "RAY_AUTH_TOKEN=" not in CLUSTER_YAML.read_text()


def test_mlflow_tracking_uri_reaches_the_nodes(config: dict) -> None:
    setup = "\n".join(config["setup_commands"])
    assert "export MLFLOW_TRACKING_URI=" in setup
    assert re.search(r"'https?://[^']+'", setup), "no http(s) tracking URI in setup_commands"
    # it lands in a file that ~/.bashrc sources: Ray runs every command, `ray start`
    # included, in a login shell that reads ~/.bashrc
    assert "~/.bashrc" in setup


def test_data_stays_out_of_rsync(config: dict) -> None:
    excluded = " ".join(config["rsync_exclude"])
    for name in (".git", ".venv", "demo-out", "mlflow.db", "reidentify.csv"):
        assert name in excluded, name


# --- .rayignore --------------------------------------------------------------------------


def _uploaded(root: Path) -> set[str]:
    """The files Ray would pack from `root` for a working_dir, by .rayignore alone."""
    files: set[str] = set()

    def handler(path: Path) -> None:
        if path.is_file():
            files.add(path.relative_to(root).as_posix())

    _dir_travel(root, [], handler, include_gitignore=False)
    return files


def test_rayignore_keeps_data_and_outputs_out_of_the_upload(tmp_path: Path) -> None:
    keep = [
        "pyproject.toml",
        "jobs/cli.py",
        "pipelines/screen/run.py",
        "mura_core/imaging/dicom.py",
        "bench/results/screen_cpu.json",
        "README.md",
    ]
    drop = [
        ".git/HEAD",
        ".venv/lib/python3.11/site-packages/torch/__init__.py",
        "demo-out/archive/MURA-v1.1/train_image_paths.csv",
        "demo-out/shards/images/part-0.parquet",
        "mlflow.db",
        "mlartifacts/1/abc/artifacts/model.pt",
        "mlruns/0/meta.yaml",
        "ray_results/run/checkpoint_000001/state.json",
        "jobs/__pycache__/cli.cpython-311.pyc",
        "mura_screen.egg-info/PKG-INFO",
        ".pytest_cache/v/cache/nodeids",
        ".ruff_cache/CACHEDIR.TAG",
        "bench/work/archive/x.png",
        "shards/images/part-0.parquet",
        "incoming/pt1/study1/image1.dcm",
        "screening/reidentify.csv",
    ]
    for rel in keep + drop:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    shutil.copy(RAYIGNORE, tmp_path / ".rayignore")

    uploaded = _uploaded(tmp_path)
    assert set(keep) <= uploaded
    assert not uploaded & set(drop), sorted(uploaded & set(drop))


def test_this_checkout_uploads_code_only() -> None:
    """What `--working-dir .` would pack from this very checkout, .gitignore set aside."""
    uploaded = _uploaded(REPO)
    assert {"pyproject.toml", "jobs/cli.py", ".rayignore", "ray_cluster.yaml"} <= uploaded
    top = {rel.split("/", 1)[0] for rel in uploaded}
    assert not top & {".git", ".venv", "demo-out", "mlartifacts", "mlruns", ".pytest_cache"}
    size = sum((REPO / rel).stat().st_size for rel in uploaded)
    assert size < 50 * 2**20, f"{size / 2**20:.0f} MiB would be uploaded with every job"


def test_rayignore_prunes_whole_folders() -> None:
    """Ray skips a matched folder without walking it: .venv must match as a folder."""
    (matches,) = get_excludes_from_ignore_files(REPO, include_gitignore=False)
    for folder in (".venv", "demo-out", ".git", "mlartifacts", "mlruns", "ray_results"):
        assert matches(REPO / folder), folder
    for kept in ("jobs", "pipelines", "mura_core", "pyproject.toml"):
        assert not matches(REPO / kept), kept
