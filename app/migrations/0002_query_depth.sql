-- QIDO-RS at scale and frames without offset tables.
--
-- Person names are matched on a folded copy (lower case, accents removed: PS3.4 C.2.2.2.1
-- allows case- and accent-insensitive matching for PN), indexed with trigrams so that
-- wildcard and fuzzy matches (PS3.18 §8.3.4.1) stay fast at a million instances.

ALTER TABLE patients ADD COLUMN patient_name_fold text;
ALTER TABLE studies ADD COLUMN referring_physician_fold text;
UPDATE patients SET patient_name_fold = lower(patient_name);
UPDATE studies SET referring_physician_fold = lower(referring_physician_name);

CREATE INDEX patients_name_fold_trgm ON patients USING gin (patient_name_fold gin_trgm_ops);
CREATE INDEX studies_referring_fold_trgm ON studies USING gin (referring_physician_fold gin_trgm_ops);
CREATE INDEX studies_modalities ON studies USING gin (modalities);
CREATE INDEX studies_study_date_pk ON studies (study_date, pk);
CREATE INDEX instances_series_order ON instances (series_pk, instance_number, pk);
CREATE INDEX instances_sop_class_uid ON instances (sop_class_uid);
CREATE INDEX series_series_number ON series (study_pk, series_number);

-- The fragment each frame starts at, when frames span fragments and the file has no
-- Basic Offset Table (PS3.5 §A.4): found at ingest from the codestream markers.
ALTER TABLE instances ADD COLUMN frame_starts integer[];

-- Objects whose index rows were deleted, until the objects themselves are removed: the
-- rows go first (readers then see 404 at once), the objects right after the commit, and
-- whatever a crash leaves here is retried by the sweep.
CREATE TABLE object_garbage (
    object_key text PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now()
);
