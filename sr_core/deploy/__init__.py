"""sr_core.deploy."""
