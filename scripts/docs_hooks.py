"""The docs site's references, generated from the code so they cannot drift
(an mkdocs hook, named in mkdocs.yml).

A page asks for a table with a line of its own, `<!-- generated: NAME -->`,
NAME one of GENERATORS; an unknown NAME fails the build. The commands'
reference is mkdocs-click's, from the Click commands themselves.
"""

import re
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
MARKER = re.compile(r"^<!-- generated: ([a-z-]+) -->$", re.MULTILINE)
# Ansible's documentation markup: C(code), I(italic), M(module), B(bold), ...
ANSIBLE_MARKUP = re.compile(r"\b([CIMBORVEP])\(([^()]*)\)")


def on_config(config):
    # The docs describe the checkout they are built from, whichever tsubmit the venv
    # installed (mkdocs restores sys.path after loading a hook, so not at import).
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    return config


def on_page_markdown(markdown, page, config, files):
    return MARKER.sub(lambda match: GENERATORS[match.group(1)](), markdown)


def _cell(text) -> str:
    """TEXT fit for one cell of a Markdown table."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _code(value) -> str:
    return f"`{_cell(value)}`"


def _table(header: tuple[str, ...], rows) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def spec_keys() -> str:
    from tsubmit.model import jobspec

    def meaning(field) -> str:
        text = field.description
        if field.choices:
            text += " One of " + ", ".join(f"`{choice}`" for choice in field.choices) + "."
        if field.path:
            text += " Relative to the spec file's folder."
        return _cell(text)

    return _table(("key", "type", "meaning"),
                  ((_code(field.key), field.kind, meaning(field)) for field in jobspec.FIELDS))


def exit_codes() -> str:
    from tsubmit.errors import EXIT_CODES

    return _table(("code", "meaning"), ((str(code), _cell(f"{name}: {text}"))
                                        for code, (name, text) in EXIT_CODES.items()))


def executors() -> str:
    from tsubmit.model import executors as table

    restarts = {"torchrun": "torchrun (every worker of the job)",
                "script": "the launch script (that node only)", "none": "nobody"}

    def row(executor) -> tuple[str, ...]:
        node = executor.node
        return (_code(executor.name), _cell(executor.help), "yes" if node["torchrun"] else "no",
                "each node its own" if executor.node_local_groups else "one over every node",
                restarts[node["restarts"]], "yes" if executor.needs_image else "no")

    return _table(("executor", "what it does", "under torchrun", "torch group", "restarts a failed command",
                   "needs `--image`"), (row(executor) for executor in table.TABLE))


def _argument_specs() -> dict[str, dict]:
    """{role: {entry point: {option: spec}}}, from every role's meta/argument_specs.yml."""
    roles = {}
    for path in sorted((REPO / "roles").glob("*/meta/argument_specs.yml")):
        specs = yaml.safe_load(path.read_text())["argument_specs"]
        roles[path.parents[1].name] = {entry: body.get("options") or {} for entry, body in specs.items()}
    return roles


def _description(option: dict) -> str:
    text = option.get("description", "")
    text = " ".join(text) if isinstance(text, list) else text
    return ANSIBLE_MARKUP.sub(lambda match: f"`{match.group(2)}`", " ".join(text.split()))


def _default(option: dict) -> str:
    if option.get("required"):
        return "required"
    return _code(option["default"]) if "default" in option else "unset"


def host_variable_specs() -> dict[str, tuple[dict, list[str]]]:
    """The variables an inventory sets per host or group: the options whose description
    starts "Host variable", once each, with the roles that read them."""
    found: dict[str, tuple[dict, list[str]]] = {}
    # The roles that launch a job describe a variable for what it does there, first;
    # `check` only reads it.
    first = {"preflight": 0, "launch": 1, "check": 3}
    for role, entries in sorted(_argument_specs().items(), key=lambda item: (first.get(item[0], 2), item[0])):
        for options in entries.values():
            for name, option in options.items():
                if _description(option).startswith("Host variable"):
                    readers = found.setdefault(name, (option, []))[1]
                    if role not in readers:
                        readers.append(role)
    return found


def host_variables() -> str:
    found = host_variable_specs()

    def meaning(option: dict) -> str:
        return _cell(re.sub(r"^Host variable[,:]?\s*", "", _description(option)))

    return _table(("variable", "type", "default", "meaning", "read by"), (
        (_code(name), option.get("type", "str"), _default(option), meaning(option), ", ".join(readers))
        for name, (option, readers) in sorted(found.items())))


def role_variables() -> str:
    """Every role's arguments, per role and entry point, as `ansible-doc -t role` shows them."""
    parts = []
    for role, entries in _argument_specs().items():
        for entry, options in entries.items():
            title = f"tsubmit.cluster.{role}" + ("" if entry == "main" else f" (entry point `{entry}`)")
            parts.append(f"### {title}\n")
            parts.append(_table(("variable", "type", "default", "meaning"), (
                (_code(name), option.get("type", "str"), _default(option), _cell(_description(option)))
                for name, option in options.items())))
    return "\n".join(parts)


GENERATORS = {
    "spec-keys": spec_keys,
    "exit-codes": exit_codes,
    "executors": executors,
    "host-variables": host_variables,
    "role-variables": role_variables,
}
