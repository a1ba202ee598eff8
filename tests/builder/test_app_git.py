"""The app from a git URL: a real local repository with a real submodule, by file:// URL, at a pinned commit."""

from __future__ import annotations

import json
import os
import subprocess
import zipfile
from pathlib import Path

import pytest

from cosybuild.appsource import export_app, pin_app
from cosybuild.profile import load_profile
from cosybuild.dirwalk import walk_tree
from cosyinstall.tree import RESERVED_TOP
from support import cosybuild, find_python, offline, one_sentence, pyz, run

GIT_ID = ("-c", "user.name=cosy test", "-c", "user.email=cosy@example.invalid", "-c", "protocol.file.allow=always",
          "-c", "init.defaultBranch=main", "-c", "commit.gpgsign=false", "-c", "tag.gpgsign=false")


def git(cwd: Path, *args: str) -> str:
    proc = subprocess.run(["git", *GIT_ID, *args], cwd=cwd, capture_output=True, text=True)
    assert proc.returncode == 0, (args, proc.stderr)
    return proc.stdout.strip()


def write(root: Path, files: dict[str, str], executable: tuple[str, ...] = ()) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        os.chmod(path, 0o755 if rel in executable else 0o644)


class Repos:
    """An app repo with the submodule third_party/Matcha-TTS, tagged v1.0, then moved on."""

    def __init__(self, base: Path) -> None:
        self.sub = base / "Matcha-TTS"
        self.app = base / "CosyVoice"
        self.sub.mkdir(parents=True)
        git(self.sub, "init", "--quiet")
        write(self.sub, {"matcha/__init__.py": "VERSION = 1\n", "setup.py": "# matcha\n"})
        git(self.sub, "add", "-A")
        git(self.sub, "commit", "--quiet", "-m", "matcha 1")
        self.sub_v1 = git(self.sub, "rev-parse", "HEAD")
        self.app.mkdir()
        git(self.app, "init", "--quiet")
        write(self.app, {"fast_server.py": "print('v1')\n", "run.sh": "#!/bin/sh\necho run\n",
                         "asset/speakers/female.json": "{}\n", "cosyvoice/__init__.py": ""}, executable=("run.sh",))
        git(self.app, "submodule", "add", "--quiet", "file://%s" % self.sub, "third_party/Matcha-TTS")
        git(self.app, "add", "-A")
        git(self.app, "commit", "--quiet", "-m", "app 1")
        git(self.app, "tag", "-a", "v1.0", "-m", "release 1.0")
        self.v1 = git(self.app, "rev-parse", "HEAD")
        # Both repositories move on after the tag: neither change may leak into a v1.0 export.
        write(self.sub, {"matcha/__init__.py": "VERSION = 2\n"})
        git(self.sub, "commit", "--quiet", "-am", "matcha 2")
        write(self.app, {"fast_server.py": "print('v2')\n", "new.txt": "new\n"})
        git(self.app, "add", "-A")
        git(self.app, "commit", "--quiet", "-m", "app 2")
        self.v2 = git(self.app, "rev-parse", "HEAD")

    @property
    def url(self) -> str:
        return "file://%s" % self.app

    def expected(self, commit: str) -> dict[str, tuple[bytes, bool]]:
        """path -> (bytes, executable) of every file the commit holds, submodules included, from git itself."""
        out: dict[str, tuple[bytes, bool]] = {}
        for repo, rev, prefix in ((self.app, commit, ""),):
            for line in git(repo, "ls-tree", "-r", "-z", rev).split("\0"):
                if not line:
                    continue
                meta, path = line.split("\t", 1)
                mode, kind, oid = meta.split()
                if kind == "commit":  # a submodule: its files at the recorded commit
                    for sline in git(self.sub, "ls-tree", "-r", "-z", oid).split("\0"):
                        if sline:
                            smeta, spath = sline.split("\t", 1)
                            smode, _k, soid = smeta.split()
                            out["%s/%s" % (path, spath)] = (self._blob(self.sub, soid), smode == "100755")
                    continue
                out[prefix + path] = (self._blob(repo, oid), mode == "100755")
        return out

    @staticmethod
    def _blob(repo: Path, oid: str) -> bytes:
        return subprocess.run(["git", "cat-file", "blob", oid], cwd=repo, capture_output=True, check=True).stdout


@pytest.fixture
def repos(tmp_path: Path) -> Repos:
    return Repos(tmp_path / "git")


def manifest(tmp_path: Path, url: str, rev: str, packages: str = "six==1.16.0") -> Path:
    (tmp_path / "models" / "m").mkdir(parents=True, exist_ok=True)
    (tmp_path / "models" / "m" / "weights.bin").write_bytes(b"\x01" * 64)
    path = tmp_path / "gitapp.toml"
    path.write_text("""
name = "gitapp"
[target]
python = "3.10"
platform = "x86_64-manylinux_2_28"
[packages]
requirements = ["%s"]
[app]
git = "%s"
rev = "%s"
submodules = true
[[models]]
name = "m"
source = "local"
repo = "models/m"
[server]
command = ["python", "fast_server.py"]
launcher = "direct"
port = 6008
""" % (packages, url, rev), encoding="utf-8")
    return path


def exported(tree: Path) -> dict[str, tuple[bytes, bool]]:
    return {rel: (full.read_bytes(), executable) for rel, full, executable in walk_tree(tree)}


@pytest.mark.parametrize("rev", ["v1.0", "FULL"])
def test_export_at_a_tag_or_commit_matches_that_commit_with_submodules(repos: Repos, tmp_path: Path, rev: str) -> None:
    profile = load_profile(str(manifest(tmp_path, repos.url, repos.v1 if rev == "FULL" else rev)))
    pinned = pin_app(profile)
    assert pinned == {"git": repos.url, "rev": profile.app.rev, "commit": repos.v1, "submodules": True}
    work = tmp_path / "work"
    work.mkdir()
    tree = export_app(profile, pinned, work)
    got = exported(tree)
    assert got == repos.expected(repos.v1)
    assert got["third_party/Matcha-TTS/matcha/__init__.py"] == (b"VERSION = 1\n", False)
    assert got["run.sh"][1] is True
    assert not any(".git/" in p or p.endswith("/.git") or p == ".git" for p in got)


def test_a_branch_pins_its_current_commit(repos: Repos, tmp_path: Path) -> None:
    profile = load_profile(str(manifest(tmp_path, repos.url, "main")))
    assert pin_app(profile)["commit"] == repos.v2


def test_an_unknown_rev_is_a_usage_error_naming_it(repos: Repos, tmp_path: Path) -> None:
    proc = cosybuild("lock", str(manifest(tmp_path, repos.url, "no-such-branch")), "--only", "app")
    assert proc.returncode == 2, proc.stderr
    line = one_sentence(proc.stderr)
    assert "no-such-branch" in line and str(repos.app) in line


def test_a_pinned_commit_that_is_gone_is_refused(repos: Repos, tmp_path: Path) -> None:
    profile = load_profile(str(manifest(tmp_path, repos.url, "v1.0")))
    pinned = dict(pin_app(profile), commit="0" * 40)
    (tmp_path / "work").mkdir()
    with pytest.raises(Exception) as err:
        export_app(profile, pinned, tmp_path / "work")
    assert getattr(err.value, "exit_code", None) == 3 and "0" * 40 in str(err.value)


@pytest.mark.e2e
def test_packed_and_installed_app_tree_is_exactly_the_pinned_commit(repos: Repos, tmp_path: Path, build_cache: Path) -> None:
    path = manifest(tmp_path, repos.url, "v1.0")
    dist = tmp_path / "dist"
    proc = cosybuild("pack", str(path), "--out", str(dist))
    assert proc.returncode == 0, proc.stderr
    expected = repos.expected(repos.v1)
    with zipfile.ZipFile(dist / "offline_packages.zip") as z:
        packed = {n[len("app/"):]: z.read(n) for n in z.namelist() if n.startswith("app/")}
        meta = json.loads(z.read("MANIFEST.json"))
    assert packed == {p: data for p, (data, _x) in expected.items()}
    assert meta["app"]["commit"] == repos.v1 and meta["app"]["git"] == repos.url
    if find_python("3.10") is None:
        pytest.skip("no CPython 3.10 on this machine to install into")
    to = tmp_path / "to"
    apply = run(offline(" ".join(pyz(dist, "apply", "--no-start", "--from", str(dist), "--to", str(to)))))
    assert apply.returncode == 0, apply.stdout + apply.stderr
    installed = {}
    for dirpath, dirnames, filenames in os.walk(to):
        rel_dir = os.path.relpath(dirpath, to)
        if rel_dir == ".":
            dirnames[:] = [d for d in dirnames if d not in RESERVED_TOP]
        for name in filenames:
            full = Path(dirpath) / name
            rel = full.relative_to(to).as_posix()
            installed[rel] = (full.read_bytes(), bool(full.stat().st_mode & 0o100))
    assert installed == expected
