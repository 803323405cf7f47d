"""``python -m trio_wsroutes``: the ``trio-wsroutes`` command."""

from ._cli import main

if __name__ == "__main__":
    raise SystemExit(main())
