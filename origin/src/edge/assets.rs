//! The SDK and demo page, embedded at compile time so `tern` is one file.

use include_dir::{include_dir, Dir};

static DEMO: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/../sdk/demo");
static JS: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/../sdk/js");

/// Bytes and MIME type of `file` in `dir` ("demo" or "js"), top level only.
pub fn get(dir: &str, file: &str) -> Option<(&'static [u8], &'static str)> {
    if file.contains('/') || file.contains("..") {
        return None;
    }
    let d = match dir {
        "demo" => &DEMO,
        "js" => &JS,
        _ => return None,
    };
    let f = d.get_file(file)?;
    Some((f.contents(), mime(file)))
}

fn mime(file: &str) -> &'static str {
    match file.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("js") | Some("mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("ts") => "text/plain; charset=utf-8",
        Some("json") => "application/json",
        Some("svg") => "image/svg+xml",
        _ => "application/octet-stream",
    }
}
