-- Notes a finished task carries: what it could not honour (e.g. a prompt expansion model missing).
ALTER TABLE generate_record ADD COLUMN notes JSON;
