-- The archive index: patients, studies, series and instances, with the attributes PS3.18
-- Table 10.6.1-5 requires for QIDO-RS matching and Table 10.6.3-3 for its responses.
--
-- Dates (DA) are kept as their 8-digit text so that range matching is a text comparison;
-- times (TM) are kept as received for responses and as a fixed-width key for matching.

CREATE EXTENSION IF NOT EXISTS pg_trgm;

CREATE TABLE patients (
    pk                   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    patient_id           text NOT NULL DEFAULT '',
    issuer_of_patient_id text NOT NULL DEFAULT '',
    patient_name         text,
    patient_birth_date   text,
    patient_sex          text,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    UNIQUE (patient_id, issuer_of_patient_id)
);

CREATE TABLE studies (
    pk                       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    patient_pk               bigint NOT NULL REFERENCES patients (pk),
    study_instance_uid       text NOT NULL UNIQUE,
    study_date               text,
    study_time               text,
    study_time_key           text,
    accession_number         text,
    referring_physician_name text,
    study_description        text,
    study_id                 text,
    timezone_offset          text,
    -- Maintained when an instance becomes stored (or is deleted): QIDO computes nothing per row.
    num_series               integer NOT NULL DEFAULT 0,
    num_instances            integer NOT NULL DEFAULT 0,
    modalities               text[] NOT NULL DEFAULT '{}',
    created_at               timestamptz NOT NULL DEFAULT now(),
    updated_at               timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX studies_patient_pk ON studies (patient_pk);

CREATE TABLE series (
    pk                     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    study_pk               bigint NOT NULL REFERENCES studies (pk),
    series_instance_uid    text NOT NULL UNIQUE,
    modality               text,
    series_number          integer,
    series_description     text,
    body_part_examined     text,
    pps_start_date         text,
    pps_start_time         text,
    pps_start_time_key     text,
    scheduled_step_ids     text[] NOT NULL DEFAULT '{}',
    requested_procedure_ids text[] NOT NULL DEFAULT '{}',
    timezone_offset        text,
    num_instances          integer NOT NULL DEFAULT 0,
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX series_study_pk ON series (study_pk);

-- status: 0 = pending (row written, object not yet confirmed), 1 = stored.
CREATE TABLE instances (
    pk                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    series_pk           bigint NOT NULL REFERENCES series (pk),
    sop_instance_uid    text NOT NULL UNIQUE,
    sop_class_uid       text NOT NULL,
    instance_number     integer,
    transfer_syntax_uid text NOT NULL,
    rows                integer,
    columns             integer,
    bits_allocated      integer,
    samples_per_pixel   integer,
    number_of_frames    integer,
    status              smallint NOT NULL DEFAULT 0,
    object_key          text NOT NULL UNIQUE,
    size                bigint NOT NULL,
    sha256              bytea NOT NULL,
    -- Where Pixel Data's value lies in the object, so frames are served with one ranged read.
    pixel_offset        bigint,
    pixel_length        bigint,
    pixel_encapsulated  boolean,
    fragment_offsets    bigint[],
    fragment_lengths    bigint[],
    basic_offset_table  bigint[],
    -- Other bulk values: {"<tag path>": [offset, length]}.
    bulk                jsonb NOT NULL DEFAULT '{}',
    -- The instance's DICOM JSON (PS3.18 Annex F) with bulk values as placeholders, so
    -- metadata requests never re-read objects.
    metadata            jsonb NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX instances_series_pk ON instances (series_pk);
CREATE INDEX instances_pending ON instances (updated_at) WHERE status = 0;

-- Lookups used by QIDO-RS; wildcard and fuzzy indexes come with the query depth work.
CREATE INDEX patients_patient_id ON patients (patient_id);
CREATE INDEX studies_study_date ON studies (study_date);
CREATE INDEX studies_accession_number ON studies (accession_number);
CREATE INDEX series_modality ON series (modality);
