//! Streams through the gateway: SSE and NDJSON events reach the client one by one as the
//! upstream writes them (HTTP/1.1 and HTTP/2), are never compressed, and a client that goes away
//! closes the upstream stream. Also gzip of ordinary JSON responses.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use e2e::gateway::{pool_toml, Gateway, Upstream};

fn gateway_for(up: &Upstream) -> Gateway {
    let body = format!(
        "{}\n[[routes]]\nname = \"all\"\npath = \"/\"\npool = \"p\"\n\n[[routes]]\nname = \"sse\"\npath = \"/sse\"\npool = \"p\"\nstream = true\n",
        pool_toml("p", "least_conn", &[up.addr()], "")
    );
    Gateway::start(&body)
}

/// Run curl -N on `url` and return each non-empty line with the time it arrived.
fn timed_lines(gw: &Gateway, url: &str, extra: &[&str]) -> (Vec<(Duration, String)>, String) {
    let mut child = Command::new("curl")
        .args(["-sSN", "-D", "/dev/stderr", "--cacert"])
        .arg(&gw.setup.cert)
        .args(extra)
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run curl");
    let start = Instant::now();
    let mut lines = Vec::new();
    let out = child.stdout.take().expect("stdout");
    for line in BufReader::new(out).lines() {
        let line = line.expect("read line");
        if !line.trim().is_empty() {
            lines.push((start.elapsed(), line));
        }
    }
    let mut headers = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut headers);
    }
    let _ = child.wait();
    (lines, headers.to_ascii_lowercase())
}

/// Events written 400 ms apart must arrive spread over at least most of that span: a buffering
/// proxy would deliver them together at the end.
fn assert_spaced(lines: &[(Duration, String)], n: usize, gap_ms: u64, what: &str) {
    assert_eq!(lines.len(), n, "{what}: got {lines:?}");
    let spread = lines[n - 1].0 - lines[0].0;
    let min = Duration::from_millis(gap_ms * (n as u64 - 1) * 8 / 10);
    assert!(
        spread >= min,
        "{what}: events arrived within {spread:?}, written over {:?}: {lines:?}",
        Duration::from_millis(gap_ms * (n as u64 - 1))
    );
    for w in lines.windows(2) {
        assert!(
            w[1].0 - w[0].0 >= Duration::from_millis(gap_ms / 2),
            "{what}: two events arrived together: {lines:?}"
        );
    }
}

#[test]
fn sse_and_ndjson_arrive_event_by_event_on_http1_and_h2() {
    let up = Upstream::start("s1");
    let gw = gateway_for(&up);
    for (proto, flag) in [("HTTP/1.1", "--http1.1"), ("HTTP/2", "--http2")] {
        let (lines, headers) = timed_lines(
            &gw,
            &gw.https("/sse?n=5&gap_ms=400"),
            &[flag, "-H", "Accept-Encoding: gzip"],
        );
        assert!(
            headers.contains("content-type: text/event-stream"),
            "{headers}"
        );
        assert!(
            !headers.contains("content-encoding"),
            "SSE must not be compressed: {headers}"
        );
        assert!(
            lines.iter().all(|(_, l)| l.starts_with("data: ")),
            "{lines:?}"
        );
        assert_spaced(&lines, 5, 400, &format!("SSE over {proto}"));

        let (lines, headers) = timed_lines(
            &gw,
            &gw.https("/ndjson?n=4&gap_ms=400"),
            &[flag, "-H", "Accept-Encoding: gzip"],
        );
        assert!(headers.contains("application/x-ndjson"), "{headers}");
        assert!(
            !headers.contains("content-encoding"),
            "NDJSON must not be compressed: {headers}"
        );
        for (_, l) in &lines {
            serde_json::from_str::<serde_json::Value>(l).expect("each NDJSON line is JSON");
        }
        assert_spaced(&lines, 4, 400, &format!("NDJSON over {proto}"));
    }
    // The access log has one JSON line per request, with the stream's timings.
    // Lines are written by a background thread within a short tick: wait for it (bounded).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let sse_line = loop {
        let found = gw
            .setup
            .access_log()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("access log line is JSON"))
            .find(|v| v["path"] == "/sse");
        match found {
            Some(v) => break v,
            None if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50))
            }
            None => panic!("no access-log line for /sse:\n{}", gw.setup.access_log()),
        }
    };
    assert_eq!(sse_line["route"], "sse");
    assert_eq!(sse_line["status"], 200);
    assert!(sse_line["upstream_response_time"].as_f64().unwrap() >= 1.2);
    assert!(sse_line["tls_version"].as_str().unwrap().starts_with("TLS"));
}

#[test]
fn client_going_away_closes_the_upstream_stream() {
    let up = Upstream::start("s2");
    let gw = gateway_for(&up);
    for flag in ["--http1.1", "--http2"] {
        let before = up.stats()["closed_by_client"].as_i64().unwrap();
        let mut child = Command::new("curl")
            .args(["-sSN", "--cacert"])
            .arg(&gw.setup.cert)
            .arg(flag)
            .arg(gw.https("/hold?ms=60000"))
            .stdout(Stdio::piped())
            .spawn()
            .expect("curl");
        // Keep the reader: dropping it would close curl's stdout before the kill below.
        let mut reader = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        reader.read_line(&mut first).unwrap();
        assert!(first.starts_with(": open"), "{first:?}");
        assert_eq!(up.stats()["open_streams"], 1);
        let st = gw.status();
        assert_eq!(
            st["routes"][0]["active_streams"].as_i64().unwrap()
                + st["routes"][1]["active_streams"].as_i64().unwrap(),
            1,
            "{st}"
        );
        child.kill().unwrap();
        let _ = child.wait();
        drop(reader);
        // The upstream sees its stream closed within a few of its 1 s pings.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let s = up.stats();
            if s["open_streams"] == 0 && s["closed_by_client"].as_i64().unwrap() > before {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{flag}: upstream stream still open: {s}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        // The backend's in-flight slot is released too.
        gw.wait_status("in-flight back to 0", Duration::from_secs(5), |st| {
            st["pools"][0]["backends"][0]["in_flight"] == 0
        });
    }
}

#[test]
fn json_is_gzipped_when_accepted_and_large_enough() {
    let up = Upstream::start("s3");
    let gw = gateway_for(&up);
    let big = gw.curl_https("/big?size=5000", &["--compressed"]);
    assert_eq!(big.status, 200);
    assert_eq!(big.header("content-encoding"), Some("gzip"));
    assert_eq!(big.header("vary"), Some("Accept-Encoding"));
    let body = big.json();
    assert_eq!(body["data"].as_str().unwrap().len(), 5000);

    let plain = gw.curl_https("/big?size=5000", &[]);
    assert_eq!(plain.header("content-encoding"), None);
    assert_eq!(plain.header("vary"), Some("Accept-Encoding"));
    assert_eq!(plain.json()["data"].as_str().unwrap().len(), 5000);

    let small = gw.curl_https("/big?size=10", &["--compressed"]);
    assert_eq!(small.header("content-encoding"), None, "below min_length");
    let h2 = gw.curl_https("/big?size=5000", &["--compressed", "--http2"]);
    assert_eq!(h2.http_version, "2");
    assert_eq!(h2.header("content-encoding"), Some("gzip"));
    assert_eq!(h2.json()["data"].as_str().unwrap().len(), 5000);
}
