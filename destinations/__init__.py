"""Destination types (PostHog, Segment, PostgreSQL, HTTP, ...), one module each.

Empty in this release: `destinations:` in config.yaml is read and checked for a `type:`,
and nothing is delivered yet.
"""
