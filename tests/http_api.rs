//! The HTTP/JSON API beside gRPC (`heie serve --http`), on an in-process server over the fixture
//! models: every route, proto3 JSON bodies, SSE framing, the same answers as gRPC for the same
//! request, errors with their statuses, the body limit, the queue, deadlines and cancellation by
//! closing the connection. The client is a plain HTTP/1.1 socket, so the tests see the wire bytes.

mod http_support;
mod service_support;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use heie_proto::v1 as pb;
use http_support::*;
use serde_json::json;
use service_support::*;

fn evaluate_body(png: &[u8], options: serde_json::Value) -> serde_json::Value {
    json!({ "image": { "encoded": b64(png) }, "options": options })
}

/// Options that keep a request busy for seconds (hot sampling rarely stops early); tests cancel it.
fn long() -> serde_json::Value {
    json!({ "maxTokensPerSection": LONG_TOKENS, "temperature": 5.0, "seed": "7" })
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Reads SSE messages until one named `name` arrives; panics if the stream ends first.
async fn until(reply: &mut Reply, name: &str) -> SseEvent {
    loop {
        let e = reply.next_event().await.unwrap_or_else(|| panic!("the stream ended before a {name} event"));
        assert_ne!(e.name, "error", "{}", e.data);
        if e.name == name {
            return e;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_info_page_and_unknown_routes() {
    let _serial = serial().await;
    let server = start_http_server(limits(1, 4)).await;
    let http = server.http_addr.expect("HTTP is on");

    let health = get(http, "/healthz").await;
    assert_eq!(health.status, 200);
    assert_eq!(health.json().await, json!({ "status": "SERVING" }));

    // GetInfo over HTTP is the proto3 JSON of what gRPC answers.
    let info = get(http, "/v1/info").await;
    assert_eq!(info.status, 200);
    assert_eq!(info.header("content-type"), Some("application/json"));
    let info = info.json().await;
    let grpc = client(server.addr).await.get_info(pb::GetInfoRequest {}).await.unwrap().into_inner();
    assert_eq!(info["llmModel"], grpc.llm_model);
    assert_eq!(info["tokensPerTile"], grpc.tokens_per_tile);
    assert_eq!(info["headsMode"], "HEADS_MODE_ZERO_SHOT");
    assert_eq!(info["promptMode"], "PROMPT_MODE_GUIDED");
    assert_eq!(info["limits"]["maxPixels"], "4000000", "64-bit integers are strings");
    assert_eq!(info["limits"]["parallelSlots"], 1);
    let decoded: pb::ServerInfo = serde_json::from_value(info).expect("the body is a ServerInfo");
    assert_eq!(decoded, grpc);

    let page = get(http, "/").await;
    assert_eq!(page.status, 200);
    assert_eq!(page.header("content-type"), Some("text/html; charset=utf-8"));
    let html = String::from_utf8(page.body().await).unwrap();
    assert!(html.contains("<script src=\"/static/app.js\">") && html.contains("/static/style.css"), "{html}");
    let script = get(http, "/static/app.js").await;
    assert_eq!(script.header("content-type"), Some("text/javascript; charset=utf-8"));
    assert!(String::from_utf8(script.body().await).unwrap().contains("/v1/evaluate"));
    let css = get(http, "/static/style.css").await;
    assert!(String::from_utf8(css.body().await).unwrap().contains("prefers-color-scheme: dark"));

    let message = expect_error(get(http, "/static/missing.js").await, 404, "NOT_FOUND").await;
    assert!(message.contains("missing.js"), "{message}");
    expect_error(get(http, "/v2/evaluate").await, 404, "NOT_FOUND").await;
    expect_error(get(http, "/v1/evaluate").await, 405, "UNIMPLEMENTED").await;

    let metrics = server.metrics_text();
    assert!(metrics.contains("heie_requests_total{method=\"GetInfo\",code=\"OK\"} 2"), "both transports count: {metrics}");
    server.shutdown(Duration::from_secs(2)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evaluate_streams_the_grpc_events_as_server_sent_events() {
    let _serial = serial().await;
    let server = start_http_server(limits(1, 4)).await;
    let http = server.http_addr.unwrap();
    let png = example_png();
    let options = json!({
        "maxTokensPerSection": 12,
        "heatmapEncodings": ["HEATMAP_ENCODING_PNG8", "HEATMAP_ENCODING_RAW_F32_LE"],
    });
    let mut body = evaluate_body(&png, options);
    body["image"]["generationPrompt"] = json!("a cat on a sofa");
    let reply = post_json(http, "/v1/evaluate", &body).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("text/event-stream"));
    assert_eq!(reply.header("transfer-encoding"), Some("chunked"), "streamed, not buffered");
    let events = reply.events().await;

    // Every message is named after its oneof case and carries the whole EvaluateEvent.
    let mut decoded = Vec::new();
    for e in &events {
        let value = e.json();
        let keys: Vec<&String> = value.as_object().expect("an object").keys().collect();
        assert_eq!(keys, vec![&e.name], "one case, named like the event");
        let event: pb::EvaluateEvent = serde_json::from_value(value).expect("an EvaluateEvent");
        decoded.push(event.event.expect("a case"));
    }
    let names: Vec<&str> = events.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names.first(), Some(&"started"));
    assert_eq!(names.last(), Some(&"done"));
    let first = |n: &str| names.iter().position(|x| *x == n).unwrap_or_else(|| panic!("a {n} event: {names:?}"));
    assert!(first("textDelta") < first("heatmap") && first("heatmap") < first("score"), "{names:?}");
    assert_eq!(names.iter().filter(|n| **n == "heatmap").count(), 2, "one per requested encoding");
    let started = &events[0].json()["started"];
    let (w, h) = (started["imageWidth"].as_u64().unwrap() as u32, started["imageHeight"].as_u64().unwrap() as u32);
    let img = image::open(example_png_path()).unwrap();
    assert_eq!((w, h), (img.width(), img.height()));
    for e in events.iter().filter(|e| e.name == "heatmap") {
        let heatmap = &e.json()["heatmap"];
        let data = unb64(heatmap["data"].as_str().unwrap());
        match heatmap["encoding"].as_str().unwrap() {
            "HEATMAP_ENCODING_PNG8" => {
                let map = image::load_from_memory(&data).expect("a PNG");
                assert_eq!((map.width(), map.height()), (w, h));
            }
            "HEATMAP_ENCODING_RAW_F32_LE" => assert_eq!(data.len(), (w * h * 4) as usize),
            other => panic!("unexpected encoding {other}"),
        }
    }
    let score = events.iter().find(|e| e.name == "score").unwrap().json();
    let s = score["score"]["score"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&s), "{score}");
    let summary = events.last().unwrap().json()["done"]["summary"].as_str().unwrap().to_string();
    assert!(summary.starts_with(&format!("score {s:.3} (zero-shot)")), "the server's verdict line: {summary:?}");

    // The same request over gRPC: the same events (greedy decoding is deterministic).
    let request: pb::EvaluateRequest = serde_json::from_value(body).unwrap();
    assert_eq!(request.image.as_ref().unwrap().generation_prompt.as_deref(), Some("a cat on a sofa"));
    let grpc = evaluate(&mut client(server.addr).await, request).await;
    assert!(grpc.status.is_none(), "{:?}", grpc.status);
    assert_eq!(grpc.kinds(), decoded.iter().map(kind).collect::<Vec<_>>());
    let http_text = |section: pb::Section| -> String {
        decoded
            .iter()
            .filter_map(|e| match e {
                pb::evaluate_event::Event::TextDelta(t) if t.section == section as i32 => Some(t.text.as_str()),
                _ => None,
            })
            .collect()
    };
    for section in [pb::Section::Description, pb::Section::Regions, pb::Section::Analysis, pb::Section::Rating] {
        assert_eq!(http_text(section), grpc.text(section), "{section:?}");
    }
    assert!(!http_text(pb::Section::Description).is_empty());
    assert!((grpc.scores()[0].score as f64 - s).abs() < 1e-6);
    let metrics = server.metrics_text();
    assert!(metrics.contains("heie_requests_total{method=\"Evaluate\",code=\"OK\"} 2"), "{metrics}");
    server.shutdown(Duration::from_secs(2)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_json_errors_with_the_status_of_their_code() {
    let _serial = serial().await;
    let server = start_http_server(limits(1, 4)).await;
    let http = server.http_addr.unwrap();
    let png = example_png();

    let m = expect_error(post_json(http, "/v1/evaluate", &json!("{")).await, 400, "INVALID_ARGUMENT").await;
    assert!(m.starts_with("request body: not the JSON of a heie.v1.EvaluateRequest"), "{m}");
    let bad_json = send(http, "POST", "/v1/evaluate", &[], b"{\"image\":").await;
    let m = expect_error(bad_json, 400, "INVALID_ARGUMENT").await;
    assert!(m.contains("EOF"), "{m}");
    let m = expect_error(send(http, "POST", "/v1/evaluate", &[], b"").await, 400, "INVALID_ARGUMENT").await;
    assert!(m.contains("empty"), "{m}");
    let m = expect_error(post_json(http, "/v1/evaluate", &json!({ "imgae": {} })).await, 400, "INVALID_ARGUMENT").await;
    assert!(m.contains("unknown field `imgae`"), "{m}");
    let m = expect_error(post_json(http, "/v1/evaluate", &json!({ "image": { "encoded": "%%%" } })).await, 400, "INVALID_ARGUMENT").await;
    assert!(m.contains("request body"), "bad base64 is a bad body: {m}");
    let m = expect_error(post_json(http, "/v1/evaluate", &json!({})).await, 400, "INVALID_ARGUMENT").await;
    assert_eq!(m, "image: an image is required");
    let corrupt = evaluate_body(b"GIF89a not really an image", json!({}));
    let m = expect_error(post_json(http, "/v1/evaluate", &corrupt).await, 400, "INVALID_ARGUMENT").await;
    assert!(m.starts_with("image.encoded: "), "the field is named: {m}");
    let truncated = evaluate_body(&png[..png.len() / 2], json!({}));
    let m = expect_error(post_json(http, "/v1/evaluate", &truncated).await, 400, "INVALID_ARGUMENT").await;
    assert!(m.starts_with("image.encoded: "), "{m}");
    let bad_option = evaluate_body(&png, json!({ "temperature": -1 }));
    let m = expect_error(post_json(http, "/v1/evaluate", &bad_option).await, 400, "INVALID_ARGUMENT").await;
    assert!(m.starts_with("options.temperature: "), "{m}");
    let with_timeout = |value: &'static str| {
        let body = evaluate_body(&png, json!({})).to_string();
        async move { send(http, "POST", "/v1/evaluate", &[("X-Heie-Timeout-Ms", value)], body.as_bytes()).await }
    };
    let m = expect_error(with_timeout("soon").await, 400, "INVALID_ARGUMENT").await;
    assert!(m.starts_with("X-Heie-Timeout-Ms"), "{m}");
    let m = expect_error(post_json(http, "/v1/rerank", &json!({ "images": [] })).await, 400, "INVALID_ARGUMENT").await;
    assert!(m.starts_with("images: "), "{m}");
    let m = expect_error(post_json(http, "/v1/rerank", &json!({ "images": [{ "encoded": b64(b"junk") }] })).await, 400, "INVALID_ARGUMENT").await;
    assert!(m.starts_with("images[0].encoded: "), "{m}");

    // The body limit (--max-message-bytes × 4/3 + 4096) is checked from Content-Length before any
    // of the body is read.
    let limit = DEFAULT_MAX_MESSAGE_BYTES_FOR_TESTS * 4 / 3 + 4096;
    let mut stream = tokio::net::TcpStream::connect(http).await.unwrap();
    use tokio::io::AsyncWriteExt as _;
    let head = format!("POST /v1/evaluate HTTP/1.1\r\nHost: {http}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n", limit + 1);
    stream.write_all(head.as_bytes()).await.unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(10), read_head(stream)).await.expect("answered without the body");
    let m = expect_error(reply, 413, "OUT_OF_RANGE").await;
    assert!(m.contains(&limit.to_string()), "{m}");

    // A body over axum's 2 MB default is fine when within the limit: a 3 MB noise PNG is judged.
    let noise = image::RgbImage::from_fn(1000, 1000, |x, y| {
        let v = (x.wrapping_mul(2_654_435_761) ^ y.wrapping_mul(40_503)).wrapping_mul(2_246_822_519);
        image::Rgb([(v >> 8) as u8, (v >> 16) as u8, (v >> 24) as u8])
    });
    let big = service_support::png(&noise);
    assert!(big.len() > 2_500_000, "{}", big.len());
    let mut reply = post_json(http, "/v1/evaluate", &evaluate_body(&big, json!({ "maxTokensPerSection": 2, "explanation": false }))).await;
    assert_eq!(reply.status, 200);
    until(&mut reply, "done").await;

    let metrics = server.metrics_text();
    assert!(metrics.contains("heie_requests_total{method=\"Evaluate\",code=\"INVALID_ARGUMENT\"} 4"), "{metrics}");
    server.shutdown(Duration::from_secs(2)).await.unwrap();
}

const DEFAULT_MAX_MESSAGE_BYTES_FOR_TESTS: usize = heie_server::cli::serve::DEFAULT_MAX_MESSAGE_BYTES;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_is_429_and_closing_the_connection_cancels_within_a_decode_step() {
    let _serial = serial().await;
    let server = start_http_server(limits(1, 1)).await;
    let http = server.http_addr.unwrap();
    let engine = server.evaluator().unwrap().engine().clone();
    let metrics = engine.metrics().clone();
    let small = png(&test_image(120, 90));
    // 5 ms a step: A's long evaluation lasts many seconds however fast this machine decodes.
    engine.set_step_delay(Duration::from_millis(5));

    // A holds the only slot; B waits in the queue.
    let mut a = post_json(http, "/v1/evaluate", &evaluate_body(&small, long())).await;
    assert_eq!(a.status, 200);
    until(&mut a, "textDelta").await;
    let mut b = post_json(http, "/v1/evaluate", &evaluate_body(&small, long())).await;
    assert_eq!(b.status, 200, "queued requests stream too");
    until(&mut b, "started").await;
    assert_eq!(metrics.queue_depth.load(Ordering::Relaxed), 1);

    // C finds the queue full: 429 before any stream, for Evaluate and Rerank alike.
    let c = post_json(http, "/v1/evaluate", &evaluate_body(&small, json!({ "maxTokensPerSection": 4 }))).await;
    assert_eq!(c.header("retry-after"), Some("1"));
    let m = expect_error(c, 429, "RESOURCE_EXHAUSTED").await;
    assert!(m.contains("busy"), "{m}");
    let rerank = json!({ "images": [{ "encoded": b64(&small) }], "fast": true });
    expect_error(post_json(http, "/v1/rerank", &rerank).await, 429, "RESOURCE_EXHAUSTED").await;

    // Closing A's connection cancels it: once the edge notices the close, the engine drops the
    // sequence after at most the decode step in flight. Each step is made to last 1 s (test-only
    // step delay), far longer than noticing a closed socket takes even on a loaded machine, so the
    // count below does not depend on how fast this machine decodes. The delay applies from the
    // step after the one in flight; A is closed once that slow step has begun.
    const STEP: Duration = Duration::from_secs(1);
    engine.set_step_delay(STEP);
    let before = metrics.decode_steps.load(Ordering::Relaxed);
    eventually("a decode step after the delay was set", || metrics.decode_steps.load(Ordering::Relaxed) > before).await;
    let steps = metrics.decode_steps.load(Ordering::Relaxed);
    let closed = Instant::now();
    drop(a);
    eventually("the engine to cancel the closed request", || metrics.cancelled.load(Ordering::Relaxed) == 1).await;
    let (steps_after, took) = (metrics.decode_steps.load(Ordering::Relaxed) - steps, closed.elapsed());
    engine.set_step_delay(Duration::ZERO);
    eprintln!("cancelled {took:?} after the close, {steps_after} decode step(s) later");
    assert!(steps_after <= 1, "cancelled {steps_after} decode steps after the connection closed (README: within one)");
    // Noticed within the step in flight: the cancellation came with that step's end, not a later one.
    assert!(took < 2 * STEP, "the close was noticed only after {took:?}, more than one {STEP:?} step");
    // B moves into the freed slot and writes.
    until(&mut b, "textDelta").await;
    drop(b);
    eventually("the slot and queue to empty", || {
        metrics.queue_depth.load(Ordering::Relaxed) == 0 && metrics.active.load(Ordering::Relaxed) == 0
    })
    .await;
    let mut d = post_json(http, "/v1/evaluate", &evaluate_body(&small, json!({ "maxTokensPerSection": 4 }))).await;
    assert_eq!(d.status, 200);
    until(&mut d, "done").await;

    let text = server.metrics_text();
    assert!(text.contains("heie_requests_total{method=\"Evaluate\",code=\"CANCELLED\"} 2"), "{text}");
    assert!(text.contains("heie_requests_total{method=\"Evaluate\",code=\"RESOURCE_EXHAUSTED\"} 1"), "{text}");
    assert!(text.contains("heie_requests_total{method=\"Rerank\",code=\"RESOURCE_EXHAUSTED\"} 1"), "{text}");
    assert!(text.contains("heie_sequences_total{outcome=\"cancelled\"} 2"), "{text}");
    server.shutdown(Duration::from_secs(2)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_timeout_header_ends_the_stream_with_deadline_exceeded_and_cancels_the_work() {
    let _serial = serial().await;
    let server = start_http_server(limits(1, 4)).await;
    let http = server.http_addr.unwrap();
    let engine = server.evaluator().unwrap().engine().clone();
    let metrics = engine.metrics().clone();
    // 5 ms a step: the long evaluation lasts many seconds on any machine, far past the 150 ms deadline.
    engine.set_step_delay(Duration::from_millis(5));
    let body = evaluate_body(&png(&test_image(120, 90)), long()).to_string();
    let started = Instant::now();
    let mut reply = send(http, "POST", "/v1/evaluate", &[("X-Heie-Timeout-Ms", "150")], body.as_bytes()).await;
    assert_eq!(reply.status, 200);
    let mut last = None;
    while let Some(e) = reply.next_event().await {
        last = Some(e);
    }
    let last = last.expect("events");
    assert_eq!(last.name, "error", "the stream ends with an error event: {}", last.data);
    assert_eq!(last.json(), json!({ "code": "DEADLINE_EXCEEDED", "message": "the deadline passed before the evaluation finished" }));
    assert!(started.elapsed() >= Duration::from_millis(150), "not before the deadline: {:?}", started.elapsed());
    eventually("the engine to cancel the late request", || metrics.cancelled.load(Ordering::Relaxed) == 1).await;
    server.shutdown(Duration::from_secs(2)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rerank_answers_the_same_ranking_as_grpc() {
    let _serial = serial().await;
    let server = start_http_server(limits(2, 8)).await;
    let http = server.http_addr.unwrap();
    let images = [png(&test_image(120, 90)), example_png(), png(&test_image(64, 96))];
    let body = json!({
        "images": images.iter().map(|p| json!({ "encoded": b64(p) })).collect::<Vec<_>>(),
        "topK": 2,
        "fast": true,
        "options": { "maxTokensPerSection": 4 },
    });
    let reply = post_json(http, "/v1/rerank", &body).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let answer = reply.json().await;
    let scores: Vec<f64> = answer["scores"].as_array().unwrap().iter().map(|s| s.as_f64().unwrap()).collect();
    let order: Vec<u64> = answer["order"].as_array().unwrap().iter().map(|i| i.as_u64().unwrap()).collect();
    assert_eq!(scores.len(), 3);
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(sorted, vec![0, 1, 2], "order is a permutation: {answer}");
    assert!(scores[order[0] as usize] >= scores[order[1] as usize] && scores[order[1] as usize] >= scores[order[2] as usize]);
    assert_eq!(answer["topKIndices"], json!(order[..2]));
    assert!(answer["totalMs"].as_f64().unwrap() > 0.0);

    let request: pb::RerankRequest = serde_json::from_value(body).unwrap();
    let grpc = client(server.addr).await.rerank(request).await.unwrap().into_inner();
    assert_eq!(grpc.order.iter().map(|&i| i as u64).collect::<Vec<_>>(), order);
    for (g, h) in grpc.scores.iter().zip(&scores) {
        assert!((*g as f64 - h).abs() < 1e-6, "{g} vs {h}");
    }
    server.shutdown(Duration::from_secs(2)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_loading_health_and_the_api_answer_503_and_the_page_loads() {
    let _serial = serial().await;
    let (go, wait) = std::sync::mpsc::channel::<()>();
    let options = heie_server::server::ServeOptions {
        addr: "127.0.0.1:0".parse().unwrap(),
        metrics_addr: None,
        http_addr: Some("127.0.0.1:0".parse().unwrap()),
        limits: limits(1, 4),
        network: Default::default(),
    };
    let mut server = heie_server::server::start(options, move || {
        wait.recv()?;
        let engine = heie_server::engine::Engine::start(&config(LLM, MMPROJ, 1))?;
        Ok(heie_server::pipeline::Evaluator::new(std::sync::Arc::new(engine))?)
    })
    .await
    .unwrap();
    let http = server.http_addr.unwrap();
    let health = get(http, "/healthz").await;
    assert_eq!(health.status, 503);
    assert_eq!(health.json().await, json!({ "status": "NOT_SERVING" }));
    let reply = post_json(http, "/v1/evaluate", &evaluate_body(&example_png(), json!({}))).await;
    assert_eq!(reply.header("retry-after"), Some("1"));
    let m = expect_error(reply, 503, "UNAVAILABLE").await;
    assert!(m.contains("not ready"), "{m}");
    expect_error(get(http, "/v1/info").await, 503, "UNAVAILABLE").await;
    assert_eq!(get(http, "/").await.status, 200, "the page loads and says the server is loading");

    go.send(()).unwrap();
    server.ready().await.unwrap();
    assert_eq!(get(http, "/healthz").await.status, 200);
    server.shutdown(Duration::from_secs(2)).await.unwrap();
    assert!(tokio::net::TcpStream::connect(http).await.is_err(), "the HTTP port is closed after shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_gives_streams_the_grace_period_then_ends_them_with_unavailable() {
    let _serial = serial().await;
    let server = start_http_server(limits(1, 4)).await;
    let http = server.http_addr.unwrap();
    let engine = server.evaluator().unwrap().engine().clone();
    let metrics = engine.metrics().clone();
    // 5 ms a step: the long evaluation outlasts the 300 ms grace period on any machine.
    engine.set_step_delay(Duration::from_millis(5));
    let mut reply = post_json(http, "/v1/evaluate", &evaluate_body(&png(&test_image(120, 90)), long())).await;
    until(&mut reply, "textDelta").await;
    let stopping = Instant::now();
    let shutdown = tokio::spawn(server.shutdown(Duration::from_millis(300)));
    let mut last = None;
    while let Some(e) = reply.next_event().await {
        last = Some(e);
    }
    let last = last.expect("events");
    eprintln!("the stream ended with {} {:?} after shutdown began", last.name, stopping.elapsed());
    assert_eq!(last.name, "error", "{}", last.data);
    assert_eq!(last.json()["code"], "UNAVAILABLE", "{}", last.data);
    assert!(stopping.elapsed() >= Duration::from_millis(300), "not before the grace period: {:?}", stopping.elapsed());
    shutdown.await.unwrap().expect("a clean shutdown");
    eventually("the engine to drop the cancelled sequence", || metrics.active.load(Ordering::Relaxed) == 0).await;
    assert!(tokio::net::TcpStream::connect(http).await.is_err(), "the HTTP port is closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_guard_the_api_but_not_health_or_the_page() {
    let _serial = serial().await;
    let key: heie_server::serving::ApiKey = "http-test-key-1234".parse().unwrap();
    let network = heie_server::server::NetworkOptions {
        api_keys: heie_server::serving::ApiKeys::new(&[key], None).unwrap(),
        ..Default::default()
    };
    let server = start_http_server_with(limits(1, 4), network).await;
    let http = server.http_addr.unwrap();

    // Probes and the page stay open: the page asks for the key itself.
    assert_eq!(get(http, "/healthz").await.status, 200);
    assert_eq!(get(http, "/").await.status, 200);

    let no_key = get(http, "/v1/info").await;
    assert_eq!(no_key.header("www-authenticate"), Some("Bearer realm=\"heie\""), "a 401 names the scheme to use");
    let m = expect_error(no_key, 401, "UNAUTHENTICATED").await;
    assert!(!m.contains("http-test-key"), "keys are never echoed: {m}");
    let wrong = send(http, "GET", "/v1/info", &[("Authorization", "Bearer http-test-key-9999")], b"").await;
    let m = expect_error(wrong, 401, "UNAUTHENTICATED").await;
    assert!(!m.contains("9999"), "{m}");
    let right = send(http, "GET", "/v1/info", &[("Authorization", "Bearer http-test-key-1234")], b"").await;
    assert_eq!(right.status, 200);

    // An evaluation without a key is refused before any work; with it, it runs to its result.
    let body = evaluate_body(&example_png(), json!({ "maxTokensPerSection": 2 })).to_string();
    let refused = send(http, "POST", "/v1/evaluate", &[], body.as_bytes()).await;
    expect_error(refused, 401, "UNAUTHENTICATED").await;
    let mut reply = send(http, "POST", "/v1/evaluate", &[("Authorization", "Bearer http-test-key-1234")], body.as_bytes()).await;
    assert_eq!(reply.status, 200);
    until(&mut reply, "done").await;
    // Refusals are counted like every other finished call.
    let metrics = server.metrics_text();
    assert!(metrics.contains("heie_requests_total{method=\"Evaluate\",code=\"OK\"} 1"), "{metrics}");
    assert!(metrics.contains("heie_requests_total{method=\"Evaluate\",code=\"UNAUTHENTICATED\"} 1"), "{metrics}");
    assert!(metrics.contains("heie_requests_total{method=\"GetInfo\",code=\"UNAUTHENTICATED\"} 2"), "{metrics}");
    server.shutdown(Duration::from_secs(2)).await.unwrap();
}

/// A load balancer probing `/healthz` must stop sending before anything is refused: from the moment
/// the drain begins, `/healthz` answers 503 NOT_SERVING and gRPC health NOT_SERVING — together, since
/// both read the core's one serving state — while the drain delay still serves calls on both ports;
/// after it the HTTP port closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_and_grpc_health_turn_not_serving_together_when_the_drain_begins_while_calls_are_still_served() {
    use tonic_health::pb::{health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest};
    let _serial = serial().await;
    let server = start_http_server(limits(1, 4)).await;
    let http = server.http_addr.unwrap();
    let grpc = server.addr;
    let mut health = HealthClient::new(tonic::transport::Channel::from_shared(format!("http://{grpc}")).unwrap().connect().await.unwrap());
    let check = |mut h: HealthClient<tonic::transport::Channel>| async move {
        h.check(HealthCheckRequest { service: String::new() }).await.unwrap().into_inner().status
    };
    let mut watch = health.watch(HealthCheckRequest { service: "heie.v1.Evaluator".into() }).await.unwrap().into_inner();
    assert_eq!(watch.message().await.unwrap().unwrap().status, ServingStatus::Serving as i32, "Watch starts with the current status");
    assert_eq!(get(http, "/healthz").await.status, 200);
    assert_eq!(check(health.clone()).await, ServingStatus::Serving as i32);
    let delay = Duration::from_secs(3);
    let began = Instant::now();
    let drain = tokio::spawn(server.drain(delay, Duration::from_secs(2)));
    let mut probes = 0;
    loop {
        let grpc_before = check(health.clone()).await;
        let reply = get(http, "/healthz").await;
        if reply.status == 503 {
            assert_eq!(reply.json().await, json!({ "status": "NOT_SERVING" }));
            break;
        }
        // HTTP still says SERVING, so gRPC, asked just before, cannot have turned already.
        assert_eq!(grpc_before, ServingStatus::Serving as i32, "gRPC health turned while /healthz still said SERVING");
        probes += 1;
        // It turns within milliseconds; half the delay is a generous bound that leaves the rest of
        // the delay for the checks below.
        assert!(began.elapsed() < delay / 2, "/healthz said SERVING {probes} times into the drain delay");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The same state: gRPC health says NOT_SERVING at once, with no retry, and Watch reports the change.
    assert_eq!(check(health.clone()).await, ServingStatus::NotServing as i32, "gRPC health still SERVING while /healthz says NOT_SERVING");
    let changed = tokio::time::timeout(Duration::from_secs(1), watch.message()).await.expect("Watch reports the change").unwrap().unwrap();
    assert_eq!(changed.status, ServingStatus::NotServing as i32);
    // Still inside the delay: the replica answers calls, so nothing in flight towards it is lost.
    assert_eq!(get(http, "/v1/info").await.status, 200);
    assert!(client(grpc).await.get_info(pb::GetInfoRequest {}).await.is_ok());
    assert!(began.elapsed() < delay, "the checks above ran inside the drain delay ({:?})", began.elapsed());
    drain.await.unwrap().expect("a clean shutdown");
    assert!(began.elapsed() >= delay);
    assert!(tokio::net::TcpStream::connect(http).await.is_err(), "the HTTP port is closed after the drain");
}
