"""sr_core.compute: the tiles' work on a Dask cluster.

Starting or joining the cluster (:mod:`.cluster`), staging a scene into Zarr tiles and the output
Zarr (:mod:`.staging`), the halo each scene's tiles get (:mod:`.halo`), what one tile task does on
a worker (:mod:`.infer`, :mod:`.worker_io`, :mod:`.wald_task`), logging lost workers
(:mod:`.lost_workers`) and reporting progress (:mod:`.progress`). May import: geometry, imaging,
storage, publication (the per-tile journal), formats, models and quality (the metrics the Wald
check runs on a worker); never pipeline, reports or anything above.
"""
