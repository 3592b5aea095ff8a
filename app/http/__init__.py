"""The HTTP layer: FastAPI dependencies, authentication, error handlers, middlewares and
the share gateway. Routers (:mod:`app.routers`) and this package sit above the services."""
