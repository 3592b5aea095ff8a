-- Share links that replace the CD: a tokenized, expiring, revocable and audited grant of
-- access to some studies. Only hashes of the secrets are kept.

CREATE TABLE shares (
    id              text PRIMARY KEY,              -- public identifier (not a secret)
    token_hash      bytea NOT NULL UNIQUE,         -- HMAC of the link's token
    code_hash       bytea NOT NULL UNIQUE,         -- HMAC of the access code
    hospital_pk     bigint NOT NULL REFERENCES hospitals (pk),
    created_by      text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    max_uses        integer CHECK (max_uses > 0),
    uses            integer NOT NULL DEFAULT 0,
    permissions     text[] NOT NULL,
    recipient       text,
    challenge       text CHECK (challenge IN ('birthdate', 'pin')),
    challenge_hash  bytea,
    parent_id       text REFERENCES shares (id),
    revoked_at      timestamptz,
    revoked_by      text,
    CHECK ((challenge IS NULL) = (challenge_hash IS NULL))
);
CREATE INDEX shares_hospital ON shares (hospital_pk, created_at);
CREATE INDEX shares_parent ON shares (parent_id);

CREATE TABLE share_studies (
    share_id           text NOT NULL REFERENCES shares (id),
    study_instance_uid text NOT NULL,
    PRIMARY KEY (share_id, study_instance_uid)
);
CREATE INDEX share_studies_study ON share_studies (study_instance_uid);

-- A session opened by passing a share's gate (the challenge, or the access code): its own
-- secret, so that the link's token alone does not open a challenged share.
CREATE TABLE share_sessions (
    token_hash bytea PRIMARY KEY,
    share_id   text NOT NULL REFERENCES shares (id),
    expires_at timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX share_sessions_share ON share_sessions (share_id);

-- Failed codes and challenges, for lockout per share and per client address.
CREATE TABLE share_failures (
    at             timestamptz NOT NULL DEFAULT now(),
    client_address text,
    share_id       text
);
CREATE INDEX share_failures_client ON share_failures (client_address, at);
CREATE INDEX share_failures_share ON share_failures (share_id, at);
