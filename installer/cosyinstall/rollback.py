"""Going back: `cosyinstall rollback`, and apply's own return when a new generation fails readiness.

Both switch the <to> link back to the generation that was current before (generations.py
chooses it) under the apply lock, so no apply builds meanwhile. The server follows: a server
that was running is stopped before the switch and started again from the generation now
current. A crash at any moment leaves <to> pointing to one complete generation (the switch
is one rename); at worst the server is stopped and `cosyinstall start` brings it back.
"""

from __future__ import annotations

from typing import Callable, Optional, Tuple

from cosyinstall import generations as gens
from cosyinstall.errors import CosyError, EnvironmentUnsuitable, NotReady
from cosyinstall.journal import ApplyLock
from cosyinstall.progress import Reporter
from cosyinstall.server_stop import stop_server
from cosyinstall.tree import InstallTree

__all__ = ["roll_back", "after_not_ready"]

# Starts the server of the tree it is given and waits until it is ready; returns its URL.
Starter = Callable[[InstallTree], str]


def _switch_back(tree: InstallTree, reporter: Reporter, grace: float) -> Tuple[str, str, bool]:
    gens.recover(tree)
    cur = gens.current(tree)
    if cur is None:
        raise EnvironmentUnsuitable("%s holds no installed generation" % tree.visible, "run cosyinstall apply first")
    target = gens.rollback_target(tree)
    if target is None:
        raise EnvironmentUnsuitable("%s has no earlier generation to roll back to" % tree.visible,
                                    "cosyinstall generations lists the kept ones")
    was_running = stop_server(tree, grace=grace)
    gens.mark_rolled_back(tree, cur)
    gens.switch(tree, target)
    reporter.info("generation %s is current again (was %s)" % (target, cur))
    return cur, target, was_running


def roll_back(tree: InstallTree, reporter: Reporter, start: Starter, grace: float = 10.0,
              wait: bool = False) -> Tuple[str, str, Optional[str]]:
    """Make the previous generation current; restart the server if it ran. (from, to, server URL or None)."""
    lock = ApplyLock(tree, wait=wait, on_wait=reporter.info)
    lock.acquire()
    try:
        cur, target, was_running = _switch_back(tree, reporter, grace)
        url = start(gens.pinned(tree)) if was_running else None
    finally:
        lock.release()
    return cur, target, url


def after_not_ready(tree: InstallTree, failed: NotReady, generation: str, reporter: Reporter, start: Starter,
                    grace: float = 10.0) -> NotReady:
    """Called by apply (holding its lock) when the generation it made current is not ready.

    Goes back to the previous generation, removes the failed one and starts the previous
    server; returns the error to raise (still exit 5), its sentence saying what happened.
    """
    _cur, target, _was = _switch_back(tree, reporter, grace)
    gens.discard(tree, generation)
    try:
        url = start(gens.pinned(tree))
        after = "rolled back to generation %s, whose server is ready at %s" % (target, url)
    except CosyError as again:
        after = "rolled back to generation %s, whose server did not start either (%s)" % (
            target, again.message.rstrip("."))
    return NotReady("%s; %s" % (failed.message.rstrip("."), after),
                    "pass --no-rollback to keep the failed generation for debugging")
