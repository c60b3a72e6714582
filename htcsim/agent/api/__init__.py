"""The agent's REST API (FastAPI): authentication, request schemas and one router per resource.

Handlers validate and authenticate, then send commands to the engine; they
never change the store or the kernel themselves.
"""
