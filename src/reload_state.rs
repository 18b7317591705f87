//! What a reload that moves keys leaves beside the config file, so that a
//! proxy restarted before the move is done goes on where it was instead of
//! starting on the new layout with no memory of the old one (while other
//! proxies may still be bringing keys back to the old one).
//!
//! The file (`<config>.reload-state.json`) holds when the reload was, the
//! config text whose layout was in force before it and the text it
//! reloaded; it is written at the reload and removed when its mover is
//! done. On start, a file whose reloaded text is the config file's text
//! now says where the reload is ([`step`]); any other is stale.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// A reload that moves keys, not finished yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadState {
    pub reloaded_at_unix_ms: u64,
    /// The config text whose layout was in force before the reload.
    pub previous: String,
    /// The config text the reload read.
    pub next: String,
}

/// Where a reload is, some time after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Keys still go by the old layout for `left` more.
    Settling { left: Duration },
    /// Keys go by the new layout; the mover starts in `mover_in`.
    Switched { mover_in: Duration },
}

/// The step a reload is at `elapsed` after it, with `[reload] settle_ms`.
pub fn step(elapsed: Duration, settle: Duration) -> Step {
    if elapsed < settle {
        Step::Settling {
            left: settle - elapsed,
        }
    } else {
        Step::Switched {
            mover_in: (settle * 2).saturating_sub(elapsed),
        }
    }
}

/// The state file of the config file at `config`.
pub fn path_for(config: &Path) -> PathBuf {
    let mut name = config.as_os_str().to_owned();
    name.push(".reload-state.json");
    PathBuf::from(name)
}

pub fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

impl ReloadState {
    /// How long ago the reload was (0 if the clock went back).
    pub fn elapsed(&self, now: SystemTime) -> Duration {
        Duration::from_millis(unix_ms(now).saturating_sub(self.reloaded_at_unix_ms))
    }

    /// Writes the file whole (a temporary file renamed over it).
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let text = serde_json::to_string(self).map_err(std::io::Error::other)?;
        let mut temporary = path.as_os_str().to_owned();
        temporary.push(".tmp");
        // It quotes the config, passwords too: readable by the owner only.
        let mut file = std::fs::OpenOptions::new();
        file.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut file, 0o600);
        std::io::Write::write_all(&mut file.open(&temporary)?, text.as_bytes())?;
        std::fs::rename(&temporary, path)
    }

    /// The file's state; `None` when there is none or it cannot be read.
    pub fn load(path: &Path) -> Option<ReloadState> {
        let text = std::fs::read_to_string(path).ok()?;
        serde_json::from_str(&text).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reload_settles_then_switches_then_moves() {
        let settle = Duration::from_secs(5);
        assert_eq!(
            step(Duration::from_secs(2), settle),
            Step::Settling {
                left: Duration::from_secs(3)
            }
        );
        assert_eq!(
            step(Duration::from_secs(7), settle),
            Step::Switched {
                mover_in: Duration::from_secs(3)
            }
        );
        assert_eq!(
            step(Duration::from_secs(60), settle),
            Step::Switched {
                mover_in: Duration::ZERO
            }
        );
    }

    #[test]
    fn the_state_survives_a_round_trip_through_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_for(&dir.path().join("proxy.toml"));
        assert!(path.ends_with("proxy.toml.reload-state.json"));
        assert_eq!(ReloadState::load(&path), None);
        let state = ReloadState {
            reloaded_at_unix_ms: 1_000,
            previous: "a = 1\n".into(),
            next: "a = 2\n".into(),
        };
        state.save(&path).unwrap();
        assert_eq!(ReloadState::load(&path), Some(state.clone()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{mode:o}");
        }
        let later = UNIX_EPOCH + Duration::from_millis(4_000);
        assert_eq!(state.elapsed(later), Duration::from_secs(3));
    }
}
