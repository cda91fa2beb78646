"""Per-vendor normalizers (vendor payload -> first-party events) and the YAML mapping engine.

Empty in this release: deliveries are verified, deduplicated and stored in each source's
raw stream (gateway/store.py), which is what the normalize worker will read.
"""
