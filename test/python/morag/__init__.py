"""Stand-in for MoRAG (mattes337/MoRAG @ bb0da91), which cannot be installed here.

It defines MoRAG's real Celery app configuration, task names and task
signatures on real Celery, and the real APIKeyService Redis layout, so that
message-level compatibility tests run against the real thing. The task bodies
do deterministic stand-in work instead of MoRAG's document/audio pipelines.
"""
