-- History pages (ended tasks, newest first) skip over this partial index instead of the rows:
-- page 5000 of 100k tasks read 50k full records (long prompts) through OFFSET before.
CREATE INDEX generate_record_ended ON generate_record (id) WHERE finish_mills IS NOT NULL;
