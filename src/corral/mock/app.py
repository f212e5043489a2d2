"""The mock's endpoints: routing, fault injection, and the OpenAI answers.

Requests without a delay to wait for are answered synchronously from the parser callback
(no task, no await); only streams and delayed answers run as a task, which the connection
cancels when the client leaves, so that ``aborted`` counts it within one inter-token gap.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import time
from collections.abc import Callable, Coroutine
from typing import Any

from corral.errors import error_body
from corral.mock import params, shapes, tokens
from corral.mock.config import MockConfig
from corral.mock.engine import Engine, EngineConfig
from corral.mock.protocol import Connection, Request
from corral.mock.stats import ModelCounters, Stats

Reply = Coroutine[Any, Any, None] | None
_CRASH_EXIT_CODE = 3


def _dumps(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


class MockApp:
    """Serves one process's share of the mock API; ``ready`` flips after the startup delay."""

    def __init__(self, config: MockConfig) -> None:
        self.config = config
        self.stats = Stats(config.models)
        self.ready = config.startup_delay_s <= 0
        self.hung = False
        self._rng = random.Random(config.seed)  # fault draws: the same sequence on every run
        self._ids = itertools.count(1)
        self._id_prefix = f"{os.getpid():x}{os.urandom(4).hex()}"
        created = int(time.time())
        self._models = {m: shapes.model_card(m, created) for m in config.models}
        self._models_body = _dumps({"object": "list", "data": list(self._models.values())})
        self._ttft = config.ttft_ms / 1000
        self._warming = config.first_ms > 0  # the first inference request pays --first-ms
        self._itl = config.itl_ms / 1000
        self._busy_rates = config.error_400_rate + config.error_429_rate
        engine = EngineConfig(
            config.prefix_cache_tokens, config.block_size, config.prefill_ms_per_token, config.max_num_seqs
        )
        self.engine = Engine(engine) if engine.enabled else None
        self._routes: dict[str, tuple[str, Callable[[Connection, Request], Reply]]] = {
            "/health": ("GET", self._health),
            "/v1/models": ("GET", self._list_models),
            "/models": ("GET", self._list_models),
            "/stats": ("GET", self._stats),
            "/metrics": ("GET", self._metrics),
            "/v1/chat/completions": ("POST", self._chat),
            "/v1/completions": ("POST", self._completions),
            "/v1/embeddings": ("POST", self._embeddings),
        }

    # -- routing ---------------------------------------------------------------------------
    def dispatch(self, conn: Connection, req: Request) -> Reply:
        """Answer ``req`` now, or return the coroutine that will."""
        route = self._routes.get(req.path)
        if self.hung and req.path not in ("/stats", "/metrics"):
            return self._hang(None)
        if route is None:
            if req.path.startswith("/v1/models/") and req.method == "GET":
                return self._get_model(conn, req.path[len("/v1/models/") :])
            return self._error(conn, 404, f"Not found: {req.path}", code="not_found")
        method, handler = route
        if req.method != method:
            self._error(
                conn,
                405,
                f"Method {req.method} not allowed",
                code="method_not_allowed",
                headers=b"allow: " + method.encode() + b"\r\n",
            )
            return None
        return handler(conn, req)

    def internal_error(self, conn: Connection, req: Request) -> None:
        """The answer when a handler raised (a bug): a 500 in OpenAI's shape."""
        self._error(conn, 500, "internal error in the mock server")

    def _error(
        self,
        conn: Connection,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        headers: bytes = b"",
    ) -> Reply:
        conn.respond(status, _dumps(error_body(message, status, code=code, param=param)), headers=headers)
        return None

    # -- plain endpoints -------------------------------------------------------------------
    def _health(self, conn: Connection, req: Request) -> Reply:
        if self.ready:
            conn.respond(200, b'{"status":"ok"}')
        else:
            conn.respond(503, b'{"status":"loading"}')
        return None

    def _list_models(self, conn: Connection, req: Request) -> Reply:
        if not self.ready:
            return self._error(conn, 503, "the server is loading", code="loading")
        conn.respond(200, self._models_body)
        return None

    def _get_model(self, conn: Connection, name: str) -> Reply:
        card = self._models.get(name)
        if card is None:
            return self._error(conn, 404, f"The model `{name}` does not exist.", "model", "model_not_found")
        conn.respond(200, _dumps(card))
        return None

    def _stats(self, conn: Connection, req: Request) -> Reply:
        doc = self.stats.as_dict()
        doc["pid"] = os.getpid()  # with --workers N each process counts its own share
        conn.respond(200, _dumps(doc))
        return None

    def _metrics(self, conn: Connection, req: Request) -> Reply:
        text = self.stats.prometheus(vllm_running=self.engine is None)
        if self.engine is not None:
            text += "\n".join(self.engine.prometheus(self.config.models[0])) + "\n"
        conn.respond(200, text.encode(), b"text/plain; version=0.0.4; charset=utf-8")
        return None

    # -- inference: admission --------------------------------------------------------------
    def _admit(self, conn: Connection, req: Request) -> tuple[dict[str, Any], str, ModelCounters] | Reply:
        """Fault injection, JSON and model checks shared by every inference endpoint.

        Returns ``(doc, model, counters)`` for a request to serve, else the reply already made.
        """
        served = self.stats.all.total
        if self.config.crash_after is not None and served >= self.config.crash_after:
            os._exit(_CRASH_EXIT_CODE)  # a hard crash, as a segfaulting engine: no cleanup, no reply
        if self.config.hang_after is not None and served >= self.config.hang_after:
            self.hung = True
            self.stats.begin(None)
            return self._hang(None, counted=True)
        if self.config.hang_generation_after is not None and served >= self.config.hang_generation_after:
            self.stats.begin(None)  # the engine is dead; the API server (health, models) is not
            return self._hang(None, counted=True)
        try:
            doc = json.loads(req.body)
        except ValueError:
            doc = None
        model: str | None = None
        counters: ModelCounters | None = None
        try:
            if not isinstance(doc, dict):
                raise params.BadRequest(
                    "We could not parse the JSON body of your request: expected a JSON object.",
                    code="invalid_json",
                )
            model = params.model_name(doc)
            counters = self.stats.by_model.get(model)
            if counters is None:
                raise params.BadRequest(
                    f"The model `{model}` does not exist.", 404, "model", "model_not_found"
                )
        except params.BadRequest as exc:
            self.stats.begin(None)
            self.stats.end(None, "failed")
            return self._error(conn, exc.status, exc.message, exc.param, exc.code)
        self.stats.begin(counters)
        if not self.ready:
            self.stats.end(counters, "failed")
            return self._error(conn, 503, "the model is still loading", code="loading")
        if self.config.fail_rate and self._rng.random() < self.config.fail_rate:
            self.stats.end(counters, "failed")
            status = 500 if self._rng.random() < 0.5 else 503
            return self._error(conn, status, "injected failure (--fail-rate)", code="injected_failure")
        if self._busy_rates:
            r = self._rng.random()
            if r < self.config.error_400_rate:
                self.stats.end(counters, "failed")
                return self._error(conn, 400, "injected bad request (--error-400-rate)", code="injected_400")
            if r < self._busy_rates:
                self.stats.end(counters, "failed")
                return self._error(
                    conn,
                    429,
                    "injected: server full (--error-429-rate)",
                    code="injected_429",
                    headers=b"retry-after: 1\r\n",
                )
        return doc, model, counters

    def _extra_delay(self) -> float:
        """Seconds a request waits before its first token on top of ``--ttft-ms`` (``--slow-*``,
        ``--first-ms``)."""
        extra = 0.0
        if self._warming:
            self._warming = False
            extra = self.config.first_ms / 1000
        if self.config.slow_rate and self._rng.random() < self.config.slow_rate:
            extra += self.config.slow_ms / 1000
        return extra

    async def _hang(self, counters: ModelCounters | None, counted: bool = False) -> None:
        """Never answer; the client's disconnect cancels this."""
        try:
            await asyncio.get_running_loop().create_future()
        finally:
            if counted:
                self.stats.end(counters, "aborted")

    def _rid(self, req: Request, prefix: str) -> str:
        # vLLM builds the completion id from the client's request id: keeps logs joinable.
        if req.request_id:
            return prefix + req.request_id.decode("utf-8", "replace")
        return f"{prefix}{self._id_prefix}{next(self._ids):x}"

    # -- inference: generation -------------------------------------------------------------
    def _chat(self, conn: Connection, req: Request) -> Reply:
        return self._generate(conn, req, chat=True)

    def _completions(self, conn: Connection, req: Request) -> Reply:
        return self._generate(conn, req, chat=False)

    def _generate(self, conn: Connection, req: Request, chat: bool) -> Reply:
        admitted = self._admit(conn, req)
        if not isinstance(admitted, tuple):
            return admitted
        doc, model, counters = admitted
        try:
            gen = (params.chat if chat else params.completion)(doc, model, self.config.max_tokens)
        except params.BadRequest as exc:
            self.stats.end(counters, "failed")
            return self._error(conn, exc.status, exc.message, exc.param, exc.code)
        seed = self.config.seed if gen.seed is None else gen.seed
        plans = [
            tokens.plan(tokens.prompt_hash(seed, f"{model}\0{p}"), gen.limit, gen.ignore_eos)
            for p in gen.prompts
        ]
        rid = self._rid(req, "chatcmpl-" if chat else "cmpl-")
        created = int(time.time())
        use = shapes.usage(gen.prompt_tokens, sum(len(t) for t, _ in plans))
        longest = max(len(t) for t, _ in plans)
        stall = self.config.stall_after_tokens
        if stall is not None and longest <= stall:
            stall = None  # the answer ends before the stall point
        extra = self._extra_delay()
        if self.engine is not None:
            return self._engine_reply(
                conn, gen, chat, rid, created, model, plans, use, counters, extra, stall
            )
        if gen.stream:
            shape = shapes.StreamShape(chat, rid, created, model, gen.include_usage)
            steps = _stream_steps(shape, plans, use if gen.include_usage else None)
            if self._ttft == 0 and self._itl == 0 and extra == 0 and stall is None:
                conn.stream_start(steps[0])
                for step in steps[1:-1]:
                    conn.stream_write(step)
                conn.stream_end(steps[-1] if len(steps) > 1 else b"")
                self.stats.end(counters, "completed")
                return None
            return self._stream(conn, steps, counters, self._ttft + extra, stall)
        if stall is not None:
            return self._hang(counters, counted=True)  # the engine stalls before the answer is whole
        if chat:
            body = shapes.chat_completion(rid, created, model, "".join(plans[0][0]), plans[0][1], use)
        else:
            body = shapes.text_completion(rid, created, model, [("".join(t), r) for t, r in plans], use)
        delay = self._ttft + extra + self._itl * max(longest - 1, 0)
        if delay == 0:
            conn.respond(200, body)
            self.stats.end(counters, "completed")
            return None
        return self._delayed(conn, body, delay, counters)

    def _engine_reply(
        self,
        conn: Connection,
        gen: params.Generation,
        chat: bool,
        rid: str,
        created: int,
        model: str,
        plans: list[tuple[list[str], str]],
        use: dict[str, int],
        counters: ModelCounters,
        extra: float,
        stall: int | None,
    ) -> Reply:
        """The answer, run once the engine admitted the request (slot, prefix cache, prefill)."""
        assert self.engine is not None
        reply: Coroutine[Any, Any, None]
        if gen.stream:
            shape = shapes.StreamShape(chat, rid, created, model, gen.include_usage)
            steps = _stream_steps(shape, plans, use if gen.include_usage else None)
            reply = self._stream(conn, steps, counters, self._ttft + extra, stall)
        elif stall is not None:
            reply = self._hang(counters, counted=True)  # the engine stalls before the answer is whole
        else:
            if chat:
                body = shapes.chat_completion(rid, created, model, "".join(plans[0][0]), plans[0][1], use)
            else:
                body = shapes.text_completion(rid, created, model, [("".join(t), r) for t, r in plans], use)
            longest = max(len(t) for t, _ in plans)
            reply = self._delayed(conn, body, self._ttft + extra + self._itl * max(longest - 1, 0), counters)
        return self.engine.serve(
            "\n".join(gen.prompts), gen.prompt_tokens, reply, lambda: self.stats.end(counters, "aborted")
        )

    async def _delayed(self, conn: Connection, body: bytes, delay: float, counters: ModelCounters) -> None:
        outcome = "aborted"
        try:
            await asyncio.sleep(delay)
            if not conn.closed:
                conn.respond(200, body)
                outcome = "completed"
        finally:
            self.stats.end(counters, outcome)

    async def _stream(
        self, conn: Connection, steps: list[bytes], counters: ModelCounters, ttft: float, stall: int | None
    ) -> None:
        outcome = "aborted"
        try:
            conn.stream_start()  # headers at once, as vLLM: the body waits for the first token
            if ttft:
                await asyncio.sleep(ttft)
            last = len(steps) - 1
            for i, step in enumerate(steps):
                if i == stall:
                    await asyncio.get_running_loop().create_future()  # silent, connection open
                if i and self._itl:
                    await asyncio.sleep(self._itl)
                if conn.closed:
                    return
                if i == last:
                    conn.stream_end(step)
                else:
                    conn.stream_write(step)
                    await conn.drain()
            outcome = "completed"
        except ConnectionError:
            pass  # the client left while we waited to write: counted as aborted
        finally:
            self.stats.end(counters, outcome)

    # -- embeddings ------------------------------------------------------------------------
    def _embeddings(self, conn: Connection, req: Request) -> Reply:
        admitted = self._admit(conn, req)
        if not isinstance(admitted, tuple):
            return admitted
        doc, model, counters = admitted
        try:
            texts, prompt_tokens = params.embedding_inputs(doc)
            dim = doc.get("dimensions") or self.config.embedding_dim
            if isinstance(dim, bool) or not isinstance(dim, int) or not 1 <= dim <= 65536:
                raise params.BadRequest("'dimensions' must be an integer in 1..65536.", param="dimensions")
            fmt = doc.get("encoding_format") or "float"
            if fmt not in ("float", "base64"):
                raise params.BadRequest(
                    "'encoding_format' must be 'float' or 'base64'.", param="encoding_format"
                )
        except params.BadRequest as exc:
            self.stats.end(counters, "failed")
            return self._error(conn, exc.status, exc.message, exc.param, exc.code)
        vectors: list[list[float] | str] = []
        for text in texts:
            v = tokens.embedding(self.config.seed, f"{model}\0{text}", dim)
            vectors.append(tokens.encode_base64(v) if fmt == "base64" else v)
        body = shapes.embeddings(model, vectors, prompt_tokens)
        delay = self._ttft + self._extra_delay()
        if delay == 0:
            conn.respond(200, body)
            self.stats.end(counters, "completed")
            return None
        return self._delayed(conn, body, delay, counters)


def _stream_steps(
    shape: shapes.StreamShape, plans: list[tuple[list[str], str]], use: dict[str, int] | None
) -> list[bytes]:
    """The body of a stream as one bytes per token time: step 0 carries the chat role chunk,
    the last carries the finish chunks, the usage chunk and ``[DONE]``."""
    longest = max(len(t) for t, _ in plans)
    steps: list[bytes] = []
    for i in range(longest):
        step = [shape.token(c, t[i].encode()) for c, (t, _) in enumerate(plans) if i < len(t)]
        steps.append(b"".join(step))
    if shape.chat:
        steps[0] = shape.role() + steps[0]
    tail = b"".join(shape.finish(c, reason) for c, (_, reason) in enumerate(plans))
    if use is not None:
        tail += shape.usage(use)
    steps[-1] += tail + shapes.DONE
    return steps
