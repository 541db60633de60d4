"""Run options -> RunRequest: every bad value is a UsageError (exit 2) naming it."""

from pathlib import Path

import pytest

from tsubmit.errors import EXIT_USAGE, UsageError
from tsubmit.jobs.request import RunRequest, load_env_file, parse_env_pairs, validate_request
from tsubmit.nodes.clusters import ClusterRef

# --- parse_env_pairs ---------------------------------------------------------------


def test_env_pairs_split_on_the_first_equals_only():
    pairs = ["A=1", "URL=postgres://u:p@h/db?x=y", "GREETING=hello big world", "EMPTY=", "_x9=ok"]
    assert parse_env_pairs(pairs) == {
        "A": "1",
        "URL": "postgres://u:p@h/db?x=y",
        "GREETING": "hello big world",
        "EMPTY": "",
        "_x9": "ok",
    }


def test_env_pairs_later_value_wins():
    assert parse_env_pairs(("A=1", "A=2")) == {"A": "2"}


def test_env_pair_without_equals_is_malformed():
    with pytest.raises(UsageError, match=r"malformed --env 'NOVALUE': expected KEY=VALUE") as info:
        parse_env_pairs(["NOVALUE"])
    assert info.value.exit_code == EXIT_USAGE


@pytest.mark.parametrize("key", ["1X", "A-B", "", "A B", "É", "A.B"])
def test_env_pair_with_an_invalid_name_is_rejected(key):
    with pytest.raises(UsageError, match="invalid variable name") as info:
        parse_env_pairs([f"{key}=value"])
    assert repr(key) in str(info.value)


def test_env_pair_value_with_a_nul_byte_is_rejected():
    with pytest.raises(UsageError, match="NUL"):
        parse_env_pairs(["A=x\x00y"])


# --- load_env_file -----------------------------------------------------------------


def write(tmp_path: Path, text: str, name: str = "env") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_yaml_mapping_of_strings(tmp_path):
    path = write(tmp_path, 'A: "1"\nB: hello world\nC: "x=y: z"\n', "env.yml")
    assert load_env_file(path) == {"A": "1", "B": "hello world", "C": "x=y: z"}


def test_dotenv_with_comments_export_and_quotes(tmp_path):
    path = write(
        tmp_path,
        "# a comment\n"
        "\n"
        "A=1\n"
        "export B=two words\n"
        "  # an indented comment\n"
        "C=\"double quoted\"\n"
        "D='single # not a comment'\n"
        "E = spaced\n"
        "F=a=b=c\n"
        "G=\n",
    )
    assert load_env_file(path) == {
        "A": "1",
        "B": "two words",
        "C": "double quoted",
        "D": "single # not a comment",
        "E": "spaced",
        "F": "a=b=c",
        "G": "",
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("MESSAGE=note: read me\nOTHER=1\n", {"MESSAGE": "note: read me", "OTHER": "1"}),
        # Alone, `KEY=a: b` also parses as the YAML mapping {"KEY=a": "b"}.
        ("MESSAGE=note: read me\n", {"MESSAGE": "note: read me"}),
        ("export URL=http://host: 80\n", {"URL": "http://host: 80"}),
    ],
)
def test_dotenv_value_that_looks_like_yaml_is_still_dotenv(tmp_path, text, expected):
    assert load_env_file(write(tmp_path, text)) == expected


def test_empty_env_file_is_empty(tmp_path):
    assert load_env_file(write(tmp_path, "")) == {}


@pytest.mark.parametrize(
    ("text", "key", "kind"),
    [
        ("PORT: 8080\n", "PORT", "int"),
        ("DEBUG: true\n", "DEBUG", "bool"),
        ("RATIO: 0.5\n", "RATIO", "float"),
        ("UNSET:\n", "UNSET", "NoneType"),
        ("NESTED: {a: b}\n", "NESTED", "dict"),
    ],
)
def test_yaml_non_string_value_is_rejected_naming_the_key(tmp_path, text, key, kind):
    with pytest.raises(UsageError, match="must map to a string") as info:
        load_env_file(write(tmp_path, text, "env.yml"))
    assert repr(key) in str(info.value)
    assert kind in str(info.value)


def test_yaml_non_string_key_is_rejected(tmp_path):
    with pytest.raises(UsageError, match="must map to a string"):
        load_env_file(write(tmp_path, '1: "x"\n', "env.yml"))


@pytest.mark.parametrize("text", ["- A=1\n- B=2\n", "[1, 2]\n", "42\n"])
def test_env_file_that_is_not_a_mapping_is_rejected(tmp_path, text):
    with pytest.raises(UsageError, match="must be a mapping"):
        load_env_file(write(tmp_path, text, "env.yml"))


def test_yaml_mapping_with_a_bad_name_is_rejected(tmp_path):
    with pytest.raises(UsageError, match=r"invalid variable name 'A-B'"):
        load_env_file(write(tmp_path, 'A-B: "1"\n', "env.yml"))


def test_dotenv_bad_line_names_the_line(tmp_path):
    path = write(tmp_path, "A=1\n# fine\nthis is not an assignment\n")
    with pytest.raises(UsageError, match=r"line 3: expected KEY=VALUE"):
        load_env_file(path)


@pytest.mark.parametrize("make", [lambda p: p / "missing.env", lambda p: p])
def test_unreadable_env_file(tmp_path, make):
    path = make(tmp_path)
    with pytest.raises(UsageError, match="cannot read env file") as info:
        load_env_file(path)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


# --- validate_request --------------------------------------------------------------


@pytest.fixture
def request_for(tmp_path):
    def make(**overrides) -> RunRequest:
        values = {
            "command": ["python", "train.py"],
            "cluster": ClusterRef("local", ["inventory/local.yml"]),
            "workdir": tmp_path,
        }
        return RunRequest(**{**values, **overrides})

    return make


def test_a_good_request_is_returned_unchanged(request_for):
    request = request_for(executor="distributed", name="job-1", env={"A": "1"}, gpus=2, max_restarts=3)
    assert validate_request(request) is request


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"command": []}, "no command given"),
        ({"command": [""]}, "no command given"),
        ({"command": ["  "]}, "no command given"),
        ({"executor": "mpirun"}, "unknown executor 'mpirun'"),
        ({"gpus": -2}, "--gpus must be 0 .no GPUs. or more"),
        ({"max_restarts": -1}, "--max-restarts must be 0 or more"),
        ({"name": "two\nlines"}, "invalid job name"),
        ({"name": "tab\there"}, "invalid job name"),
        ({"name": ""}, "invalid job name"),
        ({"name": "   "}, "invalid job name"),
        ({"env": {"1X": "a"}}, "invalid variable name"),
        ({"env": {"CUDA_VISIBLE_DEVICES": "0"}}, "may not set CUDA_VISIBLE_DEVICES"),
        ({"env": {"CUDA_VISIBLE_DEVICES": "0"}, "gpus": 1}, "may not set CUDA_VISIBLE_DEVICES"),
        ({"env": {"TSUBMIT_RANK_MARKER": "x"}}, "may not set TSUBMIT_RANK_MARKER"),
        ({"env": {"TSUBMIT_SETUP_DIR": "x"}}, "may not set TSUBMIT_SETUP_DIR"),
    ],
)
def test_bad_requests_are_rejected(request_for, overrides, message):
    with pytest.raises(UsageError, match=message) as info:
        validate_request(request_for(**overrides))
    assert info.value.exit_code == EXIT_USAGE


def test_gpus_0_lets_the_job_set_cuda_visible_devices_and_the_documented_switches(request_for):
    env = {"CUDA_VISIBLE_DEVICES": "", "TSUBMIT_RANK_ORDER": "off", "TSUBMIT_OPTUNA_URI": "off"}
    validate_request(request_for(env=env, gpus=0))


def test_unknown_executor_lists_the_choices(request_for):
    with pytest.raises(UsageError, match="torchrun, distributed"):
        validate_request(request_for(executor="bogus"))


@pytest.mark.parametrize("make", [lambda p: p / "missing", lambda p: p / "file"])
def test_workdir_must_be_an_existing_directory(request_for, tmp_path, make):
    (tmp_path / "file").write_text("")
    workdir = make(tmp_path)
    with pytest.raises(UsageError, match=r"working directory .* does not exist"):
        validate_request(request_for(workdir=workdir))


def test_gpus_negative_message_shows_the_value(request_for):
    with pytest.raises(UsageError, match="got -1"):
        validate_request(request_for(gpus=-1))
