"""Entry point for `python -m cosyinstall` and for `python3 cosyinstall.pyz`."""

import sys

from cosyinstall.cli import main

if __name__ == "__main__":
    sys.exit(main())
