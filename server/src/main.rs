//! The `heie` binary: parses the command line and runs one subcommand. Errors print as one line.

use heie_server::cli::{Cli, Command, LogFormat};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse_with_env();
    let filter = tracing_subscriber::EnvFilter::try_from_env("HEIE_LOG")
        // Warnings, plus the one line per request (an access log, on by default as in TGI and
        // llama-server); `HEIE_LOG` replaces both.
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,heie::request=info"));
    // Colour codes only for a person at a terminal: in a file or a log collector they are noise.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let log = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    match cli.log_format {
        LogFormat::Text => log.init(),
        // One JSON object per line, the span fields (request id, method) included.
        LogFormat::Json => log.json().with_current_span(true).with_span_list(false).init(),
    }
    let outcome = match cli.command {
        Command::Eval(args) => heie_server::cli::eval::run(args),
        Command::Heads(args) => heie_server::cli::heads::run(args),
        Command::Synth(args) => heie_server::cli::synth::run(args),
        Command::Extract(args) => heie_server::cli::extract::run(args),
        Command::Train(args) => heie_server::cli::train::run(args),
        Command::Evaluate(args) => heie_server::cli::evaluate::run(args),
        Command::Serve(args) => heie_server::cli::serve::run(args),
        Command::Bench(args) => heie_server::cli::bench::run(args),
        Command::Calibrate(args) => heie_server::cli::calibrate::run(args),
    };
    match outcome {
        Ok(0) => std::process::ExitCode::SUCCESS,
        Ok(_) => std::process::ExitCode::from(1),
        Err(e) => {
            eprintln!("heie: error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
