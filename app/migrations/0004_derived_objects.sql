-- Objects derived from an instance (cached thumbnails), removed with it.
CREATE TABLE derived_objects (
    instance_pk bigint NOT NULL REFERENCES instances (pk) ON DELETE CASCADE,
    variant     text NOT NULL,
    object_key  text NOT NULL UNIQUE,
    media_type  text NOT NULL,
    size        bigint NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (instance_pk, variant)
);
