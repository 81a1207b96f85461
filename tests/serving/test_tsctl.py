"""handler/tsctl.py without a server: worker deaths counted from the logs (crashes and timeout kills), key
refusals recognised, the shipped config and log config rendered."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import requests

from handler import tsctl


def _server(tmp_path) -> tsctl.Server:
    (tmp_path / "logs").mkdir()
    return tsctl.Server(home=tmp_path, config=tsctl.render_config(tmp_path / "config.properties"),
                        logs=tmp_path / "logs")


def test_worker_deaths_count_crashes_and_timeout_kills(tmp_path):
    srv = _server(tmp_path)
    assert srv.worker_deaths() == 0
    (srv.log_dir / "model_log.log").write_text("x MODEL_LOG - Backend worker process died.\n")
    (srv.log_dir / "ts_log.log").write_text(
        "x [ERROR] W-1 org.pytorch.serve.wlm.WorkerThread - Backend worker error\n"
        "org.pytorch.serve.wlm.WorkerInitializationException: Backend worker did not respond in given time\n")
    assert srv.worker_deaths() == 2


def _response(status: int, body: dict) -> requests.Response:
    r = requests.Response()
    r.status_code = status
    r._content = json.dumps(body).encode()
    return r


def test_key_refusal_is_recognised_and_other_400s_are_not():
    refused = {"code": 400, "type": "InvalidKeyException",
               "message": "Token Authorization failed. Token either incorrect, expired, or not provided correctly"}
    assert tsctl.key_rejected(_response(400, refused))
    assert not tsctl.key_rejected(_response(400, {"error": "invalid_input", "field": "steps", "reason": "x"}))
    assert not tsctl.key_rejected(_response(200, {"answer": "InvalidKeyException"}))


def test_keys_are_read_fresh_from_the_key_file(tmp_path):
    srv = _server(tmp_path)
    for key in ("a", "b"):
        srv.key_file.write_text(json.dumps({"inference": {"key": key}, "management": {"key": "m"},
                                            "API": {"key": "api"}}))
        assert srv.keys() == {"inference": key, "management": "m"}


def test_rendered_config_keeps_the_key_expiry_and_the_log_config_has_single_lines(tmp_path):
    props = tsctl.read_properties(tsctl.render_config(tmp_path / "c.properties", extra={"x": "1"}))
    assert int(props["token_expiration_min"]) >= 60 and props["enable_model_api"] == "false"
    root = ET.parse(tsctl.LOG_CONFIG).getroot()
    loggers = root.find("Loggers")
    for logger in loggers.findall("Logger"):
        if logger.find("AppenderRef") is not None:  # a logger with its own appender must not also feed root's
            assert logger.get("additivity") == "false", logger.get("name")
    assert not root.find("Appenders").findall("Console")  # stdout is launcher.out, which nothing rotates
