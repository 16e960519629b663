"""sr_core.reports."""
