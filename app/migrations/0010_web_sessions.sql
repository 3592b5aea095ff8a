-- Browser sessions of the staff console. A row is first a sign-in in progress (the OIDC
-- state, nonce and PKCE verifier) and is replaced by a new row, under a new identifier,
-- once the person is signed in: a session identifier fixed before sign-in is worth
-- nothing after it. Only a hash of the identifier is kept.

CREATE TABLE web_sessions (
    id_hash    bytea PRIMARY KEY,
    kind       text NOT NULL CHECK (kind IN ('pending', 'staff')),
    -- Pending: state, nonce, code verifier. Staff: subject, hospital, roles, how.
    data       jsonb NOT NULL DEFAULT '{}',
    csrf       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);
CREATE INDEX web_sessions_expiry ON web_sessions (expires_at);
