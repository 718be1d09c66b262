//! The engine configurations `heie bench` compares: HEIE's (every speed-up on), the naive way of
//! driving llama.cpp (every speed-up off), and each speed-up switched off alone.

use crate::engine::SpeedUps;

/// A named engine configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BenchPath {
    pub name: String,
    pub speedups: SpeedUps,
}

impl BenchPath {
    /// `heie`, `naive`, or `no-<speed-up>` (e.g. `no-prefix-cache`).
    pub fn parse(name: &str) -> Result<BenchPath, String> {
        match name {
            "heie" => Ok(BenchPath { name: name.into(), speedups: SpeedUps::ALL }),
            "naive" => Ok(BenchPath { name: name.into(), speedups: SpeedUps::NONE }),
            other => {
                let known = || {
                    let ablations: Vec<String> = SpeedUps::NAMES.iter().map(|n| format!("no-{n}")).collect();
                    format!("heie, naive, {}", ablations.join(", "))
                };
                let speedup = other.strip_prefix("no-").ok_or_else(|| format!("unknown path {other:?} (known: {})", known()))?;
                let speedups = SpeedUps::ALL.without(speedup).map_err(|_| format!("unknown path {other:?} (known: {})", known()))?;
                Ok(BenchPath { name: other.into(), speedups })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_parse_to_their_speed_ups() {
        assert_eq!(BenchPath::parse("heie").unwrap().speedups, SpeedUps::ALL);
        assert_eq!(BenchPath::parse("naive").unwrap().speedups, SpeedUps::NONE);
        for name in SpeedUps::NAMES {
            let path = BenchPath::parse(&format!("no-{name}")).unwrap();
            assert_eq!(path.name, format!("no-{name}"));
            assert_eq!(path.speedups, SpeedUps::ALL.without(name).unwrap());
        }
        assert!(BenchPath::parse("turbo").unwrap_err().contains("no-prefix-cache"));
    }
}
