"""The setup's cache key and its bad inputs, through the real `tsubmit run` where a
user would see them (each bad input: exit 2, one line naming it, nothing started)."""

import os
import subprocess
import sys

import pytest

from tsubmit.errors import UsageError
from tsubmit.model.setup import settings


def _env(tmp_path) -> dict:
    # A bare environment but the import path (the code under test) and a home of its own.
    return {"TSUBMIT_HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin",
            "PYTHONPATH": os.environ.get("PYTHONPATH", "")}


def test_the_key_follows_the_setup_and_the_default_key_files(tmp_path):
    first = settings("pip install -r requirements.txt", None, tmp_path)
    assert first["key_files"] == []
    (tmp_path / "requirements.txt").write_text("torch\n")
    (tmp_path / "requirements-dev.txt").write_text("pytest\n")
    (tmp_path / "uv.lock").write_text("x\n")
    (tmp_path / "other.txt").write_text("not a key file\n")
    second = settings("pip install -r requirements.txt", None, tmp_path)
    assert second["key_files"] == ["requirements-dev.txt", "requirements.txt", "uv.lock"]
    assert second["key"] != first["key"]
    assert settings("pip install -r requirements.txt", None, tmp_path) == second, "stable"
    (tmp_path / "other.txt").write_text("changed\n")
    assert settings("pip install -r requirements.txt", None, tmp_path)["key"] == second["key"]
    (tmp_path / "uv.lock").write_text("y\n")
    assert settings("pip install -r requirements.txt", None, tmp_path)["key"] != second["key"]
    assert settings("pip install .", None, tmp_path)["key"] != second["key"], "the setup string counts"
    named = settings("pip install .", ["other.txt"], tmp_path)
    assert named["key_files"] == ["other.txt"]
    assert len(named["key"]) == 20 and int(named["key"], 16) >= 0


@pytest.mark.parametrize(("command", "keys", "message"), [
    ("  ", None, "--setup is empty"),
    ("x", ["missing.txt"], "--setup-key missing.txt: no such file in"),
    ("x", ["sub"], "--setup-key sub: "),
    (None, ["requirements.txt"], "--setup-key names the files a setup's cache follows: it goes with --setup"),
])
def test_bad_setup_input_is_named(tmp_path, command, keys, message):
    (tmp_path / "sub").mkdir()
    with pytest.raises(UsageError, match=message.replace("(", r"\(")):
        settings(command, keys, tmp_path)


@pytest.mark.parametrize(("args", "message"), [
    (["--setup-key", "nope.txt", "--setup", "true"], "tsubmit: --setup-key nope.txt: no such file in"),
    (["--setup", "true", "--image", "img:1"], "tsubmit: --setup runs on the node, outside the container"),
    (["--setup-key", "a"], "tsubmit: --setup-key names the files"),
])
def test_bad_setup_options_exit_2_before_anything_runs(tmp_path, args, message):
    process = subprocess.run([sys.executable, "-m", "tsubmit", "run", "--dry-run", "--workdir", str(tmp_path),
                              *args, "--", "python", "x.py"], capture_output=True, text=True,
                             env=_env(tmp_path))
    assert process.returncode == 2, process.stderr
    assert process.stderr.startswith(message), process.stderr
    assert "Traceback" not in process.stderr


def test_a_spec_file_takes_setup_and_setup_key(tmp_path):
    (tmp_path / "deps.txt").write_text("a\n")
    (tmp_path / "job.yaml").write_text("command: python x.py\nsetup: pip install -r deps.txt\n"
                                       "setup_key: [deps.txt]\n")
    process = subprocess.run([sys.executable, "-m", "tsubmit", "run", "--dry-run", "-f",
                              str(tmp_path / "job.yaml"), "-o", "json"], capture_output=True, text=True,
                             env=_env(tmp_path))
    assert process.returncode == 0, process.stderr
    assert '"command": "pip install -r deps.txt"' in process.stdout
    assert '"key_files": [\n        "deps.txt"' in process.stdout or '"deps.txt"' in process.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("command: python x.py\nsetup: [pip]\n")
    process = subprocess.run([sys.executable, "-m", "tsubmit", "run", "--dry-run", "-f", str(bad)],
                             capture_output=True, text=True,
                             env=_env(tmp_path))
    assert process.returncode == 2 and "line 2: 'setup' must be a string" in process.stderr, process.stderr


def test_gc_refuses_a_bad_setup_age_before_asking_any_node(tmp_path):
    process = subprocess.run([sys.executable, "-m", "tsubmit", "gc", "--setups-unused-for", "a month"],
                             capture_output=True, text=True, env=_env(tmp_path))
    assert process.returncode == 2, process.stderr
    assert "invalid duration 'a month'" in process.stderr
    assert not (tmp_path / "home" / "state" / "runs").exists(), "no playbook ran"


def test_print_spec_carries_setup_and_setup_key_and_runs_back(tmp_path):
    (tmp_path / "a.txt").write_text("a\n")
    (tmp_path / "b.txt").write_text("b\n")
    options = ["--workdir", str(tmp_path), "--setup", "pip install '{{ x }}'",
               "--setup-key", "a.txt", "--setup-key", "b.txt"]
    printed = subprocess.run([sys.executable, "-m", "tsubmit", "run", "--print-spec", *options,
                              "--", "python", "x.py"], capture_output=True, text=True, env=_env(tmp_path))
    assert printed.returncode == 0, printed.stderr
    assert "setup: pip install '{{ x }}'" in printed.stdout
    assert "setup_key:\n- a.txt\n- b.txt\n" in printed.stdout
    spec = tmp_path / "job.yaml"
    spec.write_text(printed.stdout)
    again = subprocess.run([sys.executable, "-m", "tsubmit", "run", "--print-spec", "-f", str(spec)],
                           capture_output=True, text=True, env=_env(tmp_path))
    assert again.stdout == printed.stdout, "the spec file runs back to the same options"
