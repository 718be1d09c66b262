//! `heie serve`'s settings: its flags (`args.rs`), which fall back to `HEIE_*` environment variables, then
//! to the optional config file (`config_file.rs`), then to defaults — merged and checked into the
//! server's options before anything starts.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::ArgMatches;

use crate::pipeline::options::{MAX_TILES, MAX_TOKENS_PER_SECTION};
use crate::http::{AllowedHosts, BodyOptions as HttpBodyOptions, ConnectionOptions, CorsOrigins, HttpOptions};
use crate::server::{NetworkOptions, ServeOptions, TlsFiles, DEFAULT_KEEPALIVE_INTERVAL, DEFAULT_KEEPALIVE_TIMEOUT, DEFAULT_MAX_CONCURRENT_STREAMS};
use crate::serving::{ApiKeys, ServingLimits};

use crate::calibration::Calibration;
use crate::cli::model_args::ModelArgs;
use std::sync::Arc;

use super::args::{
    ServeArgs, DEFAULT_ADDR, DEFAULT_DRAIN_DELAY_S, DEFAULT_MAX_BATCH, DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_MAX_QUEUE,
    DEFAULT_MAX_TOKENS, DEFAULT_PARALLEL, DEFAULT_SHUTDOWN_GRACE_S, DEFAULT_STALL_TIMEOUT_S,
};
use super::config_file::{read_config, ConfigFile, StringList};

/// The serve flags after merging the config file in, with every default applied.
#[derive(Debug, Clone)]
pub struct ServeSettings {
    pub options: ServeOptions,
    pub shutdown_grace: Duration,
    pub drain_delay: Duration,
    pub model: ModelArgs,
    /// The `--calibration` file, loaded and checked.
    pub calibration: Option<Arc<Calibration>>,
}

/// Merges `args` (flags and environment), the config file and the defaults. `matches` tells which
/// model flags were given explicitly (their clap defaults must not hide the file's values).
pub fn settings(args: &ServeArgs, matches: Option<&ArgMatches>) -> anyhow::Result<ServeSettings> {
    let mut file = match &args.config {
        Some(path) => read_config(path)?,
        None => ConfigFile::default(),
    };
    let mut network = network_options(args, &mut file)?;
    let http = http_options(args, &mut file)?;
    let explicit = |id: &str| {
        matches
            .and_then(|m| m.value_source(id))
            .is_some_and(|s| matches!(s, ValueSource::CommandLine | ValueSource::EnvVariable))
    };
    let mut model = args.model.clone();
    model.model = model.model.or(file.model);
    model.mmproj = model.mmproj.or(file.mmproj);
    model.heads = model.heads.or(file.heads);
    model.threads = model.threads.or(file.threads);
    macro_rules! from_file {
        ($($field:ident),*) => {$(
            if !explicit(stringify!($field)) {
                if let Some(v) = file.$field {
                    model.$field = v;
                }
            }
        )*};
    }
    from_file!(n_gpu_layers, ctx_size, max_tiles, max_pixels, batch_size);

    let parallel = args.parallel.or(file.parallel).unwrap_or(DEFAULT_PARALLEL);
    let max_queue = args.max_queue.or(file.max_queue).unwrap_or(DEFAULT_MAX_QUEUE);
    let max_batch = args.max_batch.or(file.max_batch).unwrap_or(DEFAULT_MAX_BATCH);
    let max_message_bytes = args.max_message_bytes.or(file.max_message_bytes).unwrap_or(DEFAULT_MAX_MESSAGE_BYTES);
    let grace = args.shutdown_grace.or(file.shutdown_grace).unwrap_or(DEFAULT_SHUTDOWN_GRACE_S);
    let max_tokens = args.max_tokens.or(file.max_tokens).unwrap_or(DEFAULT_MAX_TOKENS);
    let stall = args.stall_timeout.or(file.stall_timeout).unwrap_or(DEFAULT_STALL_TIMEOUT_S as f64);
    let image_workers = args.image_workers.or(file.image_workers).unwrap_or_else(crate::serving::admission::default_image_workers);
    anyhow::ensure!(stall.is_finite() && stall >= 0.0, "--stall-timeout must be a number of seconds >= 0");
    anyhow::ensure!((1..=256).contains(&image_workers), "--image-workers must be 1..=256, got {image_workers}");
    anyhow::ensure!((1..=64).contains(&parallel), "--parallel must be 1..=64, got {parallel}");
    anyhow::ensure!(max_queue >= 1, "--max-queue must be at least 1");
    anyhow::ensure!((1..=1024).contains(&max_batch), "--max-batch must be 1..=1024, got {max_batch}");
    anyhow::ensure!(max_message_bytes >= 1024, "--max-message-bytes must be at least 1024");
    anyhow::ensure!(grace.is_finite() && grace >= 0.0, "--shutdown-grace must be a number of seconds >= 0");
    anyhow::ensure!(
        (1..=MAX_TOKENS_PER_SECTION).contains(&max_tokens),
        "--max-tokens must be 1..={MAX_TOKENS_PER_SECTION}, got {max_tokens}"
    );
    anyhow::ensure!((1..=MAX_TILES).contains(&model.max_tiles), "--max-tiles must be 1..={MAX_TILES}, got {}", model.max_tiles);
    let drain = args.drain_delay.or(file.drain_delay).unwrap_or(DEFAULT_DRAIN_DELAY_S);
    anyhow::ensure!(drain.is_finite() && (0.0..=3600.0).contains(&drain), "--drain-delay must be 0..=3600 seconds");
    let bodies = http_bodies(
        args.body_timeout.or(file.body_timeout),
        args.max_body_bytes_in_flight.or(file.max_body_bytes_in_flight),
        max_message_bytes,
    )?;
    network.http = HttpOptions { bodies, ..http };
    // Loaded now, so a broken file stops the server before the model loads.
    let calibration = match args.calibration.clone().or(file.calibration) {
        Some(path) => Some(Arc::new(Calibration::load(&path).map_err(anyhow::Error::msg)?)),
        None => None,
    };
    let addr = match args.addr.or(file.addr) {
        Some(a) => a,
        None => DEFAULT_ADDR.parse().expect("the default address parses"),
    };
    Ok(ServeSettings {
        options: ServeOptions {
            addr,
            metrics_addr: args.metrics_addr.or(file.metrics_addr),
            http_addr: args.http.or(file.http),
            limits: ServingLimits {
                max_pixels: model.max_pixels,
                max_batch,
                parallel,
                max_queue,
                max_message_bytes,
                max_tiles: model.max_tiles,
                default_max_tokens: max_tokens,
                image_workers,
                // Zero turns the check off: a stall that never ends is never reached.
                stall_timeout: if stall == 0.0 { Duration::MAX } else { Duration::from_secs_f64(stall) },
            },
            network,
        },
        shutdown_grace: Duration::from_secs_f64(grace),
        drain_delay: Duration::from_secs_f64(drain),
        model,
        calibration,
    })
}

/// The HTTP API's body timeout and in-flight budget (flag, else file), checked.
fn http_bodies(timeout: Option<f64>, max_in_flight: Option<usize>, max_message_bytes: usize) -> anyhow::Result<HttpBodyOptions> {
    let timeout = match timeout {
        Some(v) => {
            anyhow::ensure!(v.is_finite() && v > 0.0 && v <= 86_400.0, "--body-timeout must be more than 0 and at most 86400 seconds, got {v}");
            Duration::from_secs_f64(v)
        }
        None => HttpBodyOptions::default().timeout,
    };
    if let Some(n) = max_in_flight {
        // A smaller budget would refuse a body the size limit allows with 503 forever.
        let limit = crate::http::body_limit(max_message_bytes);
        anyhow::ensure!(
            n >= limit,
            "--max-body-bytes-in-flight must be at least the HTTP body limit, {limit} bytes (from --max-message-bytes {max_message_bytes}), got {n}"
        );
    }
    Ok(HttpBodyOptions { timeout, max_in_flight })
}

/// The HTTP port's connection limits, allowed hosts and CORS origins (flag, else file), checked;
/// its bodies are [`http_bodies`]'.
fn http_options(args: &ServeArgs, file: &mut ConfigFile) -> anyhow::Result<HttpOptions> {
    let seconds = |flag: &str, v: Option<f64>, default: Duration| -> anyhow::Result<Duration> {
        match v {
            Some(v) => {
                anyhow::ensure!(v.is_finite() && v > 0.0 && v <= 86_400.0, "--{flag} must be more than 0 and at most 86400 seconds, got {v}");
                Ok(Duration::from_secs_f64(v))
            }
            None => Ok(default),
        }
    };
    let defaults = ConnectionOptions::default();
    let max_connections = args.max_connections.or(file.max_connections).unwrap_or(defaults.max_connections);
    anyhow::ensure!((1..=1_000_000).contains(&max_connections), "--max-connections must be 1..=1000000, got {max_connections}");
    let connections = ConnectionOptions {
        header_timeout: seconds("header-timeout", args.header_timeout.or(file.header_timeout), defaults.header_timeout)?,
        keep_alive_timeout: seconds("keep-alive-timeout", args.keep_alive_timeout.or(file.keep_alive_timeout), defaults.keep_alive_timeout)?,
        max_connections,
    };
    let listed = |flag: &[String], file: Option<StringList>| if flag.is_empty() { file.map(StringList::into_vec).unwrap_or_default() } else { flag.to_vec() };
    let allowed_hosts = listed(&args.allowed_hosts, file.allowed_hosts.take());
    let cors_origins = listed(&args.cors_origin, file.cors_origin.take());
    // Checked here, so a typo is one line at start-up (the bound address only adds to the list).
    AllowedHosts::new(&allowed_hosts, SocketAddr::from(([127, 0, 0, 1], 0))).map_err(anyhow::Error::msg)?;
    CorsOrigins::new(&cors_origins).map_err(anyhow::Error::msg)?;
    Ok(HttpOptions { bodies: HttpBodyOptions::default(), connections, allowed_hosts, cors_origins })
}

/// TLS, keys, keepalive and stream limits from the flags and the file.
fn network_options(args: &ServeArgs, file: &mut ConfigFile) -> anyhow::Result<NetworkOptions> {
    let cert = args.tls_cert.clone().or(file.tls_cert.take());
    let key = args.tls_key.clone().or(file.tls_key.take());
    let client_ca = args.tls_client_ca.clone().or(file.tls_client_ca.take());
    let tls = match (cert, key) {
        (Some(cert), Some(key)) => Some(TlsFiles { cert, key, client_ca }),
        (None, None) if client_ca.is_some() => anyhow::bail!("--tls-client-ca needs --tls-cert and --tls-key"),
        (None, None) => None,
        (Some(_), None) => anyhow::bail!("--tls-cert needs --tls-key"),
        (None, Some(_)) => anyhow::bail!("--tls-key needs --tls-cert"),
    };
    let mut keys = args.api_key.clone();
    if keys.is_empty() {
        if let Some(list) = file.api_key.take() {
            keys = list.parse()?;
        }
    }
    let key_file = args.api_key_file.clone().or(file.api_key_file.take());
    let api_keys = ApiKeys::new(&keys, key_file.as_deref())?;
    let seconds = |flag: &str, v: f64| -> anyhow::Result<Duration> {
        anyhow::ensure!(v.is_finite() && (0.0..=86_400.0).contains(&v), "--{flag} must be 0..=86400 seconds, got {v}");
        Ok(Duration::from_secs_f64(v))
    };
    let interval = match args.http2_keepalive_interval.or(file.http2_keepalive_interval) {
        Some(v) => Some(seconds("http2-keepalive-interval", v)?).filter(|d| !d.is_zero()),
        None => Some(DEFAULT_KEEPALIVE_INTERVAL),
    };
    let timeout = match args.http2_keepalive_timeout.or(file.http2_keepalive_timeout) {
        Some(v) => seconds("http2-keepalive-timeout", v)?,
        None => DEFAULT_KEEPALIVE_TIMEOUT,
    };
    anyhow::ensure!(!timeout.is_zero(), "--http2-keepalive-timeout must be more than 0 seconds");
    let streams = args.max_concurrent_streams.or(file.max_concurrent_streams).unwrap_or(DEFAULT_MAX_CONCURRENT_STREAMS);
    anyhow::ensure!(streams >= 1, "--max-concurrent-streams must be at least 1");
    Ok(NetworkOptions {
        tls,
        api_keys,
        keepalive_interval: interval,
        keepalive_timeout: timeout,
        max_concurrent_streams: streams,
        http: HttpOptions::default(),
    })
}

/// The `serve` subcommand's matches, re-parsed from the process arguments, to learn which model
/// flags were set explicitly.
pub(super) fn serve_matches(argv: Vec<OsString>) -> Option<ArgMatches> {
    let matches = crate::cli::env_vars::command().try_get_matches_from(argv).ok()?;
    matches.subcommand_matches("serve").cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(argv: &[&str]) -> (ServeArgs, ArgMatches) {
        let argv: Vec<OsString> = std::iter::once("heie").chain(argv.iter().copied()).map(OsString::from).collect();
        let matches = crate::cli::env_vars::command().get_matches_from(argv.clone());
        let cli = <crate::cli::Cli as clap::FromArgMatches>::from_arg_matches(&matches).expect("parses");
        let crate::cli::Command::Serve(args) = cli.command else { panic!("serve") };
        (args, serve_matches(argv).expect("matches"))
    }

    #[test]
    fn flags_override_the_file_which_overrides_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("heie.toml");
        std::fs::write(&config, "addr = \"127.0.0.1:7000\"\nparallel = 2\nmax-queue = 3\nmax-tiles = 4\nctx-size = 2048\n").unwrap();
        let path = config.to_str().unwrap();
        let (args, m) = parse(&["serve", "--config", path, "--parallel", "8", "--ctx-size", "1024"]);
        let s = settings(&args, Some(&m)).unwrap();
        assert_eq!(s.options.addr, "127.0.0.1:7000".parse().unwrap());
        assert_eq!(s.options.limits.parallel, 8, "flag beats file");
        assert_eq!(s.options.limits.max_queue, 3, "file beats default");
        assert_eq!(s.options.limits.max_batch, DEFAULT_MAX_BATCH);
        assert_eq!(s.model.max_tiles, 4, "file beats a clap default");
        assert_eq!(s.model.ctx_size, 1024, "an explicit model flag beats the file");
        assert_eq!(s.options.limits.max_message_bytes, DEFAULT_MAX_MESSAGE_BYTES);

        std::fs::write(&config, "api-key = [\"k-one\", \"k-two\"]\nmax-concurrent-streams = 8\nhttp2-keepalive-interval = 0\ndrain-delay = 1.5\n").unwrap();
        let (args, m) = parse(&["serve", "--config", path]);
        let s = settings(&args, Some(&m)).unwrap();
        let n = &s.options.network;
        assert_eq!((n.api_keys.len(), n.max_concurrent_streams, n.keepalive_interval), (2, 8, None));
        assert!(n.api_keys.check(Some("Bearer k-two")).is_ok() && n.tls.is_none());
        assert_eq!(s.drain_delay, Duration::from_millis(1500));
        assert!(!format!("{s:?}").contains("k-one"), "settings never print a key");
        let (args, m) = parse(&["serve", "--config", path, "--api-key", "from-flag"]);
        let keys = settings(&args, Some(&m)).unwrap().options.network.api_keys;
        assert!(keys.len() == 1 && keys.check(Some("Bearer from-flag")).is_ok(), "flag keys replace the file's list");
        std::fs::write(&config, "tls-cert = \"/x/cert.pem\"\n").unwrap();
        let (args, m) = parse(&["serve", "--config", path]);
        assert!(format!("{:#}", settings(&args, Some(&m)).unwrap_err()).contains("--tls-cert needs --tls-key"));

        // A calibration named in the file is loaded (and checked) with the settings.
        std::fs::write(&config, "calibration = \"/no/such/mine.json\"\n").unwrap();
        let (args, m) = parse(&["serve", "--config", path]);
        assert!(format!("{:#}", settings(&args, Some(&m)).unwrap_err()).contains("calibration /no/such/mine.json"));

        std::fs::write(&config, "paralel = 2\n").unwrap();
        let (args, m) = parse(&["serve", "--config", path]);
        let e = settings(&args, Some(&m)).unwrap_err();
        assert!(format!("{e:#}").contains("paralel"), "{e:#}");
    }

    #[test]
    fn the_http_address_comes_from_the_flag_or_the_file_and_is_off_by_default() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("heie.toml");
        std::fs::write(&config, "http = \"127.0.0.1:8080\"\n").unwrap();
        let path = config.to_str().unwrap();
        let (args, m) = parse(&["serve", "--config", path]);
        assert_eq!(settings(&args, Some(&m)).unwrap().options.http_addr, Some("127.0.0.1:8080".parse().unwrap()));
        let (args, m) = parse(&["serve", "--config", path, "--http", "0.0.0.0:9000"]);
        assert_eq!(settings(&args, Some(&m)).unwrap().options.http_addr, Some("0.0.0.0:9000".parse().unwrap()));
        let (args, m) = parse(&["serve"]);
        assert_eq!(settings(&args, Some(&m)).unwrap().options.http_addr, None);
    }

    #[test]
    fn http_body_limits_come_from_the_flags_or_the_file_and_are_checked() {
        let (args, m) = parse(&["serve"]);
        let b = settings(&args, Some(&m)).unwrap().options.network.http.bodies;
        assert_eq!(b, HttpBodyOptions { timeout: Duration::from_secs(30), max_in_flight: None });
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("heie.toml");
        std::fs::write(&config, "body-timeout = 2.5\nmax-body-bytes-in-flight = 200000000\n").unwrap();
        let path = config.to_str().unwrap();
        let (args, m) = parse(&["serve", "--config", path]);
        let b = settings(&args, Some(&m)).unwrap().options.network.http.bodies;
        assert_eq!(b, HttpBodyOptions { timeout: Duration::from_millis(2500), max_in_flight: Some(200_000_000) });
        let (args, m) = parse(&["serve", "--config", path, "--body-timeout", "7", "--max-body-bytes-in-flight", "300000000"]);
        let b = settings(&args, Some(&m)).unwrap().options.network.http.bodies;
        assert_eq!(b, HttpBodyOptions { timeout: Duration::from_secs(7), max_in_flight: Some(300_000_000) }, "flags beat the file");
        for bad in [&["serve", "--body-timeout", "0"][..], &["serve", "--body-timeout=-1"], &["serve", "--max-body-bytes-in-flight", "1000"]] {
            let (args, m) = parse(bad);
            let e = format!("{:#}", settings(&args, Some(&m)).unwrap_err());
            assert!(e.contains(bad[1].split('=').next().unwrap()), "{bad:?}: {e}");
        }
        // The budget must hold one body of the largest size: checked against --max-message-bytes.
        let (args, m) = parse(&["serve", "--max-message-bytes", "3000", "--max-body-bytes-in-flight", "8096"]);
        assert!(settings(&args, Some(&m)).is_ok());
        let (args, m) = parse(&["serve", "--max-message-bytes", "3000", "--max-body-bytes-in-flight", "8095"]);
        assert!(settings(&args, Some(&m)).is_err());
    }
}
