//! Writing results: to stdout, or to a file replaced atomically (a temporary
//! file in the same directory, then a rename), so a reader never sees half a
//! report and a failed run leaves the old file intact.

use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};

pub fn write_output(path: Option<&Path>, text: &str) -> Result<()> {
    write_bytes(path, text.as_bytes())
}

/// As `write_output`, for binary formats (pprof).
pub fn write_bytes(path: Option<&Path>, text: &[u8]) -> Result<()> {
    let Some(path) = path else {
        let mut stdout = std::io::stdout().lock();
        // A closed pipe (`lineprof report | head`) is not an error worth a message.
        let _ = stdout.write_all(text).and_then(|_| stdout.flush());
        return Ok(());
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = std::fs::write(&tmp, text).and_then(|_| std::fs::rename(&tmp, path));
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, "write the report", e));
    }
    Ok(())
}
