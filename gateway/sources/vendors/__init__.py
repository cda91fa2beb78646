"""The vendor catalog: every sender `type:` can name, in one registry (catalog.VENDORS).

Each module lists a family of vendors as `Vendor` entries (data), with the code a
vendor needs (a scheme, a handshake) beside it. `webhook-gateway vendors` prints the
catalog; docs/vendors.md is rendered from it (tests check the two agree).

Adding a vendor: add a `register_vendor(Vendor(...))` entry to the module of its scheme
family, a sample payload under gateway/sources/samples/<name>/, and a test that signs a
request with the vendor's own SDK, a published vector, or the docs' algorithm written out.
"""

from ..catalog import VENDORS
from . import builtin, fields, handshakes, hmac_family, keys  # noqa: F401 (each registers)

__all__ = ["VENDORS"]
