"""The gRPC front end (`log.v1.Log` on grpc.aio): translates LogService answers and errors.

Imports nothing of the HTTP front end (and it nothing of this one): what both
need is decided below them, in `server.core`, `server.errors` and `server.authz`.
"""
