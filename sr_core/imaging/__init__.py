"""sr_core.imaging."""
