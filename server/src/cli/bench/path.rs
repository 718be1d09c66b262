//! What `heie bench` can measure: HEIE's engine (every speed-up on), the same engine with every
//! speed-up off (`no-speedups`, the ablation) or with one off (`no-<speed-up>`), and llama.cpp's own
//! `llama-server` given the same work (the peer users would run instead).

use crate::engine::SpeedUps;

use super::report::{NO_SPEEDUPS, PEER};

/// How a path is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathKind {
    /// An in-process `heie serve` with this engine configuration.
    Heie(SpeedUps),
    /// A llama-server process (`--llama-server`).
    LlamaServer,
}

/// A named configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BenchPath {
    pub name: String,
    pub kind: PathKind,
}

impl BenchPath {
    /// `heie`, `no-speedups`, `no-<speed-up>` (e.g. `no-prefix-cache`) or `llama-server`.
    pub fn parse(name: &str) -> Result<BenchPath, String> {
        let heie = |speedups| Ok(BenchPath { name: name.into(), kind: PathKind::Heie(speedups) });
        match name {
            "heie" => heie(SpeedUps::ALL),
            NO_SPEEDUPS => heie(SpeedUps::NONE),
            PEER => Ok(BenchPath { name: name.into(), kind: PathKind::LlamaServer }),
            other => {
                let known = || {
                    let ablations: Vec<String> = SpeedUps::NAMES.iter().map(|n| format!("no-{n}")).collect();
                    format!("heie, {PEER}, {NO_SPEEDUPS}, {}", ablations.join(", "))
                };
                let speedup = other.strip_prefix("no-").ok_or_else(|| format!("unknown path {other:?} (known: {})", known()))?;
                let speedups = SpeedUps::ALL.without(speedup).map_err(|_| format!("unknown path {other:?} (known: {})", known()))?;
                heie(speedups)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_parse_to_their_speed_ups() {
        assert_eq!(BenchPath::parse("heie").unwrap().kind, PathKind::Heie(SpeedUps::ALL));
        assert_eq!(BenchPath::parse("no-speedups").unwrap().kind, PathKind::Heie(SpeedUps::NONE));
        assert_eq!(BenchPath::parse("llama-server").unwrap().kind, PathKind::LlamaServer);
        for name in SpeedUps::NAMES {
            let path = BenchPath::parse(&format!("no-{name}")).unwrap();
            assert_eq!(path.name, format!("no-{name}"));
            assert_eq!(path.kind, PathKind::Heie(SpeedUps::ALL.without(name).unwrap()));
        }
        let unknown = BenchPath::parse("turbo").unwrap_err();
        assert!(unknown.contains("no-prefix-cache") && unknown.contains("llama-server"), "{unknown}");
        assert!(BenchPath::parse("naive").is_err(), "the old name of no-speedups is gone");
    }
}
