"""HTTP routes: the page, JSON and CSV history, stats, health, metrics; bad input gets a 400."""

import csv
import io
import time

import pytest


def tick(stream, n):
    return [stream.ticker.tick() for _ in range(n)]


def test_page_renders(client):
    response = client.get("/")
    assert response.status_code == 200
    assert b'id="current-value"' in response.data
    assert b'id="connection-status"' in response.data


def test_latest_is_the_newest_reading(client, stream):
    assert client.get("/api/latest").status_code == 404
    drawn = tick(stream, 3)
    assert client.get("/api/latest").get_json() == {**drawn[-1].to_dict(), "stream": stream.info}


def test_history_defaults_to_the_latest_readings(client, stream):
    drawn = tick(stream, 60)
    body = client.get("/api/history").get_json()
    assert body["readings"] == [r.to_dict() for r in drawn[-50:]]
    assert body["stream"] == {"id": stream.history.stream_id, "min": 0, "max": 100,
                              "interval": 0.1}


def test_history_after_and_limit(client, stream):
    tick(stream, 20)
    body = client.get("/api/history?after=5&limit=3").get_json()
    assert [r["seq"] for r in body["readings"]] == [6, 7, 8]
    assert client.get("/api/history?after=20").get_json() == {"readings": [], "stream": stream.info}


def test_history_csv(client, stream):
    drawn = tick(stream, 7)
    response = client.get("/api/history.csv?after=2")
    assert response.status_code == 200
    assert response.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert [(int(r["seq"]), int(r["value"])) for r in rows] == [(r.seq, r.value) for r in drawn[2:]]
    assert float(rows[0]["ts"]) == pytest.approx(drawn[2].ts, abs=1e-6)


def test_stats_match_the_readings(client, stream):
    drawn = tick(stream, 40)
    body = client.get("/api/stats").get_json()
    values = [r.value for r in drawn]
    assert body["count"] == 40
    assert (body["min"], body["max"]) == (min(values), max(values))
    assert body["mean"] == pytest.approx(sum(values) / 40)
    assert sum(body["histogram"]) == 40 and len(body["histogram"]) == 101
    assert 0.0 <= body["p_value"] <= 1.0
    assert body["since_seq"] == 1


def test_healthz_is_ok_while_ticks_are_fresh_and_503_when_stale(client, stream):
    assert client.get("/healthz").status_code == 503  # the ticker has not started
    stream.started_at = time.time()
    stream.ticker.running = True
    tick(stream, 1)
    body = client.get("/healthz").get_json()
    assert body["status"] == "ok" and body["last_seq"] == 1 and body["problems"] == []
    stream.ticker.last_tick_at -= 60  # a minute without a tick at interval 0.1 s
    response = client.get("/healthz")
    assert response.status_code == 503
    assert "last tick was" in response.get_json()["problems"][0]
    stream.ticker.running = False


def test_metrics_are_prometheus_text(client, stream):
    tick(stream, 3)
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain; version=0.0.4")
    assert "random_stream_ticks_total 3.0" in response.get_data(as_text=True)


@pytest.mark.parametrize("url, message", [
    ("/api/history?limit=0", "limit must be a whole number from 1 to 10000"),
    ("/api/history?limit=10001", "limit must be"),
    ("/api/history?limit=abc", "limit must be"),
    ("/api/history?limit=-5", "limit must be"),
    ("/api/history?limit=1.5", "limit must be"),
    ("/api/history?limit=%EF%BC%95", "limit must be"),  # a full-width digit is not a number here
    ("/api/history?after=-1", "after must be"),
    ("/api/history?after=99999999999999999999", "after must be"),
    ("/api/history?after=", "after must be"),
    ("/api/history?since=3", "unknown query parameter: since"),
    ("/api/history.csv?after=x", "after must be"),
    ("/api/latest?x=1", "unknown query parameter: x"),
    ("/api/stats?verbose=1", "unknown query parameter: verbose"),
])
def test_bad_query_parameters_get_a_json_400(client, stream, url, message):
    tick(stream, 2)
    response = client.get(url)
    assert response.status_code == 400
    assert message in response.get_json()["error"]
    assert stream.history.last_seq == 2


def test_api_errors_are_json(client):
    missing = client.get("/api/nothing")
    assert missing.status_code == 404 and "error" in missing.get_json()
    wrong_method = client.post("/api/latest")
    assert wrong_method.status_code == 405 and "error" in wrong_method.get_json()


def test_security_headers_on_every_response(client):
    for url in ("/", "/api/stats", "/api/nothing", "/healthz"):
        headers = client.get(url).headers
        csp = headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert "frame-ancestors 'none'" in csp
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["Referrer-Policy"] == "no-referrer"


def test_assets_are_gzipped_for_browsers_that_accept_it(client):
    import gzip

    page = client.get("/")
    scripts = [path for path in
               __import__("re").findall(r'(?:src|href)="(/static/[^"]+)"', page.get_data(as_text=True))]
    assert scripts, "the page links its assets"
    for path in scripts:
        plain = client.get(path)
        packed = client.get(path, headers={"Accept-Encoding": "gzip, deflate, br"})
        assert plain.status_code == packed.status_code == 200
        assert "Accept-Encoding" in packed.headers["Vary"]
        if packed.headers.get("Content-Encoding") == "gzip":
            assert gzip.decompress(packed.get_data()) == plain.get_data()
            revalidated = client.get(path, headers={"Accept-Encoding": "gzip",
                                                    "If-None-Match": packed.headers["ETag"]})
            assert revalidated.status_code == 304
        else:
            assert len(plain.get_data()) < 512  # only tiny files go uncompressed


def test_api_json_is_gzipped_only_when_asked(client, stream):
    import gzip
    import json

    tick(stream, 50)
    packed = client.get("/api/history", headers={"Accept-Encoding": "gzip"})
    assert packed.headers["Content-Encoding"] == "gzip"
    assert len(json.loads(gzip.decompress(packed.get_data()))["readings"]) == 50
    assert "Content-Encoding" not in client.get("/api/history").headers


def test_page_shows_the_newest_number_before_any_script_runs(client, stream):
    drawn = tick(stream, 3)
    html = client.get("/").get_data(as_text=True)
    newest = drawn[-1]
    assert (f'id="current-value" class="current-value" data-seq="{newest.seq}" '
            f'data-value="{newest.value}"') in html
    assert f">{newest.value}</p>" in html
