"""sr_core.deploy: running sr-pipeline as a service on one machine.

``sr-pipeline stack up | down | status`` (:mod:`.stack`): a Prefect server, work pool, deployments
and a process worker, each a detached background process managed by :mod:`.daemon`. May import:
``sr_core.errors`` and the standard library; the Prefect CLI is run as a subprocess, never
imported (the library never imports Prefect).
"""
