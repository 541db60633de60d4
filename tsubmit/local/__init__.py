"""The controller's own state: the job store, archives, kept copies of logs and
inventories, the user's config, the runner data dirs. The store is a cache of
what the nodes said; the nodes are the truth.
"""
