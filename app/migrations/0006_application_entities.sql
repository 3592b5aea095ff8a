-- Known DICOM application entities (PS3.8 §7.1): the modalities and PACS that may
-- associate with the archive, and where it may send to. Each belongs to a member
-- hospital: what a modality stores is that hospital's, and what it may query is scoped
-- to it, exactly as a token of that hospital.

CREATE TABLE application_entities (
    pk          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- PS3.5 §6.2 AE: up to 16 characters of the default repertoire, no backslash or
    -- control characters; leading and trailing spaces are not significant.
    ae_title    text NOT NULL UNIQUE CHECK (ae_title ~ '^[ -\[\]-~]{1,16}$' AND ae_title = btrim(ae_title)),
    host        text NOT NULL,
    port        integer NOT NULL CHECK (port BETWEEN 1 AND 65535),
    hospital_pk bigint NOT NULL REFERENCES hospitals (pk),
    -- What it may do: verify, store, query, retrieve by C-MOVE or C-GET, and whether the
    -- archive may send to it (a C-MOVE destination, or a study sent on request).
    may_echo    boolean NOT NULL DEFAULT true,
    may_store   boolean NOT NULL DEFAULT false,
    may_find    boolean NOT NULL DEFAULT false,
    may_move    boolean NOT NULL DEFAULT false,
    may_get     boolean NOT NULL DEFAULT false,
    destination boolean NOT NULL DEFAULT false,
    description text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX application_entities_hospital ON application_entities (hospital_pk);
