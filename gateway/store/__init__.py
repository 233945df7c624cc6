"""The store adapter: key naming, one module per record family, connections, embedded Valkey."""
