-- The patient portal. An enrolment code, printed for a patient by the film library,
-- binds whoever types it (with an email address) to that patient at that hospital; a
-- portal account signs in by one-time links emailed to it. Every secret is a keyed hash.
CREATE TABLE enrolment_codes (
    code_hash   bytea PRIMARY KEY,
    hospital_pk bigint NOT NULL REFERENCES hospitals (pk) ON DELETE CASCADE,
    patient_id  text NOT NULL,
    created_by  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz
);

CREATE TABLE portal_accounts (
    pk         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email      text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- The patients an account may see: a patient ID at a member hospital, each.
CREATE TABLE portal_patients (
    account_pk  bigint NOT NULL REFERENCES portal_accounts (pk) ON DELETE CASCADE,
    hospital_pk bigint NOT NULL REFERENCES hospitals (pk) ON DELETE CASCADE,
    patient_id  text NOT NULL,
    PRIMARY KEY (account_pk, hospital_pk, patient_id)
);

CREATE TABLE portal_signin_links (
    token_hash bytea PRIMARY KEY,
    account_pk bigint NOT NULL REFERENCES portal_accounts (pk) ON DELETE CASCADE,
    expires_at timestamptz NOT NULL,
    used_at    timestamptz
);

CREATE TABLE portal_sessions (
    token_hash bytea PRIMARY KEY,
    account_pk bigint NOT NULL REFERENCES portal_accounts (pk) ON DELETE CASCADE,
    expires_at timestamptz NOT NULL
);
CREATE INDEX portal_sessions_expiry ON portal_sessions (expires_at);
