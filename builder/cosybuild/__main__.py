"""Entry point for `python -m cosybuild`."""

from cosybuild.cli import main

if __name__ == "__main__":
    main()
