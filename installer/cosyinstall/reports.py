"""What check, verify and status print: the versioned --json documents and status's short table.

Each JSON document carries "schema": "cosy-offline/<command>/<version>"; a field is only ever
added within a version, so a script reading version 1 keeps working. docs/exit-codes.md and
docs/json.md describe every field. status's exit code says the state (STATUS_EXIT).
"""

from __future__ import annotations

from typing import Any, Dict, List

from cosyinstall.errors import ArtifactRejected, NotReady
from cosyinstall.preflight import Finding
from cosyinstall.progress import _eta as _duration  # the same h/m/s form as progress lines

__all__ = ["SCHEMAS", "STATUS_EXIT", "status_state", "status_document", "status_lines", "check_document",
           "verify_document", "error_document"]

SCHEMAS = {
    "status": "cosy-offline/status/1",
    "check": "cosy-offline/check/1",
    "verify": "cosy-offline/verify/1",
}
# status: 0 running and ready, 5 running but not answering, 6 installed but not running,
# 3 nothing installed (as start and verify say for an empty tree).
NOT_RUNNING_EXIT = 6
STATUS_EXIT = {"ready": 0, "not-ready": NotReady.exit_code, "stopped": NOT_RUNNING_EXIT,
               "not-installed": ArtifactRejected.exit_code}


def status_state(info: Dict[str, Any], installed: bool) -> str:
    if info.get("running"):
        return "ready" if info.get("ready") else "not-ready"
    return "stopped" if installed else "not-installed"


def status_document(info: Dict[str, Any], installed: bool, root: str) -> Dict[str, Any]:
    """server_status's fields plus schema, state, installed and the install root."""
    doc = dict(info)
    doc.update(schema=SCHEMAS["status"], state=status_state(info, installed), installed=installed, to=root)
    return doc


def status_lines(doc: Dict[str, Any]) -> List[str]:
    """A short table for people: state first, then only the rows that say something."""
    state = doc["state"]
    rows = []
    if state == "ready":
        rows.append(("server", "running and ready (pid %s, up %s)" % (doc["pid"], _duration(doc["uptime"] or 0))))
    elif state == "not-ready":
        code = doc.get("http_status")
        answer = "HTTP %s" % code if code is not None else "no answer"
        rows.append(("server", "running but not ready: %s (pid %s, up %s)" % (answer, doc["pid"], _duration(doc["uptime"] or 0))))
    elif state == "stopped":
        rows.append(("server", "not running"))
    else:
        rows.append(("server", "nothing is installed in %s" % doc["to"]))
    if doc.get("url"):
        rows.append(("url", doc["url"]))
    elif doc.get("port") is not None:
        rows.append(("port", str(doc["port"])))
    if doc.get("launcher"):
        rows.append(("launcher", str(doc["launcher"])))
    if doc.get("stale_pid_file"):
        left = doc.get("leftovers") or []
        rows.append(("note", "the last server died%s" % (
            "; processes it started still run: %s (cosyinstall stop ends them)" % ", ".join(map(str, left)) if left else "")))
    if state != "not-installed":
        rows.append(("log", doc["log"]))
    return ["  %-8s  %s" % row for row in rows]


def _row(f: Finding) -> Dict[str, Any]:
    return {"check": f.check, "status": f.status, "ok": f.ok, "blocking": f.blocking, "detail": f.detail,
            "hint": f.hint, "exit_code": 0 if f.ok or not f.blocking else f.code}


def check_document(from_dir: str, root: str, findings: List[Finding], exit_code: int) -> Dict[str, Any]:
    return {"schema": SCHEMAS["check"], "from": from_dir, "to": root, "ok": exit_code == 0,
            "exit_code": exit_code, "rows": [_row(f) for f in findings]}


def verify_document(root: str, problems: List[str], marked: List[str], exit_code: int) -> Dict[str, Any]:
    return {"schema": SCHEMAS["verify"], "to": root, "ok": exit_code == 0, "exit_code": exit_code,
            "problems": list(problems), "marked": list(marked)}


def error_document(command: str, sentence: str, exit_code: int) -> Dict[str, Any]:
    """What --json prints when a command fails before its own document exists."""
    return {"schema": SCHEMAS.get(command, "cosy-offline/%s/1" % command), "ok": False, "exit_code": exit_code,
            "error": sentence}
