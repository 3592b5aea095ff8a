-- A patient's own shares, made from the portal, are listed by their creator.
CREATE INDEX shares_created_by ON shares (created_by);
