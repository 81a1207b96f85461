"""Reliability against the real TorchServe (load_tests/reliability.py): hostile input, the writer's endpoint
hanging then down, the security settings, sustained locust load with the worker's RSS sampled, the load
runner's thresholds, and a worker killed under load (kept last: it replaces the worker).

`make reliability` runs the same checks at report length and prints the numbers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from g2u.testing.fake_http import hanging_endpoint
from handler import tsctl
from load_tests import reliability as rel
from load_tests import reliability_clients as rel25

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.e2e  # starts servers / subprocess pipelines: `make test-fast` skips it

WRITER_BUDGET_S = 3.0
BATCH_DELAY_MS = 250
"""Long enough for requests sent at one moment to share a batch (the hostile ones with their victims)."""
HANG_S = 30
"""The writer endpoint's hang: far past the budget, so an answer before it shows the budget cut the wait."""
HANG_GUARD = "300s"
"""locust's --run-time where a run ends on a request count: it only ends a hang, never a healthy run."""


@pytest.fixture(scope="module")
def endpoint():
    ep = hanging_endpoint(HANG_S)
    yield ep
    ep.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory, endpoint) -> tsctl.Server:
    try:
        srv = tsctl.serve_demo(tmp_path_factory.mktemp("reliability"), overrides={"maxBatchDelay": BATCH_DELAY_MS},
                               extra_env=rel.writer_env(endpoint, WRITER_BUDGET_S))
    except RuntimeError as exc:
        pytest.fail(str(exc))
    yield srv
    srv.stop()


def test_hostile_input_gets_4xx_naming_the_field_and_spares_batch_mates(server):
    report = rel.check_hostile(server)
    bad = [row for row in report["cases"] if not row["ok"]]
    assert not bad, json.dumps(bad, indent=1)
    assert len(report["cases"]) >= 20
    assert report["batch_mates"] == [200, 200]
    assert report["unicode_question_status"] == 200
    assert report["worker_restarted"] is False


def test_writer_endpoint_hanging_or_down_still_answers_with_library_fallback(server, endpoint):
    report = rel.check_writer_faults(server, endpoint, WRITER_BUDGET_S)
    for phase in ("hanging", "down"):
        got = report[phase]
        assert got["status"] == 200, got
        assert got["writer"] == "openai" and got["fallback"] is True and got["reason"], got
        assert got["prompt_name"], got  # the library prompt of the family replaced the missing one
        assert got["write_prompt_ms"] < HANG_S * 1000, got  # the writer gave up; it never waited the hang out
        assert got["response_has_key"] is False
    assert "timeout" in report["hanging"]["reason"], report["hanging"]
    assert "connection error" in report["down"]["reason"], report["down"]
    assert report["endpoint_requests"] >= 1  # the hanging endpoint was really asked
    assert report["key_sent_to_endpoint"] is True  # the key goes to the endpoint, and only there


def test_security_token_loopback_no_fetching_no_key_in_logs(server):
    report = rel.check_security(server)
    assert report["no_token_status"] in (400, 401, 403)
    assert report["wrong_token_status"] in (400, 401, 403)
    assert report["register_model_status"] == 405
    assert report["all_loopback"], report["listening"]
    assert report["url_as_image_status"] == 400 and report["url_field_status"] == 400
    assert report["probe_hits"] == 0
    assert report["key_in_logs"] == []


def test_sustained_load_has_no_unexpected_failures(server, tmp_path):
    # Ends on 12 completed requests, however long they take here (no latency threshold: speed is the
    # benchmark's). Half are bad input that must get a 4xx (P(none among 12) = 0.5**12 < 0.03%).
    report = rel.check_sustained(server, users=3, duration=HANG_GUARD, out=tmp_path / "locust", max_requests=12,
                                 bad_share=0.5, max_p95_ms=float("inf"))
    assert report["exit_code"] == 0, report["locust_tail"]
    assert report["requests"] >= 12 and report["failures"] == 0, report["per_endpoint"]
    assert any(name.endswith("bad input (expect 4xx)") for name in report["per_endpoint"])
    assert len(report["rss_samples"]) >= 2 and report["rss_mb_start"] > 50
    # RSS is reported, not bounded (it follows the allocator and the machine): that requests keep no images
    # or tensors is checked exactly, object by object, in tests/serving/test_handler.py.
    for name in ("stats.json", "locust_stats.csv", "report.html"):
        assert (tmp_path / "locust" / name).is_file()


def test_load_runner_exits_nonzero_when_a_threshold_is_missed(server, tmp_path):
    cmd = [sys.executable, str(ROOT / "load_tests" / "run_loadtest.py"), "--host", server.url("inference"),
           "--users", "1", "--requests", "2", "--duration", HANG_GUARD, "--key-file", str(server.key_file),
           "--out", str(tmp_path), "--max-p95-ms", "1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "G2U_STEPS": "2"})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["passed"] is False and stats["aggregated"]["p95_ms"] > 1


def test_mlflow_loadtest_entry_point_logs_stats_and_reports(server, tmp_path):
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # PATH without the venv: the MLproject command must find the project's interpreter by itself.
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if Path(p) != Path(sys.executable).parent)
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PATH": path, "G2U_MAX_REQUESTS": "4"}
    cmd = [str(Path(sys.executable).parent / "mlflow"), "run", str(ROOT), "--env-manager", "local", "-e", "loadtest",
           "-P", f"host={server.url('inference')}", "-P", f"key_file={server.key_file}", "-P", "users=2",
           "-P", f"duration={HANG_GUARD}", "-P", "steps=2", "-P", "max_p95_ms=inf"]  # no latency threshold here
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    mlflow.set_tracking_uri(uri)
    [run] = mlflow.search_runs(experiment_names=["Default"], output_format="list")
    assert run.data.metrics["aggregated.requests"] >= 4 and run.data.metrics["passed"] == 1.0
    names = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)}
    assert {"stats.json", "report.html", "locust_stats.csv"} <= names


# ---------------------------------------------------------------- no client takes the server down
def test_client_chosen_names_never_become_metric_labels_or_raw_log_lines(server):
    """Unique 256 KB keys and forging names/values (scaled from the issue's 8 MB × 86): every request 400
    with a short field; no series per key, no forged series, no raw control byte in any log, the logs grow
    by a bounded amount per request (no roll-over), the frontend keeps its pid and serves."""
    report = rel25.check_labels_and_logs(server, requests_n=20, key_chars=256 * 1024)
    print(json.dumps({k: v for k, v in report.items() if k != "log_raw"}, indent=1))
    assert report["statuses"] == [400] and report["longest_field_echoed"] < 100
    from g2u.serving import known_fields

    assert set(report["field_labels"]) <= known_fields() | {"unknown", "-"}, report["field_labels"]
    assert report["g2u_errors_series_after"] - report["g2u_errors_series_before"] <= 3
    assert report["forged_series"] == []
    assert report["metrics_bytes_after"] - report["metrics_bytes_before"] < 20_000
    for name, raw in report["log_raw"].items():
        assert raw == {"esc": 0, "cr": 0, "forged_series": 0, "key_text": 0}, (name, raw)
    assert sum(report["log_growth_bytes"].values()) < report["requests"] * 20_000  # 256 KB keys: not written
    assert report["frontend_same_pid"] and report["after_status"] == 200


def test_describe_and_explain_paths_are_answered_per_item_beside_their_batch_mates(server):
    report = rel25.check_describe_explain(server)
    print(json.dumps(report, indent=1))
    assert report["describe"]["status"] == 200 and report["describe"]["model"]["backend"] == "qwen_image_edit"
    assert report["describe"]["identity"]
    for path in ("explanations", "kserve_v1_explain", "kserve_v2_explain"):
        assert report[path]["status"] == 501 and report[path]["error"] == "not_supported", report[path]
    for victim in ("victim_1", "victim_2"):
        assert report[victim]["status"] == 200 and report[victim]["answer"], report[victim]
    assert max(report[v]["batch_size"] for v in ("victim_1", "victim_2")) > 1  # they shared batches


def test_costs_are_bounded_before_work_and_a_cheap_batch_mate_goes_first(server):
    """Prompt tokens (alone and two at once), candidates × tokens, textual_cot reasoning: 422 before any
    work; a 5 px thought 400; a brought 2048² thought measured at a bounded size (200). RSS is printed."""
    report = rel25.check_costs(server, thought_side=2048)
    print(json.dumps(report, indent=1))
    for name in ("long_prompt_multiturn", "long_prompt_two_at_once", "candidates_8_x_2048_tokens",
                 "textual_cot_4096_reasoning"):
        assert {r["status"] for r in report[name]["responses"]} == {422}, report[name]
    assert report["long_prompt_multiturn"]["responses"][0]["field"] == "options"
    assert report["tiny_thought_5px"]["responses"][0] == {**report["tiny_thought_5px"]["responses"][0],
                                                         "status": 400, "field": "thought"}
    assert report["brought_thought_2048px"]["responses"][0]["status"] == 200
    pair = report["cheap_with_costly"]
    assert pair["cheap"]["status"] == pair["costly"]["status"] == 200
    if pair["cheap"]["batch_size"] == pair["costly"]["batch_size"] == 2:  # they met in one batch
        assert pair["body_arrival_s"]["cheap"] < pair["body_arrival_s"]["costly"], pair
        assert pair["chunked"][1] == "chunked"  # the cheap answer was streamed out before the batch ended


def test_single_requests_of_issue_25_get_their_4xx_not_a_500(server):
    report = rel25.check_inputs(server)
    print(json.dumps(report, indent=1))
    expect = {"options_json_nested_100k": (400, "options"),
              "candidate_prompts_json_nested_100k": (400, "candidate_prompts"),
              "timeout_s_true": (400, "timeout_s"), "repeated_form_field": (400, "question"),
              "base64_thought_form_field": (200, None), "tiff_1_5m_strips": (400, "image")}
    for name, (status, field) in expect.items():
        assert (report[name]["status"], report[name]["field"]) == (status, field), (name, report[name])
    assert report["base64_thought_form_field"]["provided"] is True
    big = report["field_name_300kb"]
    assert big["status"] == 400 and len(big["field"]) < 100 and big["body_bytes"] < 4000
    # Known, not ours to fix: an empty part name is refused by TorchServe's frontend (Netty's multipart
    # decoder, "empty name") before any worker code runs, as a 500 naming the Java exception. This row pins
    # that behaviour (a TorchServe that fixes it fails here and the row is updated); the server lives on.
    assert report["multipart_empty_name"]["status"] == 500
    assert report["after_status"] == 200


def test_batch_mates_get_their_own_answers_through_torchserve(server):
    report = rel25.check_own_answers(server)
    print(json.dumps(report, indent=1))
    assert len(set(report["alone"])) == len(report["alone"])  # inputs the demo model tells apart
    assert report["batched_status"] == [200] * len(report["alone"])
    assert report["ids"] == [f"own-{i}" for i in range(len(report["alone"]))]
    assert max(report["batch_sizes"]) > 1  # really batched
    assert report["batched"] == report["alone"]  # each its own answer, not a batch-mate's


def test_worker_killed_under_load_is_restarted_and_serves_again(server):
    report = rel.check_worker_kill(server, clients=2, after_requests=2, request_timeout=60)
    assert report["requests_before_kill"] >= 2
    assert report["new_worker"] is True
    assert report["recovery_window_s"] is not None, report  # recovered (its length is reported, not bounded)
    assert report["after_recovery"] == [200] * 5


# ---------------------------------------------------------------- single requests that crashed or stalled
def test_single_request_rows_are_answered_and_normal_requests_keep_being_served(server):
    """Each input of the single-request table in flight (the 150 000-page TIFF three at once) while normal requests
    go on: the hostile ones get their status (400 naming the field, or 200), every normal request 200.
    Latencies and the worker's RSS are printed, not asserted: the 16-bit PNG's decode memory is bounded
    exactly in tests/core/test_images.py (traced allocations, not RSS)."""
    report = rel.check_hostile_latency(server, rel.single_request_cases(), {"TIFF of 150 000 pages": 3}, cap_s=300)
    print(json.dumps(report, indent=1))
    rows = {row["case"]: row for row in report["cases"]}
    assert [c.name for c in rel.single_request_cases()] == list(rows), "a case did not run: the worker got stuck"
    for case in rel.single_request_cases():
        row = rows[case.name]
        assert row["hostile_statuses"] == [case.status] * row["copies"], row
        assert not row["stuck"] and row["normal"] and row["normal_failed"] == 0, row


def _issued_keys(srv: tsctl.Server) -> dict:
    """key_file.json once TorchServe has written it (it appears at start, empty for a moment) and listens
    on its inference address (it binds after writing the keys)."""
    bound = time.monotonic() + 120  # a hang bound only
    while True:
        try:
            keys = json.loads(srv.key_file.read_text())
            if tsctl.port_in_use(srv.ports[0]):
                return keys
        except (OSError, ValueError):
            pass
        assert time.monotonic() < bound and srv.pid() is not None, srv.log_tail()
        time.sleep(0.2)


def test_an_expired_key_is_refused_and_a_rotation_keeps_clients_working(server, tmp_path):
    """Keys expire as configured: on a server whose keys expire as they are issued (token_expiration_min=0,
    no model needed) the issued inference key is refused, with no wait. After a rotation with the API key
    (what `make rotate-keys` does) the old key is refused and a client that holds it re-reads
    key_file.json and is answered."""
    from datetime import datetime, timezone

    (tmp_path / "store").mkdir()
    config = tsctl.render_config(tmp_path / "config.properties", ports=tsctl.Ports.free(),
                                 model_store=tmp_path / "store", models="", extra={"token_expiration_min": "0"})
    expiring = tsctl.Server(home=tmp_path, config=config)
    expiring.start()
    try:
        issued = _issued_keys(expiring)["inference"]
        expires = datetime.fromisoformat(issued["expiration time"].split(".")[0] + "+00:00")
        assert expires <= datetime.now(timezone.utc)  # 0 minutes: expired when issued
        r = requests.get(f"{expiring.url('inference')}/ping", headers={"Authorization": f"Bearer {issued['key']}"},
                         timeout=30)
        assert tsctl.key_rejected(r), r.text  # the key is the server's own: refused for its expiry alone
    finally:
        expiring.stop()

    client = rel.Client(server, timeout=300)
    assert client.good().status_code == 200
    old = server.keys()["inference"]
    for kind in ("inference", "management"):
        server.rotate_key(kind)
    assert server.keys()["inference"] != old
    r = requests.get(f"{server.url('inference')}/ping", headers={"Authorization": f"Bearer {old}"}, timeout=30)
    assert tsctl.key_rejected(r), r.text
    assert client.good().status_code == 200 and client.key_reloads == 1
    mgmt = requests.get(f"{server.url('management')}/models/{server.model_name}", timeout=30,
                        headers={"Authorization": f"Bearer {server.keys()['management']}"})
    assert mgmt.status_code == 200


def test_shipped_config_sets_a_deliberate_key_expiry(server):
    """config.properties sets token_expiration_min (TorchServe's default, 60, refused everyone an hour in)."""
    from datetime import datetime, timedelta, timezone

    minutes = int(tsctl.read_properties(tsctl.CONFIG_TEMPLATE)["token_expiration_min"])
    assert minutes > 60
    issued = json.loads(server.key_file.read_text())["inference"]["expiration time"]
    expires = datetime.fromisoformat(issued.split(".")[0] + "+00:00")
    assert expires - datetime.now(timezone.utc) > timedelta(minutes=minutes - 30)


def test_ts_log_has_no_doubled_lines_and_health_is_reachable(server):
    """Every frontend line once (log4j additivity), nothing logged to launcher.out; /ping answers with the
    inference key, the metrics address without one (what a load balancer may probe)."""
    text = (server.log_dir / "ts_log.log").read_text()
    assert text.count("Inference API bind to") == 1  # logged once at start; the old config wrote it twice
    assert "org.pytorch.serve" not in (server.log_dir / "launcher.out").read_text()
    key = {"Authorization": f"Bearer {server.keys()['inference']}"}
    assert requests.get(f"{server.url('inference')}/ping", headers=key, timeout=30).status_code == 200
    assert requests.get(f"{server.url('inference')}/ping", timeout=30).status_code in (400, 401)
    assert requests.get(f"{server.url('metrics')}/metrics", timeout=30).status_code == 200
