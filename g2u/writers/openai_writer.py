"""The paper's best configuration: a few-shot writer W(I, q; K exemplars) behind any OpenAI-compatible
chat-completions endpoint (OpenAI, vLLM, a local gateway), with bounded retries and a time budget."""

from __future__ import annotations

import base64
import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence

import openai
from PIL import Image

from g2u.images import png_bytes
from g2u.prompts import PromptLibrary
from g2u.writers.base import (
    SYSTEM_PROMPT,
    ExemplarSet,
    MalformedOutput,
    WriterConfig,
    WrittenPrompt,
    exemplar_reply,
    fallback,
    guarded,
    load_exemplars,
    parse_reply,
)

BACKOFF_S = 0.5


def data_url(image: Image.Image, max_side: int) -> str:
    img = image.copy()
    img.thumbnail((max_side, max_side))
    return "data:image/png;base64," + base64.b64encode(png_bytes(img)).decode()


def build_messages(exemplars: ExemplarSet, image_url: str, question: str, max_side: int) -> list[dict]:
    """System instruction, K exemplar turns (their picture when the file has one, else its description),
    then the user's image and question. Options are not sent: the writer decides what to imagine from
    W(I, q), as in the paper, and cannot copy an option it never saw."""
    messages: list[dict] = [{"role": "system", "content": SYSTEM_PROMPT}]
    for ex in exemplars.exemplars:
        content: list[dict] = [{"type": "text", "text": f"Image: {ex.description}\nQuestion: {ex.question}"}]
        if ex.image is not None:
            content.append({"type": "image_url",
                            "image_url": {"url": data_url(Image.open(ex.image).convert("RGB"), max_side)}})
        messages += [{"role": "user", "content": content}, {"role": "assistant", "content": exemplar_reply(ex)}]
    messages.append({"role": "user", "content": [
        {"type": "text", "text": f"Image: (attached)\nQuestion: {question}"},
        {"type": "image_url", "image_url": {"url": image_url}}]})
    return messages


def retry_after_s(exc: openai.APIStatusError) -> float | None:
    try:
        return float(exc.response.headers.get("retry-after"))
    except (TypeError, ValueError, AttributeError):
        return None


class OpenAIWriter:
    name = "openai"

    def __init__(self, library: PromptLibrary, config: WriterConfig | None = None):
        self.library = library
        self.config = config or WriterConfig.from_env()
        self.exemplars = load_exemplars(self.config.exemplars)
        self.client = (openai.OpenAI(api_key=self.config.api_key, base_url=self.config.base_url,
                                     timeout=self.config.timeout_s, max_retries=0)
                       if self.config.api_key else None)
        self._cache: OrderedDict[str, tuple[str, str]] = OrderedDict()
        self._lock = threading.Lock()

    def write(self, image: Image.Image, question: str, options: Sequence[str] | None = None,
              family: str | None = None, answer: str | None = None) -> WrittenPrompt:
        start = time.monotonic()
        if self.client is None:
            return fallback(self.library, self.name, family, "no API key (set OPENAI_API_KEY)", start)
        url = data_url(image, self.config.max_image_side)
        key = hashlib.sha256("\0".join([url, question, self.exemplars.digest, self.config.model,
                                        self.config.base_url or ""]).encode()).hexdigest()
        with self._lock:
            hit = self._cache.get(key)
            if hit:
                self._cache.move_to_end(key)
        if hit is None:
            try:
                hit = self._ask(build_messages(self.exemplars, url, question, self.config.max_image_side), family,
                                start)
            except _GiveUp as stop:
                return fallback(self.library, self.name, family, str(stop), start)
            with self._lock:
                self._cache[key] = hit
                while len(self._cache) > self.config.cache_size:
                    self._cache.popitem(last=False)
        text, written_family = hit
        return guarded(self.library, self.name, text, written_family, options, answer, start, family)

    def _ask(self, messages: list[dict], family: str | None, start: float) -> tuple[str, str]:
        """Bounded retries inside the budget; raises _GiveUp with the last reason."""
        deadline = start + self.config.budget_s
        reason = "no attempt made"
        for attempt in range(self.config.max_retries + 1):
            remaining = deadline - time.monotonic()
            if remaining <= 0.01:
                raise _GiveUp(f"writer budget of {self.config.budget_s:g} s spent ({reason})")
            wait = BACKOFF_S * 2**attempt
            try:
                reply = self.client.with_options(timeout=min(self.config.timeout_s, remaining)).chat.completions.create(
                    model=self.config.model, messages=messages, temperature=0, max_tokens=200,
                    response_format={"type": "json_object"})
                return parse_reply(reply.choices[0].message.content, family)
            except openai.RateLimitError as exc:
                reason = "HTTP 429 rate limited"
                wait = retry_after_s(exc) or wait
                if time.monotonic() + wait > deadline:
                    raise _GiveUp(f"{reason}: Retry-After {wait:g} s exceeds the writer budget") from None
            except openai.APITimeoutError:
                reason = f"timeout after {min(self.config.timeout_s, remaining):.1f} s"
                wait = 0.0
            except openai.APIConnectionError as exc:
                reason = f"connection error ({type(exc.__cause__).__name__ if exc.__cause__ else 'unreachable'})"
            except openai.APIStatusError as exc:
                reason = f"HTTP {exc.status_code}"
                if exc.status_code < 500:  # 400/401/403/404: retrying cannot help
                    raise _GiveUp(reason) from None
            except MalformedOutput as exc:  # greedy decoding: asking again gives the same reply
                raise _GiveUp(f"malformed output: {exc}") from None
            if attempt < self.config.max_retries:
                time.sleep(max(0.0, min(wait, deadline - time.monotonic())))
        raise _GiveUp(f"{reason} (after {self.config.max_retries + 1} attempts)")


class _GiveUp(Exception):
    """The writer stops trying; the message is the fallback reason."""
