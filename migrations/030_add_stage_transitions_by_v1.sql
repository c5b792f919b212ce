-- Who moved a subject (a person in the workspace, a CRM integration), beside the cause: an accepted
-- signal records who accepted it. Empty for automatic moves (signals, traits) and older rows.
ALTER TABLE stage_transitions_v1 ADD COLUMN IF NOT EXISTS by String DEFAULT '';
