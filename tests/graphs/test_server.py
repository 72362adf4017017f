"""The ``langgraph.json`` factories: in-process (caching, no blocking) and under a real ``langgraph dev``.

The server test copies the repo's ``langgraph.json`` into a temporary folder with its paths made
absolute, starts ``langgraph dev`` there (in-memory runtime, loopback, free port, no reload, no
browser; its ``.langgraph_api`` folder lands in that temporary folder, nothing in the repo) in its
own process group, and drives it with ``langgraph_sdk``. Each model load in the server appends a
line to ``LONGSHORT_LOAD_LOG``, which is how the test counts loads from outside. Small budgets
(``LONGSHORT_MAX_*``) keep every episode to a few seconds on CPU.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import get_args

import pytest

from longshort.agents import ScriptedBackend, long_agent, short_agent
from longshort.trace import EpisodeStatus
from tests.serve_utils import OFFLINE_ENV, free_port

ROOT = Path(__file__).resolve().parents[2]
STATUSES = set(get_args(EpisodeStatus))
MODEL_ENV = ("LONGSHORT_LONG_MODEL", "LONGSHORT_SHORT_MODEL", "LONGSHORT_BACKEND", "LONGSHORT_BASE_URL")
LIMIT_ENV = {"LONGSHORT_MAX_TURNS": "2", "LONGSHORT_MAX_TOKENS_PER_TURN": "32", "LONGSHORT_MAX_TOTAL_TOKENS": "64"}


# ----------------------------------------------------------------------------------- in-process


def _load_factory_file(name: str):
    """Load ``graphs/server.py`` by its path, the way langgraph-api does (a fresh module per graph)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "graphs" / "server.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def fake_loads(monkeypatch, tiny_tokenizer):
    """Fresh factory caches and a scripted ``load_agents`` that records its calls (slow: 0.3 s)."""
    import longshort.agents.loading as loading
    import longshort.graphs.server as server

    monkeypatch.setattr(server, "_agents", {})
    monkeypatch.setattr(server, "_graphs", {})
    monkeypatch.setattr(server, "_preloading", set())
    monkeypatch.setenv("LONGSHORT_PRELOAD", "0")
    for name in (*MODEL_ENV, *LIMIT_ENV):
        monkeypatch.delenv(name, raising=False)
    calls: list[tuple] = []

    def load_agents(long_model=None, short_model=None, *, backend="hf", **kw):
        time.sleep(0.3)
        calls.append((long_model, short_model, backend, kw.get("base_url")))
        answer = ScriptedBackend(lambda r: "<answer> \\boxed{42} </answer>", tiny_tokenizer, model_id="short")
        think = ScriptedBackend(lambda r: "<think> 6 * 7 = 42 </think>", tiny_tokenizer, model_id="long")
        return long_agent(think), short_agent(answer)

    monkeypatch.setattr(loading, "load_agents", load_agents)
    return calls


def test_langgraph_json_names_async_factories_that_share_one_load(fake_loads):
    spec = json.loads((ROOT / "langgraph.json").read_text())
    assert set(spec["graphs"]) == {"longshort", "longshort_chat"}
    factories = {}
    for graph_id, target in spec["graphs"].items():
        file, func = target.split(":")
        assert (ROOT / file).resolve() == ROOT / "graphs" / "server.py"
        factories[graph_id] = getattr(_load_factory_file(f"lg_{graph_id}"), func)
        assert asyncio.iscoroutinefunction(factories[graph_id])

    async def main():
        config = {"configurable": {}}
        return await asyncio.gather(*(factories[g](config) for g in ("longshort", "longshort_chat") * 3))

    graphs = asyncio.run(main())
    assert len(fake_loads) == 1  # six concurrent first calls, two module copies: one load
    assert [g.name for g in graphs] == ["longshort", "longshort_chat"] * 3
    assert {"long", "short"} <= set(graphs[0].get_graph().nodes) and "reasoner" in graphs[1].get_graph().nodes
    assert graphs[0] is graphs[2]  # later calls return the cached graph
    out = asyncio.run(graphs[1].ainvoke({"messages": [("human", "What is 6 * 7?")]}))
    assert out["messages"][-1].response_metadata["episode"]["status"] == "answered"


def test_loading_runs_off_the_event_loop(fake_loads):
    from longshort.graphs.server import make_reasoner

    async def main():
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.create_task(ticker())
        await make_reasoner({})
        task.cancel()
        return ticks

    assert asyncio.run(main()) >= 10  # the loop kept running during the 0.3 s load


def test_a_new_model_configuration_loads_again(fake_loads, monkeypatch):
    from longshort.graphs.server import make_chat_app, make_reasoner

    asyncio.run(make_reasoner({}))
    monkeypatch.setenv("LONGSHORT_BACKEND", "openai")
    monkeypatch.setenv("LONGSHORT_LONG_MODEL", "served-model")
    monkeypatch.setenv("LONGSHORT_BASE_URL", "http://127.0.0.1:1/v1")
    asyncio.run(make_reasoner({}))
    asyncio.run(make_chat_app({}))
    assert fake_loads == [(None, None, "hf", None), ("served-model", None, "openai", "http://127.0.0.1:1/v1")]


def test_budgets_from_env_and_configurable(fake_loads, monkeypatch):
    from longshort.graphs.server import limits, make_reasoner

    assert limits({}) == {}  # build_reasoner's defaults
    monkeypatch.setenv("LONGSHORT_MAX_TURNS", "3")
    monkeypatch.setenv("LONGSHORT_MAX_TOTAL_TOKENS", "100")
    assert limits(None) == {"max_turns": 3, "max_total_tokens": 100}
    assert limits({"configurable": {"max_turns": 5, "max_tokens_per_turn": 16}}) == {
        "max_turns": 5,
        "max_tokens_per_turn": 16,
        "max_total_tokens": 100,
    }
    for bad in (0, -1, "x", 2.5, True):
        with pytest.raises(ValueError, match="max_turns must be an integer >= 1"):
            limits({"configurable": {"max_turns": bad}})
    a = asyncio.run(make_reasoner({"configurable": {"max_turns": 1}}))
    b = asyncio.run(make_reasoner({"configurable": {"max_turns": 2}}))
    assert a is not b and len(fake_loads) == 1  # other budgets, same agents


# ----------------------------------------------------------------------------------- langgraph dev


@dataclass(frozen=True)
class Server:
    url: str
    folder: Path
    load_log: Path
    log_path: Path
    repo_had_state: bool

    def loads(self) -> list[dict]:
        if not self.load_log.exists():
            return []
        return [json.loads(line) for line in self.load_log.read_text().splitlines() if line.strip()]

    def log_tail(self, chars: int = 6000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def _ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/ok", timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


def _kill_group(proc: subprocess.Popen, grace: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=grace)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=grace)


def _config_copy(folder: Path) -> Path:
    """The repo's langgraph.json with its paths pointing back at the repo."""
    config = json.loads((ROOT / "langgraph.json").read_text())
    config["dependencies"] = [str((ROOT / dep).resolve()) for dep in config.get("dependencies", [])]
    for graph_id, target in config["graphs"].items():
        file, func = target.split(":")
        config["graphs"][graph_id] = f"{(ROOT / file).resolve()}:{func}"
    env = config.get("env")
    if isinstance(env, str):
        if (ROOT / env).exists():
            config["env"] = str(ROOT / env)
        else:
            del config["env"]
    path = folder / "langgraph.json"
    path.write_text(json.dumps(config, indent=2))
    return path


@pytest.fixture(scope="module")
def langgraph_server(tmp_path_factory) -> Iterator[Server]:
    pytest.importorskip("langgraph_api", reason="needs langgraph-cli[inmem] (the dev extra)")
    folder = tmp_path_factory.mktemp("langgraph-dev")
    config = _config_copy(folder)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = Server(url, folder, folder / "loads.jsonl", folder / "server.log", (ROOT / ".langgraph_api").exists())
    env = {k: v for k, v in os.environ.items() if k not in MODEL_ENV}  # the shipped testbed pair
    env.update(OFFLINE_ENV)
    env.update(LIMIT_ENV)
    env.update(
        LONGSHORT_LOAD_LOG=str(server.load_log),
        LANGGRAPH_NO_VERSION_CHECK="true",
        LANGSMITH_TRACING="false",
        LANGCHAIN_TRACING_V2="false",
        TOKENIZERS_PARALLELISM="false",
        PYTHONUNBUFFERED="1",
    )
    cmd = [sys.executable, "-m", "langgraph_cli", "dev", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--no-browser", "--no-reload", "--config", str(config)]
    with server.log_path.open("wb") as log:
        out = {"stdout": log, "stderr": subprocess.STDOUT, "stdin": subprocess.DEVNULL}
        proc = subprocess.Popen(cmd, cwd=folder, env=env, start_new_session=True, **out)
    try:
        deadline = time.monotonic() + 120
        while not _ok(url):
            if proc.poll() is not None:
                raise RuntimeError(f"langgraph dev exited with {proc.returncode}:\n{server.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"langgraph dev not answering after 120 s:\n{server.log_tail()}")
            time.sleep(0.25)
        yield server
    finally:
        _kill_group(proc)


def _questions() -> list[str]:
    from longshort.testbed.tasks import generate_problems

    return [p.question for p in generate_problems("test", 2)]


def _run(coro):
    return asyncio.run(asyncio.wait_for(coro, timeout=120))


def _check_episode(out: dict, question: str) -> None:
    assert out["status"] in STATUSES, out
    assert out["question"] == question
    assert out["turns"] and out["turns"][0]["agent"] == "long"


def test_server_runs_wait(langgraph_server):
    from langgraph_sdk import get_client

    question = _questions()[0]

    async def main():
        client = get_client(url=langgraph_server.url)
        assistants = await client.assistants.search()
        assert {a["graph_id"] for a in assistants} >= {"longshort", "longshort_chat"}
        return await client.runs.wait(None, "longshort", input={"question": question})

    out = _run(main())
    assert isinstance(out, dict) and "__error__" not in out, (out, langgraph_server.log_tail())
    _check_episode(out, question)


def test_server_runs_stream(langgraph_server):
    from langgraph_sdk import get_client

    question = _questions()[1]

    async def main():
        client = get_client(url=langgraph_server.url)
        parts = client.runs.stream(None, "longshort", input={"question": question}, stream_mode=["updates", "values"])
        return [(part.event, part.data) async for part in parts]

    parts = _run(main())
    assert not [data for event, data in parts if event == "error"], (parts, langgraph_server.log_tail())
    nodes = [next(iter(data)) for event, data in parts if event == "updates"]
    assert nodes[0] == "start" and nodes[1] == "long" and nodes[-1] == "finish"
    values = [data for event, data in parts if event == "values"]
    _check_episode(values[-1], question)


def test_server_chat_thread_with_two_questions(langgraph_server):
    from langgraph_sdk import get_client

    questions = _questions()

    async def main():
        client = get_client(url=langgraph_server.url)
        thread = await client.threads.create()
        outs = []
        for question in questions:
            message = {"role": "human", "content": question}
            outs.append(await client.runs.wait(thread["thread_id"], "longshort_chat", input={"messages": [message]}))
        state = await client.threads.get_state(thread["thread_id"])
        return outs, state

    outs, state = _run(main())
    for i, (out, question) in enumerate(zip(outs, questions, strict=True)):
        assert "__error__" not in out, (out, langgraph_server.log_tail())
        messages = out["messages"]
        assert len(messages) == 2 * (i + 1)  # the thread keeps the conversation
        assert messages[-2]["type"] == "human" and messages[-2]["content"] == question
        reply = messages[-1]
        assert reply["type"] == "ai" and reply["content"]
        episode = reply["response_metadata"]["episode"]
        assert episode["status"] in STATUSES and episode["question"] == question
    assert len(state["values"]["messages"]) == 4


def test_server_loads_each_model_once(langgraph_server):
    from langgraph_sdk import get_client

    question = _questions()[0]

    async def main():  # one more run of each assistant, so this test also stands alone
        client = get_client(url=langgraph_server.url)
        await client.runs.wait(None, "longshort", input={"question": question})
        await client.runs.wait(None, "longshort_chat", input={"messages": [{"role": "human", "content": question}]})

    _run(main())
    loads = langgraph_server.loads()
    assert sorted(x["role"] for x in loads) == ["long", "short"], (loads, langgraph_server.log_tail())
    assert len({x["pid"] for x in loads}) == 1
    assert {Path(x["model"]).name for x in loads} == {"reasoner", "base"}  # the shipped testbed pair
    assert "BlockingError" not in langgraph_server.log_tail(10**7)


def test_server_writes_nothing_into_the_repo(langgraph_server):
    assert langgraph_server.repo_had_state or not (ROOT / ".langgraph_api").exists()
    assert not (ROOT / "graphs" / ".langgraph_api").exists()
