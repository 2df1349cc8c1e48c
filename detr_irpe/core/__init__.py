"""The leaf layer: facts and value types every layer shares (see docs/architecture.md)."""
