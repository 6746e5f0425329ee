"""TLS material, certificate tooling and the casbin authorizer.

`certs` makes development certificates, `tls` serves them (replaceable while
running), `acl` decides who may do what, and `asgi` tells the HTTP gateway whose
verified certificate a request came with. `pyproglog.server.grpc.authz` and
`pyproglog.server.http.authz` apply the decision to every gRPC call and HTTP
request. Nothing is imported here, so the command line can name `errors`
without loading casbin, cryptography and grpc.
"""
