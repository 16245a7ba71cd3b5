"""The ``babysit`` group and its entry point: errors a user can cause end in one line and a
non-zero exit."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import click

from trainables.errors import BabysitterError


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="babysitter", prog_name="babysit")
def cli() -> None:
    """babysitter: babysit a PyTorch network, then search its hyperparameters.

    Start with `babysit sanity faces --data PATH` to check the setup, `babysit run faces --data
    PATH` to search.
    """


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: one line per error, exit 2 for usage errors and 1 for bad input."""
    sys.stdout.reconfigure(line_buffering=True)  # progress lines reach `tee` and logs at once
    sys.exit(run(argv))


def run(argv: Sequence[str] | None = None) -> int:
    """``babysit ARGV``; returns the exit code."""
    try:
        cli.main(args=argv, prog_name="babysit", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.ctx.get_help())
    except click.UsageError as exc:
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx else ""
        click.echo(f"Error: {exc.format_message()}{hint}", err=True)
        return exc.exit_code
    except click.ClickException as exc:
        click.echo(f"Error: {exc.format_message()}", err=True)
        return exc.exit_code
    except BabysitterError as exc:
        click.echo(f"Error: {exc}", err=True)
        return exc.exit_code
    except (KeyboardInterrupt, click.exceptions.Abort):
        click.echo("Interrupted.", err=True)
        return 130
    return 0
