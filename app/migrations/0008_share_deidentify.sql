-- A share may serve de-identified copies (PS3.15 Annex E, Basic Application Level
-- Confidentiality Profile) on every path: page, download and DICOMweb root.
ALTER TABLE shares ADD COLUMN deidentify boolean NOT NULL DEFAULT false;
