"""The extra-vars file tsubmit hands ansible-playbook (`-e @FILE`): every job
value marked `!unsafe`, read back by Ansible's own loader with its types and
bytes, and never rendered by Ansible's own templar; a Template stays one."""

import pytest
from ansible._internal._datatag._tags import TrustedAsTemplate
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar

from tsubmit.nodes.ansible_run import Template, vars_yaml

# Strings a job may carry, among them every one YAML reads as something else
# when it is not quoted (Ansible rebuilds a `!unsafe` scalar from its text).
STRINGS = ["{{ lookup('pipe', 'touch /tmp/tsubmit-unit-pwned') }}", "{{ 7*7 }}", "{% raw %}",
           "--fmt={{epoch}}.ckpt", "{# c #}", "007", "0x1F", "1e3", "1.5", "true", "no", "null", "~", "",
           "2024-01-01", "<<", "=", "a: b", "- x", "#x", "&a", "*a", "!unsafe", "'\"", "a\nb\n",
           " spaced ", "tab\there", "ünïcödé", "back\\slash", "\x1b[31m"]


def load(tmp_path, variables: dict) -> dict:
    path = tmp_path / "extravars"
    path.write_text(vars_yaml(variables))
    # How ansible-playbook reads `-e @FILE`: a trusted file, so only !unsafe keeps strings data.
    return DataLoader().load_from_file(str(path), trusted_as_template=True)


def strings_in(value):
    if isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from strings_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings_in(item)
    elif isinstance(value, str):
        yield value


@pytest.mark.parametrize("text", STRINGS)
def test_a_top_level_string_comes_back_exactly_and_is_never_a_template(tmp_path, text):
    loaded = load(tmp_path, {"tsubmit_job_name": text})["tsubmit_job_name"]
    assert isinstance(loaded, str) and loaded == text
    assert not TrustedAsTemplate.is_tagged_on(loaded) or "{" not in text


def test_nested_values_keep_their_types_and_none_is_trusted_as_a_template(tmp_path):
    variables = {
        "tsubmit_job_command": ["python", "train.py", *STRINGS, 5],
        "tsubmit_job_env": {"K_" + str(index): text for index, text in enumerate(STRINGS)},
        "tsubmit_job_meta": {"id": "0123456789", "command": ["a", "{{ x }}"], "git_commit": None},
        "tsubmit_job_attempt": 2,
        "tsubmit_job_container": None,
        "tsubmit_job_optuna": {"study": "{{ 7*7 }}", "dashboard": False},
    }
    loaded = load(tmp_path, variables)
    assert loaded == variables
    # a number stays a number, a string a string
    assert isinstance(loaded["tsubmit_job_command"][-1], int)
    assert all(isinstance(text, str) for text in loaded["tsubmit_job_command"][:-1])
    assert loaded["tsubmit_job_meta"]["id"] == "0123456789"
    for name in ("tsubmit_job_command", "tsubmit_job_env", "tsubmit_job_meta", "tsubmit_job_optuna"):
        for text in strings_in(loaded[name]):
            assert not TrustedAsTemplate.is_tagged_on(text), (name, text)


def test_ansible_renders_a_template_and_leaves_the_job_values_alone(tmp_path):
    loaded = load(tmp_path, {"tsubmit_job_archive": Template("{{ base }}/archive.tar.gz"),
                             "tsubmit_job_name": "{{ 7*7 }}",
                             "tsubmit_job_command": ["{{ lookup('pipe', 'id') }}", "{{ epoch }}"]})
    templar = Templar(loader=DataLoader(), variables={"base": "/srv", **loaded})
    assert templar.template(loaded["tsubmit_job_archive"]) == "/srv/archive.tar.gz"
    assert templar.template(loaded["tsubmit_job_name"]) == "{{ 7*7 }}"
    assert templar.template(loaded["tsubmit_job_command"]) == ["{{ lookup('pipe', 'id') }}", "{{ epoch }}"]
    # also through a role variable that is itself a template, as roles/launch/vars/main.yml has
    role_var = TrustedAsTemplate().tag("{{ tsubmit_job_command | map('quote') | join(' ') }}")
    assert templar.template(role_var) == "'{{ lookup('\"'\"'pipe'\"'\"', '\"'\"'id'\"'\"') }}' '{{ epoch }}'"
