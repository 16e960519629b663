"""sr_core.geometry."""
