"""sr_core: the super-resolution library behind sr-pipeline.

The library never imports Prefect; ``flows/`` wraps its stages as Prefect tasks.
"""

__version__ = "0.1.0"
