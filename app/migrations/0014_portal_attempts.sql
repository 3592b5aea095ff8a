-- Attempts at the portal's unauthenticated forms (enrolment codes, sign-in link
-- requests, enrolment requests), counted per address and per client address in fixed
-- windows, so that a limit holds across every worker. Keys are keyed hashes: who tried
-- is not readable here.
CREATE TABLE portal_attempts (
    kind     text NOT NULL,
    key_hash bytea NOT NULL,
    -- The window: whole multiples of the window's length since the epoch.
    bucket   bigint NOT NULL,
    attempts integer NOT NULL,
    PRIMARY KEY (kind, key_hash, bucket)
);
CREATE INDEX portal_attempts_bucket ON portal_attempts (bucket);
