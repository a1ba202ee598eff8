"""Issue 14, point 8: the documents in docs/ cover every manifest key and every --json schema."""

from __future__ import annotations

from cosybuild.manifestkeys import ALLOWED
from cosyinstall.reports import SCHEMAS
from support import REPO


def test_every_manifest_table_and_key_is_documented() -> None:
    text = (REPO / "docs" / "manifest.md").read_text(encoding="utf-8")
    for table, keys in ALLOWED.items():
        if table:
            assert ("[%s]" % table) in text or ("[[%s]]" % table) in text, table
        for key in keys:
            assert "| `%s` |" % key in text or "[%s.%s]" % (table, key) in text or "[[%s.%s]]" % (table, key) in text \
                or "`[%s]`" % key in text or "`[[%s]]`" % key in text, (table, key)


def test_every_json_schema_and_the_readme_links_are_there() -> None:
    text = (REPO / "docs" / "exit-codes.md").read_text(encoding="utf-8")
    assert all(schema in text for schema in SCHEMAS.values())
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "DESIGN.md" not in readme
    for doc in ("docs/format.md", "docs/manifest.md", "docs/exit-codes.md"):
        assert doc in readme and (REPO / doc).is_file()
