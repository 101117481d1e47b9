"""Use cases: each one runs a task or a request through the domain and the adapters (ports)."""
