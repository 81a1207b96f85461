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

from PIL import Image
from lmms_eval.api.instance import Instance
from lmms_eval.models.chat.openai import OpenAICompatible

base_url, key = sys.argv[1], sys.argv[2]
model = OpenAICompatible(model="g2u", base_url=base_url, api_key=key, max_retries=1, num_concurrent=2, timeout=120)
docs = [{"image": Image.new("RGB", (96, 64), c), "question": q}
        for c, q in (((200, 40, 90), "What colour is the picture?"), ((20, 120, 220), "Is it blue? Answer yes or no."))]
model.task_dict = {"g2u_smoke": {"test": docs}}

def doc_to_messages(doc):
    return [{"role": "user", "content": [{"type": "image", "url": doc["image"]}, {"type": "text", "text": doc["question"]}]}]

reqs = [Instance(request_type="generate_until", arguments=("", doc_to_messages, {"max_new_tokens": 8, "temperature": 0}, i, "g2u_smoke", "test"),
                 idx=0, metadata={"task": "g2u_smoke", "doc_id": i, "repeats": 1}) for i in range(len(docs))]
out = model.generate_until(reqs)
print(json.dumps([{"text": r.text, "tokens": vars(r.token_counts)} if hasattr(r, "text") else str(r) for r in out], default=str))
