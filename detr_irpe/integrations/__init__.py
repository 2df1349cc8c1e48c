"""Adapters to other frameworks; each subpackage imports its framework and is optional."""
