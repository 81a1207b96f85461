"""The paper's best configuration: a few-shot writer W(I, q; K exemplars) behind any OpenAI-compatible
chat-completions endpoint (OpenAI, vLLM, a gateway). Retries are ours, not the client's, so that every
attempt, back-off and Retry-After wait fits in one time budget; each attempt also runs under a hard
deadline, because the HTTP timeouts are per read and a trickling server could otherwise outlast them."""

from __future__ import annotations

import base64
import email.utils
import hashlib
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import openai
from PIL import Image

from g2u.images import png_bytes
from g2u.prompts import PromptLibrary
from g2u.writers.cache import PromptCache, cache_key
from g2u.writers.config import WriterConfig
from g2u.writers.exemplars import ExemplarSet, load_exemplars
from g2u.writers.guard import WrittenPrompt, fallback, guarded
from g2u.writers.reply import SYSTEM_PROMPT, MalformedOutput, exemplar_reply, parse_reply, request_text

BACKOFF_S = 0.5
"""First back-off after a failed attempt (doubled each time, with jitter) when the server gives no Retry-After."""
MIN_ATTEMPT_S = 0.05
"""An attempt with less budget left than this is not started."""
JOIN_SLACK_S = 0.1
"""How long past its HTTP timeout an attempt is waited for, so the client's own timeout names the failure."""
MAX_REPLY_TOKENS = 200
_SYSTEM_DIGEST = hashlib.sha256(SYSTEM_PROMPT.encode()).hexdigest()[:8]


def data_url(image: Image.Image, max_side: int) -> str:
    """The picture as a PNG data URL, at most ``max_side`` pixels on its longer side."""
    img = image.convert("RGB")
    if max(img.size) > max_side:
        img.thumbnail((max_side, max_side))
    return "data:image/png;base64," + base64.b64encode(png_bytes(img)).decode()


def exemplar_turns(exemplars: ExemplarSet, max_side: int) -> list[dict[str, Any]]:
    """The K few-shot turns: user (the exemplar's picture, or its description as text) then assistant (the
    JSON reply it should give)."""
    turns: list[dict[str, Any]] = []
    for ex in exemplars.exemplars:
        content: list[dict[str, Any]] = [{"type": "text",
                                          "text": f"Image: {ex.description}\n{request_text(ex.question)}"}]
        if ex.image is not None:
            with Image.open(ex.image) as img:
                content.append({"type": "image_url", "image_url": {"url": data_url(img, max_side)}})
        turns += [{"role": "user", "content": content},
                  {"role": "assistant", "content": exemplar_reply(ex.prompt, ex.family)}]
    return turns


def retry_after_s(headers: Mapping[str, str] | None) -> float | None:
    """Seconds the server asks us to wait: ``retry-after-ms``, ``retry-after`` in seconds or as an HTTP date."""
    if not headers:
        return None
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        raw = headers.get(name)
        if raw is None:
            continue
        try:
            return max(0.0, float(raw) * scale)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if raw:
        try:
            return max(0.0, email.utils.parsedate_to_datetime(raw).timestamp() - time.time())
        except (TypeError, ValueError):
            return None
    return None


class _GiveUp(Exception):
    """The writer stops trying; the message is the fallback reason."""


class _Overdue(Exception):
    """An attempt outlived its timeout (a server trickling its reply): counted as a timeout."""


class OpenAIWriter:
    """``write`` returns the endpoint's prompt, or the library's with the reason; it never raises for
    endpoint failures and returns within ``config.budget_s`` (+ ~0.1 s)."""

    name = "openai"

    def __init__(self, library: PromptLibrary, config: WriterConfig | None = None, *,
                 sleep: Callable[[float], None] = time.sleep):
        """``sleep`` waits out back-offs and Retry-After between attempts (tests pass one that records)."""
        self._sleep = sleep
        self.library = library
        self.config = config or WriterConfig.from_env()
        self.exemplars = load_exemplars(self.config.exemplars)
        self._shots = exemplar_turns(self.exemplars, self.config.max_image_side)
        self._identity = (self.exemplars.digest, _SYSTEM_DIGEST, self.config.model, self.config.base_url or "")
        self.cache = PromptCache(self.config.cache_size, self.config.cache_dir)
        self.client = None
        if self.config.api_key:
            self.client = openai.OpenAI(api_key=self.config.api_key, base_url=self.config.base_url,
                                        timeout=self.config.timeout_s, max_retries=0)

    def write(self, image: Image.Image, question: str, options: Sequence[str] | None = None,
              family: str | None = None, answer: str | None = None) -> WrittenPrompt:
        start = time.monotonic()
        if self.client is None:
            return fallback(self.library, self.name, family, "no API key (set OPENAI_API_KEY)",
                            options, answer)
        key = cache_key(image, question, None, family, *self._identity)  # options are not sent: not in the key
        written = self.cache.get(key)
        if written is None:
            try:
                written = self._ask(self.messages(image, question, family), family,
                                    start + self.config.budget_s)
            except _GiveUp as stop:
                return fallback(self.library, self.name, family, str(stop), options, answer)
            self.cache.put(key, written)
        return guarded(self.library, self.name, written[0], written[1], options, answer)

    def messages(self, image: Image.Image, question: str, family: str | None = None) -> list[dict[str, Any]]:
        """System instruction, the K exemplar turns, then the picture and the question: W(I, q) as in the
        paper. The options are never sent, so the writer cannot copy one; the leak guard still checks."""
        request = [{"type": "text", "text": f"Image: (attached)\n{request_text(question, None, family)}"},
                   {"type": "image_url", "image_url": {"url": data_url(image, self.config.max_image_side)}}]
        return [{"role": "system", "content": SYSTEM_PROMPT}, *self._shots, {"role": "user", "content": request}]

    def _ask(self, messages: list[dict[str, Any]], family: str | None, deadline: float) -> tuple[str, str]:
        """Bounded retries of transient failures (timeouts, refused connections, 408/409/429/5xx) inside the
        budget; malformed output and other 4xx are final. Raises _GiveUp with the reason."""
        budget = self.config.budget_s
        attempts = self.config.max_retries + 1
        reason = "no attempt made"
        for attempt in range(attempts):
            remaining = deadline - time.monotonic()
            if remaining < MIN_ATTEMPT_S:
                raise _GiveUp(f"writer budget of {budget:g} s spent (last: {reason})")
            timeout = min(self.config.timeout_s, remaining)
            wait = BACKOFF_S * 2**attempt * (1 + 0.25 * random.random())
            try:
                reply = self._attempt(messages, timeout)
            except (openai.APITimeoutError, _Overdue):
                reason, wait = f"timeout after {timeout:.2g} s", 0.0
            except openai.APIConnectionError as exc:
                reason = f"connection error ({type(exc.__cause__).__name__ if exc.__cause__ else 'unreachable'})"
            except openai.APIStatusError as exc:
                reason = f"HTTP {exc.status_code}"
                if exc.status_code < 500 and exc.status_code not in (408, 409, 429):
                    raise _GiveUp(reason) from None  # 400/401/403/404: retrying cannot help
                after = retry_after_s(exc.response.headers)
                if after is not None:
                    if time.monotonic() + after > deadline:
                        too_long = f"{reason}: Retry-After {after:g} s exceeds the writer budget of {budget:g} s"
                        raise _GiveUp(too_long) from None
                    wait = after
            except (openai.OpenAIError, ValueError) as exc:  # a 200 whose body is not JSON or not a completion
                raise _GiveUp(f"malformed output: the body is not a chat completion ({type(exc).__name__})") from None
            except Exception as exc:  # anything else the client lets through must not fail the prediction either
                raise _GiveUp(f"writer error: {type(exc).__name__}: {exc}") from None
            else:
                try:
                    return parse_reply(_content(reply), family)
                except MalformedOutput as exc:
                    raise _GiveUp(f"malformed output: {exc}") from None
            if attempt + 1 < attempts:
                self._sleep(max(0.0, min(wait, deadline - time.monotonic())))
        raise _GiveUp(f"{reason} (after {attempts} attempt{'s' if attempts > 1 else ''})")

    def _attempt(self, messages: list[dict[str, Any]], timeout: float) -> Any:
        """One request in a daemon thread, waited for at most ``timeout`` (+ slack): the HTTP timeouts
        bound each read, not the whole reply. An abandoned request ends by itself (its next read timeout
        or the end of the trickle); its thread is a daemon."""
        box: dict[str, Any] = {}

        def call() -> None:
            try:
                box["reply"] = self.client.with_options(timeout=timeout).chat.completions.create(
                    model=self.config.model, messages=messages, temperature=0, max_tokens=MAX_REPLY_TOKENS,
                    response_format={"type": "json_object"})
            except Exception as exc:  # handed to the caller's thread
                box["error"] = exc

        worker = threading.Thread(target=call, name="g2u-openai-writer", daemon=True)
        worker.start()
        worker.join(timeout + JOIN_SLACK_S)
        if worker.is_alive():
            raise _Overdue
        if "error" in box:
            raise box["error"]
        return box["reply"]


def _content(reply: Any) -> str | None:
    """The assistant's text, or MalformedOutput when the reply is not a chat completion."""
    try:
        return reply.choices[0].message.content
    except (AttributeError, IndexError, TypeError):
        raise MalformedOutput("the reply has no choices[0].message.content") from None
