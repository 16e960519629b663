"""sr_core.publication."""
