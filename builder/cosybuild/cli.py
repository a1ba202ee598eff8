"""The cosybuild command line (click): parse, call the library, print; one error funnel."""

from __future__ import annotations

import sys
import traceback
from pathlib import Path
from typing import Any

import click

from cosyinstall.errors import CosyError
from cosyinstall.progress import Reporter, human_bytes

__all__ = ["main", "cli"]


class _Funnel(click.Group):
    """Turns library errors into one sentence and the contract's exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        debug = "--debug" in sys.argv
        try:
            return super().invoke(ctx)
        except CosyError as exc:
            if debug:
                traceback.print_exc()
            click.echo("cosybuild: error: %s" % exc.sentence(), err=True)
            ctx.exit(exc.exit_code)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except Exception as exc:  # a bug still gets one sentence and exit 1
            if debug:
                traceback.print_exc()
            click.echo("cosybuild: internal error: %s: %s; rerun with --debug and report it" % (type(exc).__name__, exc), err=True)
            ctx.exit(1)


# Accepted after the subcommand too (`cosybuild pack --debug`); the funnel reads it from argv.
_debug = click.option("--debug", is_flag=True, hidden=True, expose_value=False)


@click.group(cls=_Funnel, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show a traceback on errors.")
@click.version_option(package_name="cosy-offline")
def cli(debug: bool) -> None:
    """Lock, fetch and pack a CosyVoice service for an offline GPU box."""


@cli.command()
@_debug
@click.argument("manifest", required=False)
@click.option("--upgrade", is_flag=True, help="Re-resolve even the sections whose inputs did not change.")
@click.option("--only", type=click.Choice(["packages", "app", "models", "python"]),
              help="Lock one section alone (python: the bundled CPython, with [target] bundle-python).")
def lock(manifest: str | None, upgrade: bool, only: str | None) -> None:
    """Resolve MANIFEST for its target and write its lock."""
    from cosybuild.lockcmd import lock_command
    from cosybuild.profile import load_profile

    profile = load_profile(manifest)
    outcome = lock_command(profile, only, upgrade)
    if not outcome.sections:
        click.echo("%s is current; use --upgrade to re-resolve" % outcome.path)
        return
    packages = outcome.lock.packages
    click.echo("locked %s (%s): %d packages, %s -> %s" % (profile.name, ", ".join(outcome.sections), len(packages),
                                                         human_bytes(sum(f.size for f in packages)), outcome.path))


@cli.command()
@_debug
@click.argument("manifest", required=False)
@click.option("--out", "out", default="dist", type=click.Path(file_okay=False, path_type=Path), show_default=True,
              help="Directory for the artifacts.")
@click.option("--only", type=click.Choice(["packages", "models"]), help="Pack one artifact alone.")
@click.option("--since", type=click.Path(file_okay=False, path_type=Path),
              help="An old dist already applied on the box: write delta artifacts holding only what it lacks.")
@click.option("--sign", "sign", metavar="KEY", help="Sign SHA256SUMS with this SSH key (ssh-keygen -Y sign) into "
              "SHA256SUMS.sig; a .pub whose private key is in ssh-agent works too.")
@click.option("--sequence", type=click.IntRange(min=1), help="Set the build sequence (default: the last one, plus "
              "one when the manifest or lock changed).")
def pack(manifest: str | None, out: Path, only: str | None, since: Path | None, sign: str | None,
         sequence: int | None) -> None:
    """Fetch what MANIFEST's lock pins and write the artifacts into OUT."""
    from cosybuild.pack import pack as do_pack
    from cosybuild.profile import load_profile

    result = do_pack(load_profile(manifest), out, Reporter(stream=sys.stderr), only, since=since, sign=sign,
                     sequence=sequence)
    for path in result.written:
        click.echo("wrote %s (%s)" % (path, human_bytes(path.stat().st_size)))
    if result.stamp is not None:
        click.echo("build %d of %s, id %s%s" % (result.stamp.sequence, result.stamp.name, result.stamp.build_id,
                                               ", signed" if sign else ""))


@cli.command()
@_debug
@click.argument("directory", default="dist", type=click.Path(path_type=Path))
@click.option("--base", type=click.Path(file_okay=False, path_type=Path),
              help="The old dist a delta in DIRECTORY was packed --since: check the delta against it.")
def verify(directory: Path, base: Path | None) -> None:
    """Re-check the artifacts written in DIRECTORY."""
    from cosybuild.verify import verify_dir

    reporter = Reporter(stream=sys.stderr)
    for line in verify_dir(directory, reporter):
        click.echo(line)
    if base is not None:
        from cosybuild.deltabase import check_delta, read_base

        for line in check_delta(directory, read_base(base, reporter)):
            click.echo(line)
    click.echo("%s: all artifacts verified" % directory)


@cli.command()
@_debug
@click.argument("directory", type=click.Path(path_type=Path))
@click.argument("url", metavar="ssh://USER@HOST:PORT/DIR")
@click.option("-i", "--identity", help="Private key file, passed to ssh as -i.")
@click.option("-F", "--ssh-config", help="ssh config file, passed to ssh as -F.")
@click.option("-o", "--ssh-option", multiple=True, help="An ssh option (Key=Value), passed to ssh as -o; repeatable.")
@click.option("--transport", type=click.Choice(["auto", "rsync", "sftp"]), default="auto", show_default=True,
              help="auto: rsync when both ends have it, else sftp.")
@click.option("--limit", type=click.IntRange(min=1), help="Cap the rate, in KiB/s.")
@click.option("--check-only", is_flag=True, help="Send nothing; check the files already on the box.")
def upload(directory: Path, url: str, identity: str | None, ssh_config: str | None, ssh_option: tuple,
           transport: str, limit: int | None, check_only: bool) -> None:
    """Upload DIRECTORY to the box over ssh, resuming partial files, and check every file there."""
    from cosybuild.upload import SshOptions, upload as do_upload

    result = do_upload(directory, url, SshOptions(identity, ssh_config, list(ssh_option)), transport,
                       Reporter(stream=sys.stderr), limit, check_only)
    for line in result.lines():
        click.echo(line)


def main() -> None:
    cli(prog_name="cosybuild")
