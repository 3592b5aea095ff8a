-- The address a share's owner is told at when the share is first opened and when its
-- access is locked out after failed attempts; and when each was told, so that every
-- worker claims a notice at most once (the first open) or once per lockout window.
ALTER TABLE shares
    ADD COLUMN notify_email text,
    ADD COLUMN first_opened_at timestamptz,
    ADD COLUMN lockout_noticed_at timestamptz;
