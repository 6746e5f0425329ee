"""TLS material, certificate tooling and the casbin authorizer.

`certs` makes development certificates, `tls` serves them (replaceable while
running), `acl` decides who may do what, and `interceptor` / `asgi` apply the
decision to every gRPC call and HTTP request. Nothing is imported here, so the
command line can name `errors` without loading casbin, cryptography and grpc.
"""
