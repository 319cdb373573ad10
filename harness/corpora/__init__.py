"""Bundled corpora (compressed text, public domain)."""
