"""sr_core.compute."""
