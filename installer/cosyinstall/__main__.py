# -*- coding: utf-8 -*-
"""Entry point for `python -m cosyinstall` and, copied as the pyz's __main__.py, for `python3 cosyinstall.pyz`.

It must parse on any Python (no f-strings, no annotations, no __future__ imports), so an old
interpreter gets one sentence naming the Python needed instead of a SyntaxError.
"""

import os
import sys

if sys.version_info < (3, 8):
    _lang = os.environ.get("LC_ALL") or os.environ.get("LC_MESSAGES") or os.environ.get("LANG") or ""
    if "--lang=zh" in sys.argv or ("--lang" in sys.argv and "zh" in sys.argv) or _lang.lower().startswith("zh"):
        _text = "cosyinstall: 错误: 这是 Python %d.%d，cosyinstall 需要 CPython 3.8 到 3.13；请用 python3.8 到 python3.13 之一运行它（例如 python3.10 cosyinstall.pyz check）。\n"
    else:
        _text = ("cosyinstall: error: this is Python %d.%d, but cosyinstall needs CPython 3.8 to 3.13; "
                 "run it with one of python3.8 ... python3.13 (for example python3.10 cosyinstall.pyz check).\n")
    # Bytes, not text: the box's locale may be missing and make stderr ASCII-only.
    sys.stderr.flush()
    getattr(sys.stderr, "buffer", sys.stderr).write((_text % sys.version_info[:2]).encode("utf-8"))
    sys.exit(4)

from cosyinstall.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
