"""The launch role's templates rendered with jinja2 alone, as Ansible renders them.

roles/launch/templates/ (launch.sh.j2, environment.sh.j2, command.sh.j2 and
each executor's executors/<name>.sh.j2) are what a rank runs, and the part of
the launch an ops team may replace (its own launch role). They read the
launch_* variables of launch_contract.rank_variables. ansible-core 2.19 keeps
no compiled template, so rendering them in each host's worker costs 70-80 ms
of controller CPU per host; here one process compiles each file once, with
the few filters and tests the templates use, behaving as Ansible's do.

Used by the collection's render_launch action (once per submit, between the
probe and the launch) and by tsubmit's --dry-run, so both show what a rank
runs. Nothing here imports Ansible: tsubmit loads this folder by path
(tsubmit/model/collection.py).
"""

import os
import re
import shlex

import jinja2

# The files the launch step places beside each other (launch.sh sources environment.sh).
SCRIPTS = {"launch.sh": "launch.sh.j2", "environment.sh": "environment.sh.j2"}


def _quote(value) -> str:
    # ansible.builtin.quote: None is the empty string.
    return shlex.quote("" if value is None else str(value))


def _ternary(value, true_value, false_value, none_value=None):
    if value is None and none_value is not None:
        return none_value
    return true_value if bool(value) else false_value


def _match(value, pattern="", ignorecase=False, multiline=False) -> bool:
    flags = (re.I if ignorecase else 0) | (re.M if multiline else 0)
    return re.match(pattern, str(value), flags) is not None


def _search(value, pattern="", ignorecase=False, multiline=False) -> bool:
    flags = (re.I if ignorecase else 0) | (re.M if multiline else 0)
    return re.search(pattern, str(value), flags) is not None


def _trailing_newlines(text: str) -> int:
    return len(text) - len(text.rstrip("\n"))


class Renderer:
    """The templates of one folder, each compiled once, rendered as Ansible's
    template lookup renders them: trim_blocks, an included file's last newline
    dropped, the top file's trailing newlines kept."""

    def __init__(self, template_dir):
        self._loader = jinja2.FileSystemLoader(str(template_dir))
        self._environment = jinja2.Environment(loader=self._loader, trim_blocks=True,
                                               undefined=jinja2.StrictUndefined, keep_trailing_newline=False,
                                               autoescape=False)
        self._environment.filters.update(quote=_quote, ternary=_ternary, basename=os.path.basename,
                                         dirname=os.path.dirname)
        self._environment.tests.update(match=_match, search=_search)
        self._newlines: dict[str, int] = {}

    def render(self, name: str, variables: dict) -> str:
        template = self._environment.get_template(name)  # compiled on first use, then cached
        if name not in self._newlines:
            source, _, _ = self._loader.get_source(self._environment, name)
            self._newlines[name] = _trailing_newlines(source)
        text = template.render(variables)
        return text + "\n" * max(self._newlines[name] - _trailing_newlines(text), 0)

    def scripts(self, variables: dict) -> dict[str, str]:
        """launch.sh and environment.sh of one rank."""
        return {name: self.render(template, variables) for name, template in SCRIPTS.items()}
