"""``babysit``, the command line: the group and its entry point (app), shared options, and the
commands by concern. cli parses options, calls the study API and prints."""

from orchestrator.cli import cluster_commands, study_commands, train_command  # noqa: F401
from orchestrator.cli.app import cli, main
from orchestrator.cli.options import default_cache_dir

__all__ = ["cli", "default_cache_dir", "main"]
