"""Authentication: bearer JWT verification, key sources, and the local token issuer."""
