"""The ``transit-gateway`` command line: ``main`` parses it, ``serve`` runs the processes."""

from gateway.cli.main import main

__all__ = ["main"]
