-- Member hospitals own what they send, and every access to patient data is recorded.

CREATE TABLE hospitals (
    pk         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    code       text NOT NULL UNIQUE CHECK (code ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$'),
    name       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Data stored before hospitals existed belongs to a DEFAULT hospital.
INSERT INTO hospitals (code, name)
SELECT 'DEFAULT', 'Default hospital' WHERE EXISTS (SELECT 1 FROM patients);

-- A patient is identified within the hospital that sent them: PatientID and
-- IssuerOfPatientID are only unique there (two hospitals' MRN 12345 are two people).
ALTER TABLE patients ADD COLUMN hospital_pk bigint REFERENCES hospitals (pk);
UPDATE patients SET hospital_pk = (SELECT pk FROM hospitals WHERE code = 'DEFAULT');
ALTER TABLE patients ALTER COLUMN hospital_pk SET NOT NULL;
ALTER TABLE patients DROP CONSTRAINT patients_patient_id_issuer_of_patient_id_key;
ALTER TABLE patients ADD CONSTRAINT patients_identity UNIQUE (hospital_pk, patient_id, issuer_of_patient_id);

-- The owning hospital, copied from the patient so every query can be scoped cheaply.
ALTER TABLE studies ADD COLUMN hospital_pk bigint REFERENCES hospitals (pk);
UPDATE studies st SET hospital_pk = p.hospital_pk FROM patients p WHERE p.pk = st.patient_pk;
ALTER TABLE studies ALTER COLUMN hospital_pk SET NOT NULL;
CREATE INDEX studies_hospital ON studies (hospital_pk, pk);
CREATE INDEX patients_regional_id ON patients (patient_id, issuer_of_patient_id);

-- The audit trail: append-only. The application has no update or delete path, and this
-- trigger refuses one from anywhere else (PS3.15 A.5: audit records are evidence).
CREATE TABLE audit_events (
    pk               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at               timestamptz NOT NULL DEFAULT clock_timestamp(),
    transaction      text NOT NULL,
    outcome          integer NOT NULL,       -- the HTTP status answered
    detail           text,
    subject          text,                   -- token subject; NULL when unauthenticated
    hospital         text,                   -- the caller's hospital code
    roles            text[] NOT NULL DEFAULT '{}',
    share_id         text,
    client_address   text,
    user_agent       text,
    method           text NOT NULL,
    path             text NOT NULL,
    query            text,
    study_uids       text[] NOT NULL DEFAULT '{}',
    series_uids      text[] NOT NULL DEFAULT '{}',
    instance_uids    text[] NOT NULL DEFAULT '{}',
    patient_ids      text[] NOT NULL DEFAULT '{}',
    owner_hospitals  text[] NOT NULL DEFAULT '{}',  -- hospitals whose data was touched
    instances        integer NOT NULL DEFAULT 0,
    bytes            bigint NOT NULL DEFAULT 0
);
CREATE INDEX audit_events_at ON audit_events (at);
CREATE INDEX audit_events_subject ON audit_events (subject, at);
CREATE INDEX audit_events_share ON audit_events (share_id, at) WHERE share_id IS NOT NULL;
CREATE INDEX audit_events_studies ON audit_events USING gin (study_uids);
CREATE INDEX audit_events_patients ON audit_events USING gin (patient_ids);
CREATE INDEX audit_events_owners ON audit_events USING gin (owner_hospitals);
CREATE INDEX audit_events_hospital ON audit_events (hospital, at);

CREATE FUNCTION audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only';
END $$;
CREATE TRIGGER audit_events_no_update BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();
CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only();
