"""The older Fooocus-API wire (mrhan1993/Fooocus-API): a thin adapter over the same admission path and task log.

translate.py maps requests (pure), multipart.py reads v1 forms, admit.py admits them as
/v1/engine/generate/ does, jobs.py reads tasks as jobs, responses.py holds upstream's shapes,
kinds.py the job types, routes.py the Litestar handlers (FOOOCUS_API_ROUTES).
"""
