"""cosyinstall: verify, install and start a cosy-offline bundle on a box with no network.

Standard library only, CPython 3.8 and newer; this package also owns the artifact format
that cosybuild writes.
"""

__version__ = "0.1.0"
