"""transit-gateway: the HTTP API, API keys, the store adapter, the CLI and process wiring."""

__version__ = "0.1.0"
