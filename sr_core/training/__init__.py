"""sr_core.training: training models on the user's own scenes and scoring them.

Training data staged into Zarr with a fixed patch pool (:mod:`.train_data`), a run's options
(:mod:`.config`), the training loop by the Wald protocol with resumable checkpoints
(:mod:`.train`), losses beyond the pixel ones (:mod:`.losses`), the model card written beside
the weights (:mod:`.train_card`) and benchmark evaluation of models against bicubic
(:mod:`.evaluate`; its image folders: :mod:`.image_sets`). May import every package below it:
geometry, imaging, storage, publication, formats, models, quality and compute.
"""
