"""Security policy: the caller (principal, roles, rights), the scope every query carries,
bearer JWT verification, key sources, the local token issuer and share secrets."""
