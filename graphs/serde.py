"""Checkpoint serialization of longshort's types (``Turn``, ``Episode``, ``TokenCounts``).

A checkpointed reasoner thread holds its document as ``Turn`` objects. LangGraph's default
``JsonPlusSerializer`` restores any msgpack-encoded class but logs "Deserializing unregistered
type longshort.trace.Turn … will be blocked in a future version" for each class that is neither in
its built-in safe list nor in the serializer's ``allowed_msgpack_modules``. The intended fix is
an explicit allowlist: give the checkpointer a serializer that names the types, ::

    from langgraph.checkpoint.memory import InMemorySaver
    from longshort.graphs.serde import checkpoint_serde

    reasoner = build_reasoner(long, short, checkpointer=InMemorySaver(serde=checkpoint_serde()))
    # SqliteSaver(conn, serde=checkpoint_serde()), AsyncSqliteSaver(conn, serde=…), PostgresSaver …

An explicit allowlist is also strict: a class outside it and outside LangGraph's safe list (which
already holds the langchain messages of a chat app) comes back as its plain data instead of an
instance, with a "Blocked deserialization" log line. If your own graph state holds classes of
its own, name them too: ``checkpoint_serde(MyModel, ("my.module", "MyType"))``.

With ``LANGGRAPH_STRICT_MSGPACK=true`` LangGraph derives an allowlist from each compiled graph's
state schema, which already names ``Turn``: no serializer is needed then. A checkpointer whose
serializer already has an explicit allowlist can be extended with
``checkpointer.with_allowlist(msgpack_allowlist())``.

The LangGraph server (``langgraph dev``) brings its own checkpointer and serializer, which a graph
cannot change: that is the server's to configure.
"""

from __future__ import annotations

from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from longshort.trace import Episode, TokenCounts, Turn

#: The longshort classes that can land in checkpointed state.
CHECKPOINT_TYPES: tuple[type, ...] = (Turn, TokenCounts, Episode)


def msgpack_allowlist(*extra: type | tuple[str, ...]) -> tuple[tuple[str, ...], ...]:
    """``(module, name)`` keys of :data:`CHECKPOINT_TYPES` and ``extra`` (classes or keys)."""
    keys: dict[tuple[str, ...], None] = {}
    for item in (*CHECKPOINT_TYPES, *extra):
        key = (item.__module__, item.__name__) if isinstance(item, type) else tuple(item)
        keys[key] = None
    return tuple(keys)


def checkpoint_serde(*extra: type | tuple[str, ...], pickle_fallback: bool = False) -> JsonPlusSerializer:
    """A ``JsonPlusSerializer`` that restores longshort's types (and ``extra``) without warnings.

    Pass it as ``serde=`` to the checkpointer of a graph that embeds the reasoner.
    """
    return JsonPlusSerializer(allowed_msgpack_modules=msgpack_allowlist(*extra), pickle_fallback=pickle_fallback)
