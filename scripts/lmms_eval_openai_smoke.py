"""Drive lmms-eval's own `openai` chat model (lmms_eval.models.chat.openai.OpenAICompatible) against the
g2u OpenAI-compatible route: two docs with PIL images, generate_until as the evaluator calls it.

Run it OUTSIDE the project venv (lmms-eval's dependencies replace the pinned CPU torch), e.g.:
    python -m venv /tmp/lmms && /tmp/lmms/bin/pip install torch==2.13.0 && \
      /tmp/lmms/bin/pip install --no-deps lmms-eval==0.7.3 && \
      /tmp/lmms/bin/pip install numpy accelerate python-dotenv loguru openai pillow tqdm evaluate pytz transformers
    /tmp/lmms/bin/python scripts/lmms_eval_openai_smoke.py http://127.0.0.1:8080/predictions/g2u/1.0/v1 KEY
"""
import json
import sys

from lmms_eval.api.instance import Instance
from lmms_eval.models.chat.openai import OpenAICompatible
from PIL import Image

TASK, SPLIT = "g2u_smoke", "test"


def doc_to_messages(doc: dict) -> list[dict]:
    """lmms-eval's chat messages for one doc: the image (a PIL image), then the question."""
    return [{"role": "user", "content": [{"type": "image", "url": doc["image"]},
                                         {"type": "text", "text": doc["question"]}]}]


def main(base_url: str, key: str) -> int:
    model = OpenAICompatible(model="g2u", base_url=base_url, api_key=key, max_retries=1, num_concurrent=2,
                             timeout=120)
    docs = [{"image": Image.new("RGB", (96, 64), color), "question": question}
            for color, question in (((200, 40, 90), "What colour is the picture?"),
                                    ((20, 120, 220), "Is it blue? Answer yes or no."))]
    model.task_dict = {TASK: {SPLIT: docs}}
    gen_kwargs = {"max_new_tokens": 8, "temperature": 0}
    requests = [Instance(request_type="generate_until", arguments=("", doc_to_messages, gen_kwargs, i, TASK, SPLIT),
                         idx=0, metadata={"task": TASK, "doc_id": i, "repeats": 1}) for i in range(len(docs))]
    out = model.generate_until(requests)
    print(json.dumps([{"text": r.text, "tokens": vars(r.token_counts)} for r in out], default=str))
    return 0 if all(r.text and "LMMS_EVAL_REQUEST_FAILED" not in r.text for r in out) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
