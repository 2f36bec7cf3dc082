//! Flags of the web console the edge serves (issue #17): where it is mounted and which build
//! directory it serves; `off` serves none.

use std::path::PathBuf;

use clap::Args;
use mesh_edge::ConsoleConfig;

/// Raw values of the console's settings as given.
#[derive(Debug, Clone, Default, Args)]
pub struct ConsoleFlags {
    /// URL path of the web console (one segment, e.g. `/console`), or `off` for none.
    #[arg(long, env = "MESH_CONSOLE_PATH", default_value = "/console")]
    pub console_path: String,
    /// Directory of the console's build (`web/dist`, made by scripts/web-build.sh).
    #[arg(long, env = "MESH_CONSOLE_DIR", default_value = "web/dist")]
    pub console_dir: String,
}

impl ConsoleFlags {
    pub fn parse(&self) -> Result<Option<ConsoleConfig>, String> {
        let path = self.console_path.trim();
        if path.is_empty() || path.eq_ignore_ascii_case("off") {
            return Ok(None);
        }
        ConsoleConfig::new(path, PathBuf::from(self.console_dir.trim()))
            .map(Some)
            .map_err(|err| format!("MESH_CONSOLE_PATH: {err}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(path: &str) -> ConsoleFlags {
        ConsoleFlags {
            console_path: path.into(),
            console_dir: "web/dist".into(),
        }
    }

    #[test]
    fn off_or_a_checked_path() {
        assert_eq!(flags("off").parse(), Ok(None));
        assert_eq!(flags("").parse(), Ok(None));
        let on = flags("/console/").parse().unwrap().unwrap();
        assert_eq!(
            (on.path.as_str(), on.dir),
            ("/console", PathBuf::from("web/dist"))
        );
        assert!(
            flags("/v1")
                .parse()
                .unwrap_err()
                .starts_with("MESH_CONSOLE_PATH:")
        );
    }
}
