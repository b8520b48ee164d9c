//! The `wasi:http/incoming-handler` export: what Spin's HTTP trigger calls.
//!
//! This file only turns a wasi:http request into a [`Request`], routes it,
//! and writes the [`Reply`] back; each endpoint lives in its own module.
//! Every answer carries `access-control-allow-origin: *` (docs/protocol.md:
//! the SDK may be served from another origin; credentials are in tokens and
//! connection ids, never cookies).

mod directory;
mod housekeeping;
mod mailbox;
mod transport;

use std::io::Read as _;
use std::io::Write as _;

use wasip2::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

/// Request bodies above this are refused with 413 before they are parsed
/// (a frame above 64 KiB but below this gets a `frame_too_large` error
/// frame, as on a WebSocket).
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// One parsed request.
pub struct Request {
    pub method: Method,
    pub path: String,
    query: Vec<(String, String)>,
    headers: Fields,
    pub body: Vec<u8>,
}

impl Request {
    pub fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .into_iter()
            .next()
            .and_then(|v| String::from_utf8(v).ok())
    }
}

/// What to answer.
pub struct Reply {
    pub status: u16,
    pub content_type: Option<&'static str>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(status: u16, body: impl Into<Vec<u8>>) -> Reply {
        Reply {
            status,
            content_type: Some("application/json"),
            body: body.into(),
        }
    }

    pub fn empty(status: u16) -> Reply {
        Reply {
            status,
            content_type: None,
            body: Vec::new(),
        }
    }

    /// `{"type":"error","code":..,"message":..}`: the shape of an error
    /// frame, so a client parses HTTP-level refusals like protocol errors.
    pub fn error(status: u16, code: &str, message: impl Into<String>) -> Reply {
        Reply::json(
            status,
            serde_json::json!({"type": "error", "code": code, "message": message.into()})
                .to_string(),
        )
    }
}

pub struct Handler;

wasip2::http::proxy::export!(Handler);

impl wasip2::exports::http::incoming_handler::Guest for Handler {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let reply = match read(&request) {
            Ok(r) => route(r),
            Err(reply) => reply,
        };
        write(reply, out);
    }
}

fn route(req: Request) -> Reply {
    let now = now_ms();
    // A deployment without its secrets, or with weak ones, serves nothing
    // but CORS preflights: it could only sign for, or accept, anyone.
    if !matches!(req.method, Method::Options) {
        if let Err(e) = crate::config::load() {
            return Reply::error(503, "unavailable", e.to_string());
        }
    }
    match (&req.method, req.path.as_str()) {
        // CORS preflight: the SDK sends text/plain so browsers skip it, but
        // a client that sets other headers still gets an answer.
        (Method::Options, _) => Reply::empty(204),
        (Method::Post, "/v1/http/connect") => transport::connect(now),
        (Method::Post, "/v1/http/send") => transport::send(now, &req),
        (Method::Get, "/v1/http/poll") => transport::poll(now, &req),
        (Method::Post, "/v1/http/close") => transport::close(now, &req),
        (Method::Get, "/v1/relays") => directory::relays(now),
        (Method::Post, "/v1/relays/heartbeat") => {
            let reply = directory::heartbeat(now, &req);
            // Relays heartbeat every few hundred ms whether or not clients
            // are around, so housekeeping (idle closes, call timeouts) goes
            // on when every client has vanished.
            housekeeping::maybe_tick(now);
            reply
        }
        (Method::Get, "/healthz") => directory::healthz(now),
        (_, "/v1/http/connect" | "/v1/http/send" | "/v1/http/poll" | "/v1/http/close")
        | (_, "/v1/relays" | "/v1/relays/heartbeat" | "/healthz") => {
            Reply::error(405, "method_not_allowed", "wrong method for this path")
        }
        _ => Reply::error(404, "not_found", format!("no route for {}", req.path)),
    }
}

/// Parse the request and read its body (at most [`MAX_BODY_BYTES`]).
fn read(request: &IncomingRequest) -> Result<Request, Reply> {
    let bad = |m: &str| Reply::error(400, "bad_request", m);
    let path_with_query = request.path_with_query().unwrap_or_else(|| "/".into());
    let (path, query) = match path_with_query.split_once('?') {
        Some((p, q)) => (p.to_string(), parse_query(q)),
        None => (path_with_query, Vec::new()),
    };
    let incoming = request
        .consume()
        .map_err(|()| bad("request body unreadable"))?;
    let mut body = Vec::new();
    {
        let mut stream = incoming
            .stream()
            .map_err(|()| bad("request body unreadable"))?;
        // One byte past the limit is enough to know it is too large.
        (&mut stream)
            .take(MAX_BODY_BYTES as u64 + 1)
            .read_to_end(&mut body)
            .map_err(|e| bad(&format!("reading the body: {e}")))?;
    }
    drop(incoming);
    if body.len() > MAX_BODY_BYTES {
        return Err(Reply::error(
            413,
            "too_large",
            format!("request bodies are limited to {MAX_BODY_BYTES} bytes"),
        ));
    }
    Ok(Request {
        method: request.method(),
        path,
        query,
        headers: request.headers(),
        body,
    })
}

/// `a=1&b=2`. Values used here (hex ids, numbers) need no percent-decoding.
fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (p.to_string(), String::new()),
        })
        .collect()
}

fn write(reply: Reply, out: ResponseOutparam) {
    let mut headers: Vec<(String, Vec<u8>)> = vec![
        ("access-control-allow-origin".into(), b"*".to_vec()),
        (
            "access-control-allow-methods".into(),
            b"GET, POST, OPTIONS".to_vec(),
        ),
        (
            "access-control-allow-headers".into(),
            b"content-type, x-tern-signature".to_vec(),
        ),
        // Mailbox answers change with every request.
        ("cache-control".into(), b"no-store".to_vec()),
    ];
    if let Some(ct) = reply.content_type {
        headers.push(("content-type".into(), ct.as_bytes().to_vec()));
    }
    let fields = Fields::from_list(&headers).expect("static header names are valid");
    let response = OutgoingResponse::new(fields);
    let _ = response.set_status_code(reply.status);
    let body = response.body().expect("first call to body()");
    ResponseOutparam::set(out, Ok(response));
    {
        let mut stream = body.write().expect("first call to write()");
        // A client that went away is not our failure: nothing to do.
        let _ = stream.write_all(&reply.body);
        let _ = stream.flush();
    }
    let _ = OutgoingBody::finish(body, None);
}

/// Wall-clock time in unix milliseconds (wasi:clocks through std).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Fresh random bytes from the host (wasi:random): ids and the core's
/// entropy.
pub fn entropy(n: u64) -> Vec<u8> {
    wasip2::random::random::get_random_bytes(n)
}

#[cfg(test)]
mod tests {
    use super::parse_query;

    #[test]
    fn query_pairs() {
        assert_eq!(
            parse_query("conn=ab12&ack=7&flag"),
            [
                ("conn".to_string(), "ab12".to_string()),
                ("ack".to_string(), "7".to_string()),
                ("flag".to_string(), String::new()),
            ]
        );
        assert!(parse_query("").is_empty());
    }
}
