"""Helpers shared by every test package: the one fake task and the one way to run the CLI."""
