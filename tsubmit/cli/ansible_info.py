"""`tsubmit ansible-info`: the Ansible tsubmit runs and where its roles come from."""

import click


@click.command("ansible-info")
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text")
def ansible_info(output):
    """Show the Ansible tsubmit runs: ansible-core's version, the ansible.cfg in
    use, the playbooks, and the roles and collections paths in search order.

    Folders in TSUBMIT_ANSIBLE_PATH (colon-separated) are searched first: a
    role folder there (e.g. `launch/`) replaces tsubmit's role of that name,
    an `ansible_collections/` folder there can hold other collections (or
    another tsubmit.cluster). tsubmit's own content comes next, then Ansible's
    default folders (where `ansible-galaxy install` puts what hooks use).

    \b
    tsubmit ansible-info
    TSUBMIT_ANSIBLE_PATH=~/ops/roles tsubmit ansible-info -o json
    """
    from .. import output as out
    from ..nodes.ansible_env import describe

    info = describe()
    if output == "json":
        click.echo(out.to_json(info))
        return
    config = info["config"]
    origin = "tsubmit's own" if config["source"] == "tsubmit" else "from TSUBMIT_ANSIBLE_CONFIG"
    missing = "" if config["exists"] else ", MISSING"
    users = set(info["user_path"])
    lines = [
        ("ansible-core", info["ansible_core"]),
        ("ansible-runner", info["ansible_runner"] or "not installed"),
        ("python", info["python"]),
        ("ansible.cfg", f"{config['path']} ({origin}{missing})"),
        ("playbooks", info["playbooks"]),
    ]
    builtin_roles = f"{info['content']}/roles"
    lines += _listing("roles path", [
        f"{path}{_origin(path, users, builtin_roles)}" for path in info["roles_path"]])
    builtin_collections = info["content"]
    lines += _listing("collections path", [
        f"{path}{_origin(path, users, builtin_collections)}" for path in info["collections_path"]])
    collection = info["collection"]
    lines.append(("collection", f"{collection['name']} {collection['version'] or '?'} at {collection['path']}"
                  if collection else "tsubmit.cluster not found on the collections path"))
    width = max(len(role) for role in info["roles"])
    lines += _listing("roles used", [
        f"{role.ljust(width)}  {found['path']}" + ("  (overridden)" if found["overridden"] else "")
        for role, found in info["roles"].items()])
    label_width = max(len(label) for label, _ in lines)
    for label, value in lines:
        click.echo(f"{label.ljust(label_width)}  {value}".rstrip())


def _origin(path: str, users: set[str], builtin: str) -> str:
    if path in users:
        return "  (TSUBMIT_ANSIBLE_PATH)"
    if path == builtin:
        return "  (tsubmit)"
    return "  (Ansible default)"


def _listing(label: str, values: list[str]) -> list[tuple[str, str]]:
    return [(label if index == 0 else "", value) for index, value in enumerate(values)] or [(label, "-")]
