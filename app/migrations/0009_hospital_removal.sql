-- A hospital that leaves the archive is removed, not deleted: what it stored stays (its
-- retention is an operator's decision), its audit trail still names it, and its code is
-- never given to another hospital. Its tokens are refused from the moment of removal.
ALTER TABLE hospitals ADD COLUMN removed_at timestamptz;
