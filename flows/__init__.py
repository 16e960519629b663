"""Prefect flows: thin wrappers that call sr_core's stages as tasks."""
