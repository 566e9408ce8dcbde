"""``python -m corral.worker --control-fd N --data-fd M``: started by the host, never by hand."""

from .main import main

main()
