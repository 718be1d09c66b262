//! The gRPC service in-process: a real tonic server over the real llama.cpp engine on the fixture
//! models, driven by real tonic clients over TCP.

mod service_support;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use heie_proto::v1 as pb;
use heie_proto::v1::evaluate_event::Event;
use service_support::*;
use tonic::Code;

fn levels_sum(score: &pb::Score) -> f32 {
    score.levels.iter().map(|l| l.probability).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evaluate_streams_every_event_in_order_with_every_field() {
    let _serial = serial().await;
    let server = start_server(limits(2, 8), false).await;
    let mut client = client(server.addr).await;

    let info = client.get_info(pb::GetInfoRequest {}).await.unwrap().into_inner();
    assert_eq!(info.llm_width, 64);
    assert_eq!(info.tile_size, 56);
    assert_eq!(info.tokens_per_tile, 4);
    assert_eq!(info.heads_mode, pb::HeadsMode::ZeroShot as i32);
    assert_eq!(info.prompt_mode, pb::PromptMode::Guided as i32);
    assert!(!info.llm_model.is_empty() && !info.mmproj_model.is_empty() && !info.version.is_empty());
    let limits = info.limits.unwrap();
    assert_eq!((limits.parallel_slots, limits.max_queue, limits.max_batch, limits.max_tiles), (2, 8, 16, 6));
    assert_eq!(limits.max_message_bytes, 64 << 20);
    assert_eq!(info.device, "CPU");

    let opts = pb::Options {
        max_tokens_per_section: 8,
        heatmap_width: 80,
        heatmap_height: 60,
        heatmap_encodings: vec![
            pb::HeatmapEncoding::RawF32Le as i32,
            pb::HeatmapEncoding::Png8 as i32,
            pb::HeatmapEncoding::OverlayPng as i32,
        ],
        seed: Some(1),
        ..Default::default()
    };
    let got = evaluate(&mut client, request(image_of(640, 480), opts)).await;
    assert!(got.status.is_none(), "{:?}", got.status);
    let kinds = got.kinds();
    assert_eq!(kinds.first(), Some(&"started"));
    assert_eq!(kinds.last(), Some(&"done"), "{kinds:?}");
    let first = |k: &str| kinds.iter().position(|x| *x == k).unwrap();
    let last = |k: &str| kinds.iter().rposition(|x| *x == k).unwrap();
    assert!(last("text") < first("heatmap") && last("heatmap") < first("score"), "{kinds:?}");
    assert_eq!(kinds.iter().filter(|k| **k == "done").count(), 1);

    let started = got.started().unwrap();
    assert!(!started.request_id.is_empty());
    assert_eq!((started.image_width, started.image_height), (640, 480));
    let tiles = started.tiles.unwrap();
    assert!(tiles.cols >= 1 && tiles.rows >= 1 && tiles.cols * tiles.rows <= 6);
    assert_eq!(tiles.tile_size, 56);
    assert_eq!(tiles.has_thumbnail, tiles.cols * tiles.rows > 1);
    assert_eq!(started.mode, pb::HeadsMode::ZeroShot as i32);
    assert_eq!(started.prompt_mode, pb::PromptMode::Guided as i32);

    // Sections arrive in order and never go back.
    let sections: Vec<i32> = got
        .events
        .iter()
        .filter_map(|e| if let Event::TextDelta(t) = e { Some(t.section) } else { None })
        .collect();
    assert!(sections.windows(2).all(|w| w[0] <= w[1]), "{sections:?}");
    assert!(sections.iter().all(|s| (1..=4).contains(s)));
    // The three CoT sections concatenate to the HEIE chain-of-thought text, forced parts included.
    let cot = [pb::Section::Description, pb::Section::Regions, pb::Section::Analysis].map(|s| got.text(s)).concat();
    for forced in [
        "### Image Description",
        "### Problematic Regions Identification",
        "So, the potential problematic regions in the image are",
        "### Analysis of Issues",
        "Based on the overall analysis, the plausibility score for this image is",
    ] {
        assert!(cot.contains(forced), "{forced:?} missing from {cot:?}");
    }
    let markers = (tiles.cols * tiles.rows + u32::from(tiles.has_thumbnail)) as usize;
    assert_eq!(got.text(pb::Section::Regions).matches("[MAP]").count(), markers);
    assert!(got.text(pb::Section::Analysis).contains("[SCORE]"));
    assert!(got.text(pb::Section::Rating).contains("The plausibility of this image is"));

    // Region boxes (if the random model wrote any) lie inside the image.
    for e in &got.events {
        if let Event::RegionBox(b) = e {
            assert!(b.x1 <= b.x2 && b.y1 <= b.y2 && b.x2 <= 1000.0 && b.y2 <= 1000.0);
            assert!(b.pixel_x1 < b.pixel_x2 && b.pixel_x2 <= 640 && b.pixel_y1 < b.pixel_y2 && b.pixel_y2 <= 480);
        }
    }

    // One heatmap per requested encoding, at the requested size, decodable.
    let heatmaps = got.heatmaps();
    assert_eq!(heatmaps.len(), 3);
    for h in &heatmaps {
        assert_eq!((h.width, h.height), (80, 60));
        assert_eq!(h.source, pb::HeatmapSource::ZeroShot as i32);
        match pb::HeatmapEncoding::try_from(h.encoding).unwrap() {
            pb::HeatmapEncoding::RawF32Le => {
                assert_eq!(h.data.len(), 80 * 60 * 4);
                let values: Vec<f32> = h.data.chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
                assert!(values.iter().all(|v| (0.0..=1.0).contains(v)));
            }
            pb::HeatmapEncoding::Png8 => {
                let img = image::load_from_memory(&h.data).unwrap();
                assert_eq!((img.width(), img.height()), (80, 60));
                assert_eq!(img.color(), image::ColorType::L8);
            }
            pb::HeatmapEncoding::OverlayPng => {
                let img = image::load_from_memory(&h.data).unwrap();
                assert_eq!((img.width(), img.height()), (80, 60));
                assert_eq!(img.color(), image::ColorType::Rgb8);
            }
            other => panic!("unexpected encoding {other:?}"),
        }
    }

    let scores = got.scores();
    assert_eq!(scores.len(), 1, "zero-shot: one score");
    let score = scores[0];
    assert!((0.0..=1.0).contains(&score.score));
    assert_eq!(score.mode, pb::HeadsMode::ZeroShot as i32);
    assert_eq!(score.levels.iter().map(|l| l.level.as_str()).collect::<Vec<_>>(), ["excellent", "good", "fair", "poor", "bad"]);
    assert!((levels_sum(score) - 1.0).abs() < 1e-4);
    assert!(score.s_token.is_none() && score.s_map.is_none());

    let done = got.done().unwrap();
    let reason = pb::FinishReason::try_from(done.finish_reason).unwrap();
    assert!(matches!(reason, pb::FinishReason::Completed | pb::FinishReason::Length), "{reason:?}");
    assert_eq!(done.device, "CPU");
    assert!(done.message.is_empty());
    let t = done.timings.unwrap();
    assert!(t.preprocess_ms >= 0.0 && t.image_encode_ms > 0.0 && t.prefill_ms > 0.0 && t.decode_ms > 0.0);
    assert!(t.total_ms > 0.0 && t.time_to_first_token_ms > 0.0 && t.decode_tokens_per_s > 0.0);
    let tokens = done.tokens.unwrap();
    assert!(tokens.prompt_tokens > 0 && tokens.generated_tokens > 0);
    assert_eq!(tokens.image_tokens as usize, markers * 4);

    // Raw RGBA pixels work too, and the default heatmap is one PNG8 at the image's size.
    let rgba: Vec<u8> = test_image(90, 70).pixels().flat_map(|p| [p[0], p[1], p[2], 255]).collect();
    let got = evaluate(&mut client, request(raw(90, 70, 4, rgba), options(4))).await;
    assert!(got.status.is_none(), "{:?}", got.status);
    let heatmaps = got.heatmaps();
    assert_eq!(heatmaps.len(), 1);
    assert_eq!((heatmaps[0].width, heatmaps[0].height, heatmaps[0].encoding), (90, 70, pb::HeatmapEncoding::Png8 as i32));
    server.shutdown(Duration::from_secs(2)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_tags_every_event_and_ranks_by_score_and_rerank_agrees() {
    let _serial = serial().await;
    let server = start_server(limits(4, 16), false).await;
    let mut client = client(server.addr).await;
    let sizes = [(120, 90), (200, 200), (64, 128), (300, 100), (96, 96)];
    let images: Vec<pb::Image> = sizes.iter().map(|&(w, h)| image_of(w, h)).collect();
    let req = pb::EvaluateBatchRequest { images: images.clone(), options: Some(options(6)) };
    let mut stream = client.evaluate_batch(req).await.unwrap().into_inner();
    let mut per_image: Vec<Vec<Event>> = vec![Vec::new(); sizes.len()];
    let mut ranking = None;
    while let Some(ev) = stream.message().await.unwrap() {
        assert!(ranking.is_none(), "the ranking is the last event");
        match ev.payload.unwrap() {
            pb::batch_event::Payload::Event(e) => per_image[ev.index as usize].push(e.event.unwrap()),
            pb::batch_event::Payload::Ranking(r) => ranking = Some(r),
        }
    }
    let ranking = ranking.expect("a final ranking");
    let mut scores = Vec::new();
    for (i, events) in per_image.iter().enumerate() {
        let kinds: Vec<_> = events.iter().map(kind).collect();
        assert_eq!(kinds.first(), Some(&"started"), "image {i}: {kinds:?}");
        assert_eq!(kinds.last(), Some(&"done"), "image {i}: {kinds:?}");
        let Event::Started(s) = &events[0] else { unreachable!() };
        assert_eq!((s.image_width, s.image_height), sizes[i], "events of image {i} belong to it");
        let score = events.iter().find_map(|e| if let Event::Score(s) = e { Some(s.score) } else { None }).unwrap();
        let Some(Event::Done(d)) = events.last() else { unreachable!() };
        assert_ne!(d.finish_reason, pb::FinishReason::Error as i32);
        // The verdict line comes from the server, led by the primary score as sent.
        assert!(d.summary.starts_with(&format!("score {score:.3} (zero-shot)")), "image {i}: {:?}", d.summary);
        scores.push(score);
    }
    let ranked: Vec<u32> = ranking.entries.iter().map(|e| e.index).collect();
    let mut sorted = ranked.clone();
    sorted.sort();
    assert_eq!(sorted, vec![0, 1, 2, 3, 4], "every image ranked once");
    for pair in ranking.entries.windows(2) {
        assert!(pair[0].score >= pair[1].score, "best first: {:?}", ranking.entries);
        if pair[0].score == pair[1].score {
            assert!(pair[0].index < pair[1].index, "ties keep request order");
        }
    }
    for e in &ranking.entries {
        assert_eq!(e.score, scores[e.index as usize], "ranking uses each image's score");
    }
    // The shared slots were used together.
    let engine = server.evaluator().unwrap().engine().clone();
    assert!(engine.metrics().multi_sequence_steps.load(Ordering::Relaxed) > 0);

    // Rerank: same images, unary; order follows its scores; top_k cuts it.
    let reply = client
        .rerank(pb::RerankRequest { images, top_k: 2, fast: true, options: Some(options(6)) })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.scores.len(), 5);
    assert!(reply.scores.iter().all(|s| (0.0..=1.0).contains(s)));
    let mut order = reply.order.clone();
    order.sort();
    assert_eq!(order, vec![0, 1, 2, 3, 4]);
    for pair in reply.order.windows(2) {
        let (a, b) = (reply.scores[pair[0] as usize], reply.scores[pair[1] as usize]);
        assert!(a > b || (a == b && pair[0] < pair[1]), "{:?} {:?}", reply.order, reply.scores);
    }
    assert_eq!(reply.top_k_indices, reply.order[..2].to_vec());
    assert!(reply.total_ms > 0.0);
    server.shutdown(Duration::from_secs(2)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_two_concurrent_streams_complete_and_share_decode_steps() {
    let _serial = serial().await;
    let server = start_server(limits(4, 64), true).await;
    let metrics_addr = server.metrics_addr.unwrap();
    let mut tasks = Vec::new();
    for i in 0..32u32 {
        // Distinct sizes, so a stream carrying another request's events would be caught.
        let (w, h) = (64 + 8 * i, 48 + 4 * i);
        let mut c = client(server.addr).await;
        tasks.push(tokio::spawn(async move {
            let opts = pb::Options { heatmap_width: w / 2, ..options(6) };
            (w, h, evaluate(&mut c, request(image_of(w, h), opts)).await)
        }));
    }
    let mut ids = std::collections::HashSet::new();
    for t in tasks {
        let (w, h, got) = t.await.unwrap();
        assert!(got.status.is_none(), "{:?}", got.status);
        let s = got.started().unwrap();
        assert_eq!((s.image_width, s.image_height), (w, h));
        assert!(ids.insert(s.request_id.clone()), "request ids are unique");
        let hm = got.heatmaps()[0];
        assert_eq!((hm.width, hm.height), (w / 2, h));
        let score = got.scores()[0];
        assert!((0.0..=1.0).contains(&score.score) && (levels_sum(score) - 1.0).abs() < 1e-4);
        assert_eq!(got.kinds().last(), Some(&"done"));
    }
    let text = tokio::task::spawn_blocking(move || scrape(metrics_addr)).await.unwrap();
    let multi = sample(&text, "heie_multi_sequence_decode_steps_total").unwrap();
    let steps = sample(&text, "heie_decode_steps_total").unwrap();
    let seqs = sample(&text, "heie_decode_sequences_total").unwrap();
    assert!(multi > 0.0, "decode steps carried several sequences:\n{text}");
    assert!(seqs / steps > 1.5, "mean decode batch {:.2} sequences", seqs / steps);
    assert!(sample(&text, "heie_max_sequences_in_step").unwrap() >= 3.0);
    assert!(text.contains("heie_requests_total{method=\"Evaluate\",code=\"OK\"} 32"), "{text}");
    assert_eq!(sample(&text, "heie_time_to_first_token_seconds_count"), Some(32.0));
    assert_eq!(sample(&text, "heie_queue_depth"), Some(0.0));
    server.shutdown(Duration::from_secs(2)).await.unwrap();
}

/// Waits until `check` holds (the engine thread updates counters asynchronously).
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_stream_is_cancelled_and_its_slot_reused() {
    let _serial = serial().await;
    let server = start_server(limits(1, 4), false).await;
    let engine = server.evaluator().unwrap().engine().clone();
    let metrics = engine.metrics().clone();
    // 2 ms a step: the long evaluation is still running when the client walks away, on any machine.
    engine.set_step_delay(Duration::from_millis(2));
    let mut c = client(server.addr).await;
    let mut stream = c.evaluate(request(image_of(200, 150), long_options())).await.unwrap().into_inner();
    // Read into the explanation, then walk away.
    let mut description = String::new();
    while description.len() < 20 {
        let e = stream.message().await.unwrap().expect("stream open").event.unwrap();
        if let Event::TextDelta(t) = e {
            assert_eq!(t.section, pb::Section::Description as i32);
            description.push_str(&t.text);
        }
    }
    assert_eq!(metrics.active.load(Ordering::Relaxed), 1);
    drop(stream);
    eventually("the engine to cancel the dropped request", || metrics.cancelled.load(Ordering::Relaxed) == 1).await;
    // The only slot is free again (nothing holds it, nothing waits): the next request takes it and
    // completes.
    engine.set_step_delay(Duration::ZERO);
    eventually("the slot to be free", || metrics.active.load(Ordering::Relaxed) == 0).await;
    assert_eq!(metrics.queue_depth.load(Ordering::Relaxed), 0);
    let got = evaluate(&mut c, request(image_of(100, 80), options(4))).await;
    assert!(got.status.is_none(), "{:?}", got.status);
    assert_eq!(metrics.completed.load(Ordering::Relaxed), 2, "warm-up and the follow-up");
    server.shutdown(Duration::from_secs(2)).await.unwrap();
}

/// On a server with one slot and one queue place: A holds the slot (it has started writing) and B
/// waits in the queue (its call returns once submitted). Both streams are returned to keep them open.
/// Every decode step is made 5 ms longer, so A holds the slot for many seconds on any machine.
async fn fill_slot_and_queue(
    c: &mut pb::evaluator_client::EvaluatorClient<tonic::transport::Channel>,
    engine: &heie_server::engine::Engine,
) -> (tonic::Streaming<pb::EvaluateEvent>, tonic::Streaming<pb::EvaluateEvent>) {
    let metrics = engine.metrics();
    engine.set_step_delay(Duration::from_millis(5));
    let mut a = c.evaluate(request(image_of(120, 90), long_options())).await.unwrap().into_inner();
    while !matches!(a.message().await.unwrap().unwrap().event.unwrap(), Event::TextDelta(_)) {}
    let b = c.evaluate(request(image_of(120, 90), long_options())).await.unwrap().into_inner();
    assert_eq!(metrics.queue_depth.load(Ordering::Relaxed), 1);
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_answers_resource_exhausted_and_the_server_recovers() {
    let _serial = serial().await;
    let server = start_server(limits(1, 1), false).await;
    let engine = server.evaluator().unwrap().engine().clone();
    let metrics = engine.metrics().clone();
    let mut c = client(server.addr).await;
    let (a, b) = fill_slot_and_queue(&mut c, &engine).await;
    // C finds the queue full.
    let status = refused(c.evaluate(request(image_of(120, 90), options(8))).await, "C is refused");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("busy"), "{}", status.message());
    // Rerank and batches are refused the same way.
    let status = c
        .rerank(pb::RerankRequest { images: vec![image_of(64, 64)], top_k: 0, fast: true, options: Some(options(4)) })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    drop((a, b));
    // The engine takes the cancelled requests out of its slot and queue within a step or two.
    eventually("the slot and queue to empty", || {
        metrics.queue_depth.load(Ordering::Relaxed) == 0 && metrics.active.load(Ordering::Relaxed) == 0
    })
    .await;
    let got = evaluate(&mut c, request(image_of(64, 64), options(4))).await;
    assert!(got.status.is_none(), "served again after the overload: {:?}", got.status);
    server.shutdown(Duration::from_secs(2)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_cancelled_while_queued_gives_its_place_back_at_once() {
    let _serial = serial().await;
    let server = start_server(limits(1, 1), false).await;
    let engine = server.evaluator().unwrap().engine().clone();
    let metrics = engine.metrics().clone();
    let mut c = client(server.addr).await;
    let (a, b) = fill_slot_and_queue(&mut c, &engine).await;
    // B's client goes away: its place is free while A still runs, not only once A's slot frees.
    drop(b);
    eventually("the cancelled request to leave the queue", || metrics.queue_depth.load(Ordering::Relaxed) == 0).await;
    assert_eq!(metrics.active.load(Ordering::Relaxed), 1, "A is still running");
    assert_eq!(metrics.cancelled.load(Ordering::Relaxed), 1, "B ended as cancelled");
    // So a new request is queued, not refused with RESOURCE_EXHAUSTED.
    let mut d = c.evaluate(request(image_of(64, 64), options(4))).await.expect("D is queued").into_inner();
    assert_eq!(metrics.queue_depth.load(Ordering::Relaxed), 1);
    drop(a);
    let mut done = false;
    while let Some(event) = d.message().await.unwrap() {
        done |= matches!(event.event, Some(Event::Done(_)));
    }
    assert!(done, "D runs to its end once A is gone");
    server.shutdown(Duration::from_secs(2)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_timeout_ends_the_stream_with_deadline_exceeded_and_cancels_the_work() {
    let _serial = serial().await;
    let server = start_server(limits(1, 4), false).await;
    let engine = server.evaluator().unwrap().engine().clone();
    let metrics = engine.metrics().clone();
    let mut c = client(server.addr).await;
    // 5 ms a step: a long evaluation lasts many seconds on any machine, far past the deadline.
    engine.set_step_delay(Duration::from_millis(5));
    let timeout = Duration::from_millis(300);
    let mut req = tonic::Request::new(request(image_of(160, 120), long_options()));
    req.set_timeout(timeout);
    let started = Instant::now();
    let status = match c.evaluate(req).await {
        Err(s) => s,
        Ok(r) => {
            let mut stream = r.into_inner();
            loop {
                match stream.message().await {
                    Ok(Some(_)) => {}
                    Ok(None) => panic!("the stream ended OK before its deadline"),
                    Err(s) => break s,
                }
            }
        }
    };
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    // Not before the deadline (a few ms of slack: the server starts its clock from the header it
    // receives, rounded by tonic's grpc-timeout encoding and tokio's timer granularity).
    assert!(started.elapsed() >= timeout * 9 / 10, "not before the deadline: {:?}", started.elapsed());
    eventually("the expired request to be cancelled", || metrics.cancelled.load(Ordering::Relaxed) == 1).await;
    // Unary calls honour it as well.
    let mut req = tonic::Request::new(pb::RerankRequest {
        images: vec![image_of(160, 120)],
        top_k: 0,
        fast: false,
        options: Some(long_options()),
    });
    req.set_timeout(timeout);
    assert_eq!(c.rerank(req).await.unwrap_err().code(), Code::DeadlineExceeded);
    engine.set_step_delay(Duration::ZERO);
    let got = evaluate(&mut c, request(image_of(64, 64), options(4))).await;
    assert!(got.status.is_none(), "{:?}", got.status);
    server.shutdown(Duration::from_secs(2)).await.unwrap();
}

fn truncated_png() -> Vec<u8> {
    let full = png(&test_image(64, 64));
    full[..full.len() / 2].to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_invalid_argument_naming_the_field_and_the_server_keeps_serving() {
    let _serial = serial().await;
    let mut l = limits(2, 8);
    l.max_pixels = 100_000;
    l.max_batch = 3;
    let server = start_server(l, false).await;
    let mut c = client(server.addr).await;
    let cases: Vec<(&str, pb::EvaluateRequest, &str)> = vec![
        ("garbage bytes", request(encoded(b"definitely not an image".to_vec()), options(4)), "image.encoded"),
        ("truncated PNG", request(encoded(truncated_png()), options(4)), "image.encoded"),
        ("0x0 raw", request(raw(0, 0, 3, Vec::new()), options(4)), "image.raw.width"),
        ("short raw buffer", request(raw(10, 10, 3, vec![0; 299]), options(4)), "image.raw.pixels"),
        ("RGB channels 2", request(raw(10, 10, 2, vec![0; 200]), options(4)), "image.raw.channels"),
        ("over the pixel limit", request(image_of(400, 300), options(4)), "image.encoded"),
        ("no image", pb::EvaluateRequest { image: None, options: None }, "image"),
        ("empty image", request(pb::Image { source: None, generation_prompt: None }, options(4)), "image.source"),
        (
            "unknown heatmap encoding",
            request(image_of(64, 64), pb::Options { heatmap_encodings: vec![9], ..options(4) }),
            "options.heatmap_encodings[0]",
        ),
        ("too many tokens", request(image_of(64, 64), options(100_000)), "options.max_tokens_per_section"),
    ];
    for (what, req, field) in cases {
        let status = c.evaluate(req).await.err().unwrap_or_else(|| panic!("{what}: accepted"));
        assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
        assert!(status.message().starts_with(&format!("{field}:")), "{what}: {:?} should name {field}", status.message());
    }
    let over = pb::EvaluateBatchRequest { images: vec![image_of(64, 64); 4], options: Some(options(4)) };
    let status = refused(c.evaluate_batch(over).await, "batch over the max is refused");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().starts_with("images:") && status.message().contains("max batch of 3"), "{}", status.message());
    let one_bad = pb::EvaluateBatchRequest { images: vec![image_of(64, 64), encoded(truncated_png())], options: None };
    let status = refused(c.evaluate_batch(one_bad).await, "a bad image fails the batch");
    assert!(status.message().starts_with("images[1].encoded:"), "{}", status.message());
    let status = c
        .rerank(pb::RerankRequest { images: vec![raw(3, 3, 4, vec![0; 35])], top_k: 0, fast: true, options: None })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().starts_with("images[0].raw.pixels:"), "{}", status.message());

    // Nothing above reached the engine, and the server still answers.
    let got = evaluate(&mut c, request(image_of(64, 64), options(4))).await;
    assert!(got.status.is_none(), "{:?}", got.status);
    let text = server.metrics_text();
    assert!(text.contains("heie_requests_total{method=\"Evaluate\",code=\"INVALID_ARGUMENT\"} 10"), "{text}");
    server.shutdown(Duration::from_secs(2)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_not_serving_until_warm_and_shutdown_cancels_after_the_grace_period() {
    let _serial = serial().await;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;

    // The loader waits for a go signal, so the not-yet-ready state can be observed.
    let (go, wait) = std::sync::mpsc::channel::<()>();
    let serve = heie_server::service::ServeOptions {
        addr: "127.0.0.1:0".parse().unwrap(),
        metrics_addr: None,
        http_addr: None,
        limits: limits(1, 4),
        network: Default::default(),
    };
    let mut server = heie_server::service::start(serve, move || {
        wait.recv()?;
        Ok(heie_server::pipeline::Evaluator::new(std::sync::Arc::new(heie_server::engine::Engine::start(&config(LLM, MMPROJ, 1))?))?)
    })
    .await
    .unwrap();
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", server.addr)).unwrap().connect().await.unwrap();
    let mut health = HealthClient::new(channel.clone());
    let check = |service: &str| HealthCheckRequest { service: service.to_string() };
    for name in ["", "heie.v1.Evaluator"] {
        let status = health.check(check(name)).await.unwrap().into_inner().status;
        assert_eq!(status, ServingStatus::NotServing as i32, "{name:?} before the model is loaded");
    }
    let mut c = heie_proto::v1::evaluator_client::EvaluatorClient::new(channel);
    assert_eq!(c.get_info(pb::GetInfoRequest {}).await.unwrap_err().code(), Code::Unavailable);
    assert_eq!(c.evaluate(request(image_of(64, 64), options(4))).await.err().unwrap().code(), Code::Unavailable);

    go.send(()).unwrap();
    server.ready().await.unwrap();
    for name in ["", "heie.v1.Evaluator"] {
        assert_eq!(health.check(check(name)).await.unwrap().into_inner().status, ServingStatus::Serving as i32);
    }
    assert_eq!(server.evaluator().unwrap().engine().metrics().completed.load(Ordering::Relaxed), 1, "warm-up ran");

    // A long request is in flight when shutdown starts; after the grace period it is cancelled.
    // (5 ms a step: it outlasts the 150 ms grace period on any machine.)
    server.evaluator().unwrap().engine().set_step_delay(Duration::from_millis(5));
    let mut stream = c.evaluate(request(image_of(120, 90), long_options())).await.unwrap().into_inner();
    while !matches!(stream.message().await.unwrap().unwrap().event.unwrap(), Event::TextDelta(_)) {}
    let addr = server.addr;
    let started = Instant::now();
    let shutdown = tokio::spawn(server.shutdown(Duration::from_millis(150)));
    let status = loop {
        match stream.message().await {
            Ok(Some(_)) => {}
            Ok(None) => panic!("the long request should not finish within the grace period"),
            Err(s) => break s,
        }
    };
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("shutting down"));
    shutdown.await.unwrap().expect("clean shutdown");
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(150) && took < Duration::from_secs(6), "{took:?}");
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "no longer accepting");
}
