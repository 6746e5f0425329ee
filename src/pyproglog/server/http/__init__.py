"""The HTTP/JSON front end (FastAPI): translates LogService answers and errors.

Imports nothing of the gRPC front end (and it nothing of this one): what both
need is decided below them, in `server.core`, `server.errors` and `server.authz`.
"""
