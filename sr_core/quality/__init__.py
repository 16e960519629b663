"""sr_core.quality."""
