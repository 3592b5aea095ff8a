-- Background jobs: imports of uploaded media and studies sent out. A job belongs to a
-- member hospital (only its staff see it) and records its progress and, item by item,
-- what became of each instance.

CREATE TABLE jobs (
    pk           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id           text NOT NULL UNIQUE,          -- public identifier (random, not a secret)
    kind         text NOT NULL CHECK (kind IN ('import', 'send')),
    hospital_pk  bigint NOT NULL REFERENCES hospitals (pk),
    subject      text NOT NULL,                 -- who asked for it
    state        text NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'running', 'done', 'failed')),
    -- What was asked (a destination, a study UID); never a secret.
    parameters   jsonb NOT NULL DEFAULT '{}',
    items_total  integer NOT NULL DEFAULT 0,
    items_done   integer NOT NULL DEFAULT 0,
    bytes_total  bigint NOT NULL DEFAULT 0,
    bytes_done   bigint NOT NULL DEFAULT 0,
    -- Outcomes by kind, e.g. {"stored": 3, "refused": 1}.
    counts       jsonb NOT NULL DEFAULT '{}',
    error        text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    started_at   timestamptz,
    finished_at  timestamptz,
    -- Refreshed while the job runs: a running job whose process died stops being
    -- refreshed, and is then marked failed (interrupted).
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    CHECK ((state IN ('done', 'failed')) = (finished_at IS NOT NULL))
);
CREATE INDEX jobs_hospital ON jobs (hospital_pk, created_at);
CREATE INDEX jobs_unfinished ON jobs (heartbeat_at) WHERE state IN ('queued', 'running');

CREATE TABLE job_outcomes (
    job_pk   bigint NOT NULL REFERENCES jobs (pk) ON DELETE CASCADE,
    position integer NOT NULL,
    outcome  jsonb NOT NULL,
    PRIMARY KEY (job_pk, position)
);
