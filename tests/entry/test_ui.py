"""`g2u ui` in a real headless browser (Debian's chromium, driven by selenium) against a fake endpoint.

The page is served by g2u.ui on loopback; the endpoint is g2u.testing.fake_http answering as TorchServe
would (a JSON result, or progress events then the result as a stream). A screenshot of each run is kept
in outputs/test-artifacts/. In CI (`CI` set) a missing chromium fails the test; elsewhere it skips,
saying how to install it (`.ci/run` installs it before `make test`).
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
from pathlib import Path

import pytest
from PIL import Image

from g2u.testing.fake_http import FakeHTTPServer
from g2u.ui import Endpoint, UIServer

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "outputs" / "test-artifacts"
SHAPES = ROOT / "g2u" / "data" / "images" / "shapes.png"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")

if not (CHROMIUM and CHROMEDRIVER):
    if os.environ.get("CI"):
        pytest.fail("chromium and chromium-driver are missing in CI (.ci/run installs them)", pytrace=False)
    pytest.skip("needs Debian's chromium: apt-get install -y chromium chromium-driver", allow_module_level=True)
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is in the dev extra")


def _png_b64(colour: tuple[int, int, int], size=(48, 32)) -> str:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


RESULT = {"answer": "the red circle", "mode": "g2u",
          "edit": {"prompt": "Sharpen the circle.", "family": "enhancement", "steps": 4},
          "timings_ms": {"preprocess": 3.2, "edit": 120.5, "understand": 40.25, "total": 164.0},
          "model": {"backend": "qwen_image_edit", "demo": True,
                    "note": "demo checkpoint: random weights, the answer is meaningless"},
          "thought": _png_b64((20, 200, 40))}


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must not try to download a driver
    opts = Options()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1200,900",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def _ask(driver, ui_url: str, question: str, options: list[str], mode: str, prompt: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    driver.get(ui_url)
    driver.find_element(By.ID, "image").send_keys(str(SHAPES))
    driver.find_element(By.ID, "question").send_keys(question)
    driver.find_element(By.ID, "options").send_keys("\n".join(options))
    Select(driver.find_element(By.ID, "mode")).select_by_value(mode)
    driver.find_element(By.ID, "prompt").send_keys(prompt)
    driver.find_element(By.ID, "submit").click()


def _wait_answer(driver, timeout: float = 30) -> str:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout).until(
        lambda d: d.find_element(By.ID, "answer").text or d.find_element(By.ID, "error").text)
    return driver.find_element(By.ID, "answer").text


def _natural_width(driver, element_id: str) -> int:
    return driver.execute_script(f"const i = document.getElementById('{element_id}'); "
                                 "return i.complete ? i.naturalWidth : 0;")


def test_page_sends_the_form_and_shows_pictures_answer_timings_and_demo(browser, tmp_path):
    from selenium.webdriver.common.by import By

    key_file = tmp_path / "key_file.json"  # TorchServe's layout; the proxy reads it at every call
    key_file.write_text(json.dumps({"inference": {"key": "k-inference", "expiration time": "2099-01-01T00:00:00Z"}}))
    with FakeHTTPServer([{"raw": json.dumps(RESULT)}]) as fake, \
            UIServer(Endpoint(f"{fake.url}/predictions/g2u", key_file=key_file), port=0) as ui:
        _ask(browser, ui.url, "Which shape is red?", ["the circle", "the square"], "g2u", "Sharpen the circle.")
        assert _wait_answer(browser) == "the red circle"
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / "ui-json.png"))

        sent = fake.requests[0]
        assert sent["path"] == "/predictions/g2u" and sent["headers"]["authorization"] == "Bearer k-inference"
        body = sent["body"]
        assert body["question"] == "Which shape is red?" and body["options"] == ["the circle", "the square"]
        assert body["mode"] == "g2u" and body["prompt"] == "Sharpen the circle." and body["return_thought"] is True
        assert base64.b64decode(body["image"].split(",", 1)[1]) == SHAPES.read_bytes()  # the file, unchanged

        assert _natural_width(browser, "original") == Image.open(SHAPES).width
        assert _natural_width(browser, "thought") == 48  # the thought PNG the endpoint sent
        stages = [row.text.split()[0] for row in browser.find_elements(By.CSS_SELECTOR, "tr.timing")]
        assert stages == list(RESULT["timings_ms"])
        assert "meaningless" in browser.find_element(By.ID, "demo").text


def test_streamed_progress_is_shown_then_the_result(browser, tmp_path):
    from selenium.webdriver.common.by import By

    events = [{"event": "progress", "stage": "edit", "step": s, "steps": 3} for s in (1, 2, 3)]
    stream = "".join(f"data: {json.dumps(e)}\n\n" for e in [*events, {"event": "result", "result": RESULT}])
    step = {"raw": stream, "headers": {"Content-Type": "text/event-stream"}, "drip": 0.0005}
    with FakeHTTPServer([step]) as fake, \
            UIServer(Endpoint(f"{fake.url}/predictions/g2u", token="t", stream=True), port=0) as ui:
        _ask(browser, ui.url, "Which shape is blue?", [], "baseline", "")
        assert _wait_answer(browser, timeout=60) == "the red circle"
        browser.save_screenshot(str(ARTIFACTS / "ui-stream.png"))
        log = [li.text for li in browser.find_elements(By.CSS_SELECTOR, "#progress-log li")]
        assert log == ["edit 1/3", "edit 2/3", "edit 3/3"]
        assert fake.requests[0]["body"]["stream"] is True and "options" not in fake.requests[0]["body"]


def test_endpoint_errors_are_shown_with_the_field(browser, tmp_path):
    from selenium.webdriver.common.by import By

    refusal = {"error": "invalid_input", "field": "steps", "reason": "must be in [1, 200], got 999"}
    with FakeHTTPServer([{"status": 400, "raw": json.dumps(refusal)}]) as fake, \
            UIServer(Endpoint(f"{fake.url}/predictions/g2u", token="t"), port=0) as ui:
        _ask(browser, ui.url, "How many?", [], "g2u", "")
        _wait_answer(browser)
        error = browser.find_element(By.ID, "error").text
        assert "400" in error and "steps" in error and "must be in [1, 200]" in error
