//! `heie serve` on a network, as a process with real tonic clients: TLS (plaintext answered with a
//! TLS alert), mutual TLS (no client certificate, or one from another CA, refused in the handshake),
//! API keys on every `heie.v1` call and on reflection (health open), the key file reloaded on SIGHUP
//! and a warning when every user can read it, the per-connection stream limit, a client that never
//! finishes its TLS handshake dropped after the limit while others are served, health turning
//! NOT_SERVING before shutdown refuses anything, queued requests refused with UNAVAILABLE at
//! shutdown, and the process exiting non-zero when its engine or finalizer thread dies; the `--http`
//! port serving HTTPS with the same certificate, client CA and keys (checked with curl).
//! Certificates are generated here, at test time.

mod http_support;
mod service_support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use heie_proto::v1 as pb;
use heie_proto::v1::evaluator_client::EvaluatorClient;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use service_support::*;
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic::{Code, Request};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// A CA, and PEM files of a server and a client certificate it signed.
struct Pki {
    dir: tempfile::TempDir,
    ca_pem: String,
    client_cert: String,
    client_key: String,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let (ca_pem, issuer) = ca("heie test CA");
        let (server_cert, server_key) = leaf(&issuer, "localhost", &["localhost", "127.0.0.1"]);
        let (client_cert, client_key) = leaf(&issuer, "heie test client", &[]);
        std::fs::write(dir.path().join("ca.pem"), &ca_pem).unwrap();
        std::fs::write(dir.path().join("server.pem"), server_cert).unwrap();
        std::fs::write(dir.path().join("server.key"), server_key).unwrap();
        Pki { dir, ca_pem, client_cert, client_key }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

fn ca(name: &str) -> (String, Issuer<'static, KeyPair>) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), Issuer::new(params, key))
}

fn leaf(issuer: &Issuer<'static, KeyPair>, name: &str, sans: &[&str]) -> (String, String) {
    let mut params = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn tls_flags(pki: &Pki) -> Vec<String> {
    vec![
        "--tls-cert".into(),
        pki.path("server.pem").display().to_string(),
        "--tls-key".into(),
        pki.path("server.key").display().to_string(),
    ]
}

fn spawn(args: &[String], env: &[(&str, &str)]) -> ServeProcess {
    let mut all = vec!["--addr".to_string(), "127.0.0.1:0".into(), "--max-tokens".into(), "4".into()];
    all.extend(args.iter().cloned());
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    ServeProcess::spawn_threads(1, &refs, env)
}

/// A TLS channel trusting `ca_pem`, with a client identity when given.
async fn tls_channel(addr: std::net::SocketAddr, ca_pem: &str, identity: Option<(&str, &str)>) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem)).domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Channel::from_shared(format!("https://127.0.0.1:{}", addr.port()))
        .unwrap()
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(60))
        .connect()
        .await
}

fn with_key<T>(message: T, key: Option<&str>) -> Request<T> {
    let mut r = Request::new(message);
    if let Some(k) = key {
        r.metadata_mut().insert("authorization", MetadataValue::try_from(format!("Bearer {k}")).unwrap());
    }
    r
}

async fn info_code(channel: &Channel, key: Option<&str>) -> Code {
    match EvaluatorClient::new(channel.clone()).get_info(with_key(pb::GetInfoRequest {}, key)).await {
        Ok(_) => Code::Ok,
        Err(s) => s.code(),
    }
}

async fn health(channel: &Channel) -> Result<ServingStatus, tonic::Status> {
    let reply = HealthClient::new(channel.clone()).check(HealthCheckRequest { service: String::new() }).await?;
    Ok(reply.into_inner().status())
}

/// Lists services through reflection v1 or v1alpha; the status code of the call.
async fn reflection_code(channel: &Channel, v1: bool, key: Option<&str>) -> Code {
    use tonic_reflection::pb::{v1 as r1, v1alpha as r1a};
    let result = if v1 {
        let req = r1::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(r1::server_reflection_request::MessageRequest::ListServices(String::new())),
        };
        let mut c = r1::server_reflection_client::ServerReflectionClient::new(channel.clone());
        match c.server_reflection_info(with_key(tokio_stream::iter(vec![req]), key)).await {
            Ok(r) => r.into_inner().message().await.map(|_| ()),
            Err(s) => Err(s),
        }
    } else {
        let req = r1a::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(r1a::server_reflection_request::MessageRequest::ListServices(String::new())),
        };
        let mut c = r1a::server_reflection_client::ServerReflectionClient::new(channel.clone());
        match c.server_reflection_info(with_key(tokio_stream::iter(vec![req]), key)).await {
            Ok(r) => r.into_inner().message().await.map(|_| ()),
            Err(s) => Err(s),
        }
    };
    result.map(|_| Code::Ok).unwrap_or_else(|s| s.code())
}

/// The message of an error and of every error under it, joined with `: `.
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut next = error.source();
    while let Some(e) = next {
        text.push_str(": ");
        text.push_str(&e.to_string());
        next = e.source();
    }
    text
}

/// Asserts that a client the server must not serve failed in the transport — the connection, or the
/// first call with a `tonic::transport::Error` under its status — and never got as far as a gRPC
/// status from the server (such as UNAUTHENTICATED, which would mean it was spoken to).
async fn assert_turned_away_in_transport(connected: Result<Channel, tonic::transport::Error>, what: &str) {
    let Ok(ch) = connected else { return };
    let status = match health(&ch).await {
        Ok(serving) => panic!("{what}: the client was served (health {serving:?})"),
        Err(status) => status,
    };
    let from_transport = std::error::Error::source(&status).is_some_and(|e| e.downcast_ref::<tonic::transport::Error>().is_some());
    assert!(from_transport, "{what}: a transport failure, not a status from the server: {}", chain(&status));
}

/// What the server says to a TLS client (trusting `ca_pem`, presenting `identity` when given) right
/// after the handshake: the client only reads, so it gets either the server's first bytes (an
/// HTTP/2 server's SETTINGS frame) or the alert that ended the connection. TLS 1.3 lets a client
/// finish its side before the server has checked its certificate, so this is where a refusal shows.
async fn tls_verdict(addr: std::net::SocketAddr, ca_pem: &str, identity: Option<(&str, &str)>) -> Result<usize, String> {
    use tokio::io::AsyncReadExt as _;
    use tokio_rustls::rustls::pki_types::pem::PemObject as _;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use tokio_rustls::rustls::{self, RootCertStore};
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = CertificateDer::pem_slice_iter(cert.as_bytes()).collect::<Result<Vec<_>, _>>().unwrap();
            builder.with_client_auth_cert(chain, PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap()).unwrap()
        }
    };
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("TCP connects");
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let mut tls = connector.connect(ServerName::try_from("localhost").unwrap(), tcp).await.map_err(|e| e.to_string())?;
    let mut buf = [0u8; 64];
    match tokio::time::timeout(Duration::from_secs(20), tls.read(&mut buf)).await {
        Ok(Ok(n)) => Ok(n),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("the server said nothing for 20 s".into()),
    }
}

/// Waits until `probe` says true (bounded), polling.
async fn eventually(within: Duration, mut probe: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if probe().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_api_keys_guard_every_call_but_health_and_the_key_file_reloads_on_sighup() {
    let _serial = serial().await;
    let pki = Pki::new();
    let key_file = pki.path("keys.txt");
    std::fs::write(&key_file, "# operators\nfile-key-one\n\n").unwrap();
    let mut args = tls_flags(&pki);
    args.extend(["--api-key".into(), "flag-key".into(), "--api-key-file".into(), key_file.display().to_string()]);
    let mut server = spawn(&args, &[("HEIE_LOG", "info")]);
    assert!(!server.stderr().iter().any(|l| l.contains("flag-key") || l.contains("file-key-one")), "keys are never logged");

    let plain = Channel::from_shared(format!("http://{}", server.addr)).unwrap().connect_timeout(Duration::from_secs(5));
    // A plaintext client gets nowhere on the TLS port: its HTTP/2 preface is answered with a fatal TLS
    // alert, and a tonic client sees a transport error, never a gRPC status from the server.
    assert_tls_alert(&plaintext_reply(server.addr, HTTP2_PREFACE), "the gRPC port");
    assert_turned_away_in_transport(plain.connect().await, "a plaintext client").await;

    let ch = tls_channel(server.addr, &pki.ca_pem, None).await.expect("a TLS client connects");
    assert_eq!(health(&ch).await.unwrap(), ServingStatus::Serving, "health needs no key");
    assert_eq!(info_code(&ch, None).await, Code::Unauthenticated);
    assert_eq!(info_code(&ch, Some("wrong-key")).await, Code::Unauthenticated);
    assert_eq!(info_code(&ch, Some("flag-key")).await, Code::Ok);
    assert_eq!(info_code(&ch, Some("file-key-one")).await, Code::Ok);
    for v1 in [true, false] {
        assert_eq!(reflection_code(&ch, v1, None).await, Code::Unauthenticated, "reflection v1={v1} without a key");
        assert_eq!(reflection_code(&ch, v1, Some("flag-key")).await, Code::Ok, "reflection v1={v1} with a key");
    }
    let status = EvaluatorClient::new(ch.clone())
        .evaluate(with_key(request(image_of(64, 48), options(2)), Some("nope")))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(!status.message().contains("nope"), "{}", status.message());

    // The right key runs a whole streamed evaluation over TLS.
    let mut stream = EvaluatorClient::new(ch.clone())
        .evaluate(with_key(request(image_of(64, 48), options(2)), Some("flag-key")))
        .await
        .expect("an authorised evaluation starts")
        .into_inner();
    let mut kinds = Vec::new();
    while let Some(event) = stream.message().await.expect("no error status") {
        kinds.push(kind(event.event.as_ref().unwrap()));
    }
    assert_eq!(kinds.first(), Some(&"started"));
    assert_eq!(kinds.last(), Some(&"done"));

    // SIGHUP swaps the file's keys in without a restart; flag keys stay.
    std::fs::write(&key_file, "file-key-two\n").unwrap();
    server.signal("-HUP");
    let swapped = eventually(Duration::from_secs(10), async || info_code(&ch, Some("file-key-two")).await == Code::Ok).await;
    assert!(swapped, "the reloaded key is accepted; stderr {:?}", server.stderr());
    assert_eq!(info_code(&ch, Some("file-key-one")).await, Code::Unauthenticated, "the removed key is refused");
    assert_eq!(info_code(&ch, Some("flag-key")).await, Code::Ok);

    // A broken file keeps the keys in use and says so in the log.
    std::fs::write(&key_file, "# nobody\n").unwrap();
    server.signal("-HUP");
    let logged = eventually(Duration::from_secs(10), async || {
        server.stderr().iter().any(|l| l.contains("reloading the API keys failed"))
    })
    .await;
    assert!(logged, "{:?}", server.stderr());
    assert_eq!(info_code(&ch, Some("file-key-two")).await, Code::Ok);
    assert!(!server.stderr().iter().any(|l| l.contains("file-key-two") || l.contains("flag-key")), "keys are never logged");

    drop((ch, stream));
    assert!(server.terminate(Duration::from_secs(20)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_refuses_clients_without_a_certificate_from_the_ca() {
    let _serial = serial().await;
    let pki = Pki::new();
    let mut args = tls_flags(&pki);
    args.extend(["--tls-client-ca".into(), pki.path("ca.pem").display().to_string()]);
    let mut server = spawn(&args, &[]);

    // No client certificate: the server ends the handshake with a `certificate required` alert, and a
    // tonic client gets no further than its transport.
    let verdict = tls_verdict(server.addr, &pki.ca_pem, None).await;
    assert!(matches!(&verdict, Err(e) if e.contains("CertificateRequired")), "{verdict:?}");
    assert_turned_away_in_transport(tls_channel(server.addr, &pki.ca_pem, None).await, "no client certificate").await;

    // A certificate from another CA: an `unknown CA` alert.
    let (_, other) = ca("someone else's CA");
    let (cert, key) = leaf(&other, "intruder", &[]);
    let verdict = tls_verdict(server.addr, &pki.ca_pem, Some((&cert, &key))).await;
    assert!(matches!(&verdict, Err(e) if e.contains("UnknownCA")), "the server rejects the issuer: {verdict:?}");
    assert_turned_away_in_transport(tls_channel(server.addr, &pki.ca_pem, Some((&cert, &key))).await, "a foreign certificate").await;
    // The CA's own client certificate passes the handshake (the server speaks first: HTTP/2 SETTINGS).
    let verdict = tls_verdict(server.addr, &pki.ca_pem, Some((&pki.client_cert, &pki.client_key))).await;
    assert!(matches!(verdict, Ok(n) if n > 0), "{verdict:?}");

    let ch = tls_channel(server.addr, &pki.ca_pem, Some((&pki.client_cert, &pki.client_key))).await.expect("mTLS connects");
    assert_eq!(health(&ch).await.unwrap(), ServingStatus::Serving);
    assert_eq!(info_code(&ch, None).await, Code::Ok, "no keys configured: the certificate is enough");
    drop(ch);
    assert!(server.terminate(Duration::from_secs(20)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_holds_at_most_max_concurrent_streams_calls_at_once() {
    let _serial = serial().await;
    let args: Vec<String> =
        ["--max-concurrent-streams", "2", "--parallel", "4", "--max-queue", "8", "--shutdown-grace", "1"].map(String::from).to_vec();
    // Every decode step takes 5 ms longer (test-only HEIE_FAULT_STEP_DELAY_MS): a long evaluation then
    // runs for many seconds however fast the engine gets.
    let mut server = spawn(&args, &[("HEIE_FAULT_STEP_DELAY_MS", "5")]);
    let ch = Channel::from_shared(format!("http://{}", server.addr)).unwrap().connect().await.unwrap();

    // Two long evaluations take both streams of this connection.
    let mut long = Vec::new();
    for _ in 0..2 {
        let mut c = EvaluatorClient::new(ch.clone());
        let mut s = c.evaluate(request(image_of(64, 48), long_options())).await.expect("starts").into_inner();
        assert!(s.message().await.unwrap().is_some(), "streams its first event");
        long.push(s);
    }
    // A third call on the same connection waits for a stream, although the server has free slots…
    let mut third = EvaluatorClient::new(ch.clone());
    // (1.5 s: well inside the seconds a long evaluation runs with the step delay.)
    let waited = tokio::time::timeout(Duration::from_millis(1500), third.get_info(pb::GetInfoRequest {})).await;
    assert!(waited.is_err(), "the third stream on one connection must wait: {waited:?}");
    // …while another connection is served at once.
    let mut other = client(server.addr).await;
    let info = tokio::time::timeout(Duration::from_secs(10), other.get_info(pb::GetInfoRequest {})).await;
    assert!(matches!(info, Ok(Ok(_))), "a second connection has its own streams: {info:?}");
    // Ending one long call frees a stream for the waiting one.
    drop(long.pop());
    let freed = tokio::time::timeout(Duration::from_secs(10), third.get_info(pb::GetInfoRequest {})).await;
    assert!(matches!(freed, Ok(Ok(_))), "a freed stream is reused: {freed:?}");
    drop((long, ch, third, other));
    assert!(server.terminate(Duration::from_secs(20)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_turns_health_not_serving_first_then_refuses_queued_requests_and_drains_the_running_one() {
    let _serial = serial().await;
    const DRAIN: Duration = Duration::from_secs(3);
    let args: Vec<String> = ["--parallel", "1", "--max-queue", "4", "--drain-delay", "3", "--shutdown-grace", "30"]
        .map(String::from)
        .into_iter()
        .chain(["--metrics-addr".into(), "127.0.0.1:0".into()])
        .collect();
    // Every decode step takes 25 ms longer (test-only HEIE_FAULT_STEP_DELAY_MS), and hot sampling
    // rarely stops early, so the running request holds the slot for seconds past the drain delay on
    // any machine, yet ends well inside the grace period.
    let mut server = spawn(&args, &[("HEIE_FAULT_STEP_DELAY_MS", "25")]);
    let ch = Channel::from_shared(format!("http://{}", server.addr)).unwrap().connect().await.unwrap();

    // One request in the only slot, two queued behind it.
    let running_options = pb::Options { max_tokens_per_section: 80, temperature: 5.0, seed: Some(7), ..Default::default() };
    let mut running = EvaluatorClient::new(ch.clone()).evaluate(request(image_of(64, 48), running_options)).await.unwrap().into_inner();
    assert!(running.message().await.unwrap().is_some());
    let mut queued = Vec::new();
    for _ in 0..2 {
        let mut c = EvaluatorClient::new(ch.clone());
        queued.push(tokio::spawn(async move { evaluate(&mut c, request(image_of(48, 48), options(2))).await }));
    }
    let metrics = server.metrics_addr.expect("metrics address printed");
    let depth = || async move { tokio::task::spawn_blocking(move || sample(&scrape(metrics), "heie_queue_depth")).await.unwrap() };
    assert!(eventually(Duration::from_secs(30), async || depth().await == Some(2.0)).await, "two requests wait for the slot");

    server.signal("-TERM");
    let t0 = Instant::now();
    // Health says NOT_SERVING before anything is refused (both queued requests still wait)…
    let not_serving = eventually(Duration::from_secs(30), async || matches!(health(&ch).await, Ok(ServingStatus::NotServing))).await;
    assert!(not_serving, "health turns NOT_SERVING");
    assert!(queued.iter().all(|q| !q.is_finished()), "health turned NOT_SERVING before the queued requests were refused");
    // …and the listener still accepts new connections and calls during the drain delay: the queued
    // requests, refused when it ends, are still waiting after this call was answered.
    let fresh = Channel::from_shared(format!("http://{}", server.addr)).unwrap().connect().await;
    let fresh = fresh.expect("the listener still accepts during the drain delay");
    assert_eq!(info_code(&fresh, None).await, Code::Ok);
    assert!(queued.iter().all(|q| !q.is_finished()), "the new call was answered inside the drain delay");

    // After the delay the queued requests end with UNAVAILABLE, saying they never started…
    for q in queued {
        let got = q.await.unwrap();
        assert!(got.done().is_none());
        let status = got.status.expect("a queued request gets a status");
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert!(status.message().contains("did not start"), "{}", status.message());
    }
    assert!(t0.elapsed() >= DRAIN, "nothing is refused before the drain delay");
    // …and the running one finishes normally within the grace period.
    let mut kinds = Vec::new();
    loop {
        match running.message().await {
            Ok(Some(e)) => kinds.push(kind(e.event.as_ref().unwrap())),
            Ok(None) => break,
            Err(s) => panic!("the running request must drain, not fail: {s:?}"),
        }
    }
    assert_eq!(kinds.last(), Some(&"done"));
    drop((ch, fresh));
    let status = server.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "{status:?}; {:?}", server.stderr());
}

/// The engine thread panicking (a test-only fault: HEIE_FAULT, compiled in with the
/// `fault-injection` feature that only the tests enable) turns health NOT_SERVING, fails the
/// request with UNAVAILABLE and exits the process non-zero with the cause.
async fn dies_with(fault: &str, cause: &str) {
    let mut server = spawn(&[], &[("HEIE_FAULT", fault)]);
    let mut c = client(server.addr).await;
    let mut h = HealthClient::new(Channel::from_shared(format!("http://{}", server.addr)).unwrap().connect().await.unwrap());
    let mut watch = h.watch(HealthCheckRequest { service: String::new() }).await.unwrap().into_inner();
    assert_eq!(watch.message().await.unwrap().unwrap().status(), ServingStatus::Serving);
    // Job 1 was the warm-up; this request is job 2.
    let got = evaluate(&mut c, request(image_of(64, 48), options(2))).await;
    let status = got.status.expect("the request fails");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let flipped = watch.message().await;
    assert!(
        matches!(&flipped, Ok(Some(r)) if r.status() == ServingStatus::NotServing) || flipped.is_err(),
        "health turns NOT_SERVING (or the process is already gone): {flipped:?}"
    );
    let exit = server.wait_exit(Duration::from_secs(20));
    assert!(!exit.success(), "a dead engine exits non-zero");
    let stderr = server.stderr().join("\n");
    assert!(stderr.contains(cause) && stderr.contains("restart"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_thread_panic_makes_the_server_exit_non_zero() {
    let _serial = serial().await;
    dies_with("engine-panic:2", "the engine thread panicked").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finalizer_panic_makes_the_server_exit_non_zero() {
    let _serial = serial().await;
    dies_with("finalizer-panic:2", "the finalizer thread panicked").await;
}

#[test]
fn bad_tls_and_key_settings_are_one_line_errors_before_listening() {
    let _serial = serial_blocking();
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty-keys");
    std::fs::write(&empty, "# none yet\n").unwrap();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["--tls-cert".into(), "/nonexistent/cert.pem".into()], "--tls-cert needs --tls-key"),
        (
            vec!["--tls-cert".into(), "/nonexistent/cert.pem".into(), "--tls-key".into(), "/nonexistent/key.pem".into()],
            "--tls-cert /nonexistent/cert.pem: cannot read it",
        ),
        (vec!["--tls-client-ca".into(), "/x/ca.pem".into()], "--tls-client-ca needs --tls-cert and --tls-key"),
        (vec!["--api-key-file".into(), empty.display().to_string()], "has no keys"),
    ];
    for (args, expected) in cases {
        let out = std::process::Command::new(heie_bin())
            .arg("serve")
            .args(&args)
            .args(["--model", model(LLM).to_str().unwrap(), "--mmproj", model(MMPROJ).to_str().unwrap(), "--threads", "1"])
            .env_remove("HEIE_CONFIG")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.starts_with("heie: error: ") && stderr.contains(expected), "{args:?}: {stderr}");
        assert!(!stderr.contains("listening"), "{stderr}");
    }
}

/// The client preface of HTTP/2 (what a plaintext gRPC client sends first).
const HTTP2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// `reply` is one fatal TLS alert record (content type 21, TLS 1.2 record version, 2 bytes, level 2).
fn assert_tls_alert(reply: &[u8], port: &str) {
    assert!(reply.len() == 7 && reply.starts_with(&[21, 3, 3, 0, 2, 2]), "{port}: a fatal TLS alert, got {:?}", String::from_utf8_lossy(reply));
}

/// What a TLS port sends back to a client that speaks plaintext `bytes` (until it closes).
fn plaintext_reply(addr: std::net::SocketAddr, bytes: &[u8]) -> Vec<u8> {
    use std::io::{Read as _, Write as _};
    let mut socket = std::net::TcpStream::connect(addr).expect("TCP connects");
    socket.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    socket.write_all(bytes).unwrap();
    let mut reply = Vec::new();
    let _ = socket.read_to_end(&mut reply);
    reply
}

/// `curl` against the HTTPS port: the HTTP status, or `Err((exit code, curl's error line))` when no
/// HTTP exchange happened.
fn curl(url: &str, extra: &[&str]) -> Result<u16, (i32, String)> {
    let out = std::process::Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "20"])
        .args(extra)
        .arg(url)
        .output()
        .expect("curl runs (.ci/setup installs it)");
    let code: u16 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0);
    if out.status.success() && code != 0 {
        Ok(code)
    } else {
        Err((out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).trim().to_string()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_port_serves_https_with_the_same_certificate_client_ca_and_keys() {
    let _serial = serial().await;
    let pki = Pki::new();
    std::fs::write(pki.path("client.pem"), &pki.client_cert).unwrap();
    std::fs::write(pki.path("client.key"), &pki.client_key).unwrap();
    let mut args: Vec<String> = tls_flags(&pki);
    args.extend(["--tls-client-ca".into(), pki.path("ca.pem").display().to_string()]);
    args.extend(["--api-key".into(), "https-test-key-42".into(), "--max-tokens".into(), "4".into()]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut all = vec!["--http", "127.0.0.1:0"];
    all.extend(refs);
    let server = http_support::HttpProcess::spawn(&all, &[]);
    assert!(
        server.stderr().iter().any(|l| l.starts_with("heie: HTTP API and page on https://")),
        "the log names the scheme: {:?}",
        server.stderr()
    );
    let base = format!("https://127.0.0.1:{}", server.http.port());
    let ca = pki.path("ca.pem").display().to_string();
    let cert = pki.path("client.pem").display().to_string();
    let key = pki.path("client.key").display().to_string();
    let with_cert = ["--cacert", ca.as_str(), "--cert", cert.as_str(), "--key", key.as_str()];

    // Plain HTTP on the HTTPS port gets a 400 that says so (as nginx answers), not TLS bytes.
    let reply = String::from_utf8(plaintext_reply(server.http, b"GET /healthz HTTP/1.1\r\nHost: heie\r\n\r\n")).expect("a readable reply");
    assert!(reply.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{reply}");
    let body: serde_json::Value = serde_json::from_str(reply.split_once("\r\n\r\n").unwrap().1).expect("a JSON error");
    assert_eq!(body["error"]["code"], "INVALID_ARGUMENT");
    assert!(body["error"]["message"].as_str().unwrap().contains("https://"), "{body}");
    let plain = curl(&format!("http://127.0.0.1:{}/healthz", server.http.port()), &[]);
    assert_eq!(plain, Ok(400), "plaintext is refused with a 400");
    // TLS without a client certificate: the handshake ends with a `certificate required` alert.
    let verdict = tls_verdict(server.http, &pki.ca_pem, None).await;
    assert!(matches!(&verdict, Err(e) if e.contains("CertificateRequired")), "{verdict:?}");
    let anonymous = curl(&format!("{base}/healthz"), &["--cacert", &ca]);
    assert!(anonymous.is_err(), "a client without a certificate must be refused: {anonymous:?}");
    // With the certificate: health and the page are open, the API needs the key.
    assert_eq!(curl(&format!("{base}/healthz"), &with_cert), Ok(200));
    assert_eq!(curl(&format!("{base}/"), &with_cert), Ok(200));
    assert_eq!(curl(&format!("{base}/v1/info"), &with_cert), Ok(401));
    let mut keyed = with_cert.to_vec();
    keyed.extend(["-H", "Authorization: Bearer https-test-key-42"]);
    assert_eq!(curl(&format!("{base}/v1/info"), &keyed), Ok(200));
}

/// The `HTTP API and page on https://ADDR/` line of a server started with `--http`.
fn https_addr(server: &ServeProcess) -> std::net::SocketAddr {
    let lines = server.stderr();
    let line = lines.iter().find_map(|l| l.strip_prefix("heie: HTTP API and page on https://"));
    line.unwrap_or_else(|| panic!("no HTTPS address printed: {lines:?}")).trim_end_matches('/').parse().expect("a socket address")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_finishes_its_tls_handshake_is_dropped_after_the_limit_while_others_are_served() {
    use heie_server::tls::{FIRST_BYTE_TIMEOUT, HANDSHAKE_TIMEOUT};
    use tokio::io::AsyncReadExt as _;
    let _serial = serial().await;
    let pki = Pki::new();
    let mut args = tls_flags(&pki);
    args.extend(["--http".into(), "127.0.0.1:0".into()]);
    let server = spawn(&args, &[]);
    let https = https_addr(&server);

    // One silent TCP client on each TLS port: connected, never sends a byte.
    let t0 = Instant::now();
    let mut silent = Vec::new();
    for (port, addr) in [("gRPC", server.addr), ("HTTPS", https)] {
        let mut socket = tokio::net::TcpStream::connect(addr).await.expect("TCP connects");
        silent.push(tokio::spawn(async move {
            let mut buf = [0u8; 64];
            // End of stream or a reset: the server dropped the connection.
            let read = tokio::time::timeout(Duration::from_secs(60), socket.read(&mut buf)).await;
            assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{port}: the server closes a silent connection, got {read:?}");
            (port, t0.elapsed())
        }));
    }

    // Meanwhile other clients are served on both ports.
    let ch = tls_channel(server.addr, &pki.ca_pem, None).await.expect("a TLS client connects meanwhile");
    assert_eq!(health(&ch).await.unwrap(), ServingStatus::Serving);
    assert_eq!(info_code(&ch, None).await, Code::Ok);
    let ca = pki.path("ca.pem").display().to_string();
    let url = format!("https://127.0.0.1:{}/healthz", https.port());
    let https_status = tokio::task::spawn_blocking(move || curl(&url, &["--cacert", &ca])).await.unwrap();
    assert_eq!(https_status, Ok(200), "an HTTPS client is served meanwhile");
    assert!(!silent[0].is_finished(), "the silent gRPC connection was still open while others were served");

    for handle in silent {
        let (port, after) = handle.await.unwrap();
        // The HTTPS port closes a connection that sends nothing sooner: a first byte is due at once.
        let limit = if port == "HTTPS" { FIRST_BYTE_TIMEOUT } else { HANDSHAKE_TIMEOUT };
        assert!(
            after >= limit - Duration::from_millis(500) && after < Duration::from_secs(30),
            "{port}: a silent connection is dropped about {limit:?} after it connects, not {after:?}"
        );
    }
    // The server is still fine afterwards.
    assert_eq!(info_code(&ch, None).await, Code::Ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_file_readable_by_every_user_gets_a_warning_that_names_it_and_the_fix() {
    use std::os::unix::fs::PermissionsExt as _;
    let _serial = serial().await;
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    std::fs::write(&keys, "warned-key-1\n").unwrap();
    let chmod = |mode: u32| std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(mode)).unwrap();
    chmod(0o644);
    let server = spawn(&["--api-key-file".into(), keys.display().to_string()], &[("HEIE_LOG", "info")]);
    let warnings = || server.stderr().into_iter().filter(|l| l.contains("readable by every user")).collect::<Vec<_>>();
    let reloads = || server.stderr().iter().filter(|l| l.contains("API keys reloaded")).count();

    let at_start = warnings();
    assert_eq!(at_start.len(), 1, "mode 0644 warns once at start-up: {:?}", server.stderr());
    assert!(at_start[0].contains("WARN"), "{}", at_start[0]);
    assert!(at_start[0].contains(&keys.display().to_string()), "the warning names the file: {}", at_start[0]);
    assert!(at_start[0].contains("chmod 600"), "the warning says the fix: {}", at_start[0]);

    // Fixed (0600): the file is read again on SIGHUP without a warning.
    chmod(0o600);
    server.signal("-HUP");
    assert!(eventually(Duration::from_secs(20), async || reloads() == 1).await, "{:?}", server.stderr());
    assert_eq!(warnings().len(), 1, "mode 0600 gets no warning: {:?}", server.stderr());
    // Readable by the group only: still not every user.
    chmod(0o640);
    server.signal("-HUP");
    assert!(eventually(Duration::from_secs(20), async || reloads() == 2).await, "{:?}", server.stderr());
    assert_eq!(warnings().len(), 1, "mode 0640 gets no warning: {:?}", server.stderr());
    // Opened up again: the reload warns again.
    chmod(0o604);
    server.signal("-HUP");
    assert!(eventually(Duration::from_secs(20), async || reloads() == 3).await, "{:?}", server.stderr());
    assert_eq!(warnings().len(), 2, "mode 0604 warns on reload: {:?}", server.stderr());
    assert!(!server.stderr().iter().any(|l| l.contains("warned-key-1")), "keys are never logged");
}

/// A handshake flood on the HTTPS port (issue 24, item 4): 128 connections from one address that
/// start a handshake and stall. Handshakes past the per-address limit are closed at once; those
/// within it are held until their timeout; a client from another address is served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_flood_from_one_address_does_not_starve_other_clients() {
    use heie_server::tls::{HANDSHAKE_TIMEOUT, MAX_HANDSHAKES_PER_PEER};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let _serial = serial().await;
    let pki = Pki::new();
    let mut args = tls_flags(&pki);
    args.extend(["--http".into(), "127.0.0.1:0".into()]);
    let server = spawn(&args, &[]);
    let https = https_addr(&server);

    // The flood comes from 127.0.0.2 (all of 127/8 is loopback on Linux); the real client from 127.0.0.1.
    const FLOOD: usize = 128;
    let mut flood = Vec::new();
    for _ in 0..FLOOD {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.2:0".parse().unwrap()).expect("127.0.0.2 is loopback");
        let mut stream = socket.connect(https).await.expect("TCP connects");
        // The first bytes of a TLS record header (handshake, TLS 1.0 record version), then nothing.
        stream.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
        flood.push(stream);
    }
    let started = Instant::now();
    let ca = pki.path("ca.pem").display().to_string();
    let url = format!("https://127.0.0.1:{}/healthz", https.port());
    let mut latencies = Vec::new();
    for _ in 0..5 {
        let (ca, url) = (ca.clone(), url.clone());
        let t = Instant::now();
        let status = tokio::task::spawn_blocking(move || curl(&url, &["--cacert", &ca])).await.unwrap();
        assert_eq!(status, Ok(200), "an HTTPS client from another address is served during the flood");
        latencies.push(t.elapsed());
    }
    let during = started.elapsed();
    eprintln!("/healthz over HTTPS during a {FLOOD}-handshake flood: {latencies:?}");

    // Which flood connections has the server closed? Those past the per-address limit, at once.
    let mut open = 0;
    for stream in &mut flood {
        let mut buf = [0u8; 16];
        match tokio::time::timeout(Duration::from_millis(20), stream.read(&mut buf)).await {
            Err(_) => open += 1,
            Ok(_) => {}
        }
    }
    if during < HANDSHAKE_TIMEOUT - Duration::from_secs(2) {
        assert_eq!(open, MAX_HANDSHAKES_PER_PEER, "only the per-address limit of handshakes is held");
    }
}
