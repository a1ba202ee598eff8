"""The cosyinstall command line: parse, call the library, print; one error funnel.

Every failure becomes one sentence on stderr and the contract's exit code; --debug adds
the traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from typing import TYPE_CHECKING, List, Optional

from cosyinstall import __version__
from cosyinstall.errors import EXIT_BUG, ArtifactRejected, CosyError, UsageError
from cosyinstall.tree import InstallTree

if TYPE_CHECKING:  # imported lazily at run time, where they are used
    from cosyinstall.artifact import ServerSpec
    from cosyinstall.progress import Reporter

__all__ = ["main", "DEFAULT_FROM", "DEFAULT_TO"]

DEFAULT_FROM = "/root/autodl-tmp"
DEFAULT_TO = "/root/autodl-tmp/CosyVoice"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError("%s: %s" % (self.prog, message), "see --help")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="cosyinstall", description="Verify, install and start a cosy-offline bundle with no network.")
    parser.add_argument("--version", action="version", version="cosyinstall " + __version__)
    common = _Parser(add_help=False)
    common.add_argument("--to", default=DEFAULT_TO, help="install root, the app's source tree (default: %(default)s)")
    common.add_argument("--debug", action="store_true", help="show a traceback on errors")
    common.add_argument("--quiet", "-q", action="store_true", help="print only warnings and the result")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)
    sub.required = True

    def add(name: str, help_text: str, source: bool = False, server: bool = False) -> argparse.ArgumentParser:
        cmd = sub.add_parser(name, parents=[common], help=help_text, description=help_text)
        if source:
            cmd.add_argument("--from", dest="from_dir", default=DEFAULT_FROM,
                             help="folder holding the uploads and SHA256SUMS (default: %(default)s)")
            cmd.add_argument("--python", help="the target CPython to build the venv from (default: search the box)")
        if server:
            cmd.add_argument("--launcher", choices=("mpirun", "direct"), help="override the manifest's launcher")
            cmd.add_argument("--port", type=int, help="override the manifest's port")
        return cmd

    add("check", "preflight only: check the uploads and the box, change nothing", source=True)
    apply_cmd = add("apply", "check, install and start the server", source=True, server=True)
    apply_cmd.add_argument("--no-start", action="store_true", help="install only; do not start the server")
    apply_cmd.add_argument("--wait", action="store_true", help="wait for another running apply instead of refusing")
    apply_cmd.add_argument("--allow-downgrade", action="store_true",
                           help="accept a signed build older than the installed one")
    trust = add("trust", "trust an OpenSSH public key to sign bundles; apply then refuses unsigned ones")
    trust.add_argument("keyfile", help="the signer's public key file (an OpenSSH public key line, e.g. id_ed25519.pub)")
    apply_cmd.add_argument("--jobs", type=int, metavar="N",
                           help="threads extracting and verifying in parallel (default: the CPU count)")
    apply_cmd.add_argument("--no-rollback", action="store_true",
                           help="keep a new generation whose server fails readiness (default: go back)")
    apply_cmd.add_argument("--keep", type=int, default=2, help="generations kept after a switch (default: %(default)s)")
    back = add("rollback", "make the previous generation current again; restart the server if it ran", server=True)
    back.add_argument("--grace", type=float, default=10.0, help="seconds between SIGTERM and SIGKILL")
    back.add_argument("--wait", action="store_true", help="wait for a running apply instead of refusing")
    listed = add("generations", "list the installed generations")
    listed.add_argument("--json", action="store_true", help="machine-readable output")
    add("verify", "re-hash the installed tree against its manifests")
    start = add("start", "start the installed server and wait until it is ready", server=True)
    start.add_argument("--rebuild", action="store_true",
                       help="run every [[server.prepare]] step again (engine builds) and remove the build-outputs")
    stop = add("stop", "stop the server and every process it started")
    stop.add_argument("--grace", type=float, default=10.0, help="seconds between SIGTERM and SIGKILL")
    status = add("status", "show whether the server runs and answers")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    logs = add("logs", "print the end of the server log")
    logs.add_argument("-n", "--lines", type=int, default=50)
    logs.add_argument("-f", "--follow", action="store_true")
    return parser


def _reporter(args: argparse.Namespace) -> Reporter:
    from cosyinstall.progress import Reporter

    return Reporter(stream=sys.stderr, quiet=getattr(args, "quiet", False))


def _spec(tree: InstallTree) -> ServerSpec:
    from cosyinstall import installed as inst

    manifest = inst.installed_manifest(tree, "packages")
    if manifest is None:
        raise ArtifactRejected("nothing is installed in %s" % tree.root, "run cosyinstall apply first")
    spec = manifest.server()
    if spec is None:
        raise ArtifactRejected("the installed bundle in %s defines no server" % tree.root)
    return spec


def _start(tree: InstallTree, spec: ServerSpec, args: argparse.Namespace, reporter: Reporter, restart: bool = False) -> str:
    from cosyinstall.server_start import start_server
    from cosyinstall.server_stop import stop_server
    from cosyinstall.server_wait import wait_ready

    from cosyinstall.server_prepare import after_ready, before_start
    from cosyinstall.server_record import is_ours, read_record

    port = args.port if getattr(args, "port", None) else spec.port
    if restart:
        stop_server(tree)
    running = read_record(tree)
    if running is None or not is_ours(running):
        # Engine builds and the like run before the server, never inside its mpirun rank.
        before_start(tree, spec, reporter, rebuild=getattr(args, "rebuild", False))
    start_server(tree, spec, launcher=args.launcher, port=port, reporter=reporter)
    wait_ready(tree, spec, port=port, reporter=reporter)
    after_ready(tree)
    return "http://127.0.0.1:%d%s" % (port, spec.health_path)


def _cmd_check(args: argparse.Namespace, tree: InstallTree) -> int:
    from cosyinstall.apply import Options, check
    from cosyinstall.preflight import raise_first, render

    findings = check(Options(args.from_dir, tree, args.python), _reporter(args))
    print(render(findings))
    sys.stdout.flush()
    raise_first(findings)
    print("preflight passed: %s can be installed into %s" % (args.from_dir, tree.root))
    return 0


def _cmd_apply(args: argparse.Namespace, tree: InstallTree) -> int:
    from cosyinstall.apply import Options, install, prepare
    from cosyinstall.preflight import render

    reporter = _reporter(args)
    with prepare(Options(args.from_dir, tree, args.python, args.wait, args.allow_downgrade, args.jobs),
                 reporter) as prepared:
        # The table comes first, before anything is written, so a refusal is seen in context.
        if not args.quiet or prepared.blocked or any(not f.ok for f in prepared.findings):
            print(render(prepared.findings))
            sys.stdout.flush()
        outcome = install(prepared)
        if outcome.ran:
            print("installed into %s (%s)" % (tree.root, ", ".join(outcome.ran)))
        else:
            print("nothing changed: %s already holds these artifacts" % tree.root)
        if args.no_start:
            _prune(tree, args, reporter)
            return 0
        if outcome.server is None:
            reporter.warn("the installed bundle defines no server, so none was started")
            return 0
        # Started under the apply lock, as before: a second apply cannot swap the tree meanwhile.
        url = _start_generation(tree, outcome, args, reporter)
        _prune(tree, args, reporter)
    print("server ready: %s" % url)
    return 0


def _start_generation(tree: InstallTree, outcome, args: argparse.Namespace, reporter) -> str:
    """Start the server pinned to the current generation; on exit 5 go back unless --no-rollback."""
    from cosyinstall import generations as gens
    from cosyinstall.errors import NotReady
    from cosyinstall.rollback import after_not_ready

    try:
        return _start(gens.pinned(tree), outcome.server, args, reporter, restart=bool(outcome.ran))
    except NotReady as exc:
        if outcome.generation is None or outcome.previous is None or args.no_rollback:
            raise
        raise after_not_ready(tree, exc, outcome.generation, reporter,
                              lambda pinned: _start(pinned, _spec(pinned), args, reporter)) from None


def _prune(tree: InstallTree, args: argparse.Namespace, reporter) -> None:
    from cosyinstall import generations as gens

    for gen_id in gens.prune(tree, max(args.keep, 1)):
        reporter.info("generation %s removed (more than --keep %d)" % (gen_id, args.keep))


def _cmd_rollback(args: argparse.Namespace, tree: InstallTree) -> int:
    from cosyinstall.rollback import roll_back

    reporter = _reporter(args)
    was, now, url = roll_back(tree, reporter, lambda pinned: _start(pinned, _spec(pinned), args, reporter),
                              grace=args.grace, wait=args.wait)
    print("rolled back: generation %s is current (was %s)" % (now, was))
    if url:
        print("server ready: %s" % url)
    return 0


def _cmd_generations(args: argparse.Namespace, tree: InstallTree) -> int:
    from cosyinstall import generations as gens

    rows = gens.listing(tree)
    print(gens.dump(rows) if args.json else gens.render(rows))
    return 0


def _cmd_verify(args: argparse.Namespace, tree: InstallTree) -> int:
    from cosyinstall.verify import verify_and_mark

    verdict = verify_and_mark(tree, _reporter(args))
    if not verdict.ok:
        for problem in verdict.problems:
            print("  " + problem, file=sys.stderr)
        raise verdict.error()
    print("verified: %s matches its manifests" % tree.root)
    return 0


def _cmd_start(args: argparse.Namespace, tree: InstallTree) -> int:
    from cosyinstall.generations import pinned

    print("server ready: %s" % _start(pinned(tree), _spec(tree), args, _reporter(args)))
    return 0


def _cmd_stop(args: argparse.Namespace, tree: InstallTree) -> int:
    from cosyinstall.server_stop import stop_server

    was = stop_server(tree, grace=args.grace)
    print("server stopped" if was else "server was not running")
    return 0


def _cmd_status(args: argparse.Namespace, tree: InstallTree) -> int:
    from cosyinstall.server_status import server_status

    spec = None
    try:
        spec = _spec(tree)
    except CosyError:
        pass
    info = server_status(tree, spec)
    if args.json:
        print(json.dumps(info, sort_keys=True))
    else:
        for key in sorted(info):
            print("%-8s %s" % (key, info[key]))
    return 0


def _cmd_logs(args: argparse.Namespace, tree: InstallTree) -> int:
    from cosyinstall.server_log import follow_log, tail_log

    if args.follow:
        follow_log(tree, sys.stdout)
    else:
        for line in tail_log(tree, args.lines):
            print(line)
    return 0


def _cmd_trust(args: argparse.Namespace, tree: InstallTree) -> int:
    from cosyinstall.trust import CHECKED_HERE, trust_key

    added, known = trust_key(tree, args.keyfile)
    for key in known:
        print("already trusted: %s key %s" % (key.kind, key.fingerprint))
    for key in added:
        print("trusted: %s key %s (in %s)" % (key.kind, key.fingerprint, tree.trusted_keys))
        if key.kind not in CHECKED_HERE:
            _reporter(args).warn("%s signatures are checked only where ssh-keygen is installed" % key.kind)
    print("apply into %s now installs only bundles signed by a trusted key" % tree.root)
    return 0


_COMMANDS = {
    "check": _cmd_check, "apply": _cmd_apply, "verify": _cmd_verify, "start": _cmd_start,
    "stop": _cmd_stop, "status": _cmd_status, "logs": _cmd_logs, "trust": _cmd_trust,
    "rollback": _cmd_rollback, "generations": _cmd_generations,
}


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    try:
        args = _parser().parse_args(argv)
        return _COMMANDS[args.command](args, InstallTree(args.to))
    except CosyError as exc:
        if debug:
            traceback.print_exc()
        print("cosyinstall: error: %s" % exc.sentence(), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("cosyinstall: interrupted; run the same command again to finish", file=sys.stderr)
        return 130
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else 2
    except Exception as exc:  # the funnel: a bug still gets one sentence and exit 1
        if debug:
            traceback.print_exc()
        print("cosyinstall: internal error: %s: %s; rerun with --debug and report it" % (type(exc).__name__, exc),
              file=sys.stderr)
        return EXIT_BUG
