"""The virtual environment: created by the bundled uv from the target CPython, filled offline.

`Uv` is the one runner of uv on the box (the venv step and the models' wheels both use it).
uv runs with a scrubbed environment (no index, config or proxy settings from the shell) and
with its cache on the same disk as --to, because the system disk of a rented box is small.
A full disk reported in uv's output is the same DiskFull as one seen by cosyinstall itself.
"""

from __future__ import annotations

import glob
import os
import subprocess
from typing import Dict, List, Mapping, Optional, Sequence

from cosyinstall.errors import ArtifactRejected, DiskFull, EnvironmentUnsuitable, says_disk_full
from cosyinstall.install_plan import canonical_name
from cosyinstall.progress import NullReporter, Reporter
from cosyinstall.tree import InstallTree
from cosyinstall.uvprogress import InstallProgress, count_requirements

__all__ = ["Uv", "uv_env", "venv_version", "installed_dists"]


def venv_version(tree: InstallTree) -> Optional[str]:
    """'3.10.13' from the venv's pyvenv.cfg, or None if the venv is missing or unreadable."""
    try:
        with open(tree.venv_cfg, encoding="utf-8") as handle:
            for line in handle:
                key, _, value = line.partition("=")
                if key.strip() in ("version_info", "version"):
                    return value.strip()
    except OSError:
        return None
    return None


def installed_dists(tree: InstallTree) -> Dict[str, str]:
    """canonical name -> version of every distribution in the venv's site-packages."""
    found: Dict[str, str] = {}
    for info in glob.glob(os.path.join(tree.venv_lib, "python*", "site-packages", "*.dist-info")):
        base = os.path.basename(info)[: -len(".dist-info")]
        name, _, version = base.rpartition("-")
        found[canonical_name(name)] = version
    return found


def uv_env(cache_dir: str, environ: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    base = dict(os.environ if environ is None else environ)
    env = {
        k: v for k, v in base.items()
        if not k.startswith(("UV_", "PIP_", "VIRTUAL_ENV", "CONDA_PREFIX", "PYTHONPATH", "PYTHONHOME"))
    }
    env.update({
        "UV_CACHE_DIR": cache_dir,
        "UV_NO_CONFIG": "1",
        "UV_OFFLINE": "1",
        "UV_PYTHON_DOWNLOADS": "never",
        "UV_NO_PROGRESS": "1",
    })
    return env


class Uv:
    """One uv binary, its cache directory, and file descriptors its runs must inherit."""

    def __init__(self, exe: str, cache_dir: str, reporter: Optional[Reporter] = None,
                 keep_fds: Sequence[int] = ()) -> None:
        self.exe = exe
        self.cache_dir = cache_dir
        self.reporter = reporter or NullReporter()
        self.keep_fds = tuple(keep_fds)

    def run(self, args: List[str], what: str, fail: bool = True) -> str:
        """Run uv offline; "" on success, else its last lines (or raise, with `fail`).

        uv's whole output goes to the install log; a full disk raises DiskFull either way.
        """
        argv = [self.exe] + args
        reporter = self.reporter
        reporter.detail("%s: %s" % (what, " ".join(argv)))  # the full line only with --verbose, and in the log
        os.makedirs(self.cache_dir, exist_ok=True)
        try:
            proc = subprocess.run(argv, env=uv_env(self.cache_dir), stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, pass_fds=self.keep_fds)
        except OSError as exc:
            raise EnvironmentUnsuitable("cannot run %s (%s)" % (self.exe, exc.strerror or exc),
                                        "the bundle's uv is built for linux x86_64; run apply again to restore it"
                                        ) from None
        output = proc.stdout.decode("utf-8", "replace").strip()
        if output and reporter.log is not None:
            reporter.log.write(output + "\n")
            reporter.log.flush()
        if proc.returncode == 0:
            return ""
        if says_disk_full(output):
            raise DiskFull(self.cache_dir, during=what)
        last = [line for line in output.splitlines() if line.strip()][-3:]
        detail = " / ".join(line.strip() for line in last) or "no output"
        if not fail:
            return detail
        raise ArtifactRejected("%s failed (uv exit %d): %s" % (what, proc.returncode, detail),
                               "see .cosyinstall/install.log for uv's full output")

    def create_venv(self, python: str, tree: InstallTree) -> None:
        self.create_venv_at(python, tree.venv)

    def create_venv_at(self, python: str, path: str) -> None:
        # Relocatable: launchers find python relative to themselves, so the venv works through
        # <to>/.venv and through its generation's real path, and a new generation can hard-link it.
        self.run(["venv", "--quiet", "--relocatable", "--python", python, path], "creating the venv")

    def install(self, tree: InstallTree, wheels: str, requirements: Optional[str], files: Sequence[str] = (),
                require_hashes: bool = True, reinstall: Sequence[str] = ()) -> None:
        """Install offline from the wheels folder: a requirements file, or the given wheel files."""
        args = ["pip", "install", "--python", tree.venv_python, "--no-index", "--find-links", wheels, "--no-build"]
        for name in reinstall:
            args += ["--reinstall-package", name]
        if require_hashes:
            args.append("--require-hashes")
        if requirements is not None:
            args += ["--requirement", requirements]
        args += list(files)
        with InstallProgress(tree, count_requirements(requirements, files), self.reporter):
            self.run(args, "installing packages")

    def install_batch(self, venv_python: str, requirements: str, find_links: str) -> None:
        """Install the `name==version` lines of `requirements` from the finished wheels in `find_links`
        into the venv of `venv_python` (the venv being built, or a side venv of it)."""
        # No hashes: each wheel was checked against its sha256 before it was linked into find_links;
        # uv hashing 3 GB again would only repeat that.
        # No dependencies: the lock's whole set arrives batch by batch, and is checked as one afterwards.
        self.run(["pip", "install", "--python", venv_python, "--no-index", "--no-deps", "--no-build",
                  "--find-links", find_links, "--requirement", requirements], "installing packages")

    def install_exact(self, tree: InstallTree, requirements: str, reinstall: Sequence[str] = ()) -> None:
        """Install exactly the hash-pinned files a requirements file names, without their dependencies."""
        # --no-deps: a model wheel's dependencies belong in the bundle's locked package set, which
        # is already installed; with them unlisted here, --require-hashes would refuse the wheel.
        args = ["pip", "install", "--python", tree.venv_python, "--no-index", "--require-hashes", "--no-deps",
                "--requirement", requirements]
        for name in reinstall:
            args += ["--reinstall-package", name]
        self.run(args, "installing the model wheels")

    def check(self, tree: InstallTree) -> str:
        """uv pip check: "" when the venv is consistent, else what uv reports."""
        return self.run(["pip", "check", "--python", tree.venv_python], "checking the venv", fail=False)

    def uninstall(self, tree: InstallTree, names: Sequence[str]) -> None:
        if names:
            self.reporter.info("removing packages: %s" % ", ".join(names))
            self.run(["pip", "uninstall", "--python", tree.venv_python] + list(names), "removing packages")
