-- wrk script: POST a Quay.io "Push to Repository" payload to the URL given to wrk,
-- then print one machine-readable summary line (parsed by bench/ingress.py).
-- The body can be replaced with the BENCH_WRK_BODY environment variable.

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = os.getenv("BENCH_WRK_BODY") or
  '{"name":"ingress","repository":"bench/ingress","namespace":"bench",' ..
  '"docker_url":"quay.io/bench/ingress",' ..
  '"homepage":"https://quay.io/repository/bench/ingress","updated_tags":["v1.2.3"]}'

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_WRK {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,' ..
    '"mean_us":%.1f}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    latency.mean))
end
