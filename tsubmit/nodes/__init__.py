"""The channels to the nodes: Ansible runs (ansible_env, ansible_run, progress,
clusters, hooks, actions) and the one ssh session module (ssh_session) for what
Ansible cannot do; `cluster check` and GPU leases as the controller sees them.
"""
