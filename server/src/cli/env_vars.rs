//! Every flag also reads an environment variable, named by one rule applied here to the whole command
//! tree (so a new flag cannot be forgotten):
//!
//! - `heie serve`'s flags, the model flags every model-loading command shares (`--model`, `--threads`,
//!   `--max-tiles`, …) and the global `--log-format`: `HEIE_<FLAG>` (`HEIE_MAX_QUEUE`, `HEIE_THREADS`).
//!   These mean the same wherever they appear, and a deployment sets them once.
//! - every other command's own flags: `HEIE_<COMMAND>_<FLAG>` (`HEIE_EVAL_MAX_TOKENS`,
//!   `HEIE_TRAIN_BATCH_SIZE`, `HEIE_HEADS_INIT_OUT`), because the same flag name means different things
//!   in different commands (`--out` is a folder for `eval`, a heads file for `train`; `--batch-size` is
//!   llama.cpp's decode batch for the model flags and the training batch for `train`; `--config` is TOML
//!   for `serve` and a heads config for `train`), and an exported `HEIE_OUT` must not leak into another.
//!
//! Names are the long flag in capitals with `-` as `_`. On/off flags accept 1/0, true/false, yes/no,
//! on/off. Positional arguments (the images of `heie eval`) have no variable.

use std::collections::HashSet;

use clap::builder::BoolishValueParser;
use clap::{Arg, ArgAction, Args, Command, CommandFactory};

use super::model_args::ModelArgs;
use super::Cli;

/// The prefix of every variable.
pub const PREFIX: &str = "HEIE";
/// Subcommands whose own flags use `HEIE_<FLAG>`: the service, configured by environment in deployments.
const UNPREFIXED_COMMANDS: &[&str] = &["serve"];

/// The `heie` command tree with the environment variable of every flag set.
pub fn command() -> Command {
    let shared = shared_flags();
    apply(Cli::command(), &[], &shared)
}

/// The long names of the model flags (`ModelArgs`), which read `HEIE_<FLAG>` in every command.
fn shared_flags() -> HashSet<String> {
    ModelArgs::augment_args(Command::new("model-flags"))
        .get_arguments()
        .filter_map(|a| a.get_long().map(str::to_string))
        .collect()
}

/// Whether an argument takes a variable: named flags, not help, version or positionals.
fn takes_env(arg: &Arg) -> bool {
    !arg.is_positional()
        && arg.get_long().is_some()
        && !matches!(arg.get_action(), ArgAction::Help | ArgAction::HelpShort | ArgAction::HelpLong | ArgAction::Version)
}

/// Whether a command flattens the model flags (has every one of them).
fn has_model_flags(cmd: &Command, shared: &HashSet<String>) -> bool {
    let longs: HashSet<&str> = cmd.get_arguments().filter_map(|a| a.get_long()).collect();
    shared.iter().all(|l| longs.contains(l.as_str()))
}

/// The variable for flag `long` of the subcommand at `path` (e.g. `["heads", "init"]`); `model_flag`:
/// the flag is one of the shared model flags of that command (not merely spelled like one, as `train`'s
/// `--batch-size`).
pub fn variable_name(path: &[&str], long: &str, model_flag: bool) -> String {
    let unprefixed = path.is_empty() || UNPREFIXED_COMMANDS.contains(&path[0]) || model_flag;
    let mut parts = vec![PREFIX.to_string()];
    if !unprefixed {
        parts.extend(path.iter().map(|p| p.to_string()));
    }
    parts.push(long.to_string());
    parts.join("_").to_uppercase().replace('-', "_")
}

fn apply(mut cmd: Command, path: &[&str], shared: &HashSet<String>) -> Command {
    let with_model = has_model_flags(&cmd, shared);
    let missing: Vec<(clap::Id, String, bool)> = cmd
        .get_arguments()
        .filter(|a| takes_env(a) && a.get_env().is_none())
        .map(|a| {
            let is_switch = matches!(a.get_action(), ArgAction::SetTrue | ArgAction::SetFalse);
            let long = a.get_long().expect("named");
            (a.get_id().clone(), variable_name(path, long, with_model && shared.contains(long)), is_switch)
        })
        .collect();
    for (id, env, is_switch) in missing {
        cmd = cmd.mut_arg(id, |arg| {
            let arg = arg.env(env);
            // clap's default for a switch read from a variable accepts only `true`/`false`.
            if is_switch { arg.value_parser(BoolishValueParser::new()) } else { arg }
        });
    }
    let names: Vec<String> = cmd.get_subcommands().map(|s| s.get_name().to_string()).collect();
    for name in names {
        let mut sub_path: Vec<&str> = path.to_vec();
        sub_path.push(&name);
        cmd = cmd.mut_subcommand(&name, |sub| apply(sub, &sub_path, shared));
    }
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::FromArgMatches;

    /// Walks the built tree (globals propagated, help flags added) and lists every flag with its variable.
    fn walk(cmd: &Command, path: &mut Vec<String>, shared: &HashSet<String>, out: &mut Vec<(String, String, bool, Option<String>)>) {
        let with_model = has_model_flags(cmd, shared);
        for arg in cmd.get_arguments() {
            if takes_env(arg) {
                let env = arg.get_env().map(|e| e.to_string_lossy().into_owned());
                let long = arg.get_long().unwrap().to_string();
                let model_flag = with_model && shared.contains(&long);
                out.push((path.join(" "), long, model_flag, env));
            }
        }
        for sub in cmd.get_subcommands() {
            path.push(sub.get_name().to_string());
            walk(sub, path, shared, out);
            path.pop();
        }
    }

    #[test]
    fn every_flag_of_every_command_has_the_variable_the_rule_names() {
        let mut cmd = command();
        cmd.build();
        let shared = shared_flags();
        let mut flags = Vec::new();
        walk(&cmd, &mut Vec::new(), &shared, &mut flags);
        assert!(flags.len() > 80, "the walk reached the subcommands ({} flags)", flags.len());
        let mut wrong = Vec::new();
        for (path, long, model_flag, env) in &flags {
            let parts: Vec<&str> = path.split_whitespace().collect();
            // A global flag shows up in every subcommand, still with the root's variable.
            let expected = if long == "log-format" { "HEIE_LOG_FORMAT".to_string() } else { variable_name(&parts, long, *model_flag) };
            if env.as_deref() != Some(expected.as_str()) {
                wrong.push(format!("heie {path} --{long}: {env:?}, expected {expected}"));
            }
        }
        assert!(wrong.is_empty(), "flags without their variable:\n{}", wrong.join("\n"));
        // One variable never feeds two different flags of one command.
        let mut seen = HashSet::new();
        for (path, _, _, env) in &flags {
            assert!(seen.insert((path.clone(), env.clone())), "{path}: {env:?} twice");
        }
        // Commands without the model flags never read an unprefixed variable (serve and the global
        // flag aside), so `HEIE_BATCH_SIZE` set for a server cannot change `heie train`'s batch.
        for (path, long, _, env) in &flags {
            let first = path.split_whitespace().next().unwrap_or("");
            if !path.is_empty() && first != "serve" && long != "log-format" && !has_model_flags(find(&cmd, path), &shared) {
                let env = env.as_deref().unwrap();
                assert!(env.starts_with(&format!("HEIE_{}_", first.to_uppercase())), "heie {path} --{long}: {env}");
            }
        }
    }

    fn find<'a>(cmd: &'a Command, path: &str) -> &'a Command {
        path.split_whitespace().fold(cmd, |c, name| c.find_subcommand(name).expect("subcommand"))
    }

    /// The README's examples, read from the real command tree (not from `variable_name`).
    #[test]
    fn the_tree_carries_the_examples_of_the_readme() {
        let mut cmd = command();
        cmd.build();
        let env = |path: &str, long: &str| -> String {
            let c = find(&cmd, path);
            let arg = c.get_arguments().find(|a| a.get_long() == Some(long)).unwrap_or_else(|| panic!("{path} --{long}"));
            arg.get_env().expect("has a variable").to_string_lossy().into_owned()
        };
        assert_eq!(env("serve", "max-queue"), "HEIE_MAX_QUEUE");
        assert_eq!(env("serve", "batch-size"), "HEIE_BATCH_SIZE");
        assert_eq!(env("eval", "threads"), "HEIE_THREADS");
        assert_eq!(env("extract", "batch-size"), "HEIE_BATCH_SIZE");
        assert_eq!(env("eval", "disable-speedup"), "HEIE_DISABLE_SPEEDUP");
        assert_eq!(env("eval", "max-tokens"), "HEIE_EVAL_MAX_TOKENS");
        assert_eq!(env("train", "batch-size"), "HEIE_TRAIN_BATCH_SIZE");
        assert_eq!(env("train", "config"), "HEIE_TRAIN_CONFIG");
        assert_eq!(env("serve", "config"), "HEIE_CONFIG");
        assert_eq!(env("heads init", "out"), "HEIE_HEADS_INIT_OUT");
        assert_eq!(env("bench", "parallel"), "HEIE_BENCH_PARALLEL");
        assert_eq!(env("eval", "log-format"), "HEIE_LOG_FORMAT");
        assert_eq!(env("serve", "body-timeout"), "HEIE_BODY_TIMEOUT");
        assert_eq!(env("serve", "max-body-bytes-in-flight"), "HEIE_MAX_BODY_BYTES_IN_FLIGHT");
    }

    /// Parses with a clean environment plus `vars` (each test thread sets its own names).
    fn parse_with(vars: &[(&str, &str)], argv: &[&str]) -> Result<Cli, clap::Error> {
        for (k, v) in vars {
            // These names are read by this test only (edition 2021: set_var is a safe call).
            std::env::set_var(k, v);
        }
        let result = command().try_get_matches_from(argv).and_then(|m| Cli::from_arg_matches(&m));
        for (k, _) in vars {
            std::env::remove_var(k);
        }
        result
    }

    #[test]
    fn variables_reach_the_parsed_arguments() {
        let cli = parse_with(
            &[
                ("HEIE_EVAL_MAX_TOKENS", "17"),
                ("HEIE_EVAL_TEMPERATURE", "0.5"),
                ("HEIE_EVAL_SEED", "9"),
                ("HEIE_EVAL_NO_EXPLANATION", "1"),
                ("HEIE_EVAL_PROMPT", "a cat"),
                ("HEIE_EVAL_JSON", "yes"),
                ("HEIE_EVAL_WRITE_METADATA", "off"),
                ("HEIE_DISABLE_SPEEDUP", "prefix-cache,batched-text"),
            ],
            &["heie", "eval", "x.png"],
        )
        .unwrap();
        let super::super::Command::Eval(e) = cli.command else { panic!("eval") };
        assert_eq!((e.max_tokens, e.temperature, e.seed), (17, 0.5, 9));
        assert!(e.no_explanation && e.json && !e.write_metadata);
        assert_eq!(e.prompt.as_deref(), Some("a cat"));
        assert_eq!(e.model.disable_speedups, ["prefix-cache", "batched-text"]);

        let cli = parse_with(&[("HEIE_BODY_TIMEOUT", "2.5"), ("HEIE_MAX_BODY_BYTES_IN_FLIGHT", "123456789")], &["heie", "serve"]).unwrap();
        let super::super::Command::Serve(s) = cli.command else { panic!("serve") };
        assert_eq!((s.body_timeout, s.max_body_bytes_in_flight), (Some(2.5), Some(123_456_789)));

        // A flag on the command line beats the variable; a bad value names the variable's flag.
        let cli = parse_with(&[("HEIE_TRAIN_BATCH_SIZE", "3")], &["heie", "train", "--shards", "s", "--out", "o", "--batch-size", "5"]).unwrap();
        let super::super::Command::Train(t) = cli.command else { panic!("train") };
        assert_eq!(t.batch_size, 5);
        let e = parse_with(&[("HEIE_EXTRACT_NO_EXPLANATION", "maybe")], &["heie", "extract", "--data", "d", "--out", "o"]).unwrap_err();
        assert!(e.to_string().contains("no-explanation"), "{e}");
    }
}
