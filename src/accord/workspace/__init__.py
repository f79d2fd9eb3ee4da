"""Workspaces: templates, creation and the initial model."""
