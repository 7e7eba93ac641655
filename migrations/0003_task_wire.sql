-- Which API admitted a task: '' for FooocusAPI's /v1/engine/generate/ (and rows older than this
-- column), 'fooocus-api/<route>' for the older Fooocus-API routes, 'openai' for /v1/images/*.
ALTER TABLE generate_record ADD COLUMN wire TEXT NOT NULL DEFAULT '';
