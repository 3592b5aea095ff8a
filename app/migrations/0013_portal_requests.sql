-- A patient's own shares, made from the portal, are listed by their creator.
CREATE INDEX shares_created_by ON shares (created_by);

-- A request to enrol in the portal without a printed code: what the person typed, for
-- the film library of the hospital they named to check against its records. Until a
-- decision it links nothing; approving links the patient record staff confirmed.
CREATE TABLE enrolment_requests (
    pk          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    hospital_pk bigint NOT NULL REFERENCES hospitals (pk) ON DELETE CASCADE,
    name        text NOT NULL,
    birth_date  date NOT NULL,
    -- The hospital's patient ID or a health card number, as typed.
    reference   text NOT NULL,
    email       text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    decision    text CHECK (decision IN ('approved', 'declined')),
    decided_at  timestamptz,
    decided_by  text,
    patient_id  text,
    CHECK ((decision IS NULL) = (decided_at IS NULL)),
    CHECK (decision = 'approved' OR patient_id IS NULL)
);
CREATE INDEX enrolment_requests_pending ON enrolment_requests (hospital_pk, created_at)
    WHERE decision IS NULL;
