"""sr_core.training."""
