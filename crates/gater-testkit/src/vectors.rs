//! The golden vectors in `../shared/vectors` (beside the checkout).
//!
//! A clone without `../shared` skips the conformance tests with "skipped: no vectors";
//! `.ci/run` sets [`REQUIRE_VECTORS_ENV`] so that a missing folder fails instead.

use std::path::{Path, PathBuf};

/// When this variable is set (to anything but `0`), missing vectors are a test failure.
pub const REQUIRE_VECTORS_ENV: &str = "EXESDB_GATER_REQUIRE_VECTORS";

/// The workspace root (the folder with the top `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The `shared/vectors` folder beside the checkout, if it is there.
///
/// Panics (failing the test) when it is missing and [`REQUIRE_VECTORS_ENV`] is set;
/// otherwise prints "skipped: no vectors" and returns `None`.
pub fn vectors_dir() -> Option<PathBuf> {
    let dir = workspace_root().join("..").join("shared").join("vectors");
    if dir.is_dir() {
        return Some(dir);
    }
    let required = std::env::var(REQUIRE_VECTORS_ENV).is_ok_and(|v| v != "0" && !v.is_empty());
    assert!(
        !required,
        "{REQUIRE_VECTORS_ENV} is set but {} does not exist",
        dir.display()
    );
    eprintln!("skipped: no vectors ({} not found)", dir.display());
    None
}

/// A subfolder of the vectors (`"term"`, `"exesdb-real"`), if the vectors are there.
pub fn vectors_subdir(name: &str) -> Option<PathBuf> {
    vectors_dir().map(|d| d.join(name))
}
