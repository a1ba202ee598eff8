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
    from cosyinstall.apply import Outcome
    from cosyinstall.artifact import ServerSpec
    from cosyinstall.i18n import Translator
    from cosyinstall.progress import Reporter

__all__ = ["main", "DEFAULT_FROM", "DEFAULT_TO"]

DEFAULT_FROM = "/root/autodl-tmp"
DEFAULT_TO = "/root/autodl-tmp/CosyVoice"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError("%s: %s" % (self.prog, message), "see --help")


def _lang_option(parser: argparse.ArgumentParser) -> None:
    # Read from argv before parsing (cosyinstall.i18n.wants_chinese); declared so it is accepted.
    parser.add_argument("--lang", choices=("en", "zh"), default=argparse.SUPPRESS,
                        help="language of the messages: en or zh (default: from LC_ALL, LC_MESSAGES, LANG)")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="cosyinstall", description="Verify, install and start a cosy-offline bundle with no network.")
    parser.add_argument("--version", action="version", version="cosyinstall " + __version__)
    _lang_option(parser)
    common = _Parser(add_help=False)
    _lang_option(common)
    common.add_argument("--to", default=DEFAULT_TO, help="install root, the app's source tree (default: %(default)s)")
    common.add_argument("--debug", action="store_true", help="show a traceback on errors")
    common.add_argument("--quiet", "-q", action="store_true", help="print only errors")
    common.add_argument("--verbose", "-v", action="store_true",
                        help="show every command line run (also written to the install log)")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)
    sub.required = True

    def add(name: str, help_text: str, source: bool = False, server: bool = False) -> argparse.ArgumentParser:
        cmd = sub.add_parser(name, parents=[common], help=help_text, description=help_text)
        if source:
            cmd.add_argument("--from", dest="from_dir", default=None,
                             help="folder holding the uploads and SHA256SUMS (default: the pyz's folder when it"
                                  " holds them, else %s, or the one folder below it that holds them)" % DEFAULT_FROM)
            cmd.add_argument("--python", help="the target CPython to build the venv from (default: search the box)")
        if server:
            cmd.add_argument("--launcher", choices=("mpirun", "direct"), help="override the manifest's launcher")
            cmd.add_argument("--port", type=int, help="override the manifest's port")
        return cmd

    check_cmd = add("check", "preflight only: check the uploads and the box, change nothing", source=True)
    check_cmd.add_argument("--json", action="store_true", help="machine-readable output (schema cosy-offline/check/1)")
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
    verify_cmd = add("verify", "re-hash the installed tree against its manifests")
    verify_cmd.add_argument("--json", action="store_true", help="machine-readable output (schema cosy-offline/verify/1)")
    start = add("start", "start the installed server and wait until it is ready", server=True)
    start.add_argument("--rebuild", action="store_true",
                       help="run every [[server.prepare]] step again (engine builds) and remove the build-outputs")
    stop = add("stop", "stop the server and every process it started")
    stop.add_argument("--grace", type=float, default=10.0, help="seconds between SIGTERM and SIGKILL")
    status = add("status", "show whether the server runs and answers")
    status.add_argument("--json", action="store_true", help="machine-readable output (schema cosy-offline/status/1)")
    logs = add("logs", "print the end of the server log")
    logs.add_argument("-n", "--lines", type=int, default=50)
    logs.add_argument("-f", "--follow", action="store_true")
    return parser


def _reporter(args: argparse.Namespace) -> Reporter:
    from cosyinstall.progress import Reporter

    return Reporter(stream=sys.stderr, quiet=getattr(args, "quiet", False), verbose=getattr(args, "verbose", False))


def _say(args: argparse.Namespace, text: str) -> None:
    """A result line: -q prints only errors."""
    if not getattr(args, "quiet", False):
        print(text)


def _from_dir(args: argparse.Namespace, reporter: "Reporter") -> str:
    from cosyinstall.fromdir import locate_uploads

    folder, note = locate_uploads(args.from_dir)
    if note:
        reporter.info(note)
    args.from_dir = folder
    return folder


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
    from cosyinstall.preflight import first_blocking, raise_first, render

    reporter = _reporter(args)
    findings = check(Options(_from_dir(args, reporter), tree, args.python), reporter)
    if args.json:
        from cosyinstall.reports import check_document

        bad = first_blocking(findings)
        print(json.dumps(check_document(args.from_dir, tree.root, findings, bad.code if bad else 0), sort_keys=True))
        sys.stdout.flush()
        try:
            raise_first(findings)
        except CosyError as exc:
            exc.__dict__["json_printed"] = True
            raise
        return 0
    if not args.quiet or first_blocking(findings) is not None:
        print(render(findings))
        sys.stdout.flush()
    raise_first(findings)
    _say(args, "preflight passed: %s can be installed into %s" % (args.from_dir, tree.root))
    return 0


def _cmd_apply(args: argparse.Namespace, tree: InstallTree) -> int:
    from cosyinstall.apply import Options, install, prepare
    from cosyinstall.preflight import render

    reporter = _reporter(args)
    with prepare(Options(_from_dir(args, reporter), tree, args.python, args.wait, args.allow_downgrade, args.jobs),
                 reporter) as prepared:
        # The table comes first, before anything is written, so a refusal is seen in context.
        if not args.quiet or prepared.blocked:
            print(render(prepared.findings))
            sys.stdout.flush()
        outcome = install(prepared)
        if outcome.ran:
            _say(args, "installed into %s (%s)" % (tree.root, ", ".join(outcome.ran)))
        else:
            _say(args, "nothing changed: %s already holds these artifacts" % tree.root)
        if args.no_start:
            _prune(tree, args, reporter)
            return 0
        if outcome.server is None:
            reporter.warn("the installed bundle defines no server, so none was started")
            return 0
        # Started under the apply lock, as before: a second apply cannot swap the tree meanwhile.
        url = _start_generation(tree, outcome, args, reporter)
        _prune(tree, args, reporter)
    _say(args, "server ready: %s" % url)
    return 0


def _start_generation(tree: InstallTree, outcome: "Outcome", args: argparse.Namespace, reporter: "Reporter") -> str:
    """Start the server pinned to the current generation; on exit 5 go back unless --no-rollback."""
    from cosyinstall import generations as gens
    from cosyinstall.errors import NotReady
    from cosyinstall.rollback import after_not_ready

    assert outcome.server is not None, "apply starts only a bundle that defines a server"
    try:
        return _start(gens.pinned(tree), outcome.server, args, reporter, restart=bool(outcome.ran))
    except NotReady as exc:
        if outcome.generation is None or outcome.previous is None or args.no_rollback:
            raise
        raise after_not_ready(tree, exc, outcome.generation, reporter,
                              lambda pinned: _start(pinned, _spec(pinned), args, reporter)) from None


def _prune(tree: InstallTree, args: argparse.Namespace, reporter: "Reporter") -> None:
    from cosyinstall import generations as gens

    for gen_id in gens.prune(tree, max(args.keep, 1)):
        reporter.info("generation %s removed (more than --keep %d)" % (gen_id, args.keep))


def _cmd_rollback(args: argparse.Namespace, tree: InstallTree) -> int:
    from cosyinstall.rollback import roll_back

    reporter = _reporter(args)
    was, now, url = roll_back(tree, reporter, lambda pinned: _start(pinned, _spec(pinned), args, reporter),
                              grace=args.grace, wait=args.wait)
    _say(args, "rolled back: generation %s is current (was %s)" % (now, was))
    if url:
        _say(args, "server ready: %s" % url)
    return 0


def _cmd_generations(args: argparse.Namespace, tree: InstallTree) -> int:
    from cosyinstall import generations as gens

    rows = gens.listing(tree)
    print(gens.dump(rows) if args.json else gens.render(rows))
    return 0


def _cmd_verify(args: argparse.Namespace, tree: InstallTree) -> int:
    from cosyinstall.verify import verify_and_mark

    verdict = verify_and_mark(tree, _reporter(args))
    if args.json:
        from cosyinstall.reports import verify_document

        error = None if verdict.ok else verdict.error()
        print(json.dumps(verify_document(tree.root, verdict.problems, verdict.marked,
                                         error.exit_code if error else 0), sort_keys=True))
        sys.stdout.flush()
        if error is not None:
            error.__dict__["json_printed"] = True
            raise error
        return 0
    if not verdict.ok:
        for problem in verdict.problems:
            print("  " + problem, file=sys.stderr)
        raise verdict.error()
    _say(args, "verified: %s matches its manifests" % tree.root)
    return 0


def _cmd_start(args: argparse.Namespace, tree: InstallTree) -> int:
    from cosyinstall.generations import pinned

    _say(args, "server ready: %s" % _start(pinned(tree), _spec(tree), args, _reporter(args)))
    return 0


def _cmd_stop(args: argparse.Namespace, tree: InstallTree) -> int:
    from cosyinstall.server_stop import stop_server

    was = stop_server(tree, grace=args.grace)
    _say(args, "server stopped" if was else "server was not running")
    return 0


def _cmd_status(args: argparse.Namespace, tree: InstallTree) -> int:
    from cosyinstall.installed import anything_installed
    from cosyinstall.reports import STATUS_EXIT, status_document, status_lines
    from cosyinstall.server_status import server_status

    spec = None
    try:
        spec = _spec(tree)
    except CosyError:
        pass
    doc = status_document(server_status(tree, spec), anything_installed(tree), tree.root)
    if args.json:
        print(json.dumps(doc, sort_keys=True))
    else:
        print("\n".join(status_lines(doc)))
    return STATUS_EXIT[doc["state"]]


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


def _json_error(command: str, exc: CosyError) -> None:
    """A script reading --json gets a document even when the command failed before writing its own."""
    from cosyinstall.reports import SCHEMAS, error_document

    if not getattr(exc, "json_printed", False) and command in SCHEMAS:
        print(json.dumps(error_document(command, exc.sentence(), exc.exit_code), sort_keys=True))


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    from cosyinstall.i18n import wants_chinese

    if not wants_chinese(argv):
        return _main(argv, None)
    from cosyinstall import i18n
    from cosyinstall.catalogue_zh import ARGPARSE_ZH, ZH

    streams = sys.stdout, sys.stderr
    try:
        return _main(argv, i18n.install([ZH], ARGPARSE_ZH))
    finally:
        sys.stdout, sys.stderr = streams


def _main(argv: List[str], translator: "Optional[Translator]") -> int:
    debug = "--debug" in argv
    args = None
    try:
        parser = _parser()
        if translator is not None:
            from cosyinstall.i18n import translate_parser

            translate_parser(parser, translator)
        args = parser.parse_args(argv)
        return _COMMANDS[args.command](args, InstallTree(args.to))
    except CosyError as exc:
        if debug:
            traceback.print_exc()
        if args is not None and getattr(args, "json", False) and args.command != "status":
            _json_error(args.command, exc)
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
